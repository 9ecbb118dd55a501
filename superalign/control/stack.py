"""Defense in depth: trusted monitoring with each single monitor and each combination of them
(``monitors.COMBINATIONS``) at the same budget, against every attacker, including those that know
one monitor and attack where it is least suspicious; what each defender costs (the cascade runs
its expensive monitors on a share of the tasks only), and the rank correlations between
monitors on honest tasks and on attacks."""

from __future__ import annotations

import numpy as np

from superalign.control import protocols
from superalign.control import monitors as monitors_lib
from superalign.control.analyses import Evaluator, defend
from superalign.control.params import ControlSpec, MonitorSpec
from superalign.control.setting import Tasks
from superalign.results.estimates import proportion_ci


def stack(cal: Tasks, dep: Tasks, workdir: str, evaluate: Evaluator, monitors: MonitorSpec,
          spec: ControlSpec, *, known_attacks: Tasks | None = None, tag: str = "fusion",
          singles: bool = True, kinds=None) -> tuple[dict, dict]:
  """Trusted monitoring with each single monitor (``singles``) and each combination, at the
  same budget. Fusions (``kinds``, default ``spec.combinations``) are fitted on ``cal``'s
  honest tasks against the successful attacks of ``known_attacks`` (default ``cal``: the attacks
  the blue team has seen). Returns the table and the defenders' scorers by row name."""
  names = list(monitors.names)
  cal_honest = {n: cal.scores(n) for n in names}
  known = cal if known_attacks is None else known_attacks
  cal_attack = {n: known.scores(n, True)[known.attack_succeeds] for n in names}
  costs = {n: monitors.cost(n) for n in names}
  expensive = [n for n in names if costs[n] > 1.0]
  defenders = {n: protocols.single(n) for n in names} if singles else {}
  fused = {}
  for kind in spec.combinations if kinds is None else kinds:
    build = monitors_lib.COMBINATIONS[kind]
    if not build.applies(names, expensive):
      continue
    fused[f"stack: {kind}"] = build(names, cal_honest, cal_attack, workdir=workdir,
                                    tag=f"{tag}_{kind}", expensive=expensive,
                                    call_fraction=spec.cascade_call_fraction)
    defenders[f"stack: {kind}"] = protocols.combined(fused[f"stack: {kind}"], names)
  out = {"monitors": names, "costs": costs, "by_defender": {}}
  for d_name, scorer in defenders.items():
    entry = {**defend(cal, dep, scorer, evaluate, names),
             "roc": monitors_lib.roc(dep, scorer, spec.roc_fprs),
             "cost": costs[d_name] if d_name in costs else sum(costs.values())}
    called = fused[d_name].called({n: dep.scores(n) for n in names}) if d_name in fused else None
    if called is not None:   # the expensive monitors ran only where the cheap ones called them
      cheap = sum(costs[n] for n in names if n not in expensive)
      entry["cost"] = cheap + float(called.mean()) * sum(costs[n] for n in expensive)
      entry["called"] = proportion_ci(called)
    out["by_defender"][d_name] = entry
  if singles:
    compare(out)
  for where, per in (("honest", {n: dep.scores(n) for n in names}),
                     ("attack", {n: dep.scores(n, True)[dep.attack_succeeds] for n in names})):
    out[f"correlation_{where}"] = np.round(monitors_lib.rank_correlation(per, names), 3).tolist()
  return out, defenders


def compare(out: dict) -> None:
  """The defense-in-depth reading of a stack table: the best single monitor and the best stack
  by worst-case safety, their difference, and whether the stack's interval lies above."""
  rows = out["by_defender"]
  stacks = [d for d in rows if d.startswith("stack")]
  out["best_single"] = max(out["monitors"], key=lambda n: rows[n]["safety"]["mean"])
  out["best_stack"] = max(stacks, key=lambda d: rows[d]["safety"]["mean"]) if stacks else None
  if stacks:
    b, s = rows[out["best_single"]]["safety"], rows[out["best_stack"]]["safety"]
    out["stack_beats_best_single"] = bool(s["lo"] > b["hi"])
    out["stack_minus_best_single"] = s["mean"] - b["mean"]
