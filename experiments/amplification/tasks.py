"""Iterated amplification on the five tasks of Christiano et al. (2018), each beside its
supervised baseline (same model, loop and curriculum): the curves (accuracy against steps, labels
and H calls) and the table. ``task=`` picks one task (``all``, the default, runs the five).

  superalign --config=experiments/amplification/tasks.py --workdir=/tmp/amp_all
  superalign --config=experiments/amplification/tasks.py:task=shortest_path
  superalign --config=experiments/amplification/tasks.py:smoke                 # seconds

Tasks: permutation (sigma^(2m)(x) = sigma^m(sigma^m(x))), assignments (x := f(y, z); H asks y
and z), wildcard (the sum of the values a pattern matches; H fills a wildcard), shortest_path
(a distance within a step budget; H: 1 + the least distance from a's neighbours), union_find
(a variable's value through equalities; H asks its other neighbours).
"""

from superalign import config as config_lib
from superalign.amplification import config as amplification_config


def get_config(arg=None):
  args = config_lib.parse_arg(arg, smoke=False, task="all")
  c = amplification_config.base()
  names = tuple(amplification_config.TASK_DEFAULTS)
  if args.task != "all":
    if args.task not in names:
      raise config_lib.ConfigError(f"config argument task={args.task!r}: valid: all, "
                                   f"{', '.join(names)}")
    c.amplification.tasks = (args.task,)
  return amplification_config.smoke(c) if args.smoke else c
