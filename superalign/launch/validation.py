"""The checks every config passes before any work: the base keys' declared ranges, every training
and optimizer block, the data and model names, the model's dtypes on this machine, the mesh, then
the kind's own declarations (``SPLITS``, ``RULES``) and its rules across keys (``validate``)."""

from __future__ import annotations

import functools
import math
import os
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections

from superalign import data as data_lib
from superalign import models
from superalign.config import schema
from superalign.core import mesh as mesh_lib
from superalign.core.errors import ConfigError, first_line
from superalign.config import LORA_RULES, OPTIM_RULES, RENAMED, check_train
from superalign.core.axes import LOGICAL_AXES, MESH_AXES

MAX_SEED = 2**31 - 1
BASE_RULES = {
    **LORA_RULES,
    "data.max_len": schema.COUNT,
    "data.vocab_size": schema.COUNT,
    "data.limit": schema.COUNT_OR_ZERO,
    "data.tfds_limit": schema.COUNT_OR_ZERO,
    "model.name": schema.NAME,   # the registry's or a checkpoint's: models.validate_name
    "model.compute_dtype": schema.one_of(*models.registry.DTYPES),
    "model.param_dtype": schema.one_of(*models.registry.DTYPES),
}
# Optimizers whose update of float16 parameters is NaN (``_validate_dtypes``).
ADAM = ("adam", "adamw")


def validate(config, runners: Mapping[str, str], get: Callable, num_devices: int | None = None
             ) -> None:
  """Raises ConfigError on the first problem; each block is checked where the config has it."""
  if config.kind not in runners:
    raise ConfigError(f"kind={config.kind!r}: unknown; valid: {', '.join(sorted(runners))}")
  _validate_leaves(config)
  for old, new in RENAMED.items():
    if schema.lookup(config, old, KeyError) is not KeyError:
      raise ConfigError(f"{old}: no such key; it is now {new}")
  schema.check(config, BASE_RULES)
  for prefix, block in _blocks(config, "train"):
    check_train(block, prefix)
  for prefix, block in _blocks(config, "optim"):
    schema.check(block, OPTIM_RULES, f"{prefix}.")
  if "model" in config:
    models.validate_name(config.model.name)
    _validate_dtypes(config)
  if "data" in config:
    _validate_data(config.data)
  _validate_mesh(config, jax.device_count() if num_devices is None else num_devices)
  runner = get(config.kind)
  if "data" in config:
    schema.require_splits(config.data.splits, getattr(runner, "SPLITS", ()))
  schema.check(config, getattr(runner, "RULES", {}))
  if hasattr(runner, "validate"):
    runner.validate(config)
  if "model" in config:
    _validate_lora(config, getattr(runner, "LORA_MODELS", ("model.name",)))


def _validate_lora(config, keys) -> None:
  """``model.lora`` fits every model the kind adapts (the names at ``keys``: a runner's
  ``LORA_MODELS``), before any training: a transformer, each target matching a weight."""
  lora = models.lora.from_block(config.model.get("lora"))
  for key in keys if lora is not None else ():
    names = schema.lookup(config, key, ())
    for name in [names] if isinstance(names, str) else names:
      models.check_lora(name, lora, key)


def _validate_dtypes(config) -> None:
  """The model's dtypes compute on this machine's default backend (a tiny jitted matmul in each,
  once per dtype and backend), and float16 parameters are not Adam's."""
  backend = jax.default_backend()
  for key in ("compute_dtype", "param_dtype"):
    name = config.model.get(key)
    failure = name and _probe(name, backend)
    if failure:
      raise ConfigError(f"model.{key}={name!r}: the {backend} backend cannot compute {name} "
                        f"({failure}); choose another of {', '.join(models.registry.DTYPES)}")
  if config.model.get("param_dtype") == "float16":
    for prefix, block in _blocks(config, "optim"):
      if block.get("name") in ADAM:
        raise ConfigError(
            f"model.param_dtype='float16' with {prefix}.name={block.name!r}: Adam's update of "
            "float16 parameters is NaN within steps (its epsilon underflows to zero); use "
            "float32 parameters (model.compute_dtype='float16' still computes in float16) or "
            "bfloat16 ones")


