"""Protocol runners by ``config.kind``, the validation that runs before any work, and the run.

A protocol plugs in with one line in ``RUNNERS``: its module has ``validate(config)`` (its own
checks, raising ConfigError) and ``run(config, workdir) -> dict`` (the results), and optionally
``plot(results, out_dir) -> paths`` and ``summary(results) -> str`` (the printed table).
``execute`` does the rest for every protocol: wall time, plots, learning curves, results.json.
"""

from __future__ import annotations

import importlib
import math
import os
import time
from types import ModuleType

import jax
import ml_collections

from superalign import data as data_lib
from superalign import models
from superalign.core import mesh as mesh_lib
from superalign.core import optim, workdir as workdir_lib
from superalign.core.errors import ConfigError

RUNNERS = {
    "supervised": "superalign.supervised.run",
    "w2s": "superalign.w2s.run",
    "w2s_misfit": "superalign.w2s.misfit.run",
    "debate": "superalign.oversight.run",
    "amplification": "superalign.amplification.run",
    "sandwich": "superalign.sandwich.run",
    "interp": "superalign.interp.run",
    "interp_ccs_w2s": "superalign.interp.ccs_w2s",
    "process": "superalign.process.run",
    "verify": "superalign.verify.run",
    "verify_oversight": "superalign.verify.oversight",
    "control": "superalign.control.run",
}


def get(kind: str) -> ModuleType:
  return importlib.import_module(RUNNERS[kind])


def execute(config, workdir: str) -> dict:
  """Runs ``config.kind``'s protocol in a prepared workdir and writes its results."""
  runner, started = get(config.kind), time.time()
  results = runner.run(config, workdir)
  return workdir_lib.finish(workdir, results, started, getattr(runner, "plot", None),
                            getattr(runner, "summary", None))


def launch(config, workdir: str) -> dict:
  """What the launcher does with a parsed config, for notebooks and scripts: validate it, claim
  ``workdir`` (a rerun there resumes), run, and write ``results.json``; returns the results.
  The process is set up as the launcher sets it up, so the numbers are the launcher's."""
  from superalign.core import runtime
  runtime.setup_compilation()
  validate(config)
  with workdir_lib.claim(config, workdir) as claimed:
    return execute(config, claimed)


_POSITIVE = ("optim.learning_rate", "data.max_len", "data.vocab_size")
_NON_NEGATIVE = ("optim.weight_decay", "optim.clip_norm", "optim.warmup_steps", "data.limit")
# Checked in every training block: ``train`` and nested ones such as ``pretrain.train``.
_TRAIN_POSITIVE = ("batch_size", "eval_batch_size", "log_every", "keep_checkpoints", "patience")
_TRAIN_NON_NEGATIVE = ("num_steps", "num_epochs", "eval_every", "checkpoint_every")
EARLY_STOP_METRICS = ("accuracy", "loss", "auroc")


def _present(config, dotted: str):
  """The value at ``dotted``, or None when its block is absent (a kind that does not use it)."""
  node = config
  for part in dotted.split("."):
    if part not in node:
      return None
    node = node[part]
  return node


def validate(config, num_devices: int | None = None) -> None:
  """Raises ConfigError on the first problem, before any data is loaded or model built. Each
  block is checked where the config has it."""
  if config.kind not in RUNNERS:
    raise ConfigError(f"kind={config.kind!r}: unknown; valid: {', '.join(sorted(RUNNERS))}")
  _validate_leaves(config)
  for key in _POSITIVE:
    value = _present(config, key)
    if value is not None and not value > 0:
      raise ConfigError(f"{key}={value!r}: must be positive")
  for key in _NON_NEGATIVE:
    value = _present(config, key)
    if value is not None and value < 0:
      raise ConfigError(f"{key}={value!r}: must be zero or positive")
  for prefix, block in _train_blocks(config):
    _validate_train(block, prefix)
  if "model" in config:
    models.validate_name(config.model.name)
    if config.model.dtype not in models.registry.DTYPES:
      raise ConfigError(f"model.dtype={config.model.dtype!r}: valid: "
                        f"{', '.join(models.registry.DTYPES)}")
  if "data" in config:
    _validate_data(config.data)
  if "optim" in config:
    _validate_optim(config.optim)
  _validate_mesh(config, jax.device_count() if num_devices is None else num_devices)
  get(config.kind).validate(config)


