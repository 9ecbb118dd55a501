"""PNG learning curves from ``metrics.jsonl`` (matplotlib; every figure is saved and closed, so
none pops up, and a notebook's inline backend is left alone)."""

from __future__ import annotations

import collections
import os

import matplotlib.pyplot as plt

from superalign.core.metrics import read_metrics


def learning_curves(workdir: str) -> list[str]:
  """One figure per metric name (train/loss, val/accuracy, ...), a line per run tag."""
  rows = read_metrics(workdir)
  series = collections.defaultdict(lambda: collections.defaultdict(list))
  for row in rows:
    for key, value in row.items():
      if key in ("run", "step"):
        continue
      series[key][row.get("run", "")].append((row["step"], value))
  out_dir = os.path.join(workdir, "plots")
  os.makedirs(out_dir, exist_ok=True)
  paths = []
  for key, runs in sorted(series.items()):
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for run, points in sorted(runs.items()):
      steps, values = zip(*points)
      ax.plot(steps, values, label=run or None, marker="." if len(points) < 30 else None)
    ax.set_xlabel("step")
    ax.set_ylabel(key)
    ax.grid(alpha=0.3)
    if any(runs):
      ax.legend(fontsize=7)
    paths.append(save(fig, out_dir, key.replace("/", "_") + ".png"))
  return paths


def save(fig, out_dir: str, name: str, dpi: int = 110) -> str:
  """Lays out (unless ``fig`` has its own layout engine), writes ``out_dir/name`` and closes
  ``fig``; returns the path."""
  os.makedirs(out_dir, exist_ok=True)
  if fig.get_layout_engine() is None:
    fig.tight_layout()
  path = os.path.join(out_dir, name)
  fig.savefig(path, dpi=dpi)
  plt.close(fig)
  return path
