"""Best-of-N, trace error, first-error localization and the supervision gap recovered.

Best-of-N follows PRM800K's ``eval.py``: each problem has a pool of sampled solutions; for each
``N``, ``subsets`` random subsets of ``N`` of them are drawn, the rule picks one solution of each
subset, and the problem's accuracy is the share of subsets whose pick is right. The estimate is
the mean over problems with a 95% interval over problems (``results.estimates.mean_ci``).
"""

from __future__ import annotations

import math

import numpy as np

from superalign.results.estimates import mean_ci, proportion_ci


def subsets(pool: int, n: int, count: int, rng: np.random.Generator) -> np.ndarray:
  """``[count, n]`` indices of random subsets of ``range(pool)`` without replacement (one subset,
  the pool itself, when ``n == pool``)."""
  if n >= pool:
    return np.arange(pool)[None, :]
  return np.argsort(rng.random((count, pool)), axis=1)[:, :n]


def picks(scores: np.ndarray, idx: np.ndarray) -> np.ndarray:
  """``[count]`` pool index of the best-scored solution of each subset (first on ties)."""
  return idx[np.arange(len(idx)), np.argmax(scores[idx], axis=1)]


def majority_picks(answers: np.ndarray, idx: np.ndarray, classes: int) -> np.ndarray:
  """``[count]`` pool index of a solution giving each subset's most common answer (no answer,
  -1, never wins unless every solution has none)."""
  sub = answers[idx]                                                    # [count, n]
  votes = np.stack([(sub == a).sum(1) for a in range(classes)], 1)      # [count, classes]
  best = votes.argmax(1)
  has = votes.max(1) > 0
  return idx[np.arange(len(idx)), np.argmax(sub == np.where(has, best, -1)[:, None], axis=1)]


def best_of_n(rules: dict, correct: np.ndarray, ns, count: int, seed: int,
              extra: dict | None = None) -> dict:
  """``{rule: {n: estimate}}`` of accuracy for every rule, and of every ``extra`` per-solution
  boolean (``{name: [P, M]}``) among the picks, on the same subsets.

  ``rules``: ``{name: scores [P, M]}`` (larger is better), or ``{name: ("majority", answers
  [P, M], classes)}``; ``correct`` ``[P, M]``.
  """
  rng = np.random.default_rng(seed)
  P, M = correct.shape
  out = {name: {} for name in rules}
  extras = {f"{name}/{key}": {} for name in rules for key in (extra or {})}
  for n in ns:
    per_problem = {name: [] for name in rules}
    per_extra = {key: [] for key in extras}
    for p in range(P):
      idx = subsets(M, n, count, rng)
      for name, rule in rules.items():
        if isinstance(rule, tuple):
          chosen = majority_picks(rule[1][p], idx, rule[2])
        else:
          chosen = picks(rule[p], idx)
        per_problem[name].append(correct[p, chosen].mean())
        for key, values in (extra or {}).items():
          per_extra[f"{name}/{key}"].append(values[p, chosen])
    for name in rules:
      out[name][n] = mean_ci(per_problem[name])
    for key in extras:
      extras[key][n] = np.concatenate(per_extra[key])
  return {"accuracy": out, "picks": extras}


def trace_error(correct: np.ndarray, flawed: np.ndarray) -> dict:
  """Uesato et al.'s trace error: among solutions with the right final answer, the share with a
  wrong step (Wilson interval over those solutions)."""
  correct, flawed = np.asarray(correct, bool).ravel(), np.asarray(flawed, bool).ravel()
  return proportion_ci(flawed[correct]) if correct.any() else None


def processbench(predicted: np.ndarray, first_error: np.ndarray) -> dict:
  """First-error localization as ProcessBench scores it: accuracy on the solutions with an error
  (the predicted first error is the true one), on the correct ones (no error predicted), and
  their harmonic mean (its F1)."""
  erroneous = first_error >= 0
  acc_err = float(np.mean(predicted[erroneous] == first_error[erroneous])) if erroneous.any() \
      else float("nan")
  acc_ok = float(np.mean(predicted[~erroneous] == -1)) if (~erroneous).any() else float("nan")
  f1 = (2 * acc_err * acc_ok / (acc_err + acc_ok) if acc_err + acc_ok > 0 else
        0.0 if not math.isnan(acc_err + acc_ok) else float("nan"))
  return {"erroneous_accuracy": acc_err, "correct_accuracy": acc_ok, "f1": f1,
          "erroneous": int(erroneous.sum()), "correct": int((~erroneous).sum())}


def step_f1(predicted_wrong: np.ndarray, labels: np.ndarray) -> dict:
  """Detecting wrong steps among the labelled ones (``labels`` 1 good, 0 wrong, -1 unlabelled):
  precision, recall and F1 of "this step is wrong"."""
  seen = labels >= 0
  wrong, said = labels[seen] == 0, predicted_wrong[seen]
  tp = float((wrong & said).sum())
  precision = tp / max(said.sum(), 1)
  recall = tp / max(wrong.sum(), 1)
  f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
  return {"precision": precision, "recall": recall, "f1": f1, "steps": int(seen.sum())}


def sgr(easy: float, hard: float, unsupervised: float) -> float:
  """Hase et al.'s Supervision Gap Recovered: (easy - unsupervised) / (hard - unsupervised)."""
  gap = hard - unsupervised
  return (easy - unsupervised) / gap if gap > 1e-9 else float("nan")   # no gap: nothing to recover
