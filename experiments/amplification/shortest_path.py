"""Iterated amplification on one task, and the supervised baseline (same model, loop, curriculum).

Shortest path: distance from a to b in a random directed graph. H: 1 + the least distance from a's neighbours.

  superalign --config=experiments/amplification/shortest_path.py --workdir=/tmp/amp_shortest_path
  superalign --config=experiments/amplification/shortest_path.py:smoke                    # seconds
"""

from superalign.amplification import config as amplification_config


def get_config(arg=None):
  return amplification_config.experiment(("shortest_path",), arg)
