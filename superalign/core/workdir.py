"""The workdir every run writes: prepared once, artefacts cached, results written at the end.

``prepare`` makes the directory and saves ``config.json`` (a rerun with a different config is
refused, naming the first difference); ``cached`` computes an artefact once per workdir, so an
interrupted run picks up where it stopped; ``finish`` adds the wall time, draws the learning
curves and the protocol's plots, and writes ``results.json``. Only process 0 writes files.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import time
from typing import Callable

import jax
import numpy as np

from superalign.core import plots
from superalign.core.errors import ConfigError

log = logging.getLogger("superalign")


def prepare(config, workdir: str | None, root: str = "runs") -> str:
  """The absolute workdir (fresh ``<root>/<kind>-<timestamp>`` when ``None``) with the resolved
  config saved; raises ConfigError if it holds a run of another config or is not a directory."""
  if workdir is None:
    workdir = fresh(root, config.kind)
  elif not workdir.strip():
    raise ConfigError("--workdir='': empty; give a directory, or leave --workdir out for a "
                      f"fresh {root}/<kind>-<timestamp>")
  workdir = os.path.abspath(os.path.expanduser(workdir))
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ConfigError(f"--workdir={workdir}: exists and is not a directory")
  path = os.path.join(workdir, "config.json")
  resolved = json.loads(config.to_json_best_effort())
  if os.path.exists(path):
    try:
      with open(path) as f:
        saved = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError):
      raise ConfigError(f"{path}: not valid JSON (an interrupted write?); move it aside to resume "
                        "this workdir with the current config, or choose a new --workdir") from None
    diff = first_difference(saved, resolved)
    if diff:
      raise ConfigError(f"--workdir={workdir}: holds a run with a different config ({diff}); "
                        "resume with the same config or choose a new --workdir")
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    write_json(path, resolved, sort_keys=True)
  return workdir


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
  raise ConfigError(f"{root}: no free name for a new {kind} run this second; pass --workdir")


def first_difference(a, b, prefix: str = "") -> str | None:
  """``"key: old then, new now"`` for the first differing leaf of two nested dicts."""
  if isinstance(a, dict) and isinstance(b, dict):
    for key in sorted(set(a) | set(b)):
      d = first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
      if d:
        return d
    return None
  return None if a == b else f"{prefix[:-1]}: {a!r} then, {b!r} now"


def write_json(path: str, value, **kw) -> None:
  """Atomically: a reader sees the old file or the new one, never half of one."""
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(value, f, indent=2, **kw)
  os.replace(tmp, path)


def cached(workdir: str, name: str, compute: Callable[[], dict]) -> dict[str, np.ndarray]:
  """``compute()`` (a dict of arrays) once per workdir, saved as ``<workdir>/<name>.npz``."""
  path = os.path.join(workdir, f"{name}.npz")
  if os.path.exists(path):
    with np.load(path) as saved:
      return dict(saved)
  t0 = time.time()
  out = {k: np.asarray(v) for k, v in compute().items()}
  log.info("%s: computed in %.1f s", name, time.time() - t0)
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez(path + ".tmp.npz", **out)
    os.replace(path + ".tmp.npz", path)
  return out


def finish(workdir: str, results: dict, started: float,
           plot: Callable[[dict, str], list[str]] | None = None,
           summary: Callable[[dict], str] | None = None) -> dict:
  """Wall time, plots (the protocol's and the learning curves, listed sorted), the printed
  summary, and ``results.json``."""
  results["wall_time_s"] = round(time.time() - started, 1)
  if jax.process_index() == 0:
    out_dir = os.path.join(workdir, "plots")
    paths = list(plot(results, out_dir)) if plot is not None else []
    paths += plots.learning_curves(workdir)
    results["plots"] = sorted(os.path.relpath(p, workdir) for p in paths)
  if summary is not None:
    results["summary"] = summary(results)
  if jax.process_index() == 0:
    write_json(os.path.join(workdir, "results.json"), results)
  return results
