"""The pretraining stage: teach each ladder model the domain before weak-to-strong training.

Weak-to-strong generalization presumes a strong model that already "knows" the task from
pretraining; a randomly initialized student only imitates its supervisor's errors. Each model
trains here on a split disjoint from every weak-to-strong split, on a proxy task:

* ``coarse``: ground truth merged into coarser groups (``pretrain.coarse_map``: class -> group),
  so the backbone learns the domain's features without ever seeing the task's own labels;
* ``labels``: the task's labels on the disjoint split (an upper bound on what pretraining gives);
* ``none``: no pretraining (random features), the control.

The backbone (everything but the head) of the final Orbax checkpoint is what the weak-to-strong
stage loads; a rerun, or ``pretrain.load_from`` pointing at another run's workdir, restores it
from ``checkpoints/pretrain/<model>`` instead of training again.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from superalign import models
from superalign.core import mesh as mesh_lib
from superalign.core.errors import ConfigError
from superalign.core.specs import InputSpec
from superalign.data.splits import Split
from superalign.parties.classifier import train_classifier

TASKS = ("coarse", "labels", "none")


def proxy_labels(split: Split, spec: InputSpec, cfg) -> tuple[Split, InputSpec]:
  if cfg.task == "labels":
    return split, spec
  mapping = np.asarray(cfg.coarse_map, np.int32)
  if len(mapping) != spec.num_classes:
    raise ConfigError(f"pretrain.coarse_map has {len(mapping)} entries; the data set has "
                      f"{spec.num_classes} classes")
  groups = int(mapping.max()) + 1
  return (dataclasses.replace(split, y=mapping[split.y]),
          dataclasses.replace(spec, num_classes=groups))


def backbone(params) -> dict:
  """Every parameter but the head, as a nested dict of arrays (a warm start for a new head)."""
  pure = params.to_pure_dict()
  return {k: v for k, v in pure.items() if k != "head"}


def pretrain(config, model_name: str, split: Split, spec: InputSpec, workdir: str,
             seeds: Sequence[int], stage_train) -> dict | None:
  """Stacked backbones ``{path: [runs, ...]}`` for ``model_name``, one per seed (or None)."""
  cfg = config.pretrain
  if cfg.task == "none":
    return None
  split, proxy_spec = proxy_labels(split, spec, cfg)
  trained = train_classifier(config, split, proxy_spec, cfg.load_from or workdir,
                             tag=f"pretrain/{models.label(model_name)}", model_name=model_name,
                             train_block=stage_train, seeds=seeds)
  return mesh_lib.to_host(backbone(trained.state.params))
