"""Turns test-set predictions into the results dict (per run, per pair, per loss) and a table."""

from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np

from superalign.results.estimates import auroc, format_estimate
from superalign.results.published import Comparison, number
from superalign.models.registry import label
from superalign.w2s import metrics as m

# An estimate as the tables print it: two decimals, a PGR without a gap flagged.
show = functools.partial(format_estimate, digits=2, undefined="flagged (no gap)")

# Burns et al. 2023, median PGR per loss over the GPT-2 to Qwen-14B ladder (logconf / xent).
PUBLISHED = {
    "source": "Burns et al. 2023 (openai/weak-to-strong), median PGR, logconf / xent",
    "sciq": {"logconf": 0.31, "xent": 0.33},
    "amazon_polarity": {"logconf": 0.52, "xent": 0.58},
    "cosmos_qa": {"logconf": 0.37, "xent": 0.35},
    "boolq": {"logconf": -0.36, "xent": 0.05},
    "digits_sklearn_probe": {
        "note": "measured here with scikit-learn, 8x8 digits, 10 classes, 5 seeds: "
                "L2 probe on a pretrained 256-unit layer",
        "pgr_labels_pretrained": 0.46, "pgr_proxy_pretrained": 0.43,
        "pgr_autoencoder": 0.19, "pgr_raw_pixels": 0.21},
    # Burns et al. 2023: for the largest students the confidence loss raises median PGR from
    # about 25% to about 80%.
    "largest_students": {"xent": 0.25, "logconf": 0.80},
}
BURNS_TASKS = ("sciq", "amazon_polarity", "cosmos_qa", "boolq")
# The scikit-learn probe's figure for each of our pretraining tasks that it measured.
_SKLEARN_BY_PRETRAIN = {"coarse": "pgr_proxy_pretrained", "labels": "pgr_labels_pretrained"}


def _acc(probs, y):
  return float(np.mean(probs.argmax(-1) == y))


def summarize(splits, weak, ceiling, students, seeds, *, data: str, ladder: Sequence[str],
              losses: Sequence[str], mode: str, pretrain_task: str, cleaning: str,
              s2s_rounds: int) -> dict:
  """The results dict from the test predictions: ``weak[name]`` (weak labels per split),
  ``ceiling[name]`` and ``students[strong] = (runs, predictions)`` (``stages.Ladder``), each
  ``[seeds or runs, N, classes]``; the keywords are what the run was (reported as they are)."""
  y = splits["test"].y
  binary = weak[next(iter(weak))]["test"].shape[-1] == 2
  score = {"accuracy": _acc}
  if binary:
    score["auroc"] = lambda p, y: auroc(p[:, 1], y)
  ladder, losses = list(ladder), list(losses)
  S = len(seeds)

  per_model = {}
  for name in ladder:
    row = {}
    for metric, fn in score.items():
      w = [fn(weak[name]["test"][s], y) for s in range(S)]
      c = [fn(ceiling[name][s], y) for s in range(S)]
      row[f"weak_{metric}"] = m.over_seeds(w)
      row[f"ceiling_{metric}"] = m.over_seeds(c)
    per_model[name] = row

  pairs = []
  for strong, (runs, probs) in students.items():
    for wk in ladder[: ladder.index(strong)]:
      pair = {"weak": wk, "strong": strong, "losses": {}}
      for loss in losses:
        rows = [i for i, (w_, l_, _) in enumerate(runs) if w_ == wk and l_ == loss]
        seed_of = [runs[i][2] for i in rows]
        entry = {}
        for metric, fn in score.items():
          w2s = [fn(probs[i], y) for i in rows]
          wk_s = [per_model[wk][f"weak_{metric}"]["per_seed"][s] for s in seed_of]
          ce_s = [per_model[strong][f"ceiling_{metric}"]["per_seed"][s] for s in seed_of]
          pgrs = [m.pgr(a, b, c) for a, b, c in zip(wk_s, w2s, ce_s)]
          entry[f"w2s_{metric}"] = m.over_seeds(w2s)
          entry[f"pgr_{metric}"] = m.over_seeds(pgrs)
          entry[f"pgr_{metric}_of_means"] = m.pgr(np.mean(wk_s), np.mean(w2s), np.mean(ce_s))
        weak_test = [weak[wk]["test"][s] for s in seed_of]
        agree = [m.agreement(probs[i], wt) for i, wt in zip(rows, weak_test)]
        misfit = [m.misfit(probs[i], wt) for i, wt in zip(rows, weak_test)]
        gain = [m.brier(wt, y) - m.brier(probs[i], y) for i, wt in zip(rows, weak_test)]
        entry["agreement_with_weak"] = m.over_seeds(agree)
        entry["misfit"] = m.over_seeds(misfit)
        entry["gain"] = m.over_seeds(gain)
        pair["losses"][loss] = entry
      pairs.append(pair)

  by_loss = {}
  for loss in losses:
    per_pair = [p["losses"][loss]["pgr_accuracy_of_means"] for p in pairs]
    # One PGR per seed: the mean over pairs, so the interval is over seeds.
    per_seed = [np.nanmean([p["losses"][loss]["pgr_accuracy"]["per_seed"][s] for p in pairs])
                if any(not math.isnan(p["losses"][loss]["pgr_accuracy"]["per_seed"][s])
                       for p in pairs) else math.nan for s in range(S)]
    by_loss[loss] = {"median_pgr": m.median_ignoring_nan(per_pair),
                     "pgr_mean_over_pairs": m.over_seeds(per_seed)}
  main = pairs_by(pairs, ladder[0], ladder[-1])
  best = max(losses, key=lambda l: _nan_low(main["losses"][l]["pgr_accuracy"]["mean"]))
  return {
      "data": data, "ladder": ladder, "losses": losses, "seeds": seeds, "mode": mode,
      "pretrain_task": pretrain_task, "cleaning": cleaning, "s2s_rounds": s2s_rounds,
      "split_sizes": {k: len(v) for k, v in splits.items()},
      "models": per_model, "pairs": pairs, "by_loss": by_loss,
      "main_pair": {"weak": ladder[0], "strong": ladder[-1]},
      "best_loss": best,
      "best_loss_pgr": main["losses"][best]["pgr_accuracy"],
      "published": PUBLISHED,
  }


