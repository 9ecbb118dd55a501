"""The amplification table (beside the paper's claim) and its curves."""

from __future__ import annotations


import matplotlib.pyplot as plt

from superalign.results import figures
from superalign.results.published import Comparison, number

PUBLISHED = ("Christiano, Shlegeris and Amodei (2018): amplification matches supervised learning "
             "on all five tasks with at most a modest slowdown, using tens of thousands of H calls "
             "instead of tens of millions of ground-truth labels.")
# The same claim as figures per task, for the comparison rows.
PUBLISHED_FIGURES = {"source": "Christiano, Shlegeris and Amodei 2018",
                     "amplify_over_supervised": "about 1 (matches supervised learning)",
                     "h_calls": "tens of thousands (against tens of millions of labels)"}


def table(results: dict) -> str:
  """The printed table of ``run``'s results: per task, the test accuracy of each mode at the top
  difficulty, amplification's ratio to supervision, the no-model line, and the supervision consumed
  (labels, H calls, subquestions); the paper's claim below."""
  lines = [f"Iterated amplification, {results['model']} (test accuracy at the top difficulty)",
           f"{'task':<14} {'size':>4} {'levels':>6} {'steps':>5} {'batch':>5} {'no model':>8} "
           f"{'supervised':>10} {'amplify':>8} {'ratio':>6} {'labels':>9} {'H calls':>9} "
           f"{'subqs':>9} {'level s/a':>9}"]
  levels = lambda t: f"{t['start_difficulty']}-{t['max_difficulty']}"
  for name, t in results["tasks"].items():
    sup, amp = t.get("supervised"), t.get("amplify")
    fmt = lambda m: f"{m['test_accuracy']:.3f}" if m else "-"
    ratio = t.get("amplify_over_supervised")
    lines.append(
        f"{name:<14} {t['size']:>4} {levels(t):>6} {t['num_steps']:>5} {t['batch_size']:>5} "
        f"{t['no_model_accuracy']:>8.3f} {fmt(sup):>10} {fmt(amp):>8} "
        f"{(f'{ratio:.2f}' if ratio is not None else '-'):>6} "
        f"{(sup or {}).get('counts', {}).get('labels', 0):>9} "
        f"{(amp or {}).get('counts', {}).get('h_calls', 0):>9} "
        f"{(amp or {}).get('counts', {}).get('subquestions', 0):>9} "
        f"{(sup or {}).get('final_level', '-')!s:>4}/{(amp or {}).get('final_level', '-')!s:<4}")
  lines.append("ratio = amplify / supervised; amplification uses no ground-truth label. no model: "
               "H's answer from the facts where it has one, else the most common answer (a run "
               "at this line learned nothing).")
  lines.append("published: " + PUBLISHED)
  return "\n".join(lines)


def published_comparisons(results: dict) -> list[Comparison]:
  """Christiano et al.'s claim beside an amplification run's (its ``results.json``), per task
  that ran both modes: test accuracy of amplification over supervised learning (the table's two
  decimals) against "matches", and the H calls amplification spent against "tens of thousands"
  (``PUBLISHED_FIGURES``: the run stores no published figures)."""
  source, rows = PUBLISHED_FIGURES["source"], []
  for name, t in results["tasks"].items():
    ratio, amp = t.get("amplify_over_supervised"), t.get("amplify")
    if ratio is None or amp is None:
      continue
    where = f"{name}, size {t['size']}, top difficulty {t['max_difficulty']}"
    rows += [Comparison(f"amplification / supervised test accuracy ({where})", number(ratio, 2),
                        PUBLISHED_FIGURES["amplify_over_supervised"], source),
             Comparison(f"H calls, amplification ({where})",
                        f"{amp.get('counts', {}).get('h_calls', 0):,}",
                        PUBLISHED_FIGURES["h_calls"], source)]
  return rows


def plot(results: dict, out_dir: str) -> list[str]:
  """Per task, accuracy against steps, and against the supervision each mode consumed (labels
  for the baseline, H calls for amplification)."""
  tasks = results["tasks"]
  paths = []
  for x_key, x_label, name in (("step", "training step", "amplification_accuracy_by_step.png"),
                               (None, "ground-truth labels (supervised) / H calls (amplify)",
                                "amplification_accuracy_by_supervision.png")):
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks), 3), squeeze=False)
    for ax, (task, t) in zip(axes[0], tasks.items()):
      for mode, count_key, style in (("supervised", "labels", "--"), ("amplify", "h_calls", "-")):
        if mode not in t or not t[mode]["curve"]:
          continue
        curve = t[mode]["curve"]
        xs = [row[x_key or count_key] for row in curve]
        ax.plot(xs, [row["accuracy"] for row in curve], style, marker=".", label=mode)
      ax.axhline(t["no_model_accuracy"], color="gray", ls=":", label="no model")
      ax.set_title(f"{task} ({t['size']}, top {t['max_difficulty']})", fontsize=9)
      ax.set_xlabel(x_label, fontsize=7)
      ax.set_ylim(0, 1)
      ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy")
    axes[0][0].legend(fontsize=7)
    paths.append(figures.save(fig, out_dir, name, dpi=110))
  return paths
