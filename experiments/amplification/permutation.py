"""Iterated amplification on one task, and the supervised baseline (same model, loop, curriculum).

Permutation powering: facts x -> sigma(x); question (x, n) -> sigma^n(x). H: sigma^(2m)(x) = sigma^m(sigma^m(x)).

  superalign --config=experiments/amplification/permutation.py --workdir=/tmp/amp_permutation
  superalign --config=experiments/amplification/permutation.py:smoke                    # seconds
"""

from superalign.amplification import config as amplification_config


def get_config(arg=None):
  return amplification_config.experiment(("permutation",), arg)
