"""Debate config defaults, on top of ``superalign.config.base()``, and the choices and ranges of
the ``debate`` block (the player names are the players' registry's: ``oversight.run``)."""

from __future__ import annotations

import ml_collections

from superalign import config as config_lib
from superalign.config import schema

FIRST = ("honest", "liar")
VARIANTS = ("precommit", "no_precommit")
SPLITS = ("train", "val", "test")
RULES = {
    "debate.ks": schema.each(schema.COUNT),
    "debate.first": schema.one_of(*FIRST),
    "debate.variants": schema.choices_of(*VARIANTS),
    "debate.num_images": schema.COUNT_OR_ZERO,      # 0: all
    "debate.matrix_images": schema.COUNT_OR_ZERO,   # 0: no matrix
    **{f"debate.{key}": schema.COUNT for key in (
        "num_simulations", "max_considered", "judge_alone_draws", "chunk", "greedy_chunk")},
}


def base() -> ml_collections.ConfigDict:
  """The debate experiment's defaults: ``config_lib.base()`` with a small CNN judge, the
  ``debate`` block (reveals per game, players, search budget, the player matrix) and the judge's
  training (``judge_training``)."""
  c = config_lib.base()
  c.kind = "debate"
  c.model.name = "cnn_small"      # the judge, reading (mask, revealed values) planes
  c.data.splits = ml_collections.ConfigDict({"train": 0.75, "val": 0.08, "test": 0.17})

  c.debate = ml_collections.ConfigDict()
  d = c.debate
  d.ks = (4, 6)                   # pixels revealed per game (judge trained on each k)
  d.num_images = 300              # test images evaluated; 0 = all
  d.honest = "mcts"               # the honest debater, and the consultancy advisor
  d.liar = "mcts"
  d.first = "honest"              # who reveals first in debate: "honest" or "liar"
  d.variants = ("precommit", "no_precommit")
  d.num_simulations = 200         # MCTS judge-evaluated leaves per move
  d.max_considered = 16           # MCTS root moves kept by Gumbel top-k
  d.judge_alone_draws = 10        # random reveals per image for judge alone
  d.matrix_players = ("mcts", "greedy", "random")  # honest x liar matrix; () = skip
  d.matrix_images = 300           # images for the matrix (first of the evaluated ones)
  d.chunk = 512                   # games per compiled batch
  d.greedy_chunk = 64             # candidate moves the greedy player scores per judge batch

  return judge_training(c)


def judge_training(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """How the sparse-pixel judge trains (debate's judge, sandwiching's non-expert)."""
  c.optim.learning_rate = 2e-3
  c.train.update(batch_size=128, num_epochs=0, num_steps=3000, eval_every=500,
                 checkpoint_every=500, log_every=250)
  return c


def pixels_28x28(c: ml_collections.ConfigDict, block: ml_collections.ConfigDict, directory: str,
                 smoke: bool) -> ml_collections.ConfigDict:
  """A sparse-pixel judge on 28x28 images from a local IDX directory (``block``: the protocol's
  config block, whose game chunks shrink because trees are 12x wider than on 8x8 digits)."""
  c.data.name = f"idx:{directory}"
  c.model.name = "cnn_base"
  c.train.num_steps = 6000
  c.train.batch_size = 256
  block.chunk = 128               # 784 moves a node
  block.greedy_chunk = 112
  if smoke:
    c.data.limit = 512
  return c


def smoke(c: ml_collections.ConfigDict, num_images: int, every: int) -> ml_collections.ConfigDict:
  """The seconds-long variant of a debate config: k=4, a few images, shallow search, no MCTS in
  the matrix, a judge trained for two evaluations of ``every`` steps."""
  d = c.debate
  d.ks = (4,)
  d.num_images = num_images
  d.num_simulations = 8
  d.max_considered = 4
  d.judge_alone_draws = 2
  d.matrix_players = ("greedy", "random")
  d.matrix_images = num_images // 2
  d.chunk = 4 * num_images
  return config_lib.smoke_train(c, num_steps=2 * every, every=every)
