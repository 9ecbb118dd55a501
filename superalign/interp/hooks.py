"""Read, write, steer and ablate a model's named activation sites (``models.sites``).

``run(fn, *args, capture=..., interventions=...)`` calls ``fn(*args)`` (a forward pass) with
hooks installed and returns ``(output, captured)``: the activations at the sites matched by
``capture`` (exact names or ``fnmatch`` patterns such as ``"blocks.*.resid_post"``), after the
interventions at those sites. An intervention is a function of the activation: ``replace``
(write a given activation, e.g. from another input: patching), ``add`` (a steering vector),
``zero``, ``mean_ablate``, ``resample`` and ``ablate_direction`` (ablations); each takes an
optional ``where`` mask outside which the activation is kept, an array or, by axis name,
``at(pos=3)`` / ``at(head=2)``. The built-in interventions are pytrees of their arrays (a vector,
a mask), so a jitted function can take them as arguments (``interp.steering`` does).
Every site names its axes where the model defines it (``models.sites``): ``captured.axes[name]``
says them (``("batch", "pos", "embed")``), and ``site_axes`` lists them without computing.

The hooks are trace-time Python (``models.sites``), so ``run`` composes with the transforms:
call it inside the function you ``jax.jit``, ``jax.vmap`` over stacked runs or shard, and the
captured activations come out as that function's outputs. Why not ``nnx.capture`` / ``sow`` /
``perturb``: they cover reading and adding (``perturb``) but not replacing or ablating, and they
record into attributes of the module object, whereas the engine's steps rebuild the module from
``(graphdef, state)`` inside each transform (a vmapped stack of runs has no single module object
to record into). One trace-time mechanism does all four and costs nothing when unused.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any, Callable, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from superalign import models
from superalign.core.errors import ConfigError
from superalign.core.trainer import Trained
from superalign.models import sites

Intervention = Callable[[jax.Array], jax.Array]
Axes = sites.Axes


class HookError(ConfigError):
  """A hook names a site the model lacks, or its value does not fit the activation."""


def _fit(name: str, what: str, value, x: jax.Array) -> jax.Array:
  value = jnp.asarray(value)
  try:
    shape = jnp.broadcast_shapes(value.shape, x.shape)
  except ValueError:
    shape = None
  if shape != x.shape:
    raise HookError(f"hook at {name!r}: {what} of shape {tuple(value.shape)} does not fit the "
                    f"activation's shape {tuple(x.shape)}")
  return value


def axis_index(name: str, axes: Axes, axis: str | int) -> int:
  """The position of ``axis`` (a name, or a number: counted from the end if negative) among a
  site's ``axes``; a name the site lacks is a HookError listing them."""
  if isinstance(axis, int):
    return axis % len(axes)
  if axis not in axes:
    raise HookError(f"site {name!r} has no axis {axis!r}; its axes: {', '.join(axes)}")
  return axes.index(axis)


# The axes that index a sequence's tokens: in cached generation each pass sees a slice of them,
# so ``at`` counts them from the pass's offset (``_Hooks(offset=...)``).
SEQUENCE_AXES = ("pos", "query_pos")


class at:
  """A mask by axis name, for an intervention's ``where``: ``at(pos=3)`` is true at position 3
  (every other axis broadcast), ``at(head=[0, 2], pos=-1)`` at heads 0 and 2 of the last
  position. Equal (and hashing equal) when the indices are: part of a compiled program's key."""

  def __init__(self, **index):
    self.index = index

  def _key(self):
    return tuple(sorted((k, repr(np.asarray(v).tolist())) for k, v in self.index.items()))

  def __eq__(self, other):
    return isinstance(other, at) and self._key() == other._key()

  def __hash__(self):
    return hash(self._key())

  def __repr__(self):
    return f"at({', '.join(f'{k}={v!r}' for k, v in self.index.items())})"

  def mask(self, name: str, x: jax.Array, axes: Axes, offset=None) -> jax.Array:
    """``x.ndim``-d bool, broadcastable to ``x``: true where every named axis of site ``name``
    (its axis names ``axes``) is at one of the given indices. With ``offset`` (a pass of cached
    generation), a sequence axis's index ``i`` is the absolute position ``offset + i``."""
    mask = jnp.ones((1,) * x.ndim, bool)
    for axis, where in self.index.items():
      i = axis_index(name, axes, axis)
      shape = [1] * x.ndim
      shape[i] = x.shape[i]
      if offset is not None and axes[i] in SEQUENCE_AXES:
        absolute = offset + jnp.arange(x.shape[i])
        hit = (absolute[:, None] == jnp.asarray(where).reshape(1, -1)).any(axis=1)
      else:
        hit = jnp.zeros(x.shape[i], bool).at[jnp.asarray(where)].set(True)
      mask = mask & hit.reshape(shape)
    return mask


