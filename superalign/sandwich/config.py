"""Sandwiching config defaults, on top of ``superalign.config.base()``, and the choices and ranges
of the ``sandwich`` block (protocol and player names are their registries': ``sandwich.run``)."""

from __future__ import annotations

import ml_collections

from superalign import config as config_lib
from superalign.config import schema
from superalign.oversight import config as debate_config

SPLITS = ("train", "val", "test")
RULES = {
    "sandwich.sweep": schema.each(schema.SHARE),          # lying probabilities
    "sandwich.persuasive_fraction": schema.SHARE,
    "sandwich.target_class": schema.COUNT_OR_ZERO,        # below the data's classes: at run time
    "sandwich.num_images": schema.COUNT_OR_ZERO,          # 0: all
    "sandwich.assistant_model": schema.NAME,              # the registry's: sandwich.run.validate
    "sandwich.advice_model": schema.NAME,
    **{f"sandwich.{key}": schema.COUNT for key in (
        "k", "assistant_steps", "advice_steps", "chunk", "greedy_chunk", "num_simulations",
        "max_considered")},
}


def base() -> ml_collections.ConfigDict:
  """The sandwiching experiment's defaults: ``config_lib.base()`` with a small CNN non-expert
  (debate's judge, trained as ``oversight.config.judge_training`` says) and the ``sandwich`` block
  (pixels seen, the assistant and advice models, protocols, player, the misalignment sweep)."""
  c = config_lib.base()
  c.kind = "sandwich"
  c.model.name = "cnn_small"         # the non-expert: a sparse-pixel judge (k revealed pixels)
  c.data.splits = ml_collections.ConfigDict({"train": 0.6, "val": 0.2, "test": 0.2})

  c.sandwich = ml_collections.ConfigDict()
  s = c.sandwich
  s.k = 4                            # pixels the non-expert sees (alone, and in every protocol)
  s.assistant_model = "cnn_base"     # the strong assistant: sees the whole image
  s.assistant_steps = 1500
  s.advice_model = "mlp_small"       # how the non-expert learns to weigh advice
  s.advice_steps = 600
  s.protocols = ("advice", "consultancy", "debate")
  s.player = "greedy"                # consultant and debaters
  s.sweep = (0.0, 0.25, 0.5, 0.75, 1.0)   # probability the assistant lies on an item
  s.target_class = 0                 # targeted sabotage: the class it lies about
  s.persuasive_fraction = 0.25       # sabotage where its lie persuades this non-expert most
  s.trained_liar = True              # also an assistant TRAINED to lie on target_class (the lie
                                     # in its weights: parties.organisms), not scripted
  s.num_images = 300                 # test images; 0 = all
  s.chunk = 512
  s.greedy_chunk = 64
  s.num_simulations = 200            # if player = "mcts"
  s.max_considered = 16

  return debate_config.judge_training(c)     # the non-expert is debate's judge


def smoke(c: ml_collections.ConfigDict, num_images: int) -> ml_collections.ConfigDict:
  """``c`` cut down for a smoke test: ``num_images`` test images, a two-point sweep and 40
  training steps for every model."""
  s = c.sandwich
  s.num_images = num_images
  s.sweep = (0.0, 1.0)
  s.assistant_steps = s.advice_steps = 40
  s.chunk = 4 * num_images
  return config_lib.smoke_train(c, num_steps=40, every=20)
