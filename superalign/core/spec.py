"""The typed training spec: what the engine needs to train, built once by a runner from its config.

``TrainSpec`` holds the optimizer (``Optim``), the training block (``Train``), the mesh and its
logical axis rules (``MeshSpec``) and the seed, as frozen dataclasses. A runner builds it with
``TrainSpec.from_config(config)``; a stage with its own block or defaults derives its spec with
``spec.with_train(...)`` / ``spec.with_optim(...)`` (``dataclasses.replace`` underneath), and
library code that trains (a probe, an SAE) takes a spec, never a config. No JAX here: the config
defaults are these (``superalign.config.base``), with their ranges declared beside them.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

from superalign.core.axes import LOGICAL_RULES

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "linear")
EARLY_STOP_METRICS = ("accuracy", "loss", "auroc")
EARLY_STOP_MODES = ("max", "min")


@dataclasses.dataclass(frozen=True)
class Optim:
  """The optimizer block: ``name`` (one of ``OPTIMIZERS``), the peak ``learning_rate``,
  ``weight_decay`` (``adamw``), the learning-rate ``schedule`` (one of ``SCHEDULES``) and its
  ``warmup_steps``, the global-norm ``clip_norm``, ``momentum`` (``sgd``) and ``ema_decay``."""
  name: str = "adamw"
  learning_rate: float = 1e-3
  weight_decay: float = 1e-4
  schedule: str = "cosine"
  warmup_steps: int = 0
  clip_norm: float = 1.0           # 0: no clipping
  momentum: float = 0.9            # sgd only
  ema_decay: float = 0.0           # > 0: also keep a moving average of the parameters (a teacher)


@dataclasses.dataclass(frozen=True)
class Train:
  """The training block: the train and eval batch sizes, the step budget (``num_steps``, or
  ``num_epochs`` of the training split), how often to evaluate, log and save (in steps), the
  checkpoints kept, and early stopping (``early_stop_metric``, ``early_stop_mode``,
  ``patience``)."""
  batch_size: int = 64
  eval_batch_size: int = 256
  num_steps: int = 0               # total steps; 0 = use num_epochs
  num_epochs: int = 20
  eval_every: int = 100
  log_every: int = 25
  checkpoint_every: int = 200      # 0: only the final state is saved
  keep_checkpoints: int = 2
  early_stop_metric: str = ""      # "" = off; else a validation metric
  early_stop_mode: str = "max"
  patience: int = 5


@dataclasses.dataclass(frozen=True)
class MeshSpec:
  """Mesh axis sizes (-1 fills), how many devices (0 = all), and the logical axis rules."""
  axes: tuple[tuple[str, int], ...] = (("data", -1), ("fsdp", 1), ("model", 1))
  num_devices: int = 0
  rules: tuple[tuple[str, tuple[str, ...]], ...] = LOGICAL_RULES

  @classmethod
  def from_config(cls, mesh: Mapping) -> "MeshSpec":
    """From ``config.mesh`` (the launcher has checked its axis names)."""
    rules = _items(mesh["rules"]) if mesh.get("rules") is not None else dict(LOGICAL_RULES)
    return cls(axes=tuple((k, int(v)) for k, v in mesh.items() if k not in ("num_devices", "rules")),
               num_devices=int(mesh.get("num_devices", 0)),
               rules=tuple((k, (v,) if isinstance(v, str) else tuple(v)) for k, v in rules.items()))


@dataclasses.dataclass(frozen=True)
class TrainSpec:
  """Everything the engine needs besides the model and the data."""
  optim: Optim = Optim()
  train: Train = Train()
  mesh: MeshSpec = MeshSpec()
  seed: int = 0

  @classmethod
  def from_config(cls, config: Mapping) -> "TrainSpec":
    """From the config's ``optim``, ``train``, ``mesh`` and ``seed`` (what a block lacks keeps
    its default)."""
    mesh = config.get("mesh")
    return cls(optim=_replace(Optim(), config.get("optim"), {}),
               train=_replace(Train(), config.get("train"), {}),
               mesh=MeshSpec.from_config(mesh) if mesh is not None else MeshSpec(),
               seed=int(config.get("seed", 0)))

  def with_train(self, block: Mapping | None = None, **values) -> "TrainSpec":
    """This spec with training fields replaced: those a block has (a stage's own ``*_train``
    block), then ``values`` (a name that is not a field is a TypeError)."""
    return dataclasses.replace(self, train=_replace(self.train, block, values))

  def with_optim(self, block: Mapping | None = None, **values) -> "TrainSpec":
    """This spec with optimizer fields replaced: those a block has, then ``values`` (a name that
    is not a field is a TypeError)."""
    return dataclasses.replace(self, optim=_replace(self.optim, block, values))


def _items(block: Mapping) -> dict:
  return block.to_dict() if hasattr(block, "to_dict") else dict(block)


def _replace(fields, block: Mapping | None, values: dict):
  names = {f.name for f in dataclasses.fields(fields)}
  return dataclasses.replace(fields, **{**{k: v for k, v in _items(block or {}).items()
                                           if k in names}, **values})
