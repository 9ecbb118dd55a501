"""Verification config defaults, on top of ``superalign.config.base()`` (no JAX at import)."""

from __future__ import annotations

import ml_collections

from superalign import config as config_lib


def base() -> ml_collections.ConfigDict:
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
