"""Files so that nothing a run writes is lost: temp-and-rename (``atomic``), bad files set aside
(never deleted), strict JSON, and artefacts computed once per workdir (``cached``: an
interrupted run picks up where it stopped)."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from typing import Callable

import jax
import numpy as np

log = logging.getLogger("superalign")


def atomic(path: str, write: Callable[[str], None], tmp_suffix: str = ".tmp") -> None:
  """``write(tmp)`` then rename onto ``path``: a reader sees the old file or the new one, never
  half of one, and a failed write (a full disk) leaves no temporary behind."""
  tmp = path + tmp_suffix
  try:
    write(tmp)
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise


def set_aside(path: str, suffix: str = "bad") -> str:
  """Renames ``path`` to ``path.<suffix>`` (``path.<suffix>-2`` ... if taken) and returns the new
  name: a file a run cannot use is kept, never deleted."""
  for n in range(1, 1000):
    target = f"{path}.{suffix}" + (f"-{n}" if n > 1 else "")
    if not os.path.exists(target):
      os.rename(path, target)
      return target
  raise FileExistsError(f"{path}: too many copies set aside already ({path}.{suffix}-*)")


def write_json(path: str, value, **kw) -> None:
  """Strict JSON (a NaN or infinite number is written as ``null``), atomically: a reader sees
  the old file or the new one, never half of one, and a failed write leaves no temporary."""
  atomic(path, lambda tmp: _dump(tmp, _finite(value), kw))


def _dump(tmp: str, value, kw) -> None:
  with open(tmp, "w") as f:
    json.dump(value, f, indent=2, allow_nan=False, **kw)


def _finite(value):
  if isinstance(value, float):
    return value if math.isfinite(value) else None
  if isinstance(value, dict):
    return {k: _finite(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_finite(v) for v in value]
  return value


def cached(workdir: str, name: str, compute: Callable[[], dict]) -> dict[str, np.ndarray]:
  """``compute()`` (a dict of arrays) once per workdir, saved as ``<workdir>/<name>.npz``."""
  path = os.path.join(workdir, f"{name}.npz")
  if os.path.exists(path):
    try:
      with np.load(path) as saved:
        return dict(saved)
    except Exception as e:  # truncated or overwritten: zipfile, pickle and EOF errors alike
      kept = set_aside(path) if jax.process_index() == 0 else path
      log.warning("%s: unreadable (%s); recomputing it, the bad file is kept as %s", path,
                  _first_line(e), kept)
  t0 = time.time()
  out = {k: np.asarray(v) for k, v in compute().items()}
  log.info("%s: computed in %.1f s", name, time.time() - t0)
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic(path, lambda tmp: np.savez(tmp, **out), ".tmp.npz")
  return out


def _first_line(e: BaseException) -> str:
  text = str(e).strip()
  return text.splitlines()[0] if text else type(e).__name__
