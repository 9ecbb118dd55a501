"""Runner for ``kind="amplification"``: each chosen task by amplification and by supervision.

Results are keyed by task: final test accuracy of each mode, its curve (accuracy against steps,
ground-truth labels and H calls), the curriculum's steps, and amplification's accuracy as a
fraction of the supervised baseline's. Each (task, mode) trains under
``checkpoints/<task>_<mode>``, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import logging
import math
import time

from superalign.amplification import amplify, report, tasks
from superalign.amplification.config import MODES
from superalign.core.errors import ConfigError

log = logging.getLogger("superalign")


def validate(config) -> None:
  a = config.amplification
  if not a.tasks:
    raise ConfigError(f"amplification.tasks=(): needs one or more of {', '.join(tasks.TASKS)}")
  for name in a.tasks:
    if name not in tasks.TASKS:
      raise ConfigError(f"amplification.tasks: {name!r} is not a task; valid: "
                        f"{', '.join(tasks.TASKS)}")
  if not a.modes or any(m not in MODES for m in a.modes):
    raise ConfigError(f"amplification.modes={tuple(a.modes)}: valid: one or more of "
                      f"{', '.join(MODES)}")
  for key in ("window", "num_test"):
    if not a[key] > 0:
      raise ConfigError(f"amplification.{key}={a[key]!r}: must be positive")
  if config.train.num_steps <= 0:
    raise ConfigError("train.num_steps=0: amplification draws fresh episodes every step; set "
                      "the number of steps")
  for name in a.tasks:
    block = a[name]
    if not 0 < block.threshold <= 1:
      raise ConfigError(f"amplification.{name}.threshold={block.threshold}: must be in (0, 1]")
    if block.num_steps < 0:
      raise ConfigError(f"amplification.{name}.num_steps={block.num_steps}: must be >= 0 "
                        "(0: train.num_steps)")
    if block.batch_size < 0 or block.batch_size % config.train.batch_size:
      raise ConfigError(f"amplification.{name}.batch_size={block.batch_size}: must be 0 "
                        f"(train.batch_size) or a multiple of train.batch_size="
                        f"{config.train.batch_size}, which shards over the mesh")
    if not 0 <= block.start_difficulty <= block.max_difficulty:
      raise ConfigError(f"amplification.{name}.start_difficulty={block.start_difficulty}: must "
                        f"be in [0, max_difficulty={block.max_difficulty}]")
  if config.train.checkpoint_every % config.train.log_every:
    raise ConfigError(f"train.checkpoint_every={config.train.checkpoint_every}: must be a "
                      f"multiple of train.log_every={config.train.log_every} (the curriculum "
                      "decides at log steps, and a resumed run must decide the same)")
  for name in a.tasks:
    try:
      amplify.make_task(config, name)
    except (TypeError, ValueError) as e:
      raise ConfigError(f"amplification.{name}: {e}") from None
  for name in a.tasks:
    if (warning := curriculum_warning(config, name)):
      log.warning("%s", warning)


def curriculum_warning(config, name: str) -> str | None:
  """A line when task ``name``'s step budget cannot carry its curriculum to the top difficulty
  (where the test set is drawn), else None. Each level needs ``window`` steps of agreement, and
  batches change difficulty only when the loop fetches the train metrics (every
  ``train.log_every`` steps), so the earliest step that trains at the top is ``levels * window``
  rounded up to a multiple of ``log_every``."""
  a, train = config.amplification, config.train
  block = a[name]
  levels = int(block.max_difficulty) - int(block.start_difficulty)
  steps = int(block.num_steps) or int(train.num_steps)
  log_every = int(train.log_every)
  earliest = math.ceil(levels * int(a.window) / log_every) * log_every
  if levels and earliest >= steps:
    return (f"amplification.{name}: {steps} steps cannot train at max_difficulty="
            f"{block.max_difficulty}: from start_difficulty={block.start_difficulty}, {levels} "
            f"levels of window={a.window} steps, seen every train.log_every={log_every}, reach "
            f"it at step {earliest} at the earliest; the test set is drawn there")
  return None


def run(config, workdir: str) -> dict:
  a = config.amplification
  by_task = {}
  for name in a.tasks:
    task = amplify.make_task(config, name)
    modes = {}
    for mode in a.modes:
      t = time.time()
      result = amplify.train(config, task, mode, workdir, tag=f"{name}_{mode}")
      modes[mode] = {
          "test_accuracy": result.test_accuracy,
          "final_level": result.curriculum.level,
          "level_raised_at": result.curriculum.raised_at,
          "counts": result.curriculum.counts,
          "curve": result.history,
          "wall_time_s": round(time.time() - t, 1),
      }
    # Both modes share the test set, the step budget and the batch; read them off the last run.
    entry = {"size": task.size, "start_difficulty": int(a[name].start_difficulty),
             "max_difficulty": int(a[name].max_difficulty),
             "threshold": float(a[name].threshold),
             "num_steps": result.trained.num_steps, "batch_size": result.batch_size,
             "no_model_accuracy": result.no_model_accuracy, **modes}
    if set(MODES) <= set(modes):
      supervised = modes["supervised"]["test_accuracy"]
      entry["amplify_over_supervised"] = (modes["amplify"]["test_accuracy"] / supervised
                                          if supervised > 0 else float("nan"))
    by_task[name] = entry

  return {"model": config.model.name, "tasks": by_task}


plot, summary = report.plot, report.table
