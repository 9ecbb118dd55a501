"""Files so that nothing written is lost: temp-and-rename, and bad files set aside."""

from __future__ import annotations

import contextlib
import os
from typing import Callable

from superalign.core.errors import ConfigError


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
  raise ConfigError(f"{path}: too many copies set aside already ({path}.{suffix}-*)")
