"""Batches as a pure function of (seed, step): resuming at step s needs no replay.

Each epoch is a fresh permutation drawn from ``(seed, epoch)``; step s reads the slice
``s mod steps_per_epoch`` of epoch ``s // steps_per_epoch`` (the ragged tail is dropped).
"""

from __future__ import annotations

import functools

import jax
import numpy as np


@functools.lru_cache(maxsize=64)  # one epoch per stacked seed
def _permutation(seed: int, epoch: int, n: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(n)


def steps_per_epoch(n: int, batch_size: int) -> int:
  """Full batches of ``batch_size`` in ``n`` examples (the ragged tail dropped), at least 1."""
  return max(n // batch_size, 1)


def train_indices(seed: int, step: int, n: int, batch_size: int) -> np.ndarray:
  """The example indices of global batch ``step``."""
  if batch_size > n:
    # A batch larger than the split: sample with replacement, still a function of (seed, step).
    return np.random.default_rng([seed, step, 1]).integers(0, n, batch_size)
  per_epoch = steps_per_epoch(n, batch_size)
  epoch, pos = divmod(step, per_epoch)
  return _permutation(seed, epoch, n)[pos * batch_size:(pos + 1) * batch_size]


def eval_indices(n: int, batch_size: int) -> list[tuple[np.ndarray, int]]:
  """Fixed-size batches covering ``range(n)`` in order: ``(indices, valid)``; the last is
  padded by repeating index 0 and only its first ``valid`` rows count."""
  out = []
  for start in range(0, n, batch_size):
    idx = np.arange(start, min(start + batch_size, n))
    valid = len(idx)
    out.append((np.concatenate([idx, np.zeros(batch_size - valid, idx.dtype)]), valid))
  return out


def process_slice(indices: np.ndarray) -> np.ndarray:
  """This process's contiguous share of a global batch (multi-host data loading); the batch
  is the last axis (a leading axis of stacked runs is kept whole)."""
  count, index = jax.process_count(), jax.process_index()
  per = indices.shape[-1] // count
  return indices[..., index * per:(index + 1) * per]