@functools.lru_cache(maxsize=None)
def _probe(dtype: str, backend: str) -> str | None:
  """None if a jitted matmul in ``dtype`` runs on the default backend (``backend``, the cache
  key), else the first line of what it raised."""
  del backend
  try:
    x = jnp.ones((2, 2), models.registry.DTYPES[dtype])
    jax.block_until_ready(jax.jit(jnp.matmul)(x, x))
  except Exception as e:   # XlaRuntimeError, NotImplementedError, ...: the backend's own words
    return first_line(e)
  return None


def _validate_leaves(config, prefix: str = "") -> None:
  """Every number finite (``inf`` is no learning rate); every seed (``seed``, ``*_seed``) an
  integer in [0, 2**31 - 1], the range every random-number generator here accepts."""
  for key, value in config.items():
    name = prefix + key
    if isinstance(value, ml_collections.ConfigDict):
      _validate_leaves(value, name + ".")
    elif isinstance(value, float) and not math.isfinite(value):
      raise ConfigError(f"{name}={value}: must be a finite number")
    elif key == "seed" or key.endswith("_seed"):
      if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise ConfigError(f"{name}={value!r}: a seed is an integer in [0, {MAX_SEED}]")


def _blocks(config, name: str, prefix: str = ""):
  """(dotted prefix, block) for every block named ``name`` or ``*_<name>`` at any depth
  (``train``, ``pretrain.train``, ``process.rm_train``; ``optim``, ``ccs.optim``)."""
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      if key == name or key.endswith(f"_{name}"):
        yield f"{prefix}{key}", value
      else:
        yield from _blocks(value, name, f"{prefix}{key}.")


def _validate_data(d) -> None:
  data_lib.check_name(d.name)
  if d.tfds_dir and not os.path.isdir(os.path.expanduser(d.tfds_dir)):
    raise ConfigError(f"data.tfds_dir={d.tfds_dir!r}: no such directory")
  for name, frac in d.splits.items():
    if not 0 < frac <= 1:
      raise ConfigError(f"data.splits.{name}={frac}: must be a fraction in (0, 1]")


def _validate_rules(rules) -> None:
  """Each rule names a logical axis the models use and mesh axes that exist."""
  for name, axes in rules.items():
    if name not in LOGICAL_AXES:
      raise ConfigError(f"mesh.rules.{name}: unknown logical axis; valid: {', '.join(LOGICAL_AXES)}")
    axes = (axes,) if isinstance(axes, str) else tuple(axes)
    for axis in axes:
      if axis not in MESH_AXES:
        raise ConfigError(f"mesh.rules.{name}={axes}: {axis!r} is not a mesh axis; valid: "
                          f"{', '.join(MESH_AXES)}")


def _validate_mesh(config, num_devices: int) -> None:
  axes = {k: v for k, v in config.mesh.items() if k not in mesh_lib.NOT_AXES}
  wanted = int(config.mesh.get("num_devices", 0))
  if wanted < 0 or wanted > num_devices:
    raise ConfigError(f"mesh.num_devices={wanted}: must be between 0 (all) and the "
                      f"{num_devices} available")
  try:
    sizes = mesh_lib.resolve_axis_sizes(axes, wanted or num_devices)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  _validate_rules(config.mesh.get("rules") or {})
  shards = sizes["data"] * sizes["fsdp"]
  processes = jax.process_count()
  if shards % processes:  # each process loads its own slice of every batch (core.batches)
    raise ConfigError(f"mesh data x fsdp = {shards}: not divisible by the {processes} processes; "
                      "the batch axes must span every host (e.g. --config.mesh.data=-1)")
  if wanted and wanted != num_devices and processes > 1:
    raise ConfigError(f"mesh.num_devices={wanted}: a multi-host run uses every device; set it to 0")
  for prefix, block in _blocks(config, "train"):
    for key in ("batch_size", "eval_batch_size"):
      if key in block and block[key] % shards:
        raise ConfigError(f"{prefix}.{key}={block[key]}: not divisible by the batch shards "
                          f"(mesh data x fsdp = {shards})")
