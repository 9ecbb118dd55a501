"""The gain-versus-misfit experiment's printed table and chart."""

from __future__ import annotations

import numpy as np

from superalign.results import figures
from superalign.results.published import Comparison, number
from superalign.w2s.misfit import theory
from superalign.w2s.misfit.representations import VARIANTS

# Charikar, Pabbaraju and Shiragur 2024: Theorem 1 (realizable: gain >= misfit on every task) and
# their synthetic experiments (gain ~= misfit: slope 1 of gain on misfit).
PUBLISHED = {"source": "Charikar, Pabbaraju and Shiragur 2024",
             "realizable_tasks_gain_ge_misfit": 1.0, "slope_of_gain_on_misfit": 1.0}


def summary(results: dict) -> str:
  """The gain-versus-misfit run's printed summary: the pretrained representations' validation
  error, then per variant the line fits of gain on misfit, the share of tasks where gain reaches
  misfit (with and without the sampling tolerance) and the mean errors; and the claim."""
  reps = results["representations"]
  lines = [f"w2s_misfit ({results['num_tasks']} tasks, {results['num_points']} fitting points, "
           f"{results['num_test_points']} test points, ridge={results['ridge']:g}, "
           f"{results['wall_time_s']:.0f}s)",
           f"pretrained representations, validation relative MSE on the pretraining tasks: "
           f"strong {reps['strong']['val_relative_mse']:.4f}, weak "
           f"{reps['weak']['val_relative_mse']:.4f}"]
  for name in VARIANTS:
    v = results["variants"][name]
    f = v["fit"]
    lines.append(
        f"{name:>10}: slope {f['slope_through_origin']:.3f} (origin), {f['slope']:.3f} + "
        f"{f['intercept']:.2g} (R^2 {f['r2']:.3f}); R^2 of gain=misfit {f['r2_of_identity']:.3f}; "
        f"gain >= misfit - tol on {100 * v['fraction_gain_ge_misfit_minus_tol']:.0f}% of tasks "
        f"({100 * v['fraction_gain_ge_misfit']:.0f}% without tol); mean err weak "
        f"{v['mean_err_weak']:.4g}, w2s {v['mean_err_w2s']:.4g}, strong ceiling "
        f"{v['mean_err_strong_ceiling']:.3g}")
  lines.append(f"claim: {theory.CLAIM}")
  return "\n".join(lines)


def published_comparisons(results: dict) -> list[Comparison]:
  """Charikar et al.'s claims beside a ``w2s_misfit`` run's (its ``results.json``): the share of
  realizable tasks with gain >= misfit (within the sampling tolerance) against Theorem 1's 100%,
  and each variant's slope of gain on misfit through the origin (three decimals, as printed)
  against their gain ~= misfit (``PUBLISHED``: the run stores no published figures)."""
  variants, source = results["variants"], PUBLISHED["source"]
  rows = []
  if "realizable" in variants:
    rows.append(Comparison(
        "realizable: tasks with gain >= misfit - tol",
        number(variants["realizable"]["fraction_gain_ge_misfit_minus_tol"], 0, scale=100) + "%",
        f"{100 * PUBLISHED['realizable_tasks_gain_ge_misfit']:.0f}% (Theorem 1)", source))
  rows += [Comparison(f"{name}: slope of gain on misfit (through 0)",
                      number(variants[name]["fit"]["slope_through_origin"], 3),
                      f"about {PUBLISHED['slope_of_gain_on_misfit']:g} (gain ~= misfit)", source)
           for name in VARIANTS if name in variants]
  return rows


def plot(results: dict, out_dir: str) -> list[str]:
  """``misfit.png``: gain against misfit per task, one panel per variant, with y = x."""
  import matplotlib.pyplot as plt

  variants = results["variants"]
  fig, axes = plt.subplots(1, len(variants), figsize=(4.2 * len(variants), 4))
  for ax, (name, v) in zip(np.atleast_1d(axes), variants.items()):
    misfit, gain = np.asarray(v["misfit"]), np.asarray(v["gain"])
    ax.scatter(misfit, gain, s=12, alpha=0.7, label="tasks")
    hi = max(misfit.max(), gain.max()) * 1.05
    lo = min(0.0, misfit.min(), gain.min())
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="gain = misfit")
    f = v["fit"]
    ax.plot([lo, hi], [f["slope"] * lo + f["intercept"], f["slope"] * hi + f["intercept"]],
            "r-", lw=0.8, label=f"fit: slope {f['slope']:.2f}, R$^2$ {f['r2']:.2f}")
    ax.set_xlabel("misfit  d(w2s, weak)")
    ax.set_ylabel("gain  err(weak) - err(w2s)")
    ax.set_title(f"{name} strong representation")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  return [figures.save(fig, out_dir, "misfit.png", dpi=120)]
