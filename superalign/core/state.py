"""TrainState: everything a training step reads and writes, as one pytree.

A model's variables split in two collections: ``nnx.Param`` (trained by the optimizer) and
``nnx.BatchStat`` (``STATS``: non-trainable state the step carries and checkpoints, such as an
SAE's steps-since-fired counters or running statistics, updated by the loss as it runs).
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Callable, Hashable, Sequence

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from superalign.core import mesh as mesh_lib


STATS = nnx.BatchStat   # the non-trainable collection


@struct.dataclass
class TrainState:
  """Everything a training step reads and writes: the ``step`` (an int32 scalar, ``[runs]`` if
  stacked), the ``params`` (``nnx.Param`` leaves, with a leading ``[runs]`` axis if stacked), the
  optimizer state, the base key ``rng`` (step keys are ``fold_in(rng, step)``), the non-trainable
  ``stats`` (``STATS`` leaves), and the static ``graphdef`` and ``tx`` that rebuild the module
  and the optimizer."""
  step: jax.Array                  # int32 scalar
  params: nnx.State                # nnx.Param leaves
  opt_state: optax.OptState
  rng: jax.Array                   # base key; step keys are fold_in(rng, step)
  graphdef: nnx.GraphDef = struct.field(pytree_node=False)
  tx: optax.GradientTransformation = struct.field(pytree_node=False)
  stats: nnx.State = dataclasses.field(default_factory=nnx.State)  # STATS leaves (often none)

  def model(self, params: nnx.State | None = None, stats: nnx.State | None = None
            ) -> nnx.Module:
    """The module; its variables are fresh copies, so the caller may mutate them in a trace."""
    stats = self.stats if stats is None else stats
    return nnx.merge(self.graphdef, self.params if params is None else params,
                     jax.tree.map(lambda v: v, stats))

  def checkpoint_items(self) -> dict[str, Any]:
    """The arrays that define the run; graphdef and tx are rebuilt from the config."""
    items = {"step": self.step, "params": self.params, "opt_state": self.opt_state,
             "rng": self.rng}
    if jax.tree.leaves(self.stats):
      items["stats"] = self.stats
    return items

  def replace_items(self, items: dict[str, Any]) -> "TrainState":
    """This state with the arrays of ``items`` (as ``checkpoint_items`` names them, e.g. a
    restored checkpoint) in place."""
    return self.replace(**items)


def param_count(params: nnx.State) -> int:
  """The number of scalars in ``params`` (all stacked runs together)."""
  return sum(int(x.size) for x in jax.tree.leaves(params))


def overlay(params: nnx.State, warm: dict) -> nnx.State:
  """``params`` with the leaves present in the nested dict ``warm`` replaced (warm starts). A
  leaf with one axis fewer than its parameter is the same start for every stacked run."""
  pure = params.to_pure_dict()

  def put(into, source, path):
    for key, value in source.items():
      if key not in into:
        raise KeyError(f"warm-start parameter {'/'.join(map(str, path + (key,)))} not in model")
      if isinstance(value, dict):
        put(into[key], value, path + (key,))
      elif value.ndim == into[key].ndim - 1:
        into[key] = jnp.broadcast_to(value, into[key].shape)
      else:
        into[key] = value

  put(pure, warm, ())
  nnx.replace_by_pure_dict(params, pure)
  return params


# Jitted parameter initializers by (model key, runs, mesh): random initialization compiles slowly
# on XLA:CPU (seconds per model), and every stage of a protocol re-creates the same model.
_PARAM_INIT: dict[Hashable, Callable] = {}


def create(model_fn: Callable[[nnx.Rngs], nnx.Module], tx: optax.GradientTransformation,
           seed: int | Sequence[int], mesh: Mesh, *, warm: dict | None = None,
           cache_key: Hashable | None = None,
           rules=mesh_lib.LOGICAL_RULES) -> tuple[TrainState, TrainState]:
  """Builds a TrainState with every array born sharded on ``mesh`` (never whole on one device).

  ``seed`` may be a sequence: then the state holds one independent run per seed, stacked on a
  leading axis (replicated over the mesh), for a vmapped step. ``warm`` (a nested dict of arrays,
  stacked likewise) overwrites the freshly initialized parameters it names, e.g. a pretrained
  backbone under a new head; it may also be a function of the (unstacked) parameter shardings, a
  nested dict, that returns such arrays already placed (a checkpoint read slice by slice onto
  the mesh, ``models.hf_gpt2``). ``cache_key`` names the model (e.g. its registry name and input
  spec) so its compiled initializer is reused by later calls. ``rules`` map logical parameter
  axes to mesh axes (``config.mesh.rules``).

  Returns ``(state, shardings)`` where ``shardings`` mirrors the state with NamedShardings, for
  use as jit in/out shardings and as the restore target's layout.
  """
  stacked = not isinstance(seed, numbers.Integral)
  seeds = [int(s) for s in seed] if stacked else [int(seed)]
  keys = jax.vmap(lambda s: jnp.stack(jax.random.split(jax.random.key(s))))(jnp.array(seeds))
  init_keys, run_keys = keys[:, 0], keys[:, 1]

  def build(init_key):
    with nnx.use_eager_sharding(False):
      model = model_fn(nnx.Rngs(params=init_key))
    return nnx.split(model, nnx.Param, STATS)

  graphdef, abstract_params, abstract_stats = nnx.eval_shape(lambda: build(init_keys[0]))
  rules = tuple((k, tuple(v)) for k, v in rules)
  p_shard = mesh_lib.param_shardings(abstract_params, mesh, rules)
  s_shard = mesh_lib.param_shardings(abstract_stats, mesh, rules)
  if callable(warm):
    warm = warm(p_shard.to_pure_dict())
  if stacked:
    runs_axis = lambda sh: NamedSharding(mesh, P(None, *sh.spec))
    p_shard, s_shard = jax.tree.map(runs_axis, p_shard), jax.tree.map(runs_axis, s_shard)
  else:
    init_keys, run_keys = init_keys[0], run_keys[0]

  cache = ((cache_key, len(seeds) if stacked else None, mesh, rules) if cache_key is not None
           else None)
  init_variables = _PARAM_INIT.get(cache) if cache is not None else None
  if init_variables is None:
    one = lambda key: build(key)[1:]
    init_variables = jax.jit(jax.vmap(one) if stacked else one, out_shardings=(p_shard, s_shard))
    if cache is not None:
      _PARAM_INIT[cache] = init_variables
  params, stats = init_variables(mesh_lib.put(init_keys, mesh_lib.replicated(mesh)))
  if warm is not None:
    params = jax.jit(overlay, out_shardings=p_shard, donate_argnums=0)(params, warm)

  abstract = {"step": jax.ShapeDtypeStruct((len(seeds),) if stacked else (), jnp.int32),
              "params": params, "rng": run_keys,
              "opt_state": jax.eval_shape(jax.vmap(tx.init) if stacked else tx.init, params)}
  shardings = _shardings_like(tx, abstract, p_shard, mesh, stacked)
  shardings["stats"] = s_shard
  items = {
      "stats": stats,
      "step": mesh_lib.put(jnp.zeros(abstract["step"].shape, jnp.int32), shardings["step"]),
      "params": params,
      "opt_state": jax.jit(jax.vmap(tx.init) if stacked else tx.init,
                           out_shardings=shardings["opt_state"])(params),
      "rng": mesh_lib.put(run_keys, shardings["rng"]),
  }
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