def _nan_low(x: float) -> float:
  return -math.inf if math.isnan(x) else x


def pairs_by(pairs, weak: str, strong: str) -> dict:
  """The entry of ``pairs`` (``summarize``'s per-pair results) for weak model ``weak`` and
  strong model ``strong``."""
  return next(p for p in pairs if p["weak"] == weak and p["strong"] == strong)


def table(results: dict) -> str:
  """The demo table: weak, ceiling, and each loss's student on the main pair, with PGR."""
  weak, strong = results["main_pair"]["weak"], results["main_pair"]["strong"]
  pair = pairs_by(results["pairs"], weak, strong)
  n = len(results["seeds"])
  show_weak, show_strong = label(weak), label(strong)
  models = results["models"]
  lines = [
      f"weak-to-strong on {results['data']}: {show_weak} supervises {show_strong} "
      f"({results['mode']}, pretraining: {results['pretrain_task']}, {n} seeds, mean [95% CI])",
      f"{'':22s} {'test accuracy %':>24s} {'PGR':>24s} {'median PGR, all pairs':>22s}",
      f"{'weak ' + show_weak:22s} {show(models[weak]['weak_accuracy'], pct=True):>24s}",
      f"{'ceiling ' + show_strong:22s} {show(models[strong]['ceiling_accuracy'], pct=True):>24s}",
  ]
  for loss in results["losses"]:
    e = pair["losses"][loss]
    lines.append(f"{'w2s ' + loss:22s} {show(e['w2s_accuracy'], pct=True):>24s} "
                 f"{show(e['pgr_accuracy']):>24s} {results['by_loss'][loss]['median_pgr']:>22.2f}")
  lines.append(f"best loss: {results['best_loss']} (PGR {show(results['best_loss_pgr'])}); "
               "published median PGR logconf / xent: sciq 0.31 / 0.33, amazon_polarity "
               "0.52 / 0.58, cosmos_qa 0.37 / 0.35, boolq -0.36 / 0.05; digits with a "
               "scikit-learn probe (REFERENCES.md): 0.43-0.46")
  return "\n".join(lines)


def _published_task(data: str) -> str | None:
  """The Burns et al. task that ``data`` (``text:sciq``, ``tfds:bool_q``, ...) is, if any."""
  name = data.split(":")[-1].replace("_", "").lower()
  return next((t for t in BURNS_TASKS if t.replace("_", "") == name), None)


def published_comparisons(results: dict) -> list[Comparison]:
  """The published figures a w2s run reproduces, beside ours, from its results dict
  (``results.json`` of ``kind = "w2s"``): per loss of ``logconf`` and ``xent`` that it ran, the
  median PGR over the ladder's pairs against Burns et al.'s median PGR (the run's own text task,
  or all four where it ran none of them) and the main pair's PGR (its student is the largest)
  against their largest students'; on digits with a probe, the main pair's ``xent`` PGR against
  the scikit-learn probe of the same pretraining. ``theirs`` comes from ``results["published"]``
  (``PUBLISHED`` for keys it lacks); ``ours`` has the table's two decimals."""
  pub = {**PUBLISHED, **results.get("published", {})}
  weak, strong = results["main_pair"]["weak"], results["main_pair"]["strong"]
  main = pairs_by(results["pairs"], weak, strong)["losses"]
  task = _published_task(results["data"])
  pair = f"{label(weak)} -> {label(strong)}"
  losses = [loss for loss in ("logconf", "xent") if loss in results["losses"]]
  rows = []
  for loss in losses:
    median = results["by_loss"][loss]["median_pgr"]
    theirs = (f"{pub[task][loss]:.2f}" if task else
              ", ".join(f"{t} {pub[t][loss]:.2f}" for t in BURNS_TASKS))
    theirs_on = task or f"{len(BURNS_TASKS)} NLP tasks"
    rows.append(Comparison(
        f"median PGR over the ladder's pairs, {loss} (ours: {results['data']}; theirs: "
        f"{theirs_on}, GPT-2 to Qwen-14B ladder)", number(median, 2), theirs,
        "Burns et al. 2023"))
  rows += [Comparison(f"PGR of the largest student ({pair}), {loss}",
                      show(main[loss]["pgr_accuracy"]),
                      f"about {pub['largest_students'][loss]:.2f}", "Burns et al. 2023")
           for loss in reversed(losses)]   # xent, then logconf: "from about 25% to about 80%"
  sklearn = pub.get("digits_sklearn_probe", {}).get(
      _SKLEARN_BY_PRETRAIN.get(results["pretrain_task"], ""))
  if (results["data"] == "digits" and results["mode"] == "probe" and sklearn is not None
      and "xent" in results["losses"]):
    rows.append(Comparison(
        f"PGR, {pair}, xent, probe on a backbone pretrained on "
        f"{'coarse groups' if results['pretrain_task'] == 'coarse' else 'the labels'}",
        show(main["xent"]["pgr_accuracy"]), f"{sklearn:.2f}",
        "scikit-learn probe on digits (REFERENCES.md, measured here; not a paper)"))
  return rows
