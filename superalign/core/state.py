"""TrainState: everything a training step reads and writes, as one pytree."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct
from jax.sharding import Mesh, NamedSharding

from superalign.core import mesh as mesh_lib


@struct.dataclass
class TrainState:
  step: jax.Array                  # int32 scalar
  params: nnx.State                # nnx.Param leaves
  opt_state: optax.OptState
  rng: jax.Array                   # base key; step keys are fold_in(rng, step)
  graphdef: nnx.GraphDef = struct.field(pytree_node=False)
  tx: optax.GradientTransformation = struct.field(pytree_node=False)

  def model(self, params: nnx.State | None = None) -> nnx.Module:
    return nnx.merge(self.graphdef, self.params if params is None else params)

  def checkpoint_items(self) -> dict[str, Any]:
    """The arrays that define the run; graphdef and tx are rebuilt from the config."""
    return {"step": self.step, "params": self.params, "opt_state": self.opt_state, "rng": self.rng}

  def replace_items(self, items: dict[str, Any]) -> "TrainState":
    return self.replace(**items)


def param_count(params: nnx.State) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(params))


def create(model_fn: Callable[[nnx.Rngs], nnx.Module], tx: optax.GradientTransformation,
           seed: int | jax.Array, mesh: Mesh) -> tuple[TrainState, TrainState]:
  """Builds a TrainState with every array born sharded on ``mesh`` (never whole on one device).

  Returns ``(state, shardings)`` where ``shardings`` mirrors the state with NamedShardings, for
  use as jit in/out shardings and as the restore target's layout.
  """
  key = jax.random.key(seed) if not isinstance(seed, jax.Array) else seed
  init_key, run_key = jax.random.split(key)

  def build(init_key):
    with nnx.use_eager_sharding(False):
      model = model_fn(nnx.Rngs(params=init_key))
    graphdef, params = nnx.split(model, nnx.Param)
    return graphdef, params

  graphdef, abstract_params = nnx.eval_shape(lambda: build(init_key))
  p_shard = mesh_lib.param_shardings(abstract_params, mesh)

  def init(init_key, run_key):
    _, params = build(init_key)
    params = jax.lax.with_sharding_constraint(params, p_shard)
    return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params),
            "rng": run_key}

  abstract = jax.eval_shape(init, init_key, run_key)
  shardings = _shardings_like(tx, abstract, p_shard, mesh)
  items = jax.jit(init, out_shardings=shardings)(init_key, run_key)
  state = TrainState(graphdef=graphdef, tx=tx, **items)
  sharding_state = TrainState(graphdef=graphdef, tx=tx, **shardings)
  return state, sharding_state


def _shardings_like(tx: optax.GradientTransformation, abstract: dict, p_shard,
                    mesh: Mesh) -> dict:
  """Optimizer moments take their parameter's sharding; counters and keys are replicated."""
  repl = mesh_lib.replicated(mesh)
  opt_shard = optax.tree_utils.tree_map_params(
      tx, lambda _, sharding: sharding, abstract["opt_state"], p_shard,
      transform_non_params=lambda _: repl)
  return {"step": repl, "params": p_shard, "opt_state": opt_shard, "rng": repl}
