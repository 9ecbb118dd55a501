"""Named random streams: every consumer of randomness draws from ``(seed, name)``.

A stream is identified by its name's CRC-32, not by an offset from the run's seed, so adding a
stage (or reordering stages) never shifts the numbers another stage draws.
"""

from __future__ import annotations

import zlib

import numpy as np


def stream_id(name: str) -> int:
  """The stream number of ``name``: its CRC-32."""
  return zlib.crc32(name.encode())


def numpy_rng(seed: int, name: str, *index: int) -> np.random.Generator:
  """A NumPy generator for stream ``name`` of run ``seed`` (``index``: e.g. a step number)."""
  return np.random.default_rng([int(seed), stream_id(name), *map(int, index)])


def stream_seed(seed: int, name: str) -> int:
  """A 31-bit integer seed for stream ``name`` of run ``seed`` (for ``jax.random.key`` or an
  API that takes an integer)."""
  state = np.random.SeedSequence([int(seed), stream_id(name)]).generate_state(1)[0]
  return int(state >> 1)
