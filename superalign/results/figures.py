"""Figures as files: every figure is saved and closed (matplotlib), so none pops up, and a
notebook's inline backend is left alone."""

from __future__ import annotations

import os

import matplotlib.pyplot as plt


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