class _Masked:
  """A built-in intervention: ``new(site_name, x, *args)`` where ``where`` holds, ``x`` elsewhere
  (the site's name makes a shape error say where it happened). A pytree: ``args`` and an array
  ``where`` are its leaves; ``new`` (a module-level function) and an ``at`` mask are static."""

  def __init__(self, new: Callable[..., jax.Array], where, *args):
    self.new, self.where, self.args = new, where, args

  def __call__(self, x: jax.Array, name: str = "", axes: Axes = (), offset=None) -> jax.Array:
    value = self.new(name, x, *self.args)
    if self.where is None:
      return value.astype(x.dtype)
    where = (self.where.mask(name, x, axes or tuple(map(str, range(x.ndim))), offset)
             if isinstance(self.where, at) else self.where)
    mask = _fit(name, "where", where, x).astype(bool)
    return jnp.where(mask, value, x).astype(x.dtype)


def _static_where(where) -> bool:
  return where is None or isinstance(where, at)


jax.tree_util.register_pytree_node(
    _Masked,
    lambda m: ((m.args, None if _static_where(m.where) else m.where),
               (m.new, m.where if _static_where(m.where) else None)),
    lambda aux, children: _Masked(aux[0], aux[1] if children[1] is None else children[1],
                                  *children[0]))


def _replace(name, x, value):
  return jnp.broadcast_to(_fit(name, "value", value, x), x.shape)


def _add(name, x, vector, scale):
  return x + scale * _fit(name, "vector", vector, x).astype(x.dtype)


def _zero(name, x):
  return jnp.zeros_like(x)


def _ablate_direction(name, x, direction):
  d = _fit(name, "direction", direction, x).astype(jnp.float32)
  d = d / jnp.linalg.norm(d, axis=-1, keepdims=True)
  x32 = x.astype(jnp.float32)
  return x32 - jnp.sum(x32 * d, axis=-1, keepdims=True) * d


def replace(value, where=None) -> Intervention:
  """Write ``value`` (broadcast to the activation) at the site: activation patching."""
  return _Masked(_replace, where, value)


def add(vector, scale: float = 1.0, where=None) -> Intervention:
  """Add ``scale * vector`` to the activation (a steering vector; broadcast over the batch)."""
  return _Masked(_add, where, vector, scale)


def zero(where=None) -> Intervention:
  """Zero ablation."""
  return _Masked(_zero, where)


def ablate_direction(direction, where=None) -> Intervention:
  """Project ``direction`` (along the activation's last axis; normalized to unit length here)
  out of the activation: ``x - (x . d) d`` (directional ablation, e.g. of a refusal direction;
  Arditi et al. 2024). Computed in float32."""
  return _Masked(_ablate_direction, where, direction)


def mean_ablate(mean, where=None) -> Intervention:
  """Replace the activation by its mean over a reference set (``mean``: the activation's shape
  without the batch axis, or broadcastable to it)."""
  return replace(mean, where)


def resample(source, where=None) -> Intervention:
  """Resample ablation: the activations of another batch of inputs (``source``, captured at the
  same site), row for row."""
  return replace(source, where)


def _summary(names: Iterable[str]) -> str:
  """Site names with block indices folded: ``blocks.<0..3>.resid_pre, ...``."""
  groups: dict[str, list[int]] = {}
  for name in names:
    match = re.match(r"^(\w+)\.(\d+)\.(.+)$", name)
    key = f"{match[1]}.<i>.{match[3]}" if match else name
    groups.setdefault(key, []).extend([int(match[2])] if match else [])
  out = []
  for key, idx in groups.items():
    out.append(key.replace("<i>", f"<{min(idx)}..{max(idx)}>") if idx else key)
  return ", ".join(out)


class Captured(dict):
  """``{site: activation}``, with ``axes[site]``: the names of each activation's axes. A pytree
  (the axes ride along as static data), so it can leave a jitted or vmapped function."""

  def __init__(self, items=(), axes=None):
    super().__init__(items)
    self.axes: dict[str, Axes] = dict(axes or {})


jax.tree_util.register_pytree_with_keys(
    Captured,
    lambda c: ([(jax.tree_util.DictKey(k), v) for k, v in c.items()],
               (tuple(c), tuple(c.axes.items()))),
    lambda aux, values: Captured(zip(aux[0], values), aux[1]))


def _unknown(name: str, known: Iterable[str], key: str | None = None) -> HookError:
  """The error for ``name``, no site of the model's ``known`` ones: a TransformerLens spelling of
  one of them (``blocks.0.hook_resid_pre``) names ours; anything else lists them all."""
  known = list(known)
  where = f"{key}={name!r}: unknown activation site" if key else f"unknown activation site {name!r}"
  ours = sites.from_transformer_lens(name)
  if ours is not None and fnmatch.filter(known, ours):
    return HookError(f"{where}: that is TransformerLens' spelling; superalign names it {ours!r} "
                     f"(models.sites.from_transformer_lens)")
  return HookError(f"{where}; this model's sites: "
                   f"{_summary(known) or 'none (was a model called?)'}")


