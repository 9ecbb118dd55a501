"""TrainState: everything a training step reads and writes, as one pytree.

A model's variables split in two collections: ``nnx.Param`` (trained by the optimizer) and
``nnx.BatchStat`` (``STATS``: non-trainable state the step carries and checkpoints, such as an
SAE's steps-since-fired counters or running statistics, updated by the loss as it runs).

A model with low-rank adapters (``nnx.LoRAParam``, ``models.lora``) trains only them and its task
head (``UNDER_LORA``); its other parameters are ``frozen``: carried by the state (a warm start
writes them, a step reads them) but in neither the gradient, the optimizer state nor the
checkpoint, which a resume restores over a state re-created from the same warm start.
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
# What trains beside low-rank adapters: the classifier head, fresh in every run (no warm start
# covers it). Every other parameter of such a model is frozen.
UNDER_LORA = nnx.All(nnx.Param, nnx.Any(nnx.LoRAParam, nnx.PathContains("head")))


def trainable_filter(model: nnx.Module):
  """The filter of ``model``'s trained parameters: ``UNDER_LORA`` when it holds low-rank
  adapters, else every ``nnx.Param``."""
  return UNDER_LORA if jax.tree.leaves(nnx.state(model, nnx.LoRAParam)) else nnx.Param


def split(model: nnx.Module):
  """``(graphdef, params, frozen, stats)``: the trained parameters (``trainable_filter``), the
  other parameters (none without adapters) and the ``STATS``."""
  return nnx.split(model, trainable_filter(model), nnx.Param, STATS)


@struct.dataclass
class TrainState:
  """Everything a training step reads and writes: the ``step`` (an int32 scalar, ``[runs]`` if
  stacked), the ``params`` (``nnx.Param`` leaves, with a leading ``[runs]`` axis if stacked), the
  optimizer state, the base key ``rng`` (step keys are ``fold_in(rng, step)``), the non-trainable
  ``stats`` (``STATS`` leaves), the ``frozen`` parameters (a LoRA model's base weights, stacked
  like ``params``; not checkpointed), and the static ``graphdef``, ``tx`` and ``trainable``
  filter that rebuild the module, the optimizer and the split."""
  step: jax.Array                  # int32 scalar
  params: nnx.State                # nnx.Param leaves
  opt_state: optax.OptState
  rng: jax.Array                   # base key; step keys are fold_in(rng, step)
  graphdef: nnx.GraphDef = struct.field(pytree_node=False)
  tx: optax.GradientTransformation = struct.field(pytree_node=False)
  stats: nnx.State = dataclasses.field(default_factory=nnx.State)  # STATS leaves (often none)
  frozen: nnx.State = dataclasses.field(default_factory=nnx.State)  # untrained nnx.Param leaves
  trainable: Any = struct.field(pytree_node=False, default=nnx.Param)  # the filter of params

  def model(self, params: nnx.State | None = None, stats: nnx.State | None = None
            ) -> nnx.Module:
    """The module; its variables are fresh copies, so the caller may mutate them in a trace."""
    stats = self.stats if stats is None else stats
    return nnx.merge(self.graphdef, self.params if params is None else params,
                     *jax.tree.map(lambda v: v, (self.frozen, stats)))

  def all_params(self) -> nnx.State:
    """Every parameter, trained and frozen: a warm start for another stage, or an export."""
    return nnx.merge_state(self.params, self.frozen)

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


def overlay(params: nnx.State, warm: dict, *more: nnx.State):
  """``params`` with the leaves present in the nested dict ``warm`` replaced (warm starts). A
  leaf with one axis fewer than its parameter is the same start for every stacked run. Given
  ``more`` states (the frozen parameters), ``warm`` spans them all and every one is returned."""
  pures = [state.to_pure_dict() for state in (params, *more)]

  def put(intos, source, path):
    for key, value in source.items():
      holders = [into for into in intos if key in into]
      if not holders:
        raise KeyError(f"warm-start parameter {'/'.join(map(str, path + (key,)))} not in model")
      if isinstance(value, dict):
        put([into[key] for into in holders], value, path + (key,))
      elif value.ndim == holders[0][key].ndim - 1:
        holders[0][key] = jnp.broadcast_to(value, holders[0][key].shape)
      else:
        holders[0][key] = value

  put(pures, warm, ())
  for state, pure in zip((params, *more), pures):
    nnx.replace_by_pure_dict(state, pure)
  return (params, *more) if more else params


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
  stacked likewise) overwrites the freshly initialized parameters or statistics it names (a new
  head's backbone, a LoRA model's base weights, an SAE sweep's per-run k); or a function of the
  (unstacked) shardings of the parameters but adapters, a nested dict, that returns such arrays
  already placed (a checkpoint read slice by slice onto the mesh, ``models.hf_gpt2``).
  ``cache_key`` names the model (e.g. its registry name and input spec) so its compiled
  initializer is reused by later calls. ``rules`` map logical parameter
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
      return model_fn(nnx.Rngs(params=init_key))

  abstract_model = nnx.eval_shape(lambda: build(init_keys[0]))
  train_filter = trainable_filter(abstract_model)
  graphdef, *abstract = split(abstract_model)
  rules = tuple((k, tuple(v)) for k, v in rules)
  p_shard, f_shard, s_shard = (mesh_lib.param_shardings(a, mesh, rules) for a in abstract)
  if callable(warm):   # a checkpoint's loader: every parameter's sharding but the adapters'
    base = nnx.state(abstract_model, nnx.All(nnx.Param, nnx.Not(nnx.LoRAParam)))
    warm = warm(mesh_lib.param_shardings(base, mesh, rules).to_pure_dict())
  if stacked:
    runs_axis = lambda sh: NamedSharding(mesh, P(None, *sh.spec))
    p_shard, f_shard, s_shard = (jax.tree.map(runs_axis, x) for x in (p_shard, f_shard, s_shard))
  else:
    init_keys, run_keys = init_keys[0], run_keys[0]

  cache = ((cache_key, len(seeds) if stacked else None, mesh, rules) if cache_key is not None
           else None)
  init_variables = _PARAM_INIT.get(cache) if cache is not None else None
  if init_variables is None:
    one = lambda key: tuple(split(build(key))[1:])
    init_variables = jax.jit(jax.vmap(one) if stacked else one,
                             out_shardings=(p_shard, f_shard, s_shard))
    if cache is not None:
      _PARAM_INIT[cache] = init_variables
  params, frozen, stats = init_variables(mesh_lib.put(init_keys, mesh_lib.replicated(mesh)))
  if warm is not None:
    put_warm = lambda params, frozen, stats, warm: overlay(params, warm, frozen, stats)
    params, frozen, stats = jax.jit(put_warm, out_shardings=(p_shard, f_shard, s_shard),
                                    donate_argnums=(0, 1, 2))(params, frozen, stats, warm)

  abstract = {"step": jax.ShapeDtypeStruct((len(seeds),) if stacked else (), jnp.int32),
              "params": params, "rng": run_keys,
              "opt_state": jax.eval_shape(jax.vmap(tx.init) if stacked else tx.init, params)}
  shardings = _shardings_like(tx, abstract, p_shard, mesh, stacked)
  shardings["stats"], shardings["frozen"] = s_shard, f_shard
  items = {
      "stats": stats,
      "frozen": frozen,
      "step": mesh_lib.put(jnp.zeros(abstract["step"].shape, jnp.int32), shardings["step"]),
      "params": params,
      "opt_state": jax.jit(jax.vmap(tx.init) if stacked else tx.init,
                           out_shardings=shardings["opt_state"])(params),
      "rng": mesh_lib.put(run_keys, shardings["rng"]),
  }
  state = TrainState(graphdef=graphdef, tx=tx, trainable=train_filter, **items)
  sharding_state = TrainState(graphdef=graphdef, tx=tx, trainable=train_filter, **shardings)
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
