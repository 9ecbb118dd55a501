"""The training metrics' writer: one JSON row per logged step in ``metrics.jsonl``, mirrored to
TensorBoard, and the rows read back."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Mapping

import jax

from superalign.results import files

log = logging.getLogger("superalign")


def _summary_writer():
  """tensorboardX's ``SummaryWriter``, imported without PyTorch: its writer module imports
  ``torch`` when installed (4 s, only to accept torch tensors, which we never log), so each
  launch of a process that logs would pay for it. An already imported ``torch`` is left as is."""
  if "torch" in sys.modules:
    from tensorboardX import SummaryWriter
    return SummaryWriter
  sys.modules["torch"] = None   # "import torch" raises ImportError: tensorboardX goes without
  try:
    from tensorboardX import SummaryWriter
  finally:
    del sys.modules["torch"]
  return SummaryWriter


class MetricWriter:
  """Appends one JSON object per logged step to ``metrics.jsonl`` and mirrors it to TensorBoard.

  Only process 0 writes. On resume, lines past the restored step are dropped first, so a run that
  was interrupted and resumed leaves the same file as one that was not.
  """

  def __init__(self, workdir: str, tag: str = "", resume_step: int | None = None):
    self.enabled = jax.process_index() == 0
    self.tag = tag
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if not self.enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    self.rewind(resume_step)
    try:
      SummaryWriter = _summary_writer()
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard", tag) if tag
                               else os.path.join(workdir, "tensorboard"))
    except ImportError:  # tensorboardX is a dependency; tolerate its absence in minimal installs.
      self._tb = None
    self._events = _held_errors(self._tb)

  def rewind(self, resume_step: int | None) -> None:
    """Drops this run's rows past ``resume_step``; a torn row (a crash or a full disk in mid-append,
    or bytes that are not UTF-8) is moved aside to ``metrics.jsonl.torn``, never silently lost."""
    if not self.enabled or not os.path.exists(self.path):
      return
    keep, torn = [], []
    for line, row in _rows(self.path):
      if row is None:
        torn.append(line if line.endswith(b"\n") else line + b"\n")
      elif row.get("run", "") != self.tag or (resume_step is not None and
                                              row.get("step", 0) <= resume_step):
        keep.append(line)
    if torn:
      with open(self.path + ".torn", "ab") as f:
        f.writelines(torn)
      log.warning("%s: %d torn row(s) moved to %s.torn", self.path, len(torn), self.path)
    def write(tmp):
      with open(tmp, "wb") as f:
        f.writelines(keep)
    files.atomic(self.path, write)

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    """Appends the row ``{"run", "step", **scalars}`` to ``metrics.jsonl`` and mirrors the
    scalars to TensorBoard (process 0 only); raises here the first error the TensorBoard writer
    kept."""
    if not self.enabled:
      return
    row = {"run": self.tag, "step": int(step), **{k: float(v) for k, v in scalars.items()}}
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")
    if self._tb is not None:
      for k, v in scalars.items():
        self._tb.add_scalar(k, float(v), int(step))
      if self._events is not None and self._events.error is not None:
        raise self._events.error   # here, in the main thread: the launcher's one line

  def close(self) -> None:
    """Never raises for the TensorBoard mirror (a failure there is raised by ``write``): it runs
    in ``finally`` blocks, where it would replace the run's own exception."""
    if self._tb is not None:
      self._tb.close()


class _HeldErrors:
  """The TensorBoard event file's record writer, keeping its first OSError instead of raising it.
  tensorboardX writes from a background thread and again at exit (atexit), so a full disk
  printed its tracebacks after the run's one-line error; ``MetricWriter.write`` raises the kept
  error in the main thread instead, and later writes are dropped."""

  def __init__(self, inner):
    self.inner, self.error = inner, None

  def _call(self, name: str, *args) -> None:
    if self.error is None:
      try:
        getattr(self.inner, name)(*args)
      except OSError as e:
        self.error = e

  def write(self, data) -> None:
    """Writes one record; an OSError is kept, not raised, and drops every later call."""
    self._call("write", data)

  def flush(self) -> None:
    """Flushes; an OSError is kept, not raised, and drops every later call."""
    self._call("flush")

  def close(self) -> None:
    """Closes the writer, ignoring an OSError."""
    try:
      self.inner.close()
    except OSError:  # closing flushes the buffer to the full disk once more
      pass


def _held_errors(tb) -> _HeldErrors | None:
  """Wraps ``tb``'s record writer (tensorboardX internals: None where they differ)."""
  events = getattr(getattr(getattr(tb, "file_writer", None), "event_writer", None),
                   "_ev_writer", None)
  if events is None or not hasattr(events, "_py_recordio_writer"):
    return None
  events._py_recordio_writer = _HeldErrors(events._py_recordio_writer)
  return events._py_recordio_writer


def _rows(path: str):
  """``(line, row)`` for every line (bytes) of a JSONL file; ``row`` is None for a line that is
  not UTF-8 or does not parse as a JSON object. A file that cannot be read at all is one
  DamagedFileError line."""
  lines = files.read_guarded(path, _lines, "move it aside or use a new workdir")
  for line in lines:
    try:
      row = json.loads(line.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
      row = None
    yield line, row if isinstance(row, dict) else None


def _lines(path: str) -> list[bytes]:
  with open(path, "rb") as f:
    return f.readlines()


def read_metrics(workdir: str) -> list[dict]:
  """The rows of ``metrics.jsonl`` (a torn or non-UTF-8 row is skipped)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  return [row for _, row in _rows(path) if row is not None]


class Progress:
  """A training loop's progress: a tqdm bar on a terminal, else a log line at each ``update``
  (the loop calls it every ``log_every`` steps)."""

  def __init__(self, total: int, initial: int, desc: str):
    self.bar = None
    self.desc = desc
    if sys.stderr.isatty():
      from tqdm.auto import tqdm
      self.bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, leave=False)
    self.t0, self.s0 = time.time(), initial

  def update(self, step: int, scalars: Mapping[str, float], n: int) -> None:
    """Reports step ``step`` with its ``scalars``: the bar advances ``n`` steps, or a log line
    gives them with the steps per second since the start."""
    text = " ".join(f"{k}={v:.4g}" for k, v in scalars.items())
    if self.bar is not None:
      self.bar.update(n)
      self.bar.set_postfix_str(text, refresh=False)
    else:
      rate = (step - self.s0) / max(time.time() - self.t0, 1e-9)
      log.info("%s step %d: %s (%.1f steps/s)", self.desc, step, text, rate)

  def close(self) -> None:
    """Closes the bar, if there is one."""
    if self.bar is not None:
      self.bar.close()
