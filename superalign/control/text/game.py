"""The control game on scored tasks, in one call: the image runner's analyses (``control.analyses``
and ``control.stack``) in its order, for any setting whose tasks are ``control.setting.Tasks``."""

from __future__ import annotations

from superalign.control import analyses, setting
from superalign.control.params import ControlSpec
from superalign.control.report import PUBLISHED
from superalign.control.setting import Tasks
from superalign.control.stack import stack


def play(cal: Tasks, dep: Tasks, workdir: str, monitors, spec: ControlSpec) -> dict:
  """The monitors (``monitors.names``, their costs, ``monitors.orient``) oriented on ``cal``'s
  attacks, then on the deployment pool ``dep``: each monitor's ROC, the protocol table, the
  monitor stack against every attacker (each adaptive one knows one monitor) and safety against
  the audit budget for the protocols' monitor and the best stack."""
  signs = analyses.orientation(cal, monitors.orient)
  cal, dep = analyses.oriented(cal, signs), analyses.oriented(dep, signs)
  evaluate = analyses.Evaluator(spec, dep)
  out = {"audit_budget": spec.audit_budget, "tasks": spec.tasks,
         "deployments": spec.deployments, "pool": len(dep), "calibration": len(cal),
         "parties": setting.parties_summary(dep), "orientation": signs,
         "monitors": analyses.rocs(dep, monitors.names, spec.roc_fprs),
         "protocols": analyses.protocol_table(cal, dep, evaluate, spec),
         "published": PUBLISHED}
  out["stack"], defenders = stack(cal, dep, workdir, evaluate, monitors, spec)
  swept = [d for d in (spec.monitor, out["stack"]["best_stack"]) if d]
  out["budgets"] = analyses.budget_sweep(cal, dep, {d: defenders[d] for d in swept},
                                         monitors.names, spec)
  return out
