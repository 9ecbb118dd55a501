"""Orbax checkpoints: every N steps and at the end, keep the last K, restore the newest intact."""

from __future__ import annotations

import contextlib
import logging
import os
import re
from typing import Any

import jax
import orbax.checkpoint as ocp

from superalign.core.errors import ConfigError, first_line
from superalign.results.files import set_aside

log = logging.getLogger("superalign")


class Checkpointer:
  """A thin CheckpointManager around a pytree of arrays plus a JSON dict of loop state."""

  def __init__(self, directory: str, every: int, keep: int):
    self.directory = os.path.abspath(directory)
    self.every = every
    self.keep = keep
    self.manager = self._manager()

  def _manager(self) -> ocp.CheckpointManager:
    # An unfinished save (``<step>.orbax-checkpoint-tmp``: a crash or a full disk) is removed.
    return ocp.CheckpointManager(self.directory, options=ocp.CheckpointManagerOptions(
        max_to_keep=self.keep, create=True, cleanup_tmp_directories=True))

  def latest_step(self) -> int | None:
    """The newest saved step, or None when there is none."""
    return self.manager.latest_step()

  def path(self, step: int) -> str:
    """The folder of step ``step``'s checkpoint."""
    return os.path.join(self.directory, str(step))

  def due(self, step: int) -> bool:
    """Whether ``step`` is a periodic save (a multiple of ``every``; never when ``every`` is 0)."""
    return self.every > 0 and step % self.every == 0

  def save(self, step: int, items: Any, meta: dict) -> None:
    """Starts an asynchronous save of ``items`` (a pytree of arrays, e.g.
    ``TrainState.checkpoint_items()``) and the JSON dict ``meta`` as step ``step``; a step
    already saved is left as it is. A failed write (a full disk) is raised as OSError."""
    with _os_errors(self.directory):  # an earlier async save's failure may surface here too
      if step not in self.manager.all_steps():
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(items), meta=ocp.args.JsonSave(meta)))

  def restore(self, step: int, like: Any) -> tuple[Any, dict]:
    """Restores into the layout (shapes, dtypes, shardings) of the live pytree ``like``."""
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), like)
    out = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    return out["state"], dict(out["meta"])

  def restore_latest(self, like: Any) -> tuple[int, Any, dict] | None:
    """``(step, state, meta)`` of the newest step that restores, or None when there is none.

    A newer step that does not restore (a truncated or missing file: a crash or a full disk
    during the save, or a damaged disk) is moved to ``<step>.bad`` beside it, with one warning
    line, and the run falls back to the step before. If no step restores, nothing is moved and
    a ConfigError names the folder to move aside.
    """
    failed = []
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        state, meta = self.restore(step, like)
      except Exception as e:  # Orbax, TensorStore and JSON errors alike: the step is unreadable
        failed.append((step, _unreadable(e)))
        continue
      if failed:
        self._set_aside([s for s, _ in failed])
        log.warning("%s: step %s unreadable (%s); kept as %s.bad, resuming from step %d",
                    self.directory, failed[0][0], failed[0][1], failed[0][0], step)
      return step, state, meta
    if failed:
      raise ConfigError(f"{self.directory}: no checkpoint step restores (step {failed[0][0]}: "
                        f"{failed[0][1]}); move that folder aside to train this stage from the "
                        "start")
    return None

  def _set_aside(self, bad_steps: list[int]) -> None:
    self.manager.close()
    if jax.process_index() == 0:
      for step in bad_steps:
        set_aside(os.path.join(self.directory, str(step)))
    self.manager = self._manager()

  def wait(self) -> None:
    """Blocks until the pending asynchronous saves are written."""
    with _os_errors(self.directory):
      self.manager.wait_until_finished()

  def close(self) -> None:
    """Waits for the pending saves, then closes the manager."""
    with _os_errors(self.directory):
      self.manager.wait_until_finished()
      self.manager.close()


def _unreadable(e: BaseException) -> str:
  """Why a step does not restore, in one short line: TensorStore's message names an array index
  and then prints a whole spec object; the error it was raised from says what is wrong."""
  text = first_line(e)
  if "See full TensorStore details" in text:
    text = (first_line(e.__cause__) if e.__cause__ else
            text.split(" See full TensorStore details")[0])
  return re.sub(r' in OCDBT database at local file "[^"]*"', "", text)[:200]  # the folder is named


@contextlib.contextmanager
def _os_errors(directory: str):
  """TensorStore reports a failed write (a full disk) from Orbax's save threads as a ValueError
  carrying ``[os_error_code='28']``: raise it as the OSError it is, so the launcher reports it
  in one line like any other disk error."""
  try:
    yield
  except (ValueError, RuntimeError) as e:
    code = re.search(r"os_error_code='(\d+)'", str(e))
    if not code:
      raise
    number = int(code.group(1))
    raise OSError(number, os.strerror(number), directory) from e

