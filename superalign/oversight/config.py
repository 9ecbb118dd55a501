"""Debate config defaults, on top of ``superalign.config.base()``."""

from __future__ import annotations

import ml_collections

from superalign import config as config_lib


def base() -> ml_collections.ConfigDict:
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

  c.optim.learning_rate = 2e-3
  c.train.batch_size = 128
  c.train.num_epochs = 0
  c.train.num_steps = 3000
  c.train.eval_every = 500
  c.train.checkpoint_every = 500
  c.train.log_every = 250
  return c


def smoke(c: ml_collections.ConfigDict, num_images: int) -> ml_collections.ConfigDict:
  """The seconds-long variant of a debate config: k=4, a few images, shallow search, no MCTS in
  the matrix, a judge trained for a few dozen steps."""
  d = c.debate
  d.ks = (4,)
  d.num_images = num_images
  d.num_simulations = 8
  d.max_considered = 4
  d.judge_alone_draws = 2
  d.matrix_players = ("greedy", "random")
  d.matrix_images = num_images // 2
  d.chunk = 4 * num_images
  c.train.num_steps = 2 * c.train.eval_every
  c.train.checkpoint_every = c.train.eval_every
  c.train.log_every = c.train.eval_every
  return c
