"""The adapter every protocol uses: a registry model trained on a ``Split`` by the core trainer.

``trainer(config, spec, ...)`` is ``core.trainer.Trainer`` for ``config.model.name`` (or
``model_name``) on the config's optim, train and mesh blocks; ``train_classifier`` fits it on a
split (validation metrics on ``val``, when given) and returns the ``Trained`` model.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from superalign import models
from superalign.core.metrics import classification_metrics
from superalign.core.specs import InputSpec
from superalign.core.trainer import Trained, Trainer
from superalign.data.splits import Split


def trainer(config, spec: InputSpec, workdir: str, *, tag: str, model_name: str | None = None,
            train=None, **fields) -> Trainer:
  """The core trainer for a registry model; ``train`` replaces ``config.train`` (a stage's own
  block), ``fields`` are further ``Trainer`` fields (``seeds``, ``loss_fn``, ``warm``, ...)."""
  name = model_name or config.model.name
  if train is not None:
    fields["train"] = train
  if fields.get("warm") is None:  # a checkpoint's weights start every run that trains it
    fields["warm"] = models.pretrained(name)
  return Trainer.from_config(
      config, models.builder(name, spec, config.model.dtype, max_len=config.data.max_len),
      workdir, tag, name=name, cache_key=(name, spec, config.model.dtype, config.data.max_len),
      **fields)


def examples(split: Split) -> dict[str, np.ndarray]:
  """A split's arrays for ``Trainer.fit``: inputs and labels."""
  return {"x": split.x, "y": split.y}


def train_classifier(config, train: Split, spec: InputSpec, workdir: str, *, tag: str,
                     model_name: str | None = None, val: Split | None = None,
                     train_block=None, evaluate=None, per_run: Mapping | None = None,
                     run_consts: Mapping | None = None, **fields) -> Trained:
  """Trains on ``train``; evaluates ``classification_metrics`` on ``val`` unless ``evaluate``
  is given. Stacked runs: ``seeds=[...]``, with ``per_run`` arrays ``[runs, N, ...]``."""
  job = trainer(config, spec, workdir, tag=tag, model_name=model_name, train=train_block,
                **fields)
  if evaluate is None and val is not None:
    evaluate = lambda trained: classification_metrics(trained.predict(val.x), val.y)
  return job.fit(examples(train), per_run=per_run, run_consts=run_consts, evaluate=evaluate)
