"""The adapter every protocol uses: a registry model trained on a ``Split`` by the core trainer.

``Model`` names the registry model and how to build it (dtypes, token budget); a runner
makes it once from its config. ``trainer(spec, model, inputs, ...)`` is the core ``Trainer`` for
it; ``train_classifier`` fits it on a split (validation metrics on ``val``, when given) and returns
the ``Trained`` model.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np

from superalign import models
from superalign.results.estimates import classification_metrics
from superalign.core.spec import TrainSpec
from superalign.core.specs import InputSpec
from superalign.core.trainer import Trained, Trainer
from superalign.data.splits import Split


@dataclasses.dataclass(frozen=True)
class Model:
  """A registry model (``models.names()``, or ``hf:<dir>``), the dtype its matmuls compute in,
  the tokens per example of text inputs, the dtype of its parameters (a checkpoint's are read as
  such) and its LoRA adapters (``model.lora``)."""
  name: str
  compute_dtype: str = "float32"
  max_len: int = 128
  param_dtype: str = "float32"
  lora: models.lora.LoRA | None = None   # adapters on a transformer's weights (none: all train)

  @classmethod
  def from_blocks(cls, model, data, name: str | None = None) -> "Model":
    """A config's ``model`` block (or another registry ``name``) with its ``data.max_len``."""
    return cls(name or model.name, model.compute_dtype, int(data.max_len), model.param_dtype,
               models.lora.from_block(model.get("lora")))

  def named(self, name: str) -> "Model":
    """The same model settings (dtypes, token budget) for another registry model ``name``."""
    return dataclasses.replace(self, name=name)


def trainer(spec: TrainSpec, model: Model, inputs: InputSpec, workdir: str, *, tag: str,
            **fields) -> Trainer:
  """The core trainer for a registry model; ``fields`` are further ``Trainer`` fields
  (``seeds``, ``loss_fn``, ``warm``, ...). A checkpoint's weights start every run that trains it."""
  if fields.get("warm") is None:
    fields["warm"] = models.pretrained(model.name, model.param_dtype)
  build = models.builder(model.name, inputs, model.compute_dtype, max_len=model.max_len,
                         param_dtype=model.param_dtype, lora=model.lora)
  return Trainer(build, spec, workdir, tag, name=model.name,
                 cache_key=(models.label(model.name), inputs, model.compute_dtype, model.max_len,
                            model.param_dtype, model.lora), **fields)


def examples(split: Split) -> dict[str, np.ndarray]:
  """A split's arrays for ``Trainer.fit``: inputs and labels."""
  return {"x": split.x, "y": split.y}


def train_classifier(spec: TrainSpec, model: Model, train: Split, inputs: InputSpec,
                     workdir: str, *, tag: str, val: Split | None = None, evaluate=None,
                     per_run: Mapping | None = None, run_consts: Mapping | None = None,
                     **fields) -> Trained:
  """Trains on ``train``; evaluates ``classification_metrics`` on ``val`` unless ``evaluate``
  is given. Stacked runs: ``seeds=[...]``, with ``per_run`` arrays ``[runs, N, ...]``."""
  job = trainer(spec, model, inputs, workdir, tag=tag, **fields)
  if evaluate is None and val is not None:
    evaluate = lambda trained: classification_metrics(trained.predict(val.x), val.y)
  return job.fit(examples(train), per_run=per_run, run_consts=run_consts, evaluate=evaluate)
