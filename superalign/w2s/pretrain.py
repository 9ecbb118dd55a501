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
from superalign.core.spec import TrainSpec
from superalign.core.specs import InputSpec
from superalign.data.splits import Split
from superalign.parties.classifier import Model, train_classifier


@dataclasses.dataclass(frozen=True)
class Pretraining:
  """The proxy task (``coarse``, ``labels`` or ``none``, above), its class -> group map (task ``coarse``), and a workdir
  whose ``checkpoints/pretrain/<model>`` to restore ("": this run's)."""
  task: str = "coarse"
  coarse_map: tuple[int, ...] = ()
  load_from: str = ""


def proxy_labels(split: Split, inputs: InputSpec, task: str,
                 coarse_map: Sequence[int]) -> tuple[Split, InputSpec]:
  """``split`` relabelled for the proxy ``task`` and the inputs' spec with its class count."""
  if task == "labels":
    return split, inputs
  mapping = np.asarray(coarse_map, np.int32)
  if len(mapping) != inputs.num_classes:
    raise ConfigError(f"pretrain.coarse_map has {len(mapping)} entries; the data set has "
                      f"{inputs.num_classes} classes")
  groups = int(mapping.max()) + 1
  return (dataclasses.replace(split, y=mapping[split.y]),
          dataclasses.replace(inputs, num_classes=groups))


def backbone(params) -> dict:
  """Every parameter but the head, as a nested dict of arrays (a warm start for a new head)."""
  pure = params.to_pure_dict()
  return {k: v for k, v in pure.items() if k != "head"}


def pretrain(spec: TrainSpec, model: Model, pretraining: Pretraining, split: Split | None,
             inputs: InputSpec, workdir: str, seeds: Sequence[int]) -> dict | None:
  """Stacked backbones ``{path: [runs, ...]}`` of ``model``, one per seed, trained as ``spec``
  says on the proxy task of ``split`` (None for task ``none``: random features)."""
  if pretraining.task == "none":
    return None
  split, proxy = proxy_labels(split, inputs, pretraining.task, pretraining.coarse_map)
  trained = train_classifier(spec, model, split, proxy, pretraining.load_from or workdir,
                             tag=f"pretrain/{models.label(model.name)}", seeds=seeds)
  return mesh_lib.to_host(backbone(trained.state.all_params()))
