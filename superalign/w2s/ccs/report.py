"""The CCS experiment's results dict and table: weak, zero-shot, CCS, ceiling and the two
students' test accuracy and PGR (``w2s.metrics.pgr``), beside Burns et al. 2022."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from superalign.results.published import Comparison
from superalign.w2s.ccs.supervisor import Supervision
from superalign.w2s.metrics import over_seeds as estimate, pgr
from superalign.w2s.report import show

# Burns et al. 2022, mean accuracy (%) over 10 data sets, excluding T0 (REFERENCES.md).
PUBLISHED = {"source": "Burns et al. 2022, mean accuracy over 10 data sets (excluding T0)",
             "zero_shot": 62.8, "calibrated_zero_shot": 67.2, "ccs": 71.2, "lr_ceiling": 83.7}


def _pgr(weak: Sequence[float], student: Sequence[float], ceiling: Sequence[float]) -> dict:
  return estimate([pgr(a, b, c) for a, b, c in zip(weak, student, ceiling)])


def summarize(run: Mapping, *, split_sizes: Mapping[str, int], pretrain_claims: int,
              claim_accuracy: Mapping[str, np.ndarray], weak_test: np.ndarray,
              weak_b: np.ndarray, ccs: Supervision, students: Mapping[str, np.ndarray],
              y_b: np.ndarray, y_test: np.ndarray) -> dict:
  """The results dict: ``run`` says what the run was (data, target, models, site, orientation,
  seeds, restarts); accuracies are per run ``[seeds]``, ``students`` those of the ``ceiling``,
  ``weak_labels`` and ``ccs_labels`` stacks, ``weak_b`` the weak soft labels of ``train_b``."""
  ccs_acc = [r["accuracy"] for r in ccs.scores]
  ceiling = students["ceiling"]
  return {
      **run,
      "split_sizes": dict(split_sizes),
      "pretrain_claims": pretrain_claims,
      "claim_verification_accuracy": {k: estimate(v) for k, v in claim_accuracy.items()},
      "weak_accuracy": estimate(weak_test),
      "ceiling_accuracy": estimate(ceiling),
      "zero_shot_accuracy": estimate(np.mean((ccs.zero_shot["test"] > 0.5) == y_test, -1)),
      "ccs_accuracy": estimate(ccs_acc),
      "ccs_raw_sign_accuracy": estimate([r["raw_accuracy"] for r in ccs.scores]),
      "ccs_sign_free_accuracy": estimate([r["sign_free_accuracy"] for r in ccs.scores]),
      "label_accuracy_train_b": {
          "weak_labels": estimate(np.mean(weak_b.argmax(-1) == y_b, -1)),
          "ccs_labels": estimate(np.mean(ccs.labels.argmax(-1) == y_b, -1))},
      "student_accuracy": {"weak_labels": estimate(students["weak_labels"]),
                           "ccs_labels": estimate(students["ccs_labels"])},
      "pgr": {
          "weak_labels": _pgr(weak_test, students["weak_labels"], ceiling),
          "ccs_labels": _pgr(weak_test, students["ccs_labels"], ceiling),
          # CCS's own test predictions as if they were the student: its gap recovered.
          "ccs_itself": _pgr(weak_test, ccs_acc, ceiling)},
      "ccs_loss": estimate([r["loss"] for r in ccs.scores]),
      "published": PUBLISHED,
  }


def table(results: dict) -> str:
  """Weak, zero-shot, CCS, ceiling and the two students' test accuracy and PGR, beside Burns
  et al. 2022's mean accuracies."""
  r, p = results, results["published"]
  rows = [
      ("weak " + r["weak"], r["weak_accuracy"], None, ""),
      ("zero-shot " + r["strong"], r["zero_shot_accuracy"], None, f"{p['zero_shot']:.1f}"),
      (f"CCS ({r['orient']} sign)", r["ccs_accuracy"], r["pgr"]["ccs_itself"], f"{p['ccs']:.1f}"),
      ("CCS sign-free", r["ccs_sign_free_accuracy"], None, ""),
      ("ceiling " + r["strong"], r["ceiling_accuracy"], None, f"{p['lr_ceiling']:.1f}"),
      ("student on weak labels", r["student_accuracy"]["weak_labels"], r["pgr"]["weak_labels"], ""),
      ("student on CCS labels", r["student_accuracy"]["ccs_labels"], r["pgr"]["ccs_labels"], ""),
  ]
  lines = [f"CCS as a supervisor on {r['data']} ({r['target']}), {r['weak']} -> {r['strong']} at "
           f"{r['site']}, {len(r['seeds'])} seeds, mean [95% CI]",
           f"{'':26s} {'test accuracy %':>22s} {'PGR':>22s} {'Burns et al. 2022 %':>20s}"]
  for name, acc, pgr_, pub in rows:
    lines.append(f"{name:26s} {show(acc, pct=True):>22s} "
                 f"{show(pgr_) if pgr_ else '':>22s} {pub:>20s}")
  return "\n".join(lines)


def published_comparisons(results: dict) -> list[Comparison]:
  """Burns et al. 2022's mean accuracies beside a ``w2s_ccs`` run's (its ``results.json``): the
  strong model's zero-shot verdict, CCS (oriented as the run chose) and the LR ceiling, test
  accuracy % with the table's two decimals and interval. ``theirs`` comes from
  ``results["published"]`` (``PUBLISHED`` for keys it lacks)."""
  pub = {**PUBLISHED, **results.get("published", {})}
  r = results
  on = f"{r['data']}, {r['target']}; theirs: mean over 10 data sets, excluding T0"
  return [Comparison(f"{name} test accuracy % ({on})", show(r[key], pct=True),
                     f"{pub[theirs]:.1f}", "Burns et al. 2022")
          for name, key, theirs in (
              (f"zero-shot {r['strong']}", "zero_shot_accuracy", "zero_shot"),
              (f"CCS ({r['orient']} sign)", "ccs_accuracy", "ccs"),
              (f"LR ceiling {r['strong']}", "ceiling_accuracy", "lr_ceiling"))]
