"""The engine's front door: given a model-building function, train it (or a stack of runs of it).

A ``Trainer`` owns everything between a model and a trained state, given a typed ``TrainSpec``
(``core.spec``: optimizer, training block, mesh and rules, seed): the optimizer, the sharded
``TrainState`` (parameters and non-trainable statistics), the jitted train step, the batch for each step, the
periodic evaluation, the Orbax checkpoints under ``workdir/checkpoints/<tag>``, the metric rows
and ``core.loop.fit``. What it returns, ``Trained``, runs any per-batch function over arrays
through the one batched apply (``core.apply``).

Data is either a dict of example arrays (``fit(examples)``; the batch of step ``s`` is a pure
function of ``(seed, s)``, see ``core.batches``) or a ``batch_fn(step, trained)`` that builds each
step's batch from the model as it is before the step (amplification's targets). Stacked runs
(``seeds`` a sequence) train through one vmapped step, each run on its own batches (all on
``batch_fn``'s: one stream), with ``per_run`` arrays (weak labels) and ``run_consts`` per run.
"""

from __future__ import annotations

import dataclasses
import logging
import numbers
import os
from typing import Callable, Hashable, Mapping, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from superalign.core import batches, checkpoint, loop, optim, state as state_lib, steps
from superalign.core import mesh as mesh_lib
from superalign.core.apply import batched_apply
from superalign.core.errors import ConfigError
from superalign.results.metrics import MetricWriter
from superalign.core.spec import Train, TrainSpec

log = logging.getLogger("superalign")

MAX_OVERSAMPLE = 8  # the largest batch, as a multiple of its split's size

Examples = Mapping[str, np.ndarray]


@dataclasses.dataclass
class Trained:
  """A trained model (or stack of runs): its state, the fit record, and the batched apply."""
  state: state_lib.TrainState
  fit: loop.FitResult | None
  num_params: int
  num_steps: int
  stacked: bool
  mesh: Mesh
  eval_batch_size: int
  shardings: state_lib.TrainState   # the state's layout: jit in/out shardings
  _compiled: dict = dataclasses.field(default_factory=dict, repr=False)

  def apply(self, x: np.ndarray, fn: Callable = steps.predict_fn, **rows: np.ndarray
            ) -> np.ndarray:
    """``fn(state, {"x": batch, **rows})`` over the rows of ``x`` (and of ``rows``: labels, a
    radius per row); stacked runs all read the same rows and the result is
    ``[runs, rows, ...]``."""
    if fn not in self._compiled:
      self._compiled[fn] = steps.make_predict_step(self.shardings, self.mesh, fn,
                                                   stacked=self.stacked)
    return batched_apply(self._compiled[fn], self.state, {"x": x, **rows}, self.mesh,
                         self.eval_batch_size, stacked=self.stacked)

  def predict(self, x: np.ndarray) -> np.ndarray:
    """Class probabilities ``[rows, classes]`` (``[runs, rows, classes]`` if stacked)."""
    return self.apply(x, steps.predict_fn)


def num_train_steps(train: Train, num_examples: int) -> int:
  """The step budget: ``train.num_steps`` when positive, else ``train.num_epochs`` epochs of
  ``num_examples`` in full batches."""
  if train.num_steps > 0:
    return int(train.num_steps)
  return int(train.num_epochs) * batches.steps_per_epoch(num_examples, train.batch_size)


def trainable_mask(build: Callable, trainable: str | None):
  """``None``: everything trains (a LoRA model: its adapters and head, ``core.state``).
  ``"head"``: only parameters under ``head`` (a linear probe on the frozen backbone)."""
  if trainable is None:
    return None
  _, abstract, _, _ = nnx.eval_shape(lambda: state_lib.split(build(nnx.Rngs(0))))
  return jax.tree_util.tree_map_with_path(
      lambda path, _: any(getattr(k, "key", None) == trainable for k in path), abstract)


