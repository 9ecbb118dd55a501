"""PGR, agreement, misfit, and their summaries over pairs (estimates over seeds: results.estimates)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from superalign.results.estimates import mean_ci

# A ceiling must beat its weak supervisor by this much for PGR to be defined.
MIN_GAP = 1e-6


def pgr(weak: float, w2s: float, ceiling: float) -> float:
  """Performance gap recovered, (w2s - weak) / (ceiling - weak); NaN when the ceiling is not
  above the weak model (the gap is empty and PGR is flagged, not divided by zero)."""
  gap = ceiling - weak
  if not gap > MIN_GAP:
    return math.nan
  return (w2s - weak) / gap


def agreement(probs_a: np.ndarray, probs_b: np.ndarray) -> float:
  """Fraction of examples where two models' argmax predictions agree."""
  return float(np.mean(np.argmax(probs_a, -1) == np.argmax(probs_b, -1)))


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
  """Mean squared error of probabilities against one-hot labels (error in squared loss)."""
  onehot = np.eye(probs.shape[-1])[labels]
  return float(np.mean(np.sum((probs - onehot) ** 2, -1)))


def misfit(student: np.ndarray, weak: np.ndarray) -> float:
  """Charikar et al.'s misfit d(w2s, weak): mean squared distance between the predictions."""
  return float(np.mean(np.sum((student - weak) ** 2, -1)))


def median_ignoring_nan(values: Sequence[float]) -> float:
  """The median of the non-NaN ``values`` (NaN when every value is NaN)."""
  v = [x for x in values if not math.isnan(x)]
  return float(np.median(v)) if v else math.nan


def over_seeds(values: Sequence[float]) -> dict:
  """An estimate over seeds (``results.estimates.mean_ci``: NaN entries flagged) that keeps each
  seed's value under ``per_seed``."""
  values = [float(v) for v in values]
  return {"per_seed": values, **mean_ci(values)}
