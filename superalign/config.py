"""Config defaults shared by every experiment, and named-argument parsing.

An experiment file builds on ``base()``. This module is a leaf (ml_collections and the engine's
JAX-free declarations): reading a config imports no JAX. The optimizer and training blocks are the
defaults of ``core.spec``'s ``Optim`` and ``Train`` (one declaration, with their ranges there);
validation runs in the launch room (``superalign.launch.validation``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

from superalign.core.axes import LOGICAL_RULES
from superalign.core.errors import ConfigError
from superalign.core.spec import Optim, Train


def base() -> ml_collections.ConfigDict:
  """Keys every experiment has; protocols add their own next to these."""
  c = ml_collections.ConfigDict()
  c.kind = "supervised"
  c.seed = 0
  c.distributed = False            # call jax.distributed.initialize() (multi-host)

  c.model = ml_collections.ConfigDict()
  c.model.name = "mlp_base"
  c.model.dtype = "float32"        # compute dtype; parameters stay float32

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
