"""Config defaults shared by every experiment, named-argument parsing, and validation.

An experiment file builds on ``base()``; ``validate()`` runs before any work and raises
``ConfigError`` with one line naming the key, the bad value, and what would be valid.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import ml_collections

from superalign import data as data_lib
from superalign import models, runners
from superalign.core import mesh as mesh_lib
from superalign.core import optim
from superalign.core.errors import ConfigError


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

  # Mesh axis sizes (-1 fills); num_devices: use the first N devices (0 = all).
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "model": 1, "num_devices": 0})

  c.optim = ml_collections.ConfigDict()
  c.optim.name = "adamw"
  c.optim.learning_rate = 1e-3
  c.optim.weight_decay = 1e-4
  c.optim.schedule = "cosine"
  c.optim.warmup_steps = 0
  c.optim.clip_norm = 1.0
  c.optim.momentum = 0.9           # sgd only
  c.optim.ema_decay = 0.0          # > 0: also keep a moving average of the parameters (a teacher)

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 64
  c.train.eval_batch_size = 256
  c.train.num_steps = 0            # total steps; 0 = use num_epochs
  c.train.num_epochs = 20
  c.train.eval_every = 100
  c.train.log_every = 25
  c.train.checkpoint_every = 200
  c.train.keep_checkpoints = 2
  c.train.early_stop_metric = ""   # "" = off; else a validation metric: accuracy, loss, auroc
  c.train.early_stop_mode = "max"
  c.train.patience = 5
  return c


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
      out[key] = value.lower() in ("1", "true", "yes")
    else:
      try:
        out[key] = kind(value)
      except ValueError:
        raise ConfigError(f"config argument {key}={value!r}: expected {kind.__name__}") from None
  return ml_collections.ConfigDict(out)


_POSITIVE = ("train.batch_size", "train.eval_batch_size", "train.log_every",
             "train.keep_checkpoints", "train.patience", "optim.learning_rate", "data.max_len",
             "data.vocab_size")
_NON_NEGATIVE = ("train.num_steps", "train.num_epochs", "train.eval_every",
                 "train.checkpoint_every", "optim.weight_decay", "optim.clip_norm",
                 "optim.warmup_steps", "data.limit")
EARLY_STOP_METRICS = ("accuracy", "loss", "auroc")


def _get(config, dotted: str):
  node = config
  for part in dotted.split("."):
    node = node[part]
  return node


def validate(config: ml_collections.ConfigDict, num_devices: int | None = None) -> None:
  """Raises ConfigError on the first problem, before any data is loaded or model built."""
  if config.kind not in runners.RUNNERS:
    raise ConfigError(f"kind={config.kind!r}: unknown; valid: {', '.join(sorted(runners.RUNNERS))}")
  for key in _POSITIVE:
    value = _get(config, key)
    if not value > 0:
      raise ConfigError(f"{key}={value!r}: must be positive")
  for key in _NON_NEGATIVE:
    value = _get(config, key)
    if value < 0:
      raise ConfigError(f"{key}={value!r}: must be zero or positive")
  if not (config.train.num_steps > 0 or config.train.num_epochs > 0):
    raise ConfigError("train.num_steps=0 and train.num_epochs=0: set one of them above zero")
  if config.model.name not in models.MODELS:
    raise ConfigError(f"model.name={config.model.name!r}: unknown model; valid: "
                      f"{', '.join(models.names())}")
  if config.model.dtype not in models.registry.DTYPES:
    raise ConfigError(f"model.dtype={config.model.dtype!r}: valid: "
                      f"{', '.join(models.registry.DTYPES)}")
  data_lib.check_name(config.data.name)
  if config.data.tfds_dir and not os.path.isdir(os.path.expanduser(config.data.tfds_dir)):
    raise ConfigError(f"data.tfds_dir={config.data.tfds_dir!r}: no such directory")
  for name, frac in config.data.splits.items():
    if not 0 < frac <= 1:
      raise ConfigError(f"data.splits.{name}={frac}: must be a fraction in (0, 1]")
  if config.optim.name not in optim.OPTIMIZERS:
    raise ConfigError(f"optim.name={config.optim.name!r}: valid: {', '.join(optim.OPTIMIZERS)}")
  if config.optim.schedule not in optim.SCHEDULES:
    raise ConfigError(f"optim.schedule={config.optim.schedule!r}: valid: "
                      f"{', '.join(optim.SCHEDULES)}")
  if not 0 <= config.optim.ema_decay < 1:
    raise ConfigError(f"optim.ema_decay={config.optim.ema_decay}: must be in [0, 1) (0 = off)")
  if config.train.early_stop_metric and config.train.early_stop_metric not in EARLY_STOP_METRICS:
    raise ConfigError(f"train.early_stop_metric={config.train.early_stop_metric!r}: valid: "
                      f"'' (off), {', '.join(EARLY_STOP_METRICS)}")
  if config.train.early_stop_mode not in ("max", "min"):
    raise ConfigError(f"train.early_stop_mode={config.train.early_stop_mode!r}: valid: max, min")
  _validate_mesh(config, jax.device_count() if num_devices is None else num_devices)
  runners.get(config.kind).validate(config)


def _validate_mesh(config, num_devices: int) -> None:
  axes = dict(config.mesh)
  wanted = int(axes.pop("num_devices", 0))
  if wanted < 0 or wanted > num_devices:
    raise ConfigError(f"mesh.num_devices={wanted}: must be between 0 (all) and the "
                      f"{num_devices} available")
  num_devices = wanted or num_devices
  try:
    sizes = mesh_lib.resolve_axis_sizes(axes, num_devices)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  shards = sizes["data"] * sizes["fsdp"]
  for key in ("batch_size", "eval_batch_size"):
    value = config.train[key]
    if value % shards:
      raise ConfigError(
          f"train.{key}={value}: not divisible by the batch shards (mesh data x fsdp = {shards})")
