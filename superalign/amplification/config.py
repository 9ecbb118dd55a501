"""Amplification config defaults, on top of ``superalign.config.base()``, and their rules.

Every task has its own block (``c.amplification.<task>``: size, top difficulty, task options);
``c.amplification.tasks`` picks which run, so one file can run one task or all five.
"""

from __future__ import annotations

import ml_collections

from superalign import config as config_lib
from superalign.config import schema

MODES = ("amplify", "supervised")
# The keys of a task block (``config.amplification.<task>``) that are not the task's options,
# and their ranges (``config.schema``).
# (permutation asks up to 2^difficulty steps, a token id: int32)
RUN_RULES = {"start_difficulty": schema.COUNT_OR_ZERO,
             "max_difficulty": schema.interval(0, 30, integer=True),
             "threshold": schema.FRACTION, "num_steps": schema.COUNT_OR_ZERO,  # 0: train's
             "batch_size": schema.COUNT_OR_ZERO}
RUN_KEYS = tuple(RUN_RULES)
# The ranges of the task options (``tasks.TASKS``' arguments); the tasks refuse what crosses keys
# (union_find's components <= size, wildcard's size <= alphabet^length, shortest_path's degree).
OPTION_RULES = {"size": schema.COUNT, "values": schema.COUNT, "components": schema.COUNT,
                "alphabet": schema.COUNT, "length": schema.COUNT, "degree": schema.COUNT,
                "cap": schema.at_least(2)}   # budgets 1 .. cap - 1

# Per task: the size (8 variables / vertices / strings) and task options; the difficulty the
# curriculum starts at, the top it climbs to (the held-out test set is drawn there) and the
# agreement that raises it; and the step budget and batch (0: train.num_steps, train.batch_size).
# At difficulty 1 every subquestion of permutation, assignments and shortest path reduces to a
# fact, so H needs no model there; from 2 on it asks the model. This model learns permutation's
# and assignments' level 1 (two- and three-hop lookups) to about 0.65 agreement in 800 steps,
# never 0.9, so they move on at 0.6: at 0.9 neither run ever leaves level 1 and the two runs are
# identical, and starting at the top makes the amplified model collapse to a constant. Finding an
# edge leaves chance after 400-600 steps, if at all (the default seed: not in 1,200 steps of batch
# 128, at step 400 with batch 256), so shortest path starts at level 1 with batch 256 and moves on
# at 0.75: at 0.6 H began asking the teacher while its edges were still poor (amplification 0.88
# of supervised). docs/rooms/amplification.md: what was measured.
_RUN = {"start_difficulty": 0, "max_difficulty": 2, "threshold": 0.9, "num_steps": 0,
        "batch_size": 0}
TASK_DEFAULTS = {
    "permutation": {**_RUN, "threshold": 0.6, "size": 8},                # n <= 4
    "assignments": {**_RUN, "threshold": 0.6, "size": 8, "values": 4},   # depth <= 2
    "wildcard": {**_RUN, "size": 8, "length": 3, "alphabet": 4, "values": 8},
    "shortest_path": {**_RUN, "start_difficulty": 1, "threshold": 0.75, "num_steps": 700,
                      "batch_size": 256, "size": 8, "degree": 2, "cap": 8},   # budget k <= 2
    "union_find": {**_RUN, "size": 8, "values": 8, "components": 2},
}

# The choices and ranges of the keys; the rules across keys are ``amplification.run.validate``.
RULES = {
    "amplification.tasks": schema.choices_of(*TASK_DEFAULTS),
    "amplification.modes": schema.choices_of(*MODES),
    "amplification.window": schema.COUNT,
    "amplification.num_test": schema.COUNT,
    **{f"amplification.{name}.{key}": rule for name in TASK_DEFAULTS
       for key, rule in RUN_RULES.items()},
    **{f"amplification.{name}.{key}": OPTION_RULES[key] for name, options in TASK_DEFAULTS.items()
       for key in options if key not in RUN_RULES},
    "train.num_steps": schema.COUNT.because("amplification draws fresh episodes every step; set "
                                            "the number of steps"),
}


def base() -> ml_collections.ConfigDict:
  """The amplification defaults: ``gpt_small`` on the five tasks (``TASK_DEFAULTS``) in both modes,
  800 steps of 128 episodes (shortest path: 700 of 256), H asking the model's moving average
  (``optim.ema_decay = 0.99``)."""
  c = config_lib.base()
  c.kind = "amplification"
  c.model.name = "gpt_small"

  c.amplification = ml_collections.ConfigDict()
  a = c.amplification
  a.tasks = tuple(TASK_DEFAULTS)   # the five tasks of superalign.amplification.tasks
  a.modes = MODES                  # amplification, and the supervised baseline
  a.window = 100                   # steps the agreement is averaged over
  a.num_test = 1024                # held-out episodes at the top difficulty
  for name, options in TASK_DEFAULTS.items():
    a[name] = ml_collections.ConfigDict(options)

  c.optim.learning_rate = 1e-3
  c.optim.warmup_steps = 100
  c.optim.weight_decay = 0.0
  c.optim.ema_decay = 0.99         # H asks this moving average of the model (measured: the guide)
  c.train.update(batch_size=128, eval_batch_size=128, num_epochs=0, num_steps=800,
                 eval_every=100, log_every=50, checkpoint_every=200)
  return c


def smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Seconds: size 6, top difficulty 2, a tiny model, a few dozen steps."""
  c.model.name = "gpt_nano"
  a = c.amplification
  for name in TASK_DEFAULTS:
    a[name].size = 6
    a[name].max_difficulty = 2
    a[name].num_steps = a[name].batch_size = 0     # train's, below
  a.wildcard.length, a.wildcard.alphabet = 2, 3
  a.window = 5
  a.num_test = 64
  c.train.batch_size = c.train.eval_batch_size = 32
  c.optim.warmup_steps = 0
  return config_lib.smoke_train(c, num_steps=40, every=20, log_every=5)
