"""The evasive U: a U retrained against one monitor, its trigger moved inside the range of the
trusted images so that input validation (the ``rule`` monitor) cannot see it. The blue team does
not know: its fusions stay fitted on the attacks it has seen (the first U's), its thresholds are
set on the deployed model's honest calibration tasks. Beside them, fusions refitted on this U's
own calibration attacks (``(refit)``, the combinations that learn from attacks): what a blue team
that had seen them would do."""

from __future__ import annotations

from superalign.control import analyses, setting
from superalign.control.monitors import COMBINATIONS
from superalign.control.params import ControlSpec, MonitorSpec
from superalign.control.setting import Backdoor, Tasks
from superalign.control.stack import compare, stack
from superalign.core.trainer import Trained
from superalign.data.splits import Split


def results(untrusted: Trained, trusted: Trained, backdoor: Backdoor, splits: dict[str, Split],
            workdir: str, monitors: MonitorSpec, spec: ControlSpec, cal_seen: Tasks,
            signs: dict) -> dict:
  """The evasive ``untrusted`` (trained with ``backdoor``) deployed with ``trusted`` under the
  monitors oriented by ``signs``, its stack's fusions fitted on the attacks of ``cal_seen`` (the
  first U's calibration tasks) and refitted on its own."""
  cal, dep = setting.deploy(untrusted, trusted, monitors, splits, backdoor, workdir, "_evasive")
  cal, dep = analyses.oriented(cal, signs), analyses.oriented(dep, signs)
  evaluate = analyses.Evaluator(spec, dep)
  stacked, _ = stack(cal, dep, workdir, evaluate, monitors, spec, known_attacks=cal_seen,
                     tag="fusion_evasive")
  learned = [k for k in spec.combinations if COMBINATIONS[k].learned]
  refit, _ = stack(cal, dep, workdir, evaluate, monitors, spec, tag="fusion_evasive_refit",
                   singles=False, kinds=learned)
  for name, row in refit["by_defender"].items():
    stacked["by_defender"][f"{name} (refit)"] = row
  compare(stacked)
  return {"trigger": backdoor.summary(), "parties": setting.parties_summary(dep),
          "monitors": analyses.rocs(dep, monitors.names, spec.roc_fprs), "stack": stacked}
