"""Synthetic task generators with known structure, deterministic in a seed."""

from __future__ import annotations

import numpy as np

from superalign.core.specs import InputSpec
from superalign.data.source import Source


def blobs(num_examples: int = 4000, dim: int = 16, num_classes: int = 4, seed: int = 0) -> Source:
  """A Gaussian mixture: one unit-variance blob per class around a random centre (norm 3)."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(num_classes, dim))
  centres *= 3.0 / np.linalg.norm(centres, axis=1, keepdims=True)
  y = rng.integers(0, num_classes, num_examples).astype(np.int32)
  x = (centres[y] + rng.normal(size=(num_examples, dim))).astype(np.float32)
  return Source("synthetic:blobs", x, y, InputSpec((dim,), "vector", num_classes))


def majority(num_examples: int = 4000, length: int = 16, vocab_size: int = 32,
             seed: int = 0) -> Source:
  """Token sequences of variable length (right-padded with 0); label 1 when token 2 occurs more
  often than token 3. Needs attention over the whole sequence, so it exercises the transformer."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(2, vocab_size, (num_examples, length)).astype(np.int32)
  lengths = rng.integers(length // 2, length + 1, num_examples)
  tokens[np.arange(length)[None, :] >= lengths[:, None]] = 0
  y = ((tokens == 2).sum(1) > (tokens == 3).sum(1)).astype(np.int32)
  return Source("synthetic:majority", tokens, y, InputSpec((length,), "tokens", 2, vocab_size))


GENERATORS = {"blobs": blobs, "majority": majority}
