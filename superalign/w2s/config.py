"""Weak-to-strong config defaults, on top of ``superalign.config.base()``, and what the launcher
checks them against (``SPLITS``, ``RULES``; the rules across keys are ``run.validate``)."""

from __future__ import annotations

from typing import Any

import ml_collections

from superalign import config as config_lib
from superalign.config import schema

# Every loss of superalign.w2s.losses with its default hyperparameters (kept here, with the other
# defaults, so that reading a config imports no JAX; a test keeps the two lists equal).
LOSS_HPARAMS: dict[str, dict[str, Any]] = {
    "xent": {},
    "logconf": {"aux_coef": 0.5, "warmup_frac": 0.1},
    "product": {"alpha": 1.0, "beta": 1.0},
    "kl": {},
    "entropy": {"aux_coef": 0.5, "warmup_frac": 0.1},
    "window": {"radius": 0.15},
    "bootstrap_soft": {"beta": 0.95},
    "bootstrap_hard": {"beta": 0.8},
    "adaptconf": {"temperature": 1.0},
}
ALL_LOSSES = tuple(LOSS_HPARAMS)
# Their ranges (``w2s.loss_hparams.<loss>.<name>``; superalign/w2s/losses.py says what each does).
LOSS_HPARAM_RULES: dict[str, dict[str, schema.Rule]] = {
    "logconf": {"aux_coef": schema.NON_NEGATIVE, "warmup_frac": schema.SHARE},
    "entropy": {"aux_coef": schema.NON_NEGATIVE, "warmup_frac": schema.SHARE},
    "product": {"alpha": schema.NON_NEGATIVE, "beta": schema.NON_NEGATIVE},   # exponents
    # in units of half the top probability's range: 0.5 keeps every example, 0 none
    "window": {"radius": schema.interval(0, 0.5, lo_open=True)},
    "bootstrap_soft": {"beta": schema.SHARE},   # the weak labels' weight
    "bootstrap_hard": {"beta": schema.SHARE},
    "adaptconf": {"temperature": schema.POSITIVE},
}
MODES = ("probe", "finetune")
# Weak-label cleaning (superalign/w2s/cleaning.py): a probe on the strong model's features, then
# relabel with it or drop the examples it finds least plausible.
CLEANING = ("none", "knn_relabel", "logreg_relabel", "knn_drop", "logreg_drop")
PRETRAIN_TASKS = ("coarse", "labels", "none")   # superalign/w2s/pretrain.py

# The splits every run reads; ``pretrain`` too unless ``pretrain.task`` is "none" (run.validate).
SPLITS = ("train_a", "train_b", "val", "test")
RULES = {
    "w2s.ladder": schema.Rule(lambda v: isinstance(v, (tuple, list)) and len(v) >= 2,
                              "needs at least two models, weakest first"),
    "w2s.losses": schema.choices_of(*ALL_LOSSES),
    "w2s.mode": schema.one_of(*MODES),
    "w2s.num_seeds": schema.COUNT,
    "w2s.l2": schema.NON_NEGATIVE,
    "w2s.cleaning": schema.one_of(*CLEANING),
    "w2s.drop_frac": schema.PROBABILITY_BELOW_ONE,
    "w2s.knn_k": schema.COUNT,             # the cleaning probe's neighbours
    "w2s.s2s_rounds": schema.COUNT_OR_ZERO,
    "pretrain.task": schema.one_of(*PRETRAIN_TASKS),
    # class -> proxy group; its length against the data's classes: at run time
    "pretrain.coarse_map": schema.each(schema.COUNT_OR_ZERO, non_empty=False),
    **{f"w2s.loss_hparams.{loss}.{name}": rule for loss, rules in LOSS_HPARAM_RULES.items()
       for name, rule in rules.items()},
}


def base() -> ml_collections.ConfigDict:
  """The weak-to-strong defaults: ``config_lib.base()`` with the five disjoint splits, the ``w2s``
  block (a ladder of MLPs weakest first, every loss, seeds, probe mode, cleaning) and the
  ``pretrain`` block (coarse proxy labels)."""
  c = config_lib.base()
  c.kind = "w2s"
  c.data.splits = ml_collections.ConfigDict(
      {"pretrain": 0.33, "train_a": 0.17, "train_b": 0.28, "val": 0.06, "test": 0.16})

  c.w2s = ml_collections.ConfigDict()
  c.w2s.ladder = ("mlp_tiny", "mlp_small", "mlp_base")  # weakest first
  c.w2s.losses = ALL_LOSSES
  c.w2s.loss_hparams = ml_collections.ConfigDict(
      {name: dict(hp) for name, hp in LOSS_HPARAMS.items() if hp})
  c.w2s.num_seeds = 5
  c.w2s.mode = "probe"          # "probe": linear head on the frozen pretrained backbone; "finetune"
  c.w2s.l2 = 0.0                # L2 penalty on the head kernel
  c.w2s.early_stop = True       # students: on agreement with weak labels of val (never ground truth)
  c.w2s.cleaning = "none"       # see superalign/w2s/cleaning.py
  c.w2s.drop_frac = 0.1
  c.w2s.knn_k = 10
  c.w2s.s2s_rounds = 0          # strong-to-strong relabelling rounds after the first student

  c.pretrain = ml_collections.ConfigDict()
  c.pretrain.task = "coarse"    # "coarse" proxy labels, "labels", or "none" (random features)
  c.pretrain.coarse_map = ()    # class -> proxy group, for task "coarse"
  c.pretrain.load_from = ""     # a workdir whose checkpoints/pretrain/<model> to restore
  c.pretrain.train = config_lib.base().train
  c.pretrain.train.eval_every = 0   # pretraining has no validation
  return c


def schedule(c: ml_collections.ConfigDict, *, batch_size: int, eval_batch_size: int,
             epochs: int, pretrain_epochs: int, eval_every: int, log_every: int = 25,
             checkpoint_every: int = 500) -> ml_collections.ConfigDict:
  """Both training blocks of an experiment: the weak-to-strong stages' ``train`` and
  ``pretrain.train``, which shares its batch sizes and logs and checkpoints half as often."""
  for block, epochs_, every in ((c.train, epochs, 1), (c.pretrain.train, pretrain_epochs, 2)):
    block.batch_size, block.eval_batch_size, block.num_epochs = (batch_size, eval_batch_size,
                                                                 epochs_)
    block.log_every, block.checkpoint_every = every * log_every, every * checkpoint_every
  c.train.eval_every = eval_every
  return c
