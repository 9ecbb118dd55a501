"""Weak-to-strong config defaults, on top of ``superalign.config.base()``."""

from __future__ import annotations

from typing import Any

import ml_collections

from superalign import config as config_lib

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


def base() -> ml_collections.ConfigDict:
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
