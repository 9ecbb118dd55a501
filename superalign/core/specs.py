"""The contract between data and models: what one example looks like."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class InputSpec:
  """Per-example input shape and kind, and the label space."""
  shape: tuple[int, ...]
  # "vector", "image", "tokens" (a sequence of ids), or "records" (a set of rows of field ids,
  # ``shape = (positions, fields)``, read by an encoder: facts and, last, a question)
  kind: str
  num_classes: int
  vocab_size: int | None = None
  pad_id: int = 0                  # the token id that pads "tokens" inputs (right padding)

  INPUT_KINDS = ("vector", "image", "tokens", "records")
