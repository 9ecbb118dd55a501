"""Debate with a sparse-pixel judge on scikit-learn's 8x8 digits (bundled, no download).

A CNN judge sees k = 4 or 6 revealed nonzero pixels; honest and lying players reveal them by tree
search (mctx, 200 simulations a move). Judge alone, consultancy and debate with and without
precommit on 300 test images, and an honest x liar matrix of MCTS, greedy and random players.

  superalign --config=experiments/debate/digits.py --workdir=/tmp/debate         # minutes on CPU
  superalign --config=experiments/debate/digits.py:smoke                         # seconds
  superalign --config=experiments/debate/digits.py --config.debate.first=liar    # liar opens
"""

from superalign import config as config_lib
from superalign.oversight import config as debate_config


def get_config(arg=None):
  args = config_lib.parse_arg(arg, smoke=False)
  c = debate_config.base()
  c.data.name = "digits"
  if args.smoke:
    debate_config.smoke(c, num_images=16, every=20)
  return c
