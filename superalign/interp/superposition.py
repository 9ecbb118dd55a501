"""The toy model of superposition (Elhage et al. 2022) as a ground truth for sparse autoencoders.

``n_features`` sparse features (each active with probability ``p``, magnitude uniform(0, 1)) are
embedded by a fixed random matrix with unit-norm feature directions into ``d < n_features``
dimensions: ``x = f @ directions``. An SAE that works should find those directions among its
decoder rows; ``mean_max_cosine`` measures how well (Sharkey et al. 2022's MMCS). The fixed
embedding, not a trained toy autoencoder, is the usual ground-truth test: the planted directions
are known exactly.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from superalign.core.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class ToySuperposition:
  """Rows of the toy model of superposition: ``x`` ``[rows, d]`` activations, ``features``
  ``[rows, n_features]`` the planted feature values, ``directions`` ``[n_features, d]`` their unit
  directions, with ``x = features @ directions``."""
  x: np.ndarray            # [rows, d] float32 activations
  features: np.ndarray     # [rows, n_features] the planted feature values
  directions: np.ndarray   # [n_features, d] unit-norm feature directions


def feature_directions(n_features: int, d: int, seed: int = 0) -> np.ndarray:
  """``[n_features, d]`` random unit vectors (isotropic Gaussian, normalized)."""
  if n_features < 1 or d < 1:
    raise ConfigError(f"toy superposition: n_features={n_features}, d={d}: both must be >= 1")
  w = np.random.default_rng([seed, 0]).standard_normal((n_features, d))
  return (w / np.linalg.norm(w, axis=1, keepdims=True)).astype(np.float32)


def toy_superposition(num_rows: int, n_features: int, d: int, p: float, seed: int = 0,
                      directions: np.ndarray | None = None) -> ToySuperposition:
  """``num_rows`` activations of ``n_features`` sparse features in ``d`` dimensions.

  The directions depend on ``seed`` alone (or are given), the rows on ``(seed, num_rows)``, so
  a second call with another seed but the same ``directions`` draws fresh rows of the same
  model (a held-out set).
  """
  if not 0 < p <= 1:
    raise ConfigError(f"toy superposition: p={p}: the feature probability must be in (0, 1]")
  if num_rows < 1:
    raise ConfigError(f"toy superposition: num_rows={num_rows}: must be >= 1")
  if directions is None:
    directions = feature_directions(n_features, d, seed)
  directions = np.asarray(directions, np.float32)
  if directions.shape != (n_features, d):
    raise ConfigError(f"toy superposition: directions of shape {directions.shape}, expected "
                      f"({n_features}, {d})")
  rng = np.random.default_rng([seed, 1, num_rows])
  active = rng.random((num_rows, n_features)) < p
  features = (active * rng.random((num_rows, n_features))).astype(np.float32)
  return ToySuperposition(features @ directions, features, directions)


def max_cosines(learned: np.ndarray, true: np.ndarray) -> np.ndarray:
  """For each true direction (rows of ``true``), its largest cosine with any learned row."""
  learned, true = np.asarray(learned, np.float64), np.asarray(true, np.float64)
  if learned.ndim != 2 or true.ndim != 2 or learned.shape[1] != true.shape[1]:
    raise ConfigError(f"max cosines: learned {learned.shape} and true {true.shape} must be "
                      "[rows, d] with the same d")
  unit = lambda w: w / np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-12)
  return (unit(true) @ unit(learned).T).max(axis=1)


def mean_max_cosine(learned: np.ndarray, true: np.ndarray) -> float:
  """Mean over true features of the max cosine with any learned latent (decoder row); 1 means
  every planted direction is recovered exactly. Signed: a flipped direction does not count."""
  return float(max_cosines(learned, true).mean())
