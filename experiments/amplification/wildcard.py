"""Iterated amplification on one task, and the supervised baseline (same model, loop, curriculum).

Wildcard search: strings with values; a pattern with wildcards -> the sum of the matching values. H fills a wildcard.

  superalign --config=experiments/amplification/wildcard.py --workdir=/tmp/amp_wildcard
  superalign --config=experiments/amplification/wildcard.py:smoke                    # seconds
"""

from superalign.amplification import config as amplification_config


def get_config(arg=None):
  return amplification_config.experiment(("wildcard",), arg)
