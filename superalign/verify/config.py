"""Verification config defaults, on top of ``superalign.config.base()`` (no JAX at import), and
the choices and ranges of the ``verify`` block and of ``verify_oversight``'s ``certify`` and
``organism`` blocks (the method names are their registries': ``verify.run``,
``verify.oversight.run``)."""

from __future__ import annotations

import ml_collections

from superalign import config as config_lib
from superalign.config import schema


def _interval(d) -> bool:
  finite = schema.interval().ok
  return isinstance(d, (tuple, list)) and len(d) == 2 and all(map(finite, d)) and d[0] < d[1]


DOMAIN = schema.Rule(_interval, "must be an interval (lo, hi) with lo < hi")   # inputs' range
RADII = schema.each(schema.NON_NEGATIVE)
RULES = {
    "verify.train_eps": schema.POSITIVE,
    "verify.kappa_end": schema.SHARE,
    "verify.beta_end": schema.SHARE,
    "verify.eps": RADII,
    "verify.domain": DOMAIN,
    "verify.alpha_lr": schema.POSITIVE,
    **{f"verify.{key}": schema.COUNT_OR_ZERO for key in (
        "warmup_steps", "ramp_steps", "test_examples", "crown_examples", "chunk", "max_unstable")},
    **{f"verify.{key}": schema.COUNT for key in ("pgd_steps", "alpha_steps", "crown_batch")},
}
OVERSIGHT_SPLITS = ("train", "val", "test")
OVERSIGHT_RULES = {
    "certify.eps": RADII,
    "certify.domain": DOMAIN,
    "certify.max_unstable": schema.COUNT_OR_ZERO,
    **{f"certify.{key}": schema.COUNT for key in (
        "judge_k", "judge_images", "backdoor_images", "pgd_steps", "alpha_steps", "crown_batch",
        "scan_stride")},
    **config_lib.ORGANISM_RULES,
}


def base() -> ml_collections.ConfigDict:
  """The verification defaults: one net trained naturally, with IBP and with CROWN-IBP
  (``verify.training``) to ``train_eps`` 0.1 (200 natural steps, then a 1000-step ramp), tested
  at radii 0.02, 0.05 and 0.1 by IBP, CROWN-IBP, CROWN and alpha-CROWN."""
  c = config_lib.base()
  c.kind = "verify"
  c.optim.learning_rate = 1e-3
  c.verify = ml_collections.ConfigDict({
      "training": ("natural", "ibp", "crown_ibp"),   # one model each, same net and steps
      "train_eps": 0.1,
      "warmup_steps": 200,       # natural training first
      "ramp_steps": 1000,        # eps 0 -> train_eps, kappa 1 -> kappa_end, beta 1 -> beta_end
      "kappa_end": 0.5,          # Gowal et al.
      "beta_end": 0.0,           # Zhang et al.
      "eps": (0.02, 0.05, 0.1),  # test radii
      "domain": (0.0, 1.0),      # inputs are clipped to it
      "bound_methods": ("ibp", "crown_ibp", "crown", "alpha_crown"),
      "test_examples": 0,        # 0: the whole test split
      "crown_examples": 0,       # CROWN and alpha-CROWN on the first ones (0: all)
      "crown_batch": 64,         # examples per CROWN program (its memory scales with it)
      "chunk": 0,                # neurons per backward pass of intermediate bounds (0: auto)
      # CROWN refines each example's widest IBP-unstable neurons, at most this many per layer
      # (IBP's bounds elsewhere; exact CROWN when no layer has more: crown_exact_share). 0: all.
      "max_unstable": 64,
      "alpha_steps": 20,
      "alpha_lr": 0.5,
      "pgd_steps": 20,
  })
  return c


def smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Seconds: a few steps of each training, a few test images."""
  c.data.limit = 300
  c.verify.update(warmup_steps=5, ramp_steps=10, test_examples=24, crown_examples=8,
                  crown_batch=8, alpha_steps=3, pgd_steps=3)
  config_lib.smoke_train(c, num_steps=20, every=10)
  c.train.eval_batch_size = 64
  return c
