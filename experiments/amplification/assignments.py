"""Iterated amplification on one task, and the supervised baseline (same model, loop, curriculum).

Sequential assignments: x := f(y, z) with f a lookup table; question: a variable's value. H asks y and z.

  superalign --config=experiments/amplification/assignments.py --workdir=/tmp/amp_assignments
  superalign --config=experiments/amplification/assignments.py:smoke                    # seconds
"""

from superalign.amplification import config as amplification_config


def get_config(arg=None):
  return amplification_config.experiment(("assignments",), arg)