MAX_SEED = 2**31 - 1


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


def _train_blocks(config, prefix: str = ""):
  """(dotted prefix, block) for every training block: any ConfigDict under a ``train`` or
  ``*_train`` key."""
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      if key == "train" or key.endswith("_train"):   # and a stage's own: rm_train, ...
        yield f"{prefix}{key}", value
      else:
        yield from _train_blocks(value, f"{prefix}{key}.")


def _validate_train(t, name: str = "train") -> None:
  for key in _TRAIN_POSITIVE:
    if key in t and not t[key] > 0:
      raise ConfigError(f"{name}.{key}={t[key]!r}: must be positive")
  for key in _TRAIN_NON_NEGATIVE:
    if key in t and t[key] < 0:
      raise ConfigError(f"{name}.{key}={t[key]!r}: must be zero or positive")
  if not (t.get("num_steps", 0) > 0 or t.get("num_epochs", 0) > 0):
    raise ConfigError(f"{name}.num_steps=0 and {name}.num_epochs=0: set one of them above zero")
  metric = t.get("early_stop_metric", "")
  if metric and metric not in EARLY_STOP_METRICS:
    raise ConfigError(f"{name}.early_stop_metric={metric!r}: valid: "
                      f"'' (off), {', '.join(EARLY_STOP_METRICS)}")
  if t.get("early_stop_mode", "max") not in ("max", "min"):
    raise ConfigError(f"{name}.early_stop_mode={t.early_stop_mode!r}: valid: max, min")


def _validate_data(d) -> None:
  data_lib.check_name(d.name)
  if d.tfds_dir and not os.path.isdir(os.path.expanduser(d.tfds_dir)):
    raise ConfigError(f"data.tfds_dir={d.tfds_dir!r}: no such directory")
  for name, frac in d.splits.items():
    if not 0 < frac <= 1:
      raise ConfigError(f"data.splits.{name}={frac}: must be a fraction in (0, 1]")


def _validate_optim(o) -> None:
  if o.name not in optim.OPTIMIZERS:
    raise ConfigError(f"optim.name={o.name!r}: valid: {', '.join(optim.OPTIMIZERS)}")
  if o.schedule not in optim.SCHEDULES:
    raise ConfigError(f"optim.schedule={o.schedule!r}: valid: {', '.join(optim.SCHEDULES)}")
  if not 0 <= o.ema_decay < 1:
    raise ConfigError(f"optim.ema_decay={o.ema_decay}: must be in [0, 1) (0 = off)")
  if not 0 <= o.get("momentum", 0.0) < 1:  # sgd's heavy ball: 1 or more never forgets a step
    raise ConfigError(f"optim.momentum={o.momentum}: must be in [0, 1) (0 = off)")


def _validate_mesh(config, num_devices: int) -> None:
  axes = {k: v for k, v in config.mesh.items() if k not in mesh_lib.NOT_AXES}
  wanted = int(config.mesh.get("num_devices", 0))
  if wanted < 0 or wanted > num_devices:
    raise ConfigError(f"mesh.num_devices={wanted}: must be between 0 (all) and the "
                      f"{num_devices} available")
  try:
    sizes = mesh_lib.resolve_axis_sizes(axes, wanted or num_devices)
    mesh_lib.rules_from_config(config.mesh)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  shards = sizes["data"] * sizes["fsdp"]
  processes = jax.process_count()
  if shards % processes:  # each process loads its own slice of every batch (core.batches)
    raise ConfigError(f"mesh data x fsdp = {shards}: not divisible by the {processes} processes; "
                      "the batch axes must span every host (e.g. --config.mesh.data=-1)")
  if wanted and wanted != num_devices and processes > 1:
    raise ConfigError(f"mesh.num_devices={wanted}: a multi-host run uses every device; set it to 0")
  for prefix, block in _train_blocks(config):
    for key in ("batch_size", "eval_batch_size"):
      if key in block and block[key] % shards:
        raise ConfigError(f"{prefix}.{key}={block[key]}: not divisible by the batch shards "
                          f"(mesh data x fsdp = {shards})")
