"""The one schema of an estimate in ``results.json``, ``{"mean", "lo", "hi", "n"}`` (a 95%
interval ``[lo, hi]`` over ``n`` independent items or seeds; further keys may follow), the
statistics that make estimates, its checker and its one printed form (``format_estimate``)."""

from __future__ import annotations

import math
import statistics
from typing import Mapping, Sequence

import numpy as np

ESTIMATE_KEYS = ("mean", "lo", "hi", "n")


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
  """The share of rows whose argmax of ``probs`` ``[rows, classes]`` is the label ``labels``
  ``[rows]``."""
  return float(np.mean(np.argmax(probs, -1) == labels))


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
  """Area under the ROC curve for binary ``labels`` by the rank-sum formula (ties averaged).

  NaN when only one class is present.
  """
  scores = np.asarray(scores, np.float64)
  labels = np.asarray(labels).astype(bool)
  pos, neg = labels.sum(), (~labels).sum()
  if pos == 0 or neg == 0:
    return math.nan
  order = np.argsort(scores, kind="mergesort")
  ranks = np.empty(len(scores), np.float64)
  sorted_scores = scores[order]
  # average ranks within ties
  _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
  avg = first + (counts - 1) / 2.0 + 1.0
  ranks[order] = np.repeat(avg, counts)
  return float((ranks[labels].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def cross_entropy(probs: np.ndarray, labels: np.ndarray) -> float:
  """The mean negative log-probability of the label: ``probs`` ``[rows, classes]``, ``labels``
  ``[rows]`` (probabilities clipped at 1e-12)."""
  p = np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0)
  return float(-np.mean(np.log(p)))


def classification_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
  """``accuracy`` and ``loss`` (cross-entropy) of class probabilities ``probs``
  ``[rows, classes]`` against ``labels`` ``[rows]``, and ``auroc`` of class 1's probability when
  there are two classes."""
  out = {"accuracy": accuracy(probs, labels), "loss": cross_entropy(probs, labels)}
  if probs.shape[-1] == 2:
    out["auroc"] = auroc(probs[:, 1], labels)
  return out


def proportion_ci(outcomes: np.ndarray, level: float = 0.95) -> dict[str, float]:
  """Mean of per-item outcomes in [0, 1] (wins, or a win rate averaged over draws) with a Wilson
  score interval over the ``len(outcomes)`` independent items."""
  outcomes = np.asarray(outcomes, np.float64).ravel()
  n = len(outcomes)
  if n == 0:
    return {"mean": math.nan, "lo": math.nan, "hi": math.nan, "n": 0}
  p = float(outcomes.mean())
  z = statistics.NormalDist().inv_cdf(0.5 + level / 2)
  center = (p + z * z / (2 * n)) / (1 + z * z / n)
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
  # The interval always holds p (at p = 0 rounding can put center - half at +2e-19).
  return {"mean": p, "lo": min(max(0.0, center - half), p), "hi": max(min(1.0, center + half), p),
          "n": n}


def mean_ci(values: Sequence[float], level: float = 0.95) -> dict:
  """Mean and Student-t confidence interval over seeds, ignoring NaN (flagged) entries."""
  from scipy import stats  # here, not at import: every run imports this module
  v = np.asarray([x for x in values if not math.isnan(x)], np.float64)
  out = {"mean": math.nan, "lo": math.nan, "hi": math.nan, "n": int(len(v)),
         "flagged": int(len(values) - len(v))}
  if len(v) == 0:
    return out
  out["mean"] = float(v.mean())
  if len(v) > 1:
    half = stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    out["lo"], out["hi"] = float(v.mean() - half), float(v.mean() + half)
  return out


def schema_violations(results, path: str = "") -> list[str]:
  """Where a results dict departs from the one schema: a top-level ``wall_time_s``; every
  interval is an estimate with all of ``mean``, ``lo``, ``hi`` and ``n``; no other names for
  them (``ci_low``, ``ci_high``, ``runtime_s``)."""
  out = []
  if not path and "wall_time_s" not in results:
    out.append("wall_time_s: missing")
  if isinstance(results, dict):
    for key in ("ci_low", "ci_high", "runtime_s"):
      if key in results:
        out.append(f"{path}{key}: not in the schema (use lo/hi, wall_time_s)")
    if {"lo", "hi"} & set(results):
      missing = [k for k in ESTIMATE_KEYS if k not in results]
      if missing:
        out.append(f"{path[:-1] or '(top)'}: an estimate without {', '.join(missing)}")
    for key, value in results.items():
      out += schema_violations(value, f"{path}{key}.")
  elif isinstance(results, list):
    for i, value in enumerate(results):
      out += schema_violations(value, f"{path}{i}.")
  return out


def format_estimate(e: Mapping | None, *, pct: bool = False, digits: int = 3,
                    widths: tuple[int, int, int] = (0, 0, 0), missing: str = "n/a",
                    undefined: str | None = None) -> str:
  """The one printed form of an estimate: ``mean [lo, hi]`` (times 100 with ``pct``), each with
  ``digits`` decimals and the minimum ``widths``; the mean alone where the interval is undefined
  (one seed); ``missing`` for no estimate, ``undefined`` (default ``missing``) for a NaN mean."""
  if e is None or e.get("mean") is None:
    return missing
  scale = 100.0 if pct else 1.0
  num = lambda v, w: f"{scale * v:{w}.{digits}f}"
  if not math.isfinite(e["mean"]):
    return missing if undefined is None else undefined
  lo, hi = e.get("lo"), e.get("hi")
  if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
    return num(e["mean"], widths[0])
  return f"{num(e['mean'], widths[0])} [{num(lo, widths[1])}, {num(hi, widths[2])}]"
