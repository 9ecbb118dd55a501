"""The control tables (Greenblatt et al. 2023, Table 1 layout, their figures beside ours), the
monitor stack against single monitors, and the plots: Pareto front, safety against the audit
budget, per-monitor ROC curves."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt

from superalign.control.protocols import PROTOCOLS
from superalign.results import figures
from superalign.results.estimates import format_estimate
from superalign.results.published import Comparison

# Greenblatt et al. (2023), Table 1 (APPS backdoors, GPT-4 untrusted, GPT-3.5 trusted, 2% audit
# budget): usefulness and safety, %. Rows keyed by our row names.
PUBLISHED = {
    "upfront_auditing": (100, 15),
    "trusted_monitoring": (97, 62),
    "defer_to_trusted 5%": (95, 74),
    "defer_to_trusted 10%": (93, 83),
    "defer_to_trusted 20%": (83, 92),
    "untrusted_monitoring": (96, 79),
    "trusted_editing 5%": (97, 73),
    "trusted_editing 20%": (94, 92),
}
DONT_USE_U = (2, 100)


def _pct(ci: dict | None, width: int = 19) -> str:
  """An estimate in percent, ``mean [lo, hi]``, right-justified to ``width``."""
  return format_estimate(ci, pct=True, digits=1, widths=(5, 4, 5), missing="-").rjust(width)


def protocol_lines(results: dict) -> list[str]:
  """The protocol table's lines: per row of ``results["protocols"]``, usefulness (rescaled),
  safety the game's way and the ratio's, with intervals, the red team's choice, and Greenblatt
  et al.'s usefulness/safety where they report the row."""
  lines = [f"{'protocol':<34} {'usefulness':>19} {'safety (game)':>19} {'safety (ratio)':>19} "
           f"{'red team':<26} {'paper U/S':>9}",
           f"{'do not use U':<34} {'0.0':>19} {'100.0':>19} {'100.0':>19} {'':<26} "
           f"{DONT_USE_U[0]:>4}/{DONT_USE_U[1]:<4}"]
  for name, row in results["protocols"].items():
    pub = PUBLISHED.get(name)
    red = row["attack"] + (" (shut down)" if row.get("shutdown") else "")
    if row["safety"].get("attack_rate"):
      red += f", p={row['safety']['attack_rate']:g}"
    lines.append(f"{name:<34} {_pct(row['rescaled'])} {_pct(row['safety'])} "
                 f"{_pct(row['safety_ratio'])} {red:<26} "
                 f"{f'{pub[0]:>4}/{pub[1]:<4}' if pub else '':>9}")
  return lines


def stack_lines(results: dict) -> list[str]:
  """The monitor stack's lines (``results["stack"]``): per defender its AUROC, TPR at 2% FPR,
  cost, worst-attacker safety and safety against each attacker; the best stack against the best
  single monitor; the monitors' rank correlations on honest tasks and on attacks."""
  return _stack_lines(results["stack"])


def _stack_lines(s: dict) -> list[str]:
  attackers = list(next(iter(s["by_defender"].values()))["by_attacker"])
  lines = [f"{'monitor (trusted monitoring)':<32} {'AUROC':>6} {'TPR@2%':>6} {'cost':>6} "
           f"{'safety (worst attacker)':>24} {'knows all':>9} " +
           " ".join(f"{a:>17}" for a in attackers)]
  for name, row in s["by_defender"].items():
    tpr = row["roc"].get("tpr_at_2pct_fpr", {}).get("mean", math.nan)
    lines.append(f"{name:<32} {row['roc']['auroc']['mean']:>6.3f} {tpr:>6.3f} "
                 f"{row['cost']:>6.2f} {_pct(row['safety'], 24)} "
                 f"{100 * row['knows_all']['mean']:>9.1f} " +
                 " ".join(f"{100 * row['by_attacker'][a]['safety']['mean']:>17.1f}"
                          for a in attackers))
  if s.get("best_stack"):
    lines.append(f"best single: {s['best_single']}; best stack: {s['best_stack']}; "
                 f"difference {100 * s['stack_minus_best_single']:+.1f} points; the stack's "
                 f"interval above the single's: {s['stack_beats_best_single']}")
  names = s["monitors"]
  for where in ("honest", "attack"):
    lines.append(f"rank correlation on {where} tasks ({', '.join(names)}):")
    lines += ["  " + " ".join(f"{v:6.2f}" for v in row) for row in s[f"correlation_{where}"]]
  return lines


def summary(results: dict) -> str:
  """The run's printed summary: the parties' accuracies and attack success, the protocol
  table, the monitor stack, safety against the audit budget, and the evasive U's stack when the
  run has one."""
  p = results["parties"]
  head = (f"AI control on {results['data']}: U {results['model']} (accuracy "
          f"{_pct(p['untrusted_accuracy'], 0).strip()}%), T {results['trusted_model']} "
          f"({_pct(p['trusted_accuracy'], 0).strip()}%), attack success "
          f"{_pct(p['attack_success'], 0).strip()}%; audit budget "
          f"{100 * results['audit_budget']:g}%, {results['tasks']} tasks x "
          f"{results['deployments']} deployments (%, 95% CI)")
  budgets = results["budgets"]
  lines = [head, *protocol_lines(results), "", *stack_lines(results), "",
           "safety against the audit budget, worst attacker (honest tasks flagged), %:"]
  for name, row in budgets.items():
    lines.append(f"  {name:<34} " + "  ".join(
        f"{b}: {100 * v['safety']['mean']:.1f} ({100 * v['honest_flag_rate']:.1f})"
        for b, v in row.items()))
  if "evasive" in results:
    e = results["evasive"]
    lines += ["", f"evasive U (trigger at {tuple(e['trigger']['at'])}, inside the trusted pixel "
              f"range; attack success {_pct(e['parties']['attack_success'], 0).strip()}%), "
              "fusions fitted on the first U's attacks:", *_stack_lines(e["stack"])]
  return "\n".join(lines)


