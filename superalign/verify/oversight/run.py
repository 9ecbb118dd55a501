"""Certificates for the models oversight relies on: ``kind = "verify_oversight"``.

Trains what each analysis of ``certify.analyses`` certifies and returns its results: ``judge``
(debate's sparse-pixel judge against changes of the revealed values, ``judge.py``) and
``backdoor`` (a backdoored organism and its clean twin: balls and a scan of free patches,
``backdoor.py``).
"""

from __future__ import annotations

from superalign.config import schema
from superalign.core.errors import ConfigError
from superalign.core.spec import TrainSpec
from superalign.parties.classifier import Model
from superalign.parties.judge import load_pixel_task
from superalign.verify import bounds, certify, config as verify_config
from superalign.verify.oversight import backdoor, judge, report  # noqa: F401 (registers analyses)
from superalign.verify.oversight.task import ANALYSES, Backdoor, Settings, Task

SPLITS = verify_config.OVERSIGHT_SPLITS
_METHODS = schema.choices_of(*bounds.METHODS.names)
RULES = {**verify_config.OVERSIGHT_RULES, "certify.bound_methods": _METHODS,
         "certify.scan_methods": _METHODS,
         "certify.analyses": schema.choices_of(*ANALYSES.names)}


def validate(config) -> None:
  """The rule across blocks: the ``backdoor`` analysis needs an ``organism`` block (else
  ConfigError)."""
  if "backdoor" in config.certify.analyses and "organism" not in config:
    raise ConfigError("certify.analyses: 'backdoor' needs an organism block (target_class, "
                      "poison_fraction, trigger_size, trigger_at, trigger_value)")


def run(config, workdir: str) -> dict:
  """Loads the pixel task of ``config.data``, checks ``certify.domain`` against the training
  inputs and runs each analysis of ``certify.analyses``; returns their results by name, beside
  the model, the data and the radii."""
  c = config.certify
  spec, model = TrainSpec.from_config(config), Model.from_blocks(config.model, config.data)
  source, splits, evidence = load_pixel_task(config.data, model.name, "verify_oversight")
  certify.check_domain(splits["train"].x, tuple(c.domain), "certify.domain")
  task = Task(spec, model, source.spec, splits, evidence,
              Backdoor.from_config(config.organism) if "organism" in config else None)
  settings = Settings.from_config(c)
  results = {"model": model.name, "data": config.data.name, "eps": [float(e) for e in c.eps]}
  for name in c.analyses:
    results[name] = ANALYSES[name](task, settings, workdir)
  return results


summary, plot = report.summary, report.plot
