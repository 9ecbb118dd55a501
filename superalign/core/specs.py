"""The contract between data and models: what one example looks like."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class InputSpec:
  """Per-example input shape and kind, and the label space."""
  shape: tuple[int, ...]
  kind: str                  # "vector", "image" or "tokens"
  num_classes: int
  vocab_size: int | None = None

  INPUT_KINDS = ("vector", "image", "tokens")
