"""Files so that nothing a run writes is lost: temp-and-rename (``atomic``), bad files set aside
(never deleted), strict JSON, artefacts computed once per workdir (``cached``: an interrupted
run picks up where it stopped), and the one guarded path for reading a file a user or an earlier
run made (``read_guarded``: a damaged file is one line naming it and what to do)."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import shutil
import time
import uuid
from typing import Callable, Iterable, Mapping, TypeVar

import jax
import numpy as np

log = logging.getLogger("superalign")
T = TypeVar("T")


class DamagedFileError(ValueError):
  """A file cannot be used as it is (missing, truncated, garbage, or holding the wrong contents):
  the message is one line naming the file, what is wrong, and what to do. The launcher prints it
  without a traceback."""


def read_guarded(path: str, read: Callable[[str], T], fix: str = "") -> T:
  """``read(path)``, with every way a damaged file fails (an OS error, a truncated or garbled
  archive, bad JSON or UTF-8, a missing key) as one DamagedFileError:
  ``<path>: <what read raised>; <fix>``. ``read`` may raise DamagedFileError itself for contents
  that parse but are wrong (a missing array, a short shard); it passes through unchanged."""
  try:
    return read(path)
  except DamagedFileError:
    raise
  except Exception as e:  # OSError, zipfile/pickle/EOF, JSON, UnicodeDecode, safetensors, KeyError
    raise DamagedFileError(f"{path}: {_reason(e)}" + (f"; {fix}" if fix else "")) from e


def load_json(path: str):
  """A UTF-8 JSON file, unguarded: for the ``read`` of ``read_guarded``."""
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _reason(e: BaseException) -> str:
  if isinstance(e, KeyError):
    return f"has no entry {e.args[0]!r}" if e.args else "a missing entry"
  if isinstance(e, OSError) and e.strerror:
    return e.strerror.lower()
  if isinstance(e, OSError):  # raised by a native reader (safetensors) with no errno or strerror
    return _first_line(e)
  return f"unreadable ({type(e).__name__}: {_first_line(e)})"


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


def atomic_folder(path: str, write: Callable[[str], None]) -> None:
  """``write(tmp)`` into a fresh folder beside ``path``, which then takes ``path``'s place whole:
  a reader sees the old folder or the new one, never a mix, and a failed write leaves the old one
  as it was and no temporary."""
  parent, name = os.path.split(os.path.abspath(path))
  if os.path.exists(parent) and not os.path.isdir(parent):  # makedirs would say "file exists"
    raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), parent)
  os.makedirs(parent, exist_ok=True)
  tmp = os.path.join(parent, f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
  os.mkdir(tmp)
  try:
    write(tmp)
    _swap(tmp, os.path.join(parent, name))
  finally:
    shutil.rmtree(tmp, ignore_errors=True)   # the new folder after a failure, the old after a swap


def _swap(new: str, path: str) -> None:
  """``new`` takes ``path``'s place and ``path``'s old folder ends under the name ``new``: in one
  step where the kernel and file system exchange two names (Linux ``renameat2``), else by two
  renames (a crash between them leaves the old folder as ``.<name>.old-*``)."""
  if not os.path.exists(path) or (os.path.isdir(path) and not os.listdir(path)):
    os.replace(new, path)    # onto nothing or an empty folder
    return
  if _exchange(new, path):
    return
  retired = new.replace(".tmp-", ".old-", 1)
  os.rename(path, retired)
  try:
    os.rename(new, path)
  except BaseException:
    os.rename(retired, path)
    raise
  os.rename(retired, new)


def _exchange(a: str, b: str) -> bool:
  """Swaps the names ``a`` and ``b`` atomically; False where the system cannot."""
  import ctypes
  try:
    renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
  except (OSError, AttributeError):
    return False
  at_fdcwd, rename_exchange = -100, 2
  return renameat2(at_fdcwd, a.encode(), at_fdcwd, b.encode(), rename_exchange) == 0


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


def cached(workdir: str, name: str, compute: Callable[[], dict],
           keys: Iterable[str] | Mapping[str, tuple[int, ...]] = ()) -> dict[str, np.ndarray]:
  """``compute()`` (a dict of arrays) once per workdir, saved as ``<workdir>/<name>.npz``. A saved
  file that is unreadable, or lacks one of ``keys`` (the arrays its readers index), is set aside
  and computed again; so is one whose arrays do not begin with the shapes ``keys`` maps them to,
  where it is a mapping (``{"test": (seeds, rows)}``: a file of another run's sizes)."""
  path = os.path.join(workdir, f"{name}.npz")
  if os.path.exists(path):
    try:
      return read_guarded(path, lambda p: _load_npz(p, keys))
    except DamagedFileError as e:
      kept = set_aside(path) if jax.process_index() == 0 else path
      log.warning("%s; recomputing it, the bad file is kept as %s", e, kept)
  t0 = time.time()
  out = {k: np.asarray(v) for k, v in compute().items()}
  log.info("%s: computed in %.1f s", name, time.time() - t0)
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic(path, lambda tmp: np.savez(tmp, **out), ".tmp.npz")
  return out


def _load_npz(path: str, keys: Iterable[str]) -> dict[str, np.ndarray]:
  with np.load(path) as saved:
    out = dict(saved)
  missing = [k for k in keys if k not in out]
  if missing:
    raise DamagedFileError(f"{path}: has no array {missing[0]!r} (holds {', '.join(out) or 'none'})")
  for k, lead in (keys.items() if isinstance(keys, Mapping) else ()):
    if out[k].shape[:len(lead)] != tuple(lead):
      raise DamagedFileError(f"{path}: array {k!r} has shape {out[k].shape}, not {tuple(lead)} "
                             "first")
  return out


def _first_line(e: BaseException) -> str:
  text = str(e).strip()
  return text.splitlines()[0] if text else type(e).__name__
