"""The control analyses on scored tasks: each monitor's ROC, the protocol table, trusted monitoring
against every attacker, and safety against the audit budget.

Every analysis reads the calibration tasks (``cal``: thresholds on their honest scores) and the
deployment pool (``dep``), and reports safety both ways and usefulness through one ``Evaluator``.
The monitor stack is in ``stack.py``, the evasive U in ``evasive.py``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from superalign.control import attacks, protocols, safety
from superalign.control import monitors as monitors_lib
from superalign.control.params import ControlSpec
from superalign.control.setting import Tasks
from superalign.results.estimates import auroc
from superalign.core.rng import stream_seed


def orientation(cal: Tasks, names) -> dict[str, float]:
  """``{name: -1 or 1}``: -1 for the monitors in ``names`` whose calibration AUROC (honest
  answers against successful attacks) is below 0.5."""
  return {n: -1.0 if auroc(*monitors_lib.labelled(cal, protocols.single(n))) < 0.5 else 1.0
          for n in names}


def oriented(tasks: Tasks, signs: dict) -> Tasks:
  """The tasks with every monitor's suspicion tables (honest and attack) multiplied by its sign
  in ``signs`` (``orientation``; 1 for a monitor it does not name), so that higher is more
  suspicious."""
  return dataclasses.replace(tasks, suspicion={
      n: (signs.get(n, 1.0) * h, signs.get(n, 1.0) * a) for n, (h, a) in tasks.suspicion.items()})


def rocs(dep: Tasks, names, fprs) -> dict:
  """Each single monitor's ROC on the deployment pool (``monitors.roc``)."""
  return {n: monitors_lib.roc(dep, protocols.single(n), fprs) for n in names}


class Evaluator:
  """Safety (both ways) and usefulness of plans on the deployment pool, at ``budget`` (default
  the audit budget), against the red team's attack policies."""

  def __init__(self, spec: ControlSpec, dep: Tasks, budget: float | None = None):
    self.spec, self.dep = spec, dep
    self.budget = float(spec.audit_budget if budget is None else budget)
    self.u_correct = dep.u_answer == dep.y
    self.t_correct = dep.t_probs.argmax(-1) == dep.y

  def opportunities(self, known) -> np.ndarray:
    """The tasks the red team attacks: all (``known`` None, attacks at a rate), or the share it
    selects against the scorer ``known``."""
    return attacks.opportunities(self.dep, known, self.spec.selection_fraction)

  def __call__(self, plan: safety.Plan, opportunity: np.ndarray) -> dict:
    s = self.spec
    return {"honest_flag_rate": float(np.mean(plan.honest_score >= plan.audit_threshold))
            if not plan.upfront else self.budget,
            "safety": safety.game_safety(
                plan, opportunity, s.attack_rates, tasks=s.tasks, deployments=s.deployments,
                budget=self.budget, seed=stream_seed(s.seed, "control/game")),
            "safety_ratio": safety.ratio_safety(plan, opportunity, self.budget),
            **safety.usefulness(plan, self.u_correct, self.t_correct)}


def worst(rows: dict, key: str = "attack") -> dict:
  """The red team's best response among its options: the lowest game safety."""
  choice = min(rows, key=lambda a: rows[a]["safety"]["mean"])
  return {**rows[choice], key: choice}


def protocol_table(cal: Tasks, dep: Tasks, evaluate: Evaluator, spec: ControlSpec) -> dict:
  """Per row of every protocol of ``spec.protocols`` (``protocols.PROTOCOLS``), with the
  protocols' monitor at the audit budget: safety (both ways) and usefulness against the red
  team's best response among attack policies (and collusion, for untrusted monitoring), each
  option kept."""
  scorer = protocols.single(spec.monitor)
  table = {}
  for name in spec.protocols:
    table.update(protocols.PROTOCOLS[name](cal, dep, scorer, spec.audit_budget, spec))
  out = {}
  for name, row in table.items():
    options = {}
    for choice, plan in row.plans.items():
      for a, known in (("rate", None), ("selection", row.monitor)):
        label = f"{a}, collusion on {choice}" if choice else a
        options[label] = evaluate(plan, evaluate.opportunities(known))
        options[label]["shutdown"] = plan.shutdown
    out[name] = {"by_attack": options, **worst(options)}
  return out


def defend(cal: Tasks, dep: Tasks, scorer, evaluate: Evaluator, names) -> dict:
  """Trusted monitoring with ``scorer`` against every attacker of ``attacks.attackers(names)``;
  its ``safety`` is the worst of them. ``knows_all``: against attack selection on ``scorer``
  itself (for a stack, an attacker that knows every monitor and how they are combined)."""
  plan = protocols.monitored(cal, dep, scorer, evaluate.budget)
  rows = {a: evaluate(plan, evaluate.opportunities(known))
          for a, known in attacks.attackers(names).items()}
  return {"by_attacker": rows, **worst(rows),
          "knows_all": evaluate(plan, evaluate.opportunities(scorer))["safety"]}


def budget_sweep(cal: Tasks, dep: Tasks, defenders: dict, names, spec: ControlSpec) -> dict:
  """Safety (worst attacker knowing at most one of the monitors ``names``) at each of
  ``spec.budgets``, and the share of honest deployment tasks above the audit threshold (above
  the budget, audits run out before the deployment ends)."""
  out = {}
  for name, scorer in defenders.items():
    out[name] = {}
    for b in spec.budgets:
      row = defend(cal, dep, scorer, Evaluator(spec, dep, b), names)
      out[name][f"{b:g}"] = {"safety": row["safety"],
                             "honest_flag_rate": row["honest_flag_rate"]}
  return out
