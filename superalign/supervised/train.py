"""Train one classifier (or a stack of independent runs of it) on one split; predict on any split.

This is the glue every protocol reuses (the weak supervisor, the strong student and the ceiling of
weak-to-strong are each one ``train_classifier`` call): model by name, sharded TrainState, jitted
steps, (seed, step) batches, ``core.loop.fit`` with checkpoints under ``workdir/checkpoints/<tag>``.

Batches that depend on the model: pass ``batch_fn(step, trained) -> {"x", "y", ...}`` instead of
a split (amplification builds each step's targets by asking the current model subquestions).

Stacked runs: pass ``seeds=[...]`` to train one run per seed at once with a vmapped step. Each run
draws its own batches from ``(seed, step)``; ``train.extra`` arrays then carry a leading runs axis
(per-run targets such as weak labels) and ``run_consts`` give per-run scalars (a loss id).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Callable, Mapping, Sequence

import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
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
  """A trained model (or stack of runs): its state, the fit record, and a batched predictor."""
  state: state_lib.TrainState
  fit: loop.FitResult
  num_params: int
  num_steps: int
  stacked: bool
  _apply: Callable

  def predict(self, split: Split) -> np.ndarray:
    """Class probabilities ``[len(split), classes]`` (``[runs, len(split), classes]`` if
    stacked) as a host array."""
    return self._apply(self.state, split.x, steps.predict_fn)

  def apply(self, x: np.ndarray, fn: Callable) -> np.ndarray:
    """Any ``fn(state, batch) -> [batch, ...]`` (e.g. backbone features) over inputs ``x``."""
    return self._apply(self.state, x, fn)


def num_train_steps(train_cfg, num_examples: int) -> int:
  if train_cfg.num_steps > 0:
    return int(train_cfg.num_steps)
  return int(train_cfg.num_epochs) * batches.steps_per_epoch(num_examples, train_cfg.batch_size)


def make_applier(state_shardings, mesh: Mesh, eval_batch_size: int, stacked: bool):
  """Runs a per-batch function over a whole array in fixed-size (padded) jitted batches."""
  compiled: dict[Callable, Callable] = {}

  def apply(state, x: np.ndarray, fn: Callable) -> np.ndarray:
    if fn not in compiled:
      compiled[fn] = steps.make_predict_step(state_shardings, mesh, fn, stacked=stacked)
    out = []
    for idx, valid in batches.eval_indices(len(x), eval_batch_size):
      batch = mesh_lib.shard_batch({"x": x[batches.process_slice(idx)]}, mesh)
      y = np.asarray(multihost_utils.process_allgather(compiled[fn](state, batch), tiled=True))
      out.append(y[:, :valid] if stacked else y[:valid])
    return np.concatenate(out, axis=1 if stacked else 0)

  return apply


def trainable_mask(build: Callable, trainable: str | None):
  """``None``: everything trains. ``"head"``: only parameters under ``head`` (a linear probe on
  the frozen backbone)."""
  if trainable is None:
    return None
  _, abstract = nnx.eval_shape(lambda: nnx.split(build(nnx.Rngs(0)), nnx.Param))
  return jax.tree_util.tree_map_with_path(
      lambda path, _: any(getattr(k, "key", None) == trainable for k in path), abstract)


def train_classifier(
    config,
    train: Split | None,
    spec: InputSpec,
    workdir: str,
    *,
    tag: str,
    model_name: str | None = None,
    val: Split | None = None,
    evaluate: Callable[[Trained], Mapping[str, np.ndarray]] | None = None,
    loss_fn: steps.LossFn = steps.cross_entropy_loss,
    seed: int | None = None,
    seeds: Sequence[int] | None = None,
    run_consts: Mapping[str, np.ndarray] | None = None,
    warm: dict | None = None,
    trainable: str | None = None,
    mesh: Mesh | None = None,
    on_batch: Callable[[int], None] | None = None,
    batch_fn: Callable[[int, Trained], Mapping[str, np.ndarray]] | None = None,
    host: loop.HostState | None = None,
) -> Trained:
  """Trains ``config.model.name`` (or ``model_name``) on ``train``.

  Evaluation during training: ``classification_metrics`` on ``val``, or ``evaluate(trained)``
  returning a dict of (per-run) values. ``warm`` overwrites initial parameters (a pretrained
  backbone); ``trainable="head"`` freezes all but the head. ``on_batch(step)`` runs before each
  step's batch is built (profiling, fault injection). ``batch_fn(step, trained)`` replaces
  ``train`` (then ``config.train.num_steps`` must be set) and sees the model as it is before the
  step; ``host`` is host-side state its batches depend on, saved in every checkpoint.
  """
  model_name = model_name or config.model.name
  stacked = seeds is not None
  seed = config.seed if seed is None else seed
  run_seeds = list(seeds) if stacked else [seed]
  mesh = mesh or mesh_lib.make_mesh(dict(config.mesh))
  tc = config.train
  if (train is None) == (batch_fn is None):
    raise ValueError("train_classifier needs exactly one of a train split and a batch_fn")
  if batch_fn is not None and (stacked or tc.num_steps <= 0):
    raise ValueError("batch_fn trains one run for config.train.num_steps > 0 steps")
  num_steps = num_train_steps(tc, len(train) if train is not None else 0)
  build = models.builder(model_name, spec, config.model.dtype, max_len=config.data.max_len)
  tx = optim.make(config.optim, num_steps, trainable_mask(build, trainable))
  state, shardings = state_lib.create(
      build, tx, run_seeds if stacked else seed, mesh, warm=warm,
      cache_key=(model_name, spec, config.model.dtype, config.data.max_len))
  n_params = state_lib.param_count(state.params) // len(run_seeds)
  log.info("%s: %s with %s parameters, %d steps of batch %d%s", tag, model_name,
           f"{n_params:,}", num_steps, tc.batch_size,
           f", {len(run_seeds)} runs stacked" if stacked else "")

  train_step = steps.make_train_step(loss_fn, shardings, mesh, stacked=stacked)
  applier = make_applier(shardings, mesh, tc.eval_batch_size, stacked)
  consts = {k: np.asarray(v) for k, v in (run_consts or {}).items()}
  runs = np.arange(len(run_seeds))[:, None]

  def batch_at(step: int, state):
    if on_batch is not None:
      on_batch(step)
    if batch_fn is not None:  # every process builds the global batch (same seed), keeps its share
      batch = batch_fn(step, wrap(state))
      share = batches.process_slice(np.arange(len(next(iter(batch.values())))))
      return mesh_lib.shard_batch({k: v[share] for k, v in batch.items()}, mesh)
    idx = np.stack([batches.train_indices(s, step, len(train), tc.batch_size) for s in run_seeds])
    idx = batches.process_slice(idx)
    if not stacked:
      return mesh_lib.shard_batch(train.take(idx[0]), mesh)
    batch = {"x": train.x[idx], "y": train.y[idx],
             **{k: v[runs, idx] for k, v in train.extra.items()},
             **{k: np.broadcast_to(v[:, None], idx.shape) for k, v in consts.items()}}
    return mesh_lib.shard_batch(batch, mesh, stacked=True)

  def wrap(s):
    return Trained(s, None, n_params, num_steps, stacked, applier)

  eval_fn = None
  if evaluate is not None:
    eval_fn = lambda s: evaluate(wrap(s))
  elif val is not None:
    eval_fn = lambda s: classification_metrics(wrap(s).predict(val), val.y)
  early_stop = None
  if tc.early_stop_metric:
    early_stop = loop.EarlyStop(tc.early_stop_metric, tc.early_stop_mode, tc.patience)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints", tag),
                                 tc.checkpoint_every, tc.keep_checkpoints)
  writer = MetricWriter(workdir, tag=tag, resume_step=ckpt.latest_step())
  try:
    result = loop.fit(state, train_step, batch_at, num_steps, evaluate=eval_fn,
                      eval_every=tc.eval_every, early_stop=early_stop, checkpointer=ckpt,
                      writer=writer, log_every=tc.log_every, host=host, desc=tag)
  finally:
    writer.close()
    ckpt.close()
  return Trained(result.state, result, n_params, num_steps, stacked, applier)
