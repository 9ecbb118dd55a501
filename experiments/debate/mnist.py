"""Debate with a sparse-pixel judge on 28x28 images from local IDX files: the paper's setting.

Irving et al. used MNIST; Debian's ``dataset-fashion-mnist`` package ships Fashion-MNIST as IDX
files, the default here. Point ``dir`` at an MNIST directory to run the paper's data set.

  superalign --config=experiments/debate/mnist.py --workdir=/tmp/debate28
  superalign --config=experiments/debate/mnist.py:dir=/data/mnist --workdir=/tmp/mnist
  superalign --config=experiments/debate/mnist.py:smoke,dir=/path/to/idx
"""

from superalign import config as config_lib
from superalign.oversight import config as debate_config


def get_config(arg=None):
  args = config_lib.parse_arg(arg, smoke=False, dir="/usr/share/datasets/fashion-mnist")
  c = debate_config.base()
  debate_config.pixels_28x28(c, c.debate, args.dir, args.smoke)
  c.data.splits = {"train": 0.9, "val": 0.1, "test": 1.0}  # test: the IDX files' own test set
  c.debate.matrix_images = 100
  if args.smoke:
    debate_config.smoke(c, num_images=8, every=10)
  return c
