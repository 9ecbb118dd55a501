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

from superalign.amplification import amplify, encoding, report, tasks
from superalign.amplification.config import MODES, RULES, RUN_KEYS  # noqa: F401  (RULES: launcher)
from superalign.core.errors import ConfigError
from superalign.core.spec import TrainSpec
from superalign.parties.classifier import Model

log = logging.getLogger("superalign")
MAX_FIELDS = 4   # the longest fact of a task but wildcard's: (kind, a, b, c)


def _task(config, name: str):
  """The task ``name`` built from its block's options (``amplification.<name>``)."""
  block = config.amplification[name]
  return tasks.TASKS.build(name, **{k: v for k, v in block.items() if k not in RUN_KEYS})


def _schedule(config, name: str) -> amplify.Schedule:
  a, block = config.amplification, config.amplification[name]
  return amplify.Schedule(int(block.start_difficulty), int(block.max_difficulty),
                       float(block.threshold), int(a.window), int(a.num_test))


def validate(config) -> None:
  """The rules across keys (each key's range is ``RULES``'); warns of short curricula."""
  a, train = config.amplification, config.train
  for name in a.tasks:
    block = a[name]
    if block.batch_size % train.batch_size:
      raise ConfigError(f"amplification.{name}.batch_size={block.batch_size}: must be 0 "
                        f"(train.batch_size) or a multiple of train.batch_size="
                        f"{train.batch_size}, which shards over the mesh")
    if block.start_difficulty > block.max_difficulty:
      raise ConfigError(f"amplification.{name}.start_difficulty={block.start_difficulty}: must "
                        f"be in [0, max_difficulty={block.max_difficulty}]")
    try:
      task = _task(config, name)
    except (TypeError, ValueError) as e:
      raise ConfigError(f"amplification.{name}: {e}") from None
    ids = task.max_token(block.max_difficulty) + 1   # per field; encoding.encode writes int32
    fields = max(MAX_FIELDS, block.get("length", 0) + 1)   # wildcard: a string's letters, value
    if encoding.OFFSET + fields * ids >= 2**31:
      options = ", ".join(f"{k}={v}" for k, v in block.items()
                          if k not in RUN_KEYS or k == "max_difficulty")
      raise ConfigError(f"amplification.{name}: {options}: {ids} token ids per field overflow "
                        "the int32 records; lower its size, values or max_difficulty")
  if train.checkpoint_every % train.log_every:
    raise ConfigError(f"train.checkpoint_every={train.checkpoint_every}: must be a "
                      f"multiple of train.log_every={train.log_every} (the curriculum "
                      "decides at log steps, and a resumed run must decide the same)")
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
  """Trains each task of ``amplification.tasks`` in each mode of ``amplification.modes`` and returns
  the results keyed by task: per mode, the test accuracy, the final level and the steps it was
  raised at, the counts and the curve, and the task's size, schedule, no-model accuracy and
  ``amplify_over_supervised``."""
  a = config.amplification
  spec, model = TrainSpec.from_config(config), Model.from_blocks(config.model, config.data)
  by_task = {}
  for name in a.tasks:
    task, schedule = _task(config, name), _schedule(config, name)
    task_spec = amplify.task_spec(spec, a[name].num_steps, a[name].batch_size)
    modes = {}
    for mode in a.modes:
      t = time.time()
      result = amplify.train(task_spec, model, task, mode, schedule, workdir,
                             tag=f"{name}_{mode}")
      modes[mode] = {
          "test_accuracy": result.test_accuracy,
          "final_level": result.curriculum.level,
          "level_raised_at": result.curriculum.raised_at,
          "counts": result.curriculum.counts,
          "curve": result.history,
          "wall_time_s": round(time.time() - t, 1),
      }
    # Both modes share the test set, the step budget and the batch; read them off the last run.
    entry = {"size": task.size, "start_difficulty": schedule.start_difficulty,
             "max_difficulty": schedule.max_difficulty, "threshold": schedule.threshold,
             "num_steps": result.trained.num_steps, "batch_size": result.batch_size,
             "no_model_accuracy": result.no_model_accuracy, **modes}
    if set(MODES) <= set(modes):
      supervised = modes["supervised"]["test_accuracy"]
      entry["amplify_over_supervised"] = (modes["amplify"]["test_accuracy"] / supervised
                                          if supervised > 0 else float("nan"))
    by_task[name] = entry

  return {"model": config.model.name, "tasks": by_task}


plot, summary = report.plot, report.table