class _Hooks:
  """The hook ``models.sites`` calls: intervenes, then captures, and records every site seen
  with its axis names. ``offset``: the absolute position of this pass's first token (a pass of
  cached generation), which ``at`` masks on sequence axes count from; None: a whole sequence."""

  def __init__(self, capture, interventions: Mapping[str, Intervention], offset=None):
    self.capture = (["*"] if capture is True else [] if capture in (None, False)
                    else [capture] if isinstance(capture, str) else list(capture))
    self.interventions = dict(interventions)
    self.seen: dict[str, Axes] = {}
    self.captured = Captured()
    self.offset = offset

  def __call__(self, name: str, x: jax.Array, axes: Axes) -> jax.Array:
    if name in self.seen:
      raise HookError(f"site {name!r} was reached twice in one hooks.run: run the model once "
                      "per call")
    if len(axes) != x.ndim:
      raise HookError(f"site {name!r}: axes {axes} name {len(axes)} axes of a {x.ndim}-d "
                      "activation (the model's site declaration is wrong)")
    self.seen[name] = axes
    if name in self.interventions:
      intervene = self.interventions[name]
      x = (intervene(x, name, axes, self.offset) if isinstance(intervene, _Masked)
           else intervene(x))
    if any(fnmatch.fnmatchcase(name, p) for p in self.capture):
      self.captured[name] = x
      self.captured.axes[name] = axes
    return x

  def check(self) -> None:
    """Raises ``HookError`` listing the model's sites if an intervention or a capture pattern
    named no site that the pass reached."""
    unknown = [n for n in self.interventions if n not in self.seen]
    unknown += [p for p in self.capture if not fnmatch.filter(self.seen, p)]
    if unknown:
      raise _unknown(unknown[0], self.seen)


def run(fn: Callable[..., Any], *args, capture: str | Iterable[str] | bool = (),
        interventions: Mapping[str, Intervention] | None = None, **kwargs):
  """``(fn(*args, **kwargs), captured)`` with ``interventions`` at their sites and the
  activations at the sites matched by ``capture`` (``True``: every site) in ``captured``.

  A name or pattern that matches no site the pass reached raises ``HookError`` listing them.
  """
  hooks = _Hooks(capture, interventions or {})
  with sites.active(hooks):
    out = fn(*args, **kwargs)
  hooks.check()
  return out, hooks.captured


def site_shapes(fn: Callable[..., Any], *args, **kwargs) -> dict[str, jax.ShapeDtypeStruct]:
  """Every site ``fn(*args)`` reaches, in order, with its activation's shape (no computation)."""
  return dict(jax.eval_shape(lambda *a: run(fn, *a, capture=True, **kwargs)[1], *args))


def site_axes(fn: Callable[..., Any], *args, **kwargs) -> dict[str, Axes]:
  """Every site ``fn(*args)`` reaches, in order, with the names of its axes (no computation)."""
  return jax.eval_shape(lambda *a: run(fn, *a, capture=True, **kwargs)[1], *args).axes


def model_site_shapes(name: str, spec, compute_dtype: str, x: np.ndarray) -> dict[str, Any]:
  """The sites of registry model ``name`` computing in ``compute_dtype`` on inputs like ``x``
  (built and traced abstractly: no parameter is computed), for validating site names before any
  training."""
  build = models.builder(name, spec, compute_dtype)
  graphdef, abstract = nnx.split(nnx.eval_shape(lambda: build(nnx.Rngs(0))))
  return dict(jax.eval_shape(lambda params, x: run(nnx.merge(graphdef, params), x, capture=True)[1],
                             abstract, jnp.asarray(x[:2])))


def check_sites(names: Iterable[str], shapes: Mapping[str, Any], key: str = "site") -> None:
  """Raises ``HookError`` (one line naming ``key``) for a name that is not a site of the model
  whose ``site_shapes`` are ``shapes``; for validating a config before any work."""
  for name in names:
    if name not in shapes:
      raise _unknown(name, shapes, key)


# Activations through the engine's batched apply: one jitted function per site, reused.
_CAPTURE: dict[str, callable] = {}


def capture_fn(site: str):
  """The engine's apply function for ``site`` (one per site, cached, so it is jitted once):
  ``fn(state, batch)`` is the model's activation at ``site`` on ``batch["x"]``, flattened to
  ``[batch, features]`` float32."""
  if site not in _CAPTURE:
    def fn(state, batch):
      act = run(state.model(), batch["x"], capture=site)[1][site]
      return act.reshape(act.shape[0], -1).astype(jnp.float32)
    _CAPTURE[site] = fn
  return _CAPTURE[site]


def activations(trained: Trained, x: np.ndarray, site_names) -> dict[str, np.ndarray]:
  """``{site: [rows, features]}``: each site's activations, flattened per row, through the
  engine's batched apply (sharded over the mesh)."""
  return {site: trained.apply(x, capture_fn(site)) for site in site_names}
