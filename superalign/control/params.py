"""The control runner's parameter groups as typed data, built once from the config.

``MonitorSpec`` is the ``monitors`` block (which monitors run, what they cost, how each is fitted);
``ControlSpec`` is the ``control`` block (the protocols and their knobs, the audit budget, the
simulated deployments, the red team's attack selection, the stack and the budget sweep). Both
carry the run's ``seed``. The defaults live in the experiment configs; library code reads these
dataclasses, never the config.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping


def _floats(values) -> tuple[float, ...]:
  return tuple(float(v) for v in values)


@dataclasses.dataclass(frozen=True)
class MonitorSpec:
  """The ``monitors`` block: which monitors score every task, what each call costs, and how each
  monitor is fitted (the fields' comments say which monitor reads them)."""
  names: tuple[str, ...]             # the monitors that score every task, in table order
  costs: Mapping[str, float]         # per monitor (1.0 where not given)
  redaction_level: float             # untrusted: pixels this quiet on trusted images are hidden
  probe_site: str                    # probe: U's activation site
  contrast_pairs: int                # probe: the generic contrast pairs it is fitted on
  certificate_method: str            # certificate: verify's bound method
  certificate_eps: float             # certificate: the L-infinity radius
  certificate_batch: int             # certificate: rows per bound batch (0: the eval batch)
  certificate_max_unstable: int      # certificate: crown's unstable-neuron cap (0: none)
  rule_quantile: float               # rule: the trusted images' per-pixel range
  orient: tuple[str, ...]            # monitors whose sign the calibration attacks set
  seed: int = 0

  @classmethod
  def from_config(cls, m, seed: int) -> MonitorSpec:
    """From a config's ``monitors`` block."""
    return cls(names=tuple(m.names), costs={n: float(v) for n, v in m.costs.items()},
               redaction_level=float(m.redaction_level), probe_site=str(m.probe_site),
               contrast_pairs=int(m.contrast_pairs), certificate_method=str(m.certificate_method),
               certificate_eps=float(m.certificate_eps), certificate_batch=int(m.certificate_batch),
               certificate_max_unstable=int(m.certificate_max_unstable),
               rule_quantile=float(m.rule_quantile), orient=tuple(m.orient), seed=int(seed))

  def cost(self, name: str) -> float:
    """The cost of one call of monitor ``name`` (1.0 where ``costs`` does not give it)."""
    return float(self.costs.get(name, 1.0))


@dataclasses.dataclass(frozen=True)
class ControlSpec:
  """The ``control`` block: the protocols and their knobs (deferral and edit fractions,
  untrusted monitoring's synthetic attacks, resampling), the audit budget, the simulated
  deployments and attack rates, the red team's attack selection, the monitor stack's combinations
  and the budget sweep."""
  protocols: tuple[str, ...]         # rows of the protocol table, by registry name
  monitor: str                       # the protocols' monitor
  audit_budget: float                # H audits this share of a deployment's tasks
  defer_fractions: tuple[float, ...]
  edit_fractions: tuple[float, ...]
  edit_candidates: int               # T picks among U's most likely classes
  tasks: int                         # per simulated deployment
  deployments: int                   # simulated, per attack rate
  attack_rates: tuple[float, ...]
  selection_fraction: float          # attack selection: the least suspicious share of attacks
  synthetic_attacks: int             # untrusted monitoring: H audits these before deploying
  synthetic_min_flagged: float
  resample_draws: int
  resample_temperature: float
  resample_sets: int                 # independent draws per task in the pool
  combinations: tuple[str, ...]      # fusions of the monitor stack, by registry name
  cascade_call_fraction: float
  budgets: tuple[float, ...]         # the budget sweep
  roc_fprs: tuple[float, ...]
  evasive_trigger_at: tuple          # the evasive U's trigger (row, col); () skips it (and
                                     # a block without the key: the text game has none)
  seed: int = 0

  @classmethod
  def from_config(cls, c, seed: int) -> ControlSpec:
    """From a config's ``control`` block."""
    return cls(
        protocols=tuple(c.protocols), monitor=str(c.monitor),
        audit_budget=float(c.audit_budget), defer_fractions=_floats(c.defer_fractions),
        edit_fractions=_floats(c.edit_fractions), edit_candidates=int(c.edit_candidates),
        tasks=int(c.tasks), deployments=int(c.deployments), attack_rates=_floats(c.attack_rates),
        selection_fraction=float(c.selection_fraction),
        synthetic_attacks=int(c.synthetic_attacks),
        synthetic_min_flagged=float(c.synthetic_min_flagged),
        resample_draws=int(c.resample_draws), resample_temperature=float(c.resample_temperature),
        resample_sets=int(c.resample_sets), combinations=tuple(c.combinations),
        cascade_call_fraction=float(c.cascade_call_fraction), budgets=_floats(c.budgets),
        roc_fprs=_floats(c.roc_fprs), evasive_trigger_at=tuple(c.get("evasive_trigger_at", ())),
        seed=int(seed))