def published_comparisons(results: dict) -> list[Comparison]:
  """Greenblatt et al.'s Table 1 beside a control run's (its ``results.json``): for each protocol
  row they have, usefulness % (T alone 0, U alone 100) and safety % against the red team's best
  response in the simulated game (one decimal and the 95% interval, as printed). ``theirs`` comes
  from ``results["published"]`` (``PUBLISHED`` for rows it lacks)."""
  pub = {**PUBLISHED, **results.get("published", {})}
  on = (f"ours: {results['data']}, U {results['model']}, T {results['trusted_model']}; theirs: "
        f"APPS, U GPT-4, T GPT-3.5; audit budget {100 * results['audit_budget']:g}%")
  pct = lambda e: format_estimate(e, pct=True, digits=1, missing="-")
  rows = []
  for name, row in results["protocols"].items():
    if name in pub:
      usefulness, safety = pub[name]
      shown = name.replace("_", " ")
      rows += [Comparison(f"{shown}: usefulness % ({on})", pct(row["rescaled"]),
                          f"{usefulness:g}", "Greenblatt et al. 2023"),
               Comparison(f"{shown}: safety %, red team's best response ({on})",
                          pct(row["safety"]), f"{safety:g}", "Greenblatt et al. 2023")]
  return rows


FAMILIES = PROTOCOLS.names   # a row's family: the protocol its name starts with


def _family(name: str) -> str:
  return next((f for f in FAMILIES if name.startswith(f)), name)


def plot(results: dict, out_dir: str) -> list[str]:
  """Writes ``pareto.png`` (usefulness against safety per protocol family, Greenblatt et al.'s
  points beside), ``safety_vs_budget.png`` and ``roc.png`` (each monitor's and stack's ROC, and
  the evasive U's) under ``out_dir``; returns their paths."""
  paths = []
  fig, ax = plt.subplots(figsize=(6.5, 4.8))
  colors = dict(zip(FAMILIES, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
  for family in FAMILIES:
    ours = [(r["rescaled"]["mean"], r["safety"]["mean"]) for n, r in results["protocols"].items()
            if _family(n) == family]
    for pts, style, label in ((ours, "o-", family),
                              ([(u / 100, sf / 100) for n, (u, sf) in PUBLISHED.items()
                                if _family(n) == family], "x--", None)):
      if pts:
        pts = sorted(pts)
        ax.plot(*zip(*pts), style, color=colors[family], label=label, ms=5, lw=1,
                alpha=1.0 if label else 0.6)
  ax.plot([0], [1], "ks", ms=5, label="do not use U")
  ax.set_xlabel("usefulness (T alone 0, U alone 1)")
  ax.set_ylabel("safety (worst attack policy)")
  ax.set_title("Protocols: ours (o, solid) and Greenblatt et al. 2023 (x, dashed)", fontsize=9)
  ax.legend(fontsize=7, loc="lower left")
  paths.append(figures.save(fig, out_dir, "pareto.png"))

  fig, ax = plt.subplots(figsize=(5.5, 4))
  for name, row in results["budgets"].items():
    budgets = [float(b) for b in row]
    safe = [v["safety"] for v in row.values()]
    ax.errorbar(budgets, [v["mean"] for v in safe],
                yerr=[[v["mean"] - v["lo"] for v in safe], [v["hi"] - v["mean"] for v in safe]],
                marker="o", label=name, capsize=2)
  ax.set_xscale("log")
  ax.set_xlabel("audit budget (share of tasks)")
  ax.set_ylabel("safety (worst attacker)")
  ax.legend(fontsize=7)
  paths.append(figures.save(fig, out_dir, "safety_vs_budget.png"))

  rows = {"": results["stack"]["by_defender"]}
  if "evasive" in results:
    rows["evasive U: "] = results["evasive"]["stack"]["by_defender"]
  fig, axes = plt.subplots(1, len(rows), figsize=(5.2 * len(rows), 4.5), squeeze=False)
  for ax, (prefix, by) in zip(axes[0], rows.items()):
    for name, row in by.items():
      curve = row["roc"]["curve"]
      ax.plot(curve["fpr"], curve["tpr"], label=f"{name} ({row['roc']['auroc']['mean']:.3f})",
              lw=1.2, ls="-" if not name.startswith("stack") else "--")
    ax.axvline(results["audit_budget"], color="grey", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlim(1 / (2 * results["pool"]), 1.0)
    ax.set_title(f"{prefix or 'U: '}ROC of each monitor and stack", fontsize=9)
    ax.set_xlabel("false-positive rate on honest tasks")
    ax.set_ylabel("true-positive rate on successful attacks")
    ax.legend(fontsize=6)
  paths.append(figures.save(fig, out_dir, "roc.png"))
  return paths
