"""TrainState: everything a training step reads and writes, as one pytree."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

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


def overlay(params: nnx.State, warm: dict) -> nnx.State:
  """``params`` with the leaves present in the nested dict ``warm`` replaced (warm starts)."""
  pure = params.to_pure_dict()

  def put(into, source, path):
    for key, value in source.items():
      if key not in into:
        raise KeyError(f"warm-start parameter {'/'.join(map(str, path + (key,)))} not in model")
      if isinstance(value, dict):
        put(into[key], value, path + (key,))
      else:
        into[key] = value

  put(pure, warm, ())
  nnx.replace_by_pure_dict(params, pure)
  return params


def create(model_fn: Callable[[nnx.Rngs], nnx.Module], tx: optax.GradientTransformation,
           seed: int | Sequence[int], mesh: Mesh, *,
           warm: dict | None = None) -> tuple[TrainState, TrainState]:
  """Builds a TrainState with every array born sharded on ``mesh`` (never whole on one device).

  ``seed`` may be a sequence: then the state holds one independent run per seed, stacked on a
  leading axis (replicated over the mesh), for a vmapped step. ``warm`` (a nested dict of arrays,
  stacked likewise) overwrites the freshly initialized parameters it names, e.g. a pretrained
  backbone under a new head.

  Returns ``(state, shardings)`` where ``shardings`` mirrors the state with NamedShardings, for
  use as jit in/out shardings and as the restore target's layout.
  """
  stacked = not isinstance(seed, int)
  seeds = list(seed) if stacked else [seed]
  keys = jax.vmap(lambda s: jnp.stack(jax.random.split(jax.random.key(s))))(jnp.array(seeds))
  init_keys, run_keys = keys[:, 0], keys[:, 1]

  def build(init_key):
    with nnx.use_eager_sharding(False):
      model = model_fn(nnx.Rngs(params=init_key))
    return nnx.split(model, nnx.Param)

  graphdef, abstract_params = nnx.eval_shape(lambda: build(init_keys[0]))
  p_shard = mesh_lib.param_shardings(abstract_params, mesh)

  def init(init_key, run_key, warm):
    _, params = build(init_key)
    if warm is not None:
      params = overlay(params, warm)
    return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params),
            "rng": run_key}

  if stacked:
    init = jax.vmap(init)
    p_shard = jax.tree.map(lambda sh: NamedSharding(mesh, P(None, *sh.spec)), p_shard)
  else:
    init_keys, run_keys = init_keys[0], run_keys[0]
  abstract = jax.eval_shape(init, init_keys, run_keys, warm)
  shardings = _shardings_like(tx, abstract, p_shard, mesh, stacked)
  items = jax.jit(init, out_shardings=shardings)(init_keys, run_keys, warm)
  state = TrainState(graphdef=graphdef, tx=tx, **items)
  sharding_state = TrainState(graphdef=graphdef, tx=tx, **shardings)
  return state, sharding_state


def _shardings_like(tx: optax.GradientTransformation, abstract: dict, p_shard,
                    mesh: Mesh, stacked: bool) -> dict:
  """Optimizer moments take their parameter's sharding; counters and keys are replicated."""
  repl = mesh_lib.replicated(mesh)
  if stacked:  # tree_map_params needs the unstacked optimizer-state structure
    single = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), abstract)
    out = _shardings_like(tx, single, p_shard, mesh, stacked=False)
    out["params"] = p_shard
    return out
  masked = lambda x: isinstance(x, optax.MaskedNode)  # frozen parameters' empty slots
  opt_shard = optax.tree_utils.tree_map_params(
      tx, lambda value, sharding: value if masked(value) else sharding,
      abstract["opt_state"], p_shard, transform_non_params=lambda _: repl, is_leaf=masked)
  return {"step": repl, "params": p_shard, "opt_state": opt_shard, "rng": repl}