@dataclasses.dataclass
class Trainer:
  """One training job: a model-building function trained as ``spec`` says."""
  build: Callable[[nnx.Rngs], nnx.Module]   # rngs -> module, built abstractly then sharded
  spec: TrainSpec
  workdir: str
  tag: str                                  # checkpoints/<tag>, and the run name of metric rows
  seeds: int | Sequence[int] | None = None  # None: spec.seed; a sequence: stacked runs
  loss_fn: steps.LossFn = steps.cross_entropy_loss
  warm: dict | Callable | None = None       # parameters overwriting the initial ones (state.create)
  trainable: str | None = None              # "head": a probe on the frozen backbone
  cache_key: Hashable | None = None         # names the model, to reuse its compiled initializer
  host: loop.HostState | None = None        # host-side state batches depend on (checkpointed)
  post_update: Sequence[steps.PostUpdate] = ()  # in the step, after each update (renormalize)
  on_batch: Callable[[int], None] | None = None  # before each step's batch (profiling, faults)
  name: str = "model"                       # for the log line
  mesh: Mesh | None = None                  # None: built from spec.mesh

  def __post_init__(self):
    if self.seeds is None:
      self.seeds = self.spec.seed
    if self.mesh is None:
      self.mesh = mesh_lib.make_mesh(self.spec.mesh)

  @property
  def train(self) -> Train:
    """The spec's training block."""
    return self.spec.train

  @property
  def stacked(self) -> bool:
    """Whether ``seeds`` is a sequence: independent runs trained side by side, stacked on a
    leading ``[runs]`` axis."""
    return not isinstance(self.seeds, numbers.Integral)

  @property
  def run_seeds(self) -> list[int]:
    """The seed of every run, one for an unstacked job."""
    return [int(s) for s in self.seeds] if self.stacked else [int(self.seeds)]

  def _trained(self, state, shardings, fit, num_steps: int, compiled: dict) -> Trained:
    return Trained(state, fit, state_lib.param_count(state.all_params()) // len(self.run_seeds),
                   num_steps, self.stacked, self.mesh, int(self.train.eval_batch_size),
                   shardings, compiled)

  def init(self, num_steps: int = 1) -> Trained:
    """The initial (or warm-started) model, untrained: for features or fixed networks."""
    state, shardings = self._create(num_steps)
    return self._trained(state, shardings, None, num_steps, {})

  def fit(self, examples: Examples | None = None, *,
          batch_fn: Callable[[int, Trained], Examples] | None = None,
          per_run: Examples | None = None, run_consts: Examples | None = None,
          evaluate: Callable[[Trained], Mapping[str, np.ndarray]] | None = None) -> Trained:
    """Trains on ``examples`` (axis 0 indexes examples) or on ``batch_fn``'s batches.

    ``evaluate(trained)`` returns a dict of (per-run) values every ``train.eval_every`` steps and
    at the end; early stopping, if ``train.early_stop_metric`` is set, watches one of them.
    """
    tc = self.train
    if (examples is None) == (batch_fn is None):
      raise ValueError("Trainer.fit needs exactly one of examples and a batch_fn")
    if batch_fn is not None and (tc.num_steps <= 0 or per_run or run_consts):
      raise ValueError("a batch_fn trains train.num_steps > 0 steps, without per-run arrays")
    n = len(next(iter(examples.values()))) if examples is not None else 0
    if examples is not None:
      self._check_batch_size(n)
    num_steps = num_train_steps(tc, n)
    state, shardings = self._create(num_steps)
    run_seeds = self.run_seeds
    first = self._trained(state, shardings, None, num_steps, {})
    lora = f" ({state_lib.param_count(state.params) // len(run_seeds):,} trained: LoRA)"
    log.info("%s: %s with %s parameters%s, %d steps of batch %d%s", self.tag, self.name,
             f"{first.num_params:,}", lora if jax.tree.leaves(state.frozen) else "", num_steps,
             tc.batch_size, f", {len(run_seeds)} runs stacked" if self.stacked else "")
    train_step = steps.make_train_step(self.loss_fn, shardings, self.mesh, stacked=self.stacked,
                                       post_update=self.post_update)
    # Every view of the run (each evaluation, each batch_fn call) shares its compiled programs
    # and its parameter count.
    wrap = lambda s, fit=None: dataclasses.replace(first, state=s, fit=fit)
    batch_at = self._batch_at(examples, batch_fn, per_run, run_consts, run_seeds, wrap)

    early_stop = None
    if tc.early_stop_metric:
      early_stop = loop.EarlyStop(tc.early_stop_metric, tc.early_stop_mode, tc.patience)
    ckpt = checkpoint.Checkpointer(os.path.join(self.workdir, "checkpoints", self.tag),
                                   tc.checkpoint_every, tc.keep_checkpoints)
    writer = MetricWriter(self.workdir, tag=self.tag, resume_step=ckpt.latest_step())
    try:
      result = loop.fit(state, train_step, batch_at, num_steps,
                        evaluate=(lambda s: evaluate(wrap(s))) if evaluate else None,
                        eval_every=tc.eval_every, early_stop=early_stop, checkpointer=ckpt,
                        writer=writer, log_every=tc.log_every, host=self.host, desc=self.tag,
                        warm=self.warm is not None)
    finally:
      writer.close()
      ckpt.close()
    return wrap(result.state, result)

  def _check_batch_size(self, n: int) -> None:
    """A batch larger than the split samples with replacement (``core.batches``): warn, and
    refuse above ``MAX_OVERSAMPLE`` times the split, where a step would mostly repeat rows."""
    batch_size = int(self.train.batch_size)
    if n == 0:
      raise ConfigError(f"{self.tag}: no training examples")
    if batch_size > MAX_OVERSAMPLE * n:
      raise ConfigError(f"train.batch_size={batch_size}: more than {MAX_OVERSAMPLE}x the {n} "
                        f"training examples of {self.tag}; lower it (at most {MAX_OVERSAMPLE * n})")
    if batch_size > n:
      log.warning("%s: train.batch_size=%d exceeds the %d training examples; each batch samples "
                  "them with replacement", self.tag, batch_size, n)

  def _create(self, num_steps: int):
    tx = optim.make(self.spec.optim, num_steps, trainable_mask(self.build, self.trainable))
    return state_lib.create(self.build, tx, self.seeds, self.mesh, warm=self.warm,
                            cache_key=self.cache_key, rules=self.spec.mesh.rules)

  def _batch_at(self, examples, batch_fn, per_run, run_consts, run_seeds, wrap):
    mesh, stacked, batch_size = self.mesh, self.stacked, int(self.train.batch_size)
    per_run = dict(per_run or {})
    consts = {k: np.asarray(v) for k, v in (run_consts or {}).items()}
    runs = np.arange(len(run_seeds))[:, None]

    def batch_at(step: int, state):
      if self.on_batch is not None:
        self.on_batch(step)
      if batch_fn is not None:  # every process builds the global batch (same seed), keeps its share
        batch = batch_fn(step, wrap(state))
        share = batches.process_slice(np.arange(len(next(iter(batch.values())))))
        batch = {k: v[share] for k, v in batch.items()}
        if stacked:   # one stream: every run reads this batch
          batch = {k: np.broadcast_to(v, (len(runs), *v.shape)) for k, v in batch.items()}
        return mesh_lib.shard_batch(batch, mesh, stacked=stacked)
      n = len(next(iter(examples.values())))
      idx = batches.process_slice(
          np.stack([batches.train_indices(s, step, n, batch_size) for s in run_seeds]))
      if not stacked:
        return mesh_lib.shard_batch({k: v[idx[0]] for k, v in {**examples, **per_run}.items()},
                                    mesh)
      batch = {**{k: v[idx] for k, v in examples.items()},
               **{k: v[runs, idx] for k, v in per_run.items()},
               **{k: np.broadcast_to(v[:, None], idx.shape) for k, v in consts.items()}}
      return mesh_lib.shard_batch(batch, mesh, stacked=True)

    return batch_at
