"""Deterministic, named, disjoint splits of a source.

The pool is permuted once by ``split_seed`` and cut into consecutive pieces in the order the
fractions are given, so every split is disjoint from every other by construction. A split named
``test`` is the source's own test set when it has one. Each split keeps the global ``ids`` of its
examples (pool index, or pool size + test index) so disjointness can be checked, not assumed.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np

from superalign.data.source import DataError, Source


@dataclasses.dataclass(frozen=True)
class Split:
  """One split: inputs ``x`` (images ``[rows, height, width, channels]``, vectors
  ``[rows, features]`` or token ids ``[rows, length]``, as the source's), labels ``y`` ``[rows]``
  and ``ids`` ``[rows]``, the examples' global indices (pool index, or pool size + test index)."""
  x: np.ndarray
  y: np.ndarray
  ids: np.ndarray

  def __len__(self) -> int:
    return len(self.y)



def make_splits(source: Source, fractions: Mapping[str, float], split_seed: int = 0,
                limit: int | None = None) -> dict[str, Split]:
  """Cuts ``source`` into ``fractions`` (name -> fraction of the pool, summing to at most 1).

  ``limit`` caps the pool (and the native test set) for quick runs. Vector inputs are
  standardized with the mean and standard deviation of the first split.
  """
  fractions = dict(fractions)
  use_native_test = source.test_x is not None and "test" in fractions
  pool_fractions = {k: v for k, v in fractions.items() if not (use_native_test and k == "test")}
  total = sum(pool_fractions.values())
  if any(v <= 0 for v in fractions.values()) or total > 1.0 + 1e-9:
    raise DataError(f"data.splits={fractions}: fractions must be positive and sum to at most 1")
  n_pool = len(source.y) if limit is None else min(limit, len(source.y))
  order = np.random.default_rng(split_seed).permutation(len(source.y))[:n_pool]
  splits: dict[str, Split] = {}
  # Cut at rounded cumulative boundaries so rounding errors do not add up across splits.
  bounds = np.round(np.cumsum([0.0, *pool_fractions.values()]) * n_pool).astype(int)
  for (name, frac), start, stop in zip(pool_fractions.items(), bounds[:-1], bounds[1:]):
    idx = np.sort(order[start:stop])
    if len(idx) == 0:
      raise DataError(f"data.splits.{name}={frac}: gives no examples out of {n_pool}")
    splits[name] = Split(source.x[idx], source.y[idx], idx)
  if use_native_test:
    n_test = len(source.test_y) if limit is None else min(limit, len(source.test_y))
    idx = np.arange(n_test)
    splits["test"] = Split(source.test_x[idx], source.test_y[idx], len(source.y) + idx)
  if source.spec.kind == "vector":
    splits = _standardize(splits, next(iter(pool_fractions)))
  return {name: splits[name] for name in fractions}


def _standardize(splits: dict[str, Split], fit_on: str) -> dict[str, Split]:
  mean = splits[fit_on].x.mean(0)
  std = splits[fit_on].x.std(0) + 1e-6
  return {k: dataclasses.replace(s, x=((s.x - mean) / std).astype(np.float32))
          for k, s in splits.items()}
