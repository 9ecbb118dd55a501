"""Train and predict steps: pure functions, jitted once with shardings and buffer donation.

``jax.jit(f, in_shardings=..., out_shardings=..., donate_argnums=...)`` is what ``pjit`` was (its
old experimental module is deprecated and not used here).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh

from superalign.core import mesh as mesh_lib
from superalign.core.state import STATS, TrainState

Batch = Mapping[str, jax.Array]
# loss_fn(model, batch, rng, step) -> (scalar loss, dict of scalar metrics); it may update the
# model's non-trainable variables (``state.STATS``), which the step carries on.
LossFn = Callable[[nnx.Module, Batch, jax.Array, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]
# post_update(model): mutates the freshly updated model in place (renormalize, project, clip).
PostUpdate = Callable[[nnx.Module], None]


def cross_entropy_loss(model: nnx.Module, batch: Batch, rng, step):
  """Supervised objective: softmax cross-entropy on integer labels ``batch['y']``."""
  del rng, step
  logits = model(batch["x"]).astype(jnp.float32)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
  accuracy = (logits.argmax(-1) == batch["y"]).mean()
  return loss, {"accuracy": accuracy}


def next_token_loss(after: int | None = None) -> LossFn:
  """LM objective on right-padded token ids ``batch['x']`` ``[batch, length]``: next-token
  cross-entropy after the first ``after`` token (a prompt's end marker) or, ``after`` None, where
  ``batch['loss_mask']`` is 1 (a chat reply), padding excluded: a model learns to complete
  prompts, not to write them. The model has ``hidden_states`` and ``lm_logits``."""

  def loss_fn(model: nnx.Module, batch: Batch, rng, step):
    del rng, step
    x = batch["x"]
    inputs, targets = x[:, :-1], x[:, 1:]
    logits = model.lm_logits(model.hidden_states(inputs)).astype(jnp.float32)
    seen = (batch["loss_mask"][:, 1:] > 0 if after is None
            else jnp.cumsum(inputs == after, axis=1) > 0)   # the marker is at or before here
    weight = (seen & (targets != model.pad_id)).astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    count = jnp.maximum(weight.sum(), 1.0)
    accuracy = ((logits.argmax(-1) == targets) * weight).sum() / count
    return (ce * weight).sum() / count, {"token_accuracy": accuracy}

  return loss_fn


def train_step_fn(loss_fn: LossFn, post_update: Sequence[PostUpdate] = ()
                  ) -> Callable[[TrainState, Batch], tuple[TrainState, dict]]:
  """The pure update ``(state, batch) -> (state, metrics)``; the step key is fold_in(rng, step).
  The loss's updates of the non-trainable variables are kept; then each ``post_update`` hook
  sees the updated model (what it does to frozen parameters is not kept)."""

  def step(state: TrainState, batch: Batch):
    rng = jax.random.fold_in(state.rng, state.step)

    def objective(params):
      model = state.model(params)
      loss, aux = loss_fn(model, batch, rng, state.step)
      return loss, (aux, nnx.state(model, STATS))

    (loss, (aux, stats)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    if post_update:
      model = state.model(jax.tree.map(lambda v: v, params), stats)
      for hook in post_update:
        hook(model)
      params, stats = nnx.state(model, state.trainable), nnx.state(model, STATS)
    metrics = {"loss": loss, "grad_norm": optax.global_norm(grads), **aux}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                         stats=stats), metrics

  return step


def make_train_step(loss_fn: LossFn, state_shardings: TrainState, mesh: Mesh,
                    stacked: bool = False, post_update: Sequence[PostUpdate] = ()):
  """Jitted train step. The state is donated: its buffers are reused for the new state.

  ``stacked``: the state holds independent runs on a leading axis (seeds, hyperparameters) and
  the batch has the same leading axis; one vmapped step advances them all.
  """
  step = train_step_fn(loss_fn, tuple(post_update))
  if stacked:
    step = jax.vmap(step)
  return jax.jit(
      step,
      in_shardings=(state_shardings, mesh_lib.batch_sharding(mesh, stacked)),
      out_shardings=(state_shardings, mesh_lib.replicated(mesh)),
      donate_argnums=0,
  )


def predict_fn(state: TrainState, batch: Batch) -> jax.Array:
  """Class probabilities for ``batch['x']``, computed in float32."""
  logits = state.model()(batch["x"]).astype(jnp.float32)
  return jax.nn.softmax(logits, axis=-1)


def log_probs_fn(state: TrainState, batch: Batch) -> jax.Array:
  """Log class probabilities for ``batch['x']`` in float32 (no underflow where softmax gives 0)."""
  logits = state.model()(batch["x"]).astype(jnp.float32)
  return jax.nn.log_softmax(logits, axis=-1)


def features_fn(state: TrainState, batch: Batch) -> jax.Array:
  """The model's ``features`` (the backbone output a probe or a linear head reads)."""
  return state.model().features(batch["x"])


def make_predict_step(state_shardings: TrainState, mesh: Mesh,
                      fn: Callable[[TrainState, Batch], Any] = predict_fn, stacked: bool = False):
  """Jitted ``fn(state, batch)``; with ``stacked`` every run sees the same (unstacked) batch and
  the output gains the runs axis in front."""
  if stacked:
    fn = jax.vmap(fn, in_axes=(0, None))
  return jax.jit(fn, in_shardings=(state_shardings, mesh_lib.batch_sharding(mesh)),
                 out_shardings=mesh_lib.batch_sharding(mesh, stacked))
