"""Train one classifier on one split through the core engine; predict on any split.

This is the glue every protocol reuses (the weak supervisor, the strong student and the ceiling of
weak-to-strong are each one ``train_classifier`` call): model by name, sharded TrainState, jitted
steps, (seed, step) batches, ``core.loop.fit`` with checkpoints under ``workdir/checkpoints/<tag>``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Callable

import jax
import numpy as np
from jax.sharding import Mesh

from superalign import models
from superalign.core import checkpoint, loop, optim, state as state_lib, steps
from superalign.core import mesh as mesh_lib
from superalign.core.metrics import MetricWriter, classification_metrics
from superalign.core.specs import InputSpec
from superalign.data import batches
from superalign.data.splits import Split

log = logging.getLogger("superalign")


@dataclasses.dataclass
class Trained:
  """A trained model: its state, the fit record, and a batched predictor."""
  state: state_lib.TrainState
  fit: loop.FitResult
  num_params: int
  num_steps: int
  _predict: Callable

  def predict(self, split: Split) -> np.ndarray:
    """Class probabilities ``[len(split), classes]`` as a host array."""
    return self._predict(self.state, split)


def num_train_steps(train_cfg, num_examples: int) -> int:
  if train_cfg.num_steps > 0:
    return int(train_cfg.num_steps)
  return int(train_cfg.num_epochs) * batches.steps_per_epoch(num_examples, train_cfg.batch_size)


def make_predictor(state_shardings, mesh: Mesh, eval_batch_size: int):
  predict_step = steps.make_predict_step(state_shardings, mesh)

  def predict(state, split: Split) -> np.ndarray:
    out = []
    for idx, valid in batches.eval_indices(len(split), eval_batch_size):
      batch = mesh_lib.shard_batch({"x": split.x[batches.process_slice(idx)]}, mesh)
      probs = jax.experimental.multihost_utils.process_allgather(predict_step(state, batch),
                                                                 tiled=True)
      out.append(np.asarray(probs)[:valid])
    return np.concatenate(out)

  return predict


def train_classifier(
    config,
    train: Split,
    spec: InputSpec,
    workdir: str,
    *,
    tag: str,
    model_name: str | None = None,
    val: Split | None = None,
    loss_fn: steps.LossFn = steps.cross_entropy_loss,
    seed: int | None = None,
    mesh: Mesh | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> Trained:
  """Trains ``config.model.name`` (or ``model_name``) on ``train``; evaluates on ``val``.

  Extra per-example arrays in ``train.extra`` (e.g. weak labels) reach ``loss_fn`` in the batch.
  ``on_batch(step)`` runs before each step's batch is built (profiling, fault injection).
  """
  model_name = model_name or config.model.name
  seed = config.seed if seed is None else seed
  mesh = mesh or mesh_lib.make_mesh(dict(config.mesh))
  tc = config.train
  num_steps = num_train_steps(tc, len(train))
  tx = optim.make(config.optim, num_steps)
  build = models.builder(model_name, spec, config.model.dtype, max_len=config.data.max_len)
  state, shardings = state_lib.create(build, tx, seed, mesh)
  n_params = state_lib.param_count(state.params)
  log.info("%s: %s with %s parameters, %d steps of batch %d", tag, model_name,
               f"{n_params:,}", num_steps, tc.batch_size)

  train_step = steps.make_train_step(loss_fn, shardings, mesh)
  predict = make_predictor(shardings, mesh, tc.eval_batch_size)

  def batch_at(step: int):
    if on_batch is not None:
      on_batch(step)
    idx = batches.process_slice(batches.train_indices(seed, step, len(train), tc.batch_size))
    return mesh_lib.shard_batch(train.take(idx), mesh)

  evaluate = None
  if val is not None:
    evaluate = lambda s: classification_metrics(predict(s, val), val.y)
  early_stop = None
  if tc.early_stop_metric:
    early_stop = loop.EarlyStop(tc.early_stop_metric, tc.early_stop_mode, tc.patience)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints", tag),
                                 tc.checkpoint_every, tc.keep_checkpoints)
  writer = MetricWriter(workdir, tag=tag, resume_step=ckpt.latest_step())
  try:
    result = loop.fit(state, train_step, batch_at, num_steps, evaluate=evaluate,
                      eval_every=tc.eval_every, early_stop=early_stop, checkpointer=ckpt,
                      writer=writer, log_every=tc.log_every, desc=tag)
  finally:
    writer.close()
    ckpt.close()
  return Trained(result.state, result, n_params, num_steps, predict)
