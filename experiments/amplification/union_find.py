"""Iterated amplification on one task, and the supervised baseline (same model, loop, curriculum).

Union find: equalities between variables, one value per class; a variable's value. H asks its other neighbours.

  superalign --config=experiments/amplification/union_find.py --workdir=/tmp/amp_union_find
  superalign --config=experiments/amplification/union_find.py:smoke                    # seconds
"""

from superalign.amplification import config as amplification_config


def get_config(arg=None):
  return amplification_config.experiment(("union_find",), arg)
