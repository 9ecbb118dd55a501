"""The in-memory form every data source produces."""

from __future__ import annotations

import dataclasses

import numpy as np

from superalign.core.errors import ConfigError
from superalign.core.specs import InputSpec


class DataError(ConfigError):
  """A data source cannot be loaded; the message names the source and what would be valid."""


@dataclasses.dataclass(frozen=True)
class Source:
  """A labelled pool to split, plus the source's own test set when it has one.

  ``x`` is float32 (vector or image, ``[N, H, W, C]``) or int32 token ids ``[N, length]``.
  """
  name: str
  x: np.ndarray
  y: np.ndarray
  spec: InputSpec
  test_x: np.ndarray | None = None
  test_y: np.ndarray | None = None

  def __post_init__(self):
    if len(self.x) != len(self.y):
      raise DataError(f"{self.name}: {len(self.x)} inputs but {len(self.y)} labels")
