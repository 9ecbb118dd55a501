"""The sandwiching table, laid out like Bowman et al. (2022) Table 1 with their figures beside
ours, and assisted accuracy against the assistant's lying probability."""

from __future__ import annotations

import functools

import matplotlib.pyplot as plt

from superalign.results import figures
from superalign.results.estimates import format_estimate
from superalign.results.published import Comparison

# Bowman et al. (2022), Table 1: accuracy (%) on MMLU and QuALITY (humans with a language model).
PUBLISHED = {
    "nonexpert_alone": {"MMLU": 57.2, "QuALITY": 48.6},
    "assistant_alone": {"MMLU": 57.2, "QuALITY": 59.2},
    "assisted": {"MMLU": 75.4, "QuALITY": 76.8},
    "expert": {"MMLU": 90.0, "QuALITY": 93.5},
}
# An estimate in %, " 62.5 [40.9, 80.2]"
_pct = functools.partial(format_estimate, pct=True, digits=1, widths=(5, 4, 5))


def table(results: dict) -> str:
  """The sandwiching table: the non-expert alone, the assistant alone, the non-expert assisted
  through each protocol (with its sandwich score) and the expert, beside Bowman et al.'s Table 1;
  then accuracy and harm per protocol for each misaligned assistant, and the trained liar."""
  cond, honest = results["conditions"], results["honest"]
  lines = [f"Sandwiching on {results['data']}: non-expert = judge on k={results['k']} pixels, "
           f"{results['num_images']} test images, players {results['player']} (accuracy %, 95% CI)",
           f"{'condition':<42} {'ours':>22}   {'MMLU':>5} {'QuALITY':>7}"]
  pub = lambda key: f"{PUBLISHED[key]['MMLU']:>5.1f} {PUBLISHED[key]['QuALITY']:>7.1f}"
  lines.append(f"{'non-expert alone':<42} {_pct(cond['nonexpert_alone']['accuracy']):>22}   "
               f"{pub('nonexpert_alone')}")
  lines.append(f"{'assistant alone':<42} {_pct(cond['assistant_alone']['accuracy']):>22}   "
               f"{pub('assistant_alone')}")
  for name, row in honest.items():
    if name == "lie_rate":
      continue
    score = row["sandwich_score"]["mean"]
    lines.append(f"{'non-expert + assistant: ' + name:<42} {_pct(row['accuracy']):>22}   "
                 f"{pub('assisted')}  sandwich score {score:.2f}")
  lines.append(f"{'expert (ground truth)':<42} {_pct(cond['expert']['accuracy']):>22}   "
               f"{pub('expert')}")
  lines.append("")
  protocols = [k for k in honest if k != "lie_rate"]
  lines.append(f"{'misaligned assistant':<22} {'lies':>5} " +
               " ".join(f"{p + ' acc / harm':>24}" for p in protocols))
  for name, row in results["misaligned"].items():
    cells = " ".join(f"{100 * row[p]['accuracy']['mean']:>14.1f} / {100 * row[p]['harm']:>+6.1f}"
                     for p in protocols)
    lines.append(f"{name:<22} {100 * row['lie_rate']:>4.0f}% {cells}")
  lines.append("harm = non-expert alone - assisted (points); positive: the help hurt.")
  liar = results.get("trained_liar")
  if liar:
    lines.append(f"trained liar (class {liar['lie_class']} -> {liar['lie_to']}, in its weights): "
                 f"lies on {_pct(liar['lie_rate'])}% of its class, honest accuracy elsewhere "
                 f"{_pct(liar['honest_accuracy'])}%, stray lies {_pct(liar['stray_lie_rate'])}%")
  return "\n".join(lines)


def published_comparisons(results: dict) -> list[Comparison]:
  """Bowman et al.'s Table 1 beside a sandwiching run's (its ``results.json``): accuracy % of
  the non-expert alone, the assistant alone, the non-expert with the honest assistant under each
  protocol, and the expert (one decimal and the 95% interval, as printed). ``theirs`` is their
  MMLU / QuALITY pair, from ``results["published"]`` (``PUBLISHED`` for keys it lacks)."""
  pub = {**PUBLISHED, **results.get("published", {})}
  cond = results["conditions"]
  theirs = lambda key: f"{pub[key]['MMLU']:.1f} / {pub[key]['QuALITY']:.1f}"
  on = (f"ours: {results['data']}, the non-expert sees k = {results['k']} pixels; theirs: humans "
        "with a language model, MMLU / QuALITY")
  row = lambda name, estimate, key: Comparison(
      f"{name} accuracy % ({on})", format_estimate(estimate, pct=True, digits=1), theirs(key),
      "Bowman et al. 2022")
  rows = [row("non-expert alone", cond["nonexpert_alone"]["accuracy"], "nonexpert_alone"),
          row("assistant alone", cond["assistant_alone"]["accuracy"], "assistant_alone")]
  rows += [row(f"non-expert + assistant, {name.replace('_', ' ')}", r["accuracy"], "assisted")
           for name, r in results["honest"].items() if name != "lie_rate"]
  rows.append(row("expert", cond["expert"]["accuracy"], "expert"))
  return rows


def plot(results: dict, out_dir: str) -> list[str]:
  """Writes ``sandwich_accuracy_by_lying.png`` under ``out_dir`` (assisted accuracy per
  protocol against the assistant's lying rate, the non-expert alone as a line); returns its
  path."""
  sweep = {name: row for name, row in results["misaligned"].items() if name.startswith("lie_p")}
  ps = [row["lie_rate"] for row in sweep.values()]
  fig, ax = plt.subplots(figsize=(5, 3.4))
  protocols = [k for k in results["honest"] if k != "lie_rate"]
  for name in protocols:
    ax.plot(ps, [100 * row[name]["accuracy"]["mean"] for row in sweep.values()], marker="o",
            label=name)
  alone = 100 * results["conditions"]["nonexpert_alone"]["accuracy"]["mean"]
  ax.axhline(alone, color="gray", ls="--", label="non-expert alone")
  ax.set_xlabel("fraction of items the assistant lies on")
  ax.set_ylabel("assisted non-expert accuracy (%)")
  ax.set_ylim(0, 100)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  return [figures.save(fig, out_dir, "sandwich_accuracy_by_lying.png", dpi=110)]
