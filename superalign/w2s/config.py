"""Weak-to-strong config defaults, on top of ``superalign.config.base()``."""

from __future__ import annotations

import ml_collections

from superalign import config as config_lib
from superalign.w2s import losses

ALL_LOSSES = tuple(losses.LOSSES)


def base() -> ml_collections.ConfigDict:
  c = config_lib.base()
  c.kind = "w2s"
  c.data.splits = ml_collections.ConfigDict(
      {"pretrain": 0.33, "train_a": 0.17, "train_b": 0.28, "val": 0.06, "test": 0.16})

  c.w2s = ml_collections.ConfigDict()
  c.w2s.ladder = ("mlp_tiny", "mlp_small", "mlp_base")  # weakest first
  c.w2s.losses = ALL_LOSSES
  c.w2s.loss_hparams = ml_collections.ConfigDict(
      {name: dict(hp) for name, hp in losses.DEFAULT_HPARAMS.items() if hp})
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
  return c
