"""Sandwiching on Fashion-MNIST from local IDX files (Debian's ``dataset-fashion-mnist`` by
default; ``dir`` for another IDX directory). The non-expert sees 6 of 784 pixels.

  superalign --config=experiments/sandwich/fashion_mnist.py --workdir=/tmp/sandwich28
  superalign --config=experiments/sandwich/fashion_mnist.py:smoke,dir=/path/to/idx
"""

from superalign import config as config_lib
from superalign.oversight import config as debate_config
from superalign.sandwich import config as sandwich_config


def get_config(arg=None):
  args = config_lib.parse_arg(arg, smoke=False, dir="/usr/share/datasets/fashion-mnist")
  c = sandwich_config.base()
  debate_config.pixels_28x28(c, c.sandwich, args.dir, args.smoke)
  c.data.splits = {"train": 0.8, "val": 0.2, "test": 1.0}  # test: the IDX files' own test set
  c.sandwich.k = 6
  if args.smoke:
    sandwich_config.smoke(c, num_images=8)
  return c
