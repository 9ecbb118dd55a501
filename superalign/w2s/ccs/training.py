"""The CCS experiment's models: claim verifiers pretrained whole on the claims task, then linear
heads on their frozen backbones trained by w2s's objective (``w2s.stages``: the ``xent`` loss
against per-run soft targets, L2 on the head's kernel)."""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np

from superalign import models
from superalign.core import mesh as mesh_lib
from superalign.core.spec import TrainSpec
from superalign.core.trainer import Trained
from superalign.data.splits import Split
from superalign.parties.classifier import Model, train_classifier
from superalign.w2s.ccs.claims import INPUTS
from superalign.w2s.pretrain import backbone
from superalign.w2s.stages import Objective, train_stack


def verifiers(spec: TrainSpec, model: Model, claims: Split, names: Sequence[str], workdir: str,
              seeds: Sequence[int]) -> dict[str, Trained]:
  """Each model of ``names`` (all of it) trained to verify the pretraining ``claims``, one
  stacked run per seed (``pretrain/<model>``)."""
  return {name: train_classifier(spec, model.named(name), claims, INPUTS, workdir,
                                 tag=f"pretrain/{models.label(name)}", seeds=seeds)
          for name in names}


def backbone_runs(trained: Trained, copies: int = 1) -> dict:
  """The stacked runs' backbones on the host, the stack repeated ``copies`` times."""
  runs = mesh_lib.to_host(backbone(trained.state.all_params()))
  return runs if copies == 1 else jax.tree.map(lambda a: np.concatenate([a] * copies), runs)


def train_heads(spec: TrainSpec, model: Model, l2: float, split: Split, workdir: str, *,
                tag: str, seeds: Sequence[int], warm: dict, targets: np.ndarray) -> Trained:
  """One stack of linear heads, run ``r`` on backbone ``warm[r]`` against ``targets[r]``."""
  return train_stack(spec, model, Objective(probe=True, l2=l2), split, INPUTS, workdir, tag=tag,
                     seeds=list(seeds), loss_names=["xent"], warm=warm,
                     per_run={"weak": targets})


def accuracy(trained: Trained, split: Split) -> np.ndarray:
  """Each run's accuracy on ``split`` ``[runs]``."""
  return np.mean(trained.predict(split.x).argmax(-1) == split.y, -1)
