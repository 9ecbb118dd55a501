"""Weak-to-strong charts: PGR by loss, and test accuracy against the strong model."""

from __future__ import annotations


import matplotlib.pyplot as plt
import numpy as np

from superalign.results import figures


def pgr_by_loss(results: dict, out_dir: str) -> str:
  """Bars: PGR of each loss on the main pair (mean, 95% CI over seeds); dots: median over pairs."""
  weak, strong = results["main_pair"]["weak"], results["main_pair"]["strong"]
  pair = next(p for p in results["pairs"] if p["weak"] == weak and p["strong"] == strong)
  losses = results["losses"]
  mean = np.array([pair["losses"][l]["pgr_accuracy"]["mean"] for l in losses])
  low = np.array([pair["losses"][l]["pgr_accuracy"]["lo"] for l in losses])
  high = np.array([pair["losses"][l]["pgr_accuracy"]["hi"] for l in losses])
  err = np.nan_to_num(np.stack([mean - low, high - mean]))
  fig, ax = plt.subplots(figsize=(7, 3.5))
  x = np.arange(len(losses))
  ax.bar(x, np.nan_to_num(mean), yerr=err, capsize=3, color="tab:blue", alpha=0.8,
         label=f"{weak} -> {strong} (95% CI)")
  ax.plot(x, [results["by_loss"][l]["median_pgr"] for l in losses], "o", color="black",
          label="median over pairs")
  ax.axhline(0, color="grey", lw=0.8)
  ax.set_xticks(x, losses, rotation=30, ha="right")
  ax.set_ylabel("PGR (test accuracy)")
  ax.set_title(f"weak-to-strong on {results['data']}")
  ax.legend(fontsize=7)
  return figures.save(fig, out_dir, "pgr_by_loss.png", dpi=120)


def accuracy_by_strong_model(results: dict, out_dir: str) -> str:
  """Test accuracy against the strong model: ceiling, and each weak supervisor's students
  (best loss and xent), as in Burns et al.'s per-supervisor curves."""
  ladder = results["ladder"]
  fig, ax = plt.subplots(figsize=(6, 3.8))
  ceil = [100 * results["models"][m]["ceiling_accuracy"]["mean"] for m in ladder]
  ax.plot(ladder, ceil, "k-o", label="strong ceiling (ground truth)")
  colors = plt.cm.viridis(np.linspace(0, 0.85, len(ladder)))
  for i, weak in enumerate(ladder[:-1]):
    strongs = ladder[i + 1:]
    for loss, style in ((results["best_loss"], "-"), ("xent", ":")):
      if loss not in results["losses"]:
        continue
      ys = [100 * next(p for p in results["pairs"] if p["weak"] == weak and p["strong"] == s)
            ["losses"][loss]["w2s_accuracy"]["mean"] for s in strongs]
      ax.plot(strongs, ys, style, marker="s", color=colors[i],
              label=f"supervised by {weak} ({loss})")
    ax.axhline(100 * results["models"][weak]["weak_accuracy"]["mean"], color=colors[i], lw=0.8,
               ls="--")
  ax.set_xlabel("strong model")
  ax.set_ylabel("test accuracy (%)")
  ax.legend(fontsize=6)
  ax.grid(alpha=0.3)
  return figures.save(fig, out_dir, "accuracy_by_strong_model.png", dpi=120)
