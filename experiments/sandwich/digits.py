"""Sandwiching on scikit-learn's 8x8 digits (bundled, no download).

Non-expert: a CNN judge that sees 4 random nonzero pixels. Assistant: a CNN on whole images.
Expert: the labels. Advice, consultancy and debate, with an honest assistant and with one that
lies with probability p (0 to 1), on one class, or where its lie persuades most.

  superalign --config=experiments/sandwich/digits.py --workdir=/tmp/sandwich     # minutes, CPU
  superalign --config=experiments/sandwich/digits.py:smoke                       # seconds
"""

from superalign import config as config_lib
from superalign.sandwich import config as sandwich_config


def get_config(arg=None):
  args = config_lib.parse_arg(arg, smoke=False)
  c = sandwich_config.base()
  c.data.name = "digits"
  if args.smoke:
    sandwich_config.smoke(c, num_images=16)
  return c
