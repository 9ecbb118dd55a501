"""Iterated amplification on all five tasks of Christiano et al. (2018), each beside its
supervised baseline: the curves (accuracy against steps, labels and H calls) and the table.

  superalign --config=experiments/amplification/all.py --workdir=/tmp/amp_all
  superalign --config=experiments/amplification/all.py:smoke                   # seconds
"""

from superalign.amplification import config as amplification_config
from superalign.amplification import tasks


def get_config(arg=None):
  return amplification_config.experiment(tuple(tasks.TASKS), arg)
