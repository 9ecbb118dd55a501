"""Best-of-N on the test pools by every rule, the trace error of its picks, the PRM's first-error
localization, and the score thresholds a monitor would use."""

from __future__ import annotations

import math

import numpy as np

from superalign.core.rng import stream_seed
from superalign.process import metrics, reward
from superalign.process.pools import Pool, padded_labels, stacked

SCORED = ("prm_product", "prm_min", "orm_generative", "orm")   # rules with a reward model
MONITORED = ("orm", "orm_generative", "prm_product")


def powers(pool: int) -> list[int]:
  """N = 1, 2, 4, ... below ``pool``, then ``pool``."""
  ns, n = [], 1
  while n < pool:
    ns.append(n)
    n *= 2
  return ns + [pool]


def _rules(scored: dict, ks, names) -> dict[str, np.ndarray]:
  return {name: np.concatenate([scored[k][name] for k in ks]) for name in names}


def best_of_n(test: dict[int, Pool], scored: dict, *, modulus: int, subsets: int, trace_n: int,
              seed: int) -> dict:
  """Accuracy of every rule for N = 1, 2, 4, ..., the pool (``best_of_n``, ``ns``), and Uesato
  et al.'s trace error of the policy's samples and of each rule's picks at N = ``trace_n``."""
  ks = list(test)
  correct, flawed = stacked(test, ks, "correct"), stacked(test, ks, "trace_error")
  rules = {**_rules(scored, ks, SCORED),
           "majority": ("majority", stacked(test, ks, "answer"), modulus)}
  ns = powers(test[ks[0]].per)
  bon = metrics.best_of_n(rules, correct, ns, subsets, stream_seed(seed, "process/bon"),
                          extra={"correct": correct, "flawed": flawed})
  picked = lambda name, key: bon["picks"][f"{name}/{key}"][trace_n]
  trace = {"samples (N = 1)": metrics.trace_error(correct, flawed)}
  for name in ("orm", "orm_generative", "prm_product", "majority"):
    trace[f"{name} (N = {trace_n})"] = metrics.trace_error(picked(name, "correct"),
                                                           picked(name, "flawed"))
  accuracy = {name: {str(n): e for n, e in curve.items()} for name, curve in
              bon["accuracy"].items()}
  return {"best_of_n": accuracy, "ns": ns, "trace_error": trace}


def localization(test: dict[int, Pool], scored: dict, per: int = 8) -> dict:
  """The PRM's first-error localization (ProcessBench's F1) and wrong-step detection on the
  first ``per`` samples of each test problem."""
  terminators = max(test) + 1
  local = {"predicted": [], "first": [], "wrong": [], "labels": []}
  for k, pool in test.items():
    rows = (np.arange(len(pool.problems))[:, None] * pool.per
            + np.arange(min(per, pool.per))).ravel()
    probs = scored[k]["step_probs"][rows]
    local["predicted"].append(reward.first_error_prediction(probs))
    local["first"].append(pool.checked.first_error[rows])
    local["wrong"].append(np.pad(probs < 0.5, ((0, 0), (0, terminators - k - 1))))
    local["labels"].append(padded_labels(pool.checked.take(rows), terminators))
  local = {key: np.concatenate(v) for key, v in local.items()}
  return {"processbench": metrics.processbench(local["predicted"], local["first"]),
          "step_detection": metrics.step_f1(local["wrong"], local["labels"])}


def thresholds(test: dict[int, Pool], scored: dict) -> dict[str, float]:
  """A monitor's threshold per reward model: the score that accepts 95% of the honest policy's
  valid solutions (right answer, every step right) on the test problems."""
  ks = list(test)
  valid = ~stacked(test, ks, "trace_error") & stacked(test, ks, "correct")
  scores = _rules(scored, ks, MONITORED)
  return {name: float(np.quantile(scores[name][valid], 0.05)) if valid.any() else math.nan
          for name in MONITORED}
