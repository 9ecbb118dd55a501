"""The workdir every run writes: claimed and locked first, results written at the end.

``claim`` makes and locks the directory and saves ``config.json`` (a rerun with a different config
is refused, naming the first difference); ``finish`` adds the wall time, draws the learning
curves and the protocol's plots, and writes ``results.json``. Only process 0 writes files. (The
artefacts a protocol computes once per workdir are ``results.files.cached``'s.)
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import errno
import fcntl
import json
import logging
import os
import shutil
import time
from typing import Callable

import jax
import matplotlib.pyplot as plt

from superalign.results import files
from superalign.results import figures as plots
from superalign.results.files import write_json
from superalign.results.metrics import read_metrics
from superalign.core.errors import ConfigError

log = logging.getLogger("superalign")


@contextlib.contextmanager
def claim(config, workdir: str | None, root: str = "runs"):
  """The absolute workdir (fresh ``<root>/<kind>-<timestamp>`` when ``None``), locked for the
  duration of the block, with the resolved config saved.

  A workdir holding a run of another config is refused, unless it holds no work yet (no
  checkpoint, no cached artefact, no results: a run that failed before training), which then
  takes the new config and keeps the old one aside. Bad paths raise ConfigError. The messages
  say "workdir", never the launcher's ``--workdir``: notebooks and scripts claim one too.
  """
  if workdir is None:
    workdir = fresh(root, config.kind)
  elif not workdir.strip():
    raise ConfigError("workdir '': empty; give a directory, or none at all for a fresh "
                      f"{root}/<kind>-<timestamp>")
  workdir = os.path.abspath(os.path.expanduser(workdir))
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ConfigError(f"workdir {workdir}: exists and is not a directory")
  if jax.process_index() == 0:
    with _os_errors(workdir):
      os.makedirs(workdir, exist_ok=True)
  with lock(workdir):
    path = os.path.join(workdir, "config.json")
    resolved = json.loads(config.to_json_best_effort())
    if os.path.exists(path):
      _check_same_config(workdir, path, resolved)
    if jax.process_index() == 0:
      with _os_errors(workdir):
        write_json(path, resolved, sort_keys=True)
    yield workdir


def _check_same_config(workdir: str, path: str, resolved: dict) -> None:
  saved = files.read_guarded(path, _read_json, _FIX_CONFIG)
  kinds = saved.get("kind"), resolved.get("kind")
  # Another protocol's run differs everywhere: its kind says so, not its first differing key.
  diff = (f"kind: {kinds[0]!r} then, {kinds[1]!r} now" if kinds[0] != kinds[1] else
          first_difference(saved, resolved))
  if not diff:
    return
  if holds_work(workdir):
    raise ConfigError(f"workdir {workdir}: holds a run with a different config ({diff}); "
                      "resume with the same config or choose another workdir")
  kept = [files.set_aside(p, "old") for p in (path, os.path.join(workdir, "metrics.jsonl"))
          if os.path.exists(p)]
  log.warning("%s: held no checkpoint or finished stage, so it takes the new config (%s); "
              "the old files are kept as %s", workdir, diff,
              ", ".join(os.path.basename(p) for p in kept))


_FIX_CONFIG = ("move it aside to resume this workdir with the current config, or choose another "
               "workdir")


def _read_json(path: str):
  with open(path) as f:
    try:
      saved = json.load(f)
    except ValueError:   # JSON or UTF-8
      raise files.DamagedFileError(f"{path}: not valid JSON (an interrupted write?); "
                                   f"{_FIX_CONFIG}") from None
  if not isinstance(saved, dict):
    raise files.DamagedFileError(f"{path}: holds a JSON {type(saved).__name__}, not a run's "
                                 f"config; {_FIX_CONFIG}")
  if "kind" not in saved:   # another program's (a Hugging Face checkpoint's): never set aside
    what = (f"model_type {saved['model_type']!r}: a Hugging Face checkpoint's"
            if "model_type" in saved else "another program's?")
    raise files.DamagedFileError(f"{path}: not a superalign run's config (no 'kind'; {what}); "
                                 f"{_FIX_CONFIG}")
  return saved


def holds_work(workdir: str) -> bool:
  """Whether anything a rerun would reuse is here: a checkpoint step, a cached ``.npz``
  artefact, or ``results.json``."""
  if os.path.exists(os.path.join(workdir, "results.json")):
    return True
  for dirpath, dirnames, filenames in os.walk(workdir):
    if any(f.endswith(".npz") for f in filenames):
      return True
    if os.path.relpath(dirpath, workdir).split(os.sep)[0] == "checkpoints" and any(
        d.isdigit() for d in dirnames):
      return True
  return False


@contextlib.contextmanager
def lock(workdir: str):
  """An exclusive lock on ``<workdir>/.lock`` while the block runs (process 0). The kernel drops
  it when the holder exits, however it exits, so a crashed run leaves no stale lock."""
  if jax.process_index() != 0:
    yield
    return
  path = os.path.join(workdir, ".lock")
  with _os_errors(workdir):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
      raise ConfigError(f"workdir {workdir}: in use by another superalign run (pid {holder}); "
                        "wait for it to finish, or choose another workdir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    yield
  finally:
    os.close(fd)


@contextlib.contextmanager
def _os_errors(workdir: str):
  """An OSError making or writing the workdir (read-only, ``/proc``, below a file, a full disk)
  as one ConfigError line naming the path and the reason."""
  try:
    yield
  except OSError as e:
    raise ConfigError(os_error_line(workdir, e)) from None


def os_error_line(workdir: str, e: OSError) -> str:
  """The one line for an OSError writing ``workdir``: the reason, the free space when the disk is
  full, and the file when it is not the workdir itself."""
  reason = e.strerror or str(e) or type(e).__name__
  if e.errno == errno.ENOSPC:
    reason += f", {free_space(workdir)} free; free some space and run the same command to resume"
  where = f" ({e.filename})" if e.filename and os.fspath(e.filename) != workdir else ""
  return f"workdir {workdir}: cannot write there: {reason}{where}"


def blocked_line(workdir: str, e: OSError) -> str | None:
  """One line for a path inside ``workdir`` that is in the way of what the run writes there (a
  file where the run makes a folder, a folder where it writes a file), or None for an error
  elsewhere."""
  if e.errno not in (errno.EEXIST, errno.EISDIR, errno.ENOTDIR) or not e.filename:
    return None
  path = os.path.abspath(os.fspath(e.filename2 if e.errno == errno.EISDIR and e.filename2
                                   else e.filename))
  while e.errno == errno.ENOTDIR and not os.path.lexists(path) and path != os.path.dirname(path):
    path = os.path.dirname(path)   # the file below which a folder could not be made
  workdir = os.path.abspath(workdir)
  if not path.startswith(workdir + os.sep):
    return None
  what = "a folder" if os.path.isdir(path) else "a file"
  return (f"{path}: {what} in the way of what this run writes there; move it aside to resume "
          f"workdir {workdir}, or choose another workdir")


def free_space(path: str) -> str:
  """Free space on the file system holding ``path`` (its nearest existing parent), e.g. "12 MB"."""
  path = os.path.abspath(path)
  while not os.path.exists(path) and path != os.path.dirname(path):
    path = os.path.dirname(path)
  try:
    free = shutil.disk_usage(path).free
  except OSError:
    return "unknown"
  for unit in ("bytes", "kB", "MB", "GB", "TB"):
    if free < 1000 or unit == "TB":
      return f"{free:.0f} {unit}"
    free /= 1000


def fresh(root: str, kind: str) -> str:
  """A new ``<root>/<kind>-<timestamp>[-N]``, claimed by creating it (``mkdir`` is atomic, so two
  runs started in the same second get different directories)."""
  stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
  os.makedirs(root, exist_ok=True)
  for n in range(1, 1000):
    path = os.path.join(root, f"{kind}-{stamp}" + (f"-{n}" if n > 1 else ""))
    try:
      os.mkdir(path)
      return path
    except FileExistsError:
      continue
  raise ConfigError(f"{root}: no free name for a new {kind} run this second; give a workdir")


def first_difference(a, b, prefix: str = "") -> str | None:
  """``"key: old then, new now"`` for the first differing leaf of two nested dicts."""
  if isinstance(a, dict) and isinstance(b, dict):
    for key in sorted(set(a) | set(b)):
      d = first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
      if d:
        return d
    return None
  return None if a == b else f"{prefix[:-1]}: {a!r} then, {b!r} now"


def learning_curves(workdir: str) -> list[str]:
  """PNG learning curves from ``metrics.jsonl``: one figure per metric name (train/loss,
  val/accuracy, ...), a line per run tag."""
  rows = read_metrics(workdir)
  series = collections.defaultdict(lambda: collections.defaultdict(list))
  for row in rows:
    for key, value in row.items():
      if key in ("run", "step"):
        continue
      series[key][row.get("run", "")].append((row["step"], value))
  out_dir = os.path.join(workdir, "plots")
  os.makedirs(out_dir, exist_ok=True)
  paths = []
  for key, runs in sorted(series.items()):
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for run, points in sorted(runs.items()):
      steps, values = zip(*points)
      ax.plot(steps, values, label=run or None, marker="." if len(points) < 30 else None)
    ax.set_xlabel("step")
    ax.set_ylabel(key)
    ax.grid(alpha=0.3)
    if any(runs):
      ax.legend(fontsize=7)
    paths.append(plots.save(fig, out_dir, key.replace("/", "_") + ".png"))
  return paths


def finish(workdir: str, results: dict, started: float,
           plot: Callable[[dict, str], list[str]] | None = None,
           summary: Callable[[dict], str] | None = None) -> dict:
  """Wall time, plots (the protocol's and the learning curves, listed sorted), the printed
  summary, and ``results.json``. The results are written before anything is drawn, so a failing
  plot or summary costs the figures, never the numbers."""
  results["wall_time_s"] = round(time.time() - started, 1)
  path = os.path.join(workdir, "results.json")
  if jax.process_index() == 0:
    write_json(path, results)
    out_dir = os.path.join(workdir, "plots")
    paths = list(plot(results, out_dir)) if plot is not None else []
    paths += learning_curves(workdir)
    results["plots"] = sorted(os.path.relpath(p, workdir) for p in paths)
  if summary is not None:
    results["summary"] = summary(results)
  if jax.process_index() == 0:
    write_json(path, results)
  return results
