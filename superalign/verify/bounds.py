"""Sound bounds on a network's outputs over an input box: IBP, CROWN, CROWN-IBP, alpha-CROWN.

All functions are pure and batched over examples: ``lo, hi`` are ``[B, *input_shape]`` and a
specification ``spec`` ``[B, S, K]`` (or ``[S, K]``) asks for bounds on ``spec @ logits``; no
spec means the logits themselves. Each returns ``(lower, upper)``, ``[B, S]``.

- IBP (Gowal et al. 2018): intervals layer by layer.
- CROWN (Zhang et al. 2018): a backward pass carries linear bounds ``A @ z + c`` from the output to
  the input; each ReLU with ``l < 0 < u`` is bounded above by its chord and below by ``alpha * z``,
  alpha = 1 where ``u > -l`` else 0 (the adaptive slope). The ReLUs' input bounds come from the
  same backward pass from each layer (chunked over neurons: the pass holds
  ``B * chunk * (largest layer)`` floats), intersected with IBP's.
- CROWN-IBP (Zhang et al. 2020): IBP's intermediate bounds, one CROWN pass from the output.
- alpha-CROWN (Xu et al. 2021): the lower slopes of the output pass optimized by gradient ascent
  (optax), one set per example and per specification row, projected to [0, 1]; the best bound
  seen is kept, so it is never looser than CROWN (its starting point).

A MaxPool is rewritten exactly into affine maps and ReLUs for the linear methods (``lowered``).

Each method is registered in ``METHODS`` by the name configs use (``bound_methods``), with
whether its intermediate bounds cost a backward pass per neuron (``per_neuron``: run on fewer
examples, in smaller batches); ``bounds(method, ...)`` dispatches by name. A new method is one
function and one ``@method(...)`` line.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from superalign.core.errors import ConfigError
from superalign.config.registry import Registry
from superalign.verify.network import Dense, Network, ReLU, is_affine, lowered

CHUNK_BYTES = 1 << 28   # the budget for one chunk of a layer's backward pass (256 MiB)


@dataclasses.dataclass(frozen=True)
class Method:
  """A bound method: ``fn(net, lo, hi, spec=None, **options) -> (lower, upper)``."""
  fn: Callable
  per_neuron: bool = False   # CROWN's intermediate bounds: a backward pass per neuron

  def options(self, **values) -> dict:
    """The keyword options ``fn`` takes, of ``values``."""
    names = inspect.signature(self.fn).parameters
    return {k: v for k, v in values.items() if k in names}


METHODS: Registry[Method] = Registry("bound method")


def method(name: str, *, per_neuron: bool = False):
  """Registers the decorated bound function as ``name``."""
  def add(fn):
    METHODS.register(name, Method(fn, per_neuron))
    return fn
  return add


# --- boxes and specifications --------------------------------------------------------------


def input_box(x, eps, domain: tuple[float, float] | None = (0.0, 1.0)):
  """The L-infinity ball of radius ``eps`` (a scalar, or one per example) around ``x``,
  intersected with ``domain`` when given."""
  eps = jnp.asarray(eps, jnp.float32).reshape((-1,) + (1,) * (x.ndim - 1))
  lo, hi = x - eps, x + eps
  if domain is not None:
    lo, hi = jnp.clip(lo, *domain), jnp.clip(hi, *domain)
  return lo, hi


def check_eps(eps) -> None:
  """One line for a negative radius (host side, before any tracing)."""
  values = np.asarray(eps, np.float64).ravel()
  bad = values[(values < 0) | ~np.isfinite(values)]
  if bad.size:
    raise ConfigError(f"eps={bad[0]}: must be a finite number >= 0")


def check_box(lo, hi) -> None:
  """One line for a box whose lower bound exceeds its upper bound somewhere."""
  lo, hi = np.asarray(lo), np.asarray(hi)
  if lo.shape != hi.shape:
    raise ConfigError(f"box: lower bound shape {lo.shape} differs from upper {hi.shape}")
  bad = np.argwhere(lo > hi)
  if len(bad):
    at = tuple(int(i) for i in bad[0])
    raise ConfigError(f"box: lower bound exceeds upper bound at {len(bad)} entries, first at "
                      f"index {at} ({lo[at]} > {hi[at]})")


def margin_spec(labels, num_classes: int):
  """``[B, K-1, K]``: rows ``e_y - e_j`` for every class ``j != y``; all their lower bounds
  above zero certify that the label stays the argmax over the box."""
  others = jnp.arange(num_classes - 1)[None, :]
  others = others + (others >= labels[:, None])
  return (jax.nn.one_hot(labels, num_classes)[:, None, :]
          - jax.nn.one_hot(others, num_classes))


def verified(lower_margins) -> jax.Array:
  """Per example: every margin's lower bound is positive."""
  return (lower_margins > 0).all(-1)


def worst_logits(lower_margins) -> jax.Array:
  """Gowal et al.'s worst-case logits ``-lower(e_y - e_j)``, with 0 for the label, as ``[B, K]``
  in the margin order of ``margin_spec`` shifted so the label is column 0 (cross-entropy on
  them with label 0 is the robust loss)."""
  return jnp.concatenate([jnp.zeros_like(lower_margins[:, :1]), -lower_margins], axis=1)


# --- interval bound propagation ------------------------------------------------------------


def relu_inputs(net: Network, lo, hi, tighter=None):
  """Interval bounds through ``net``, and the bounds ``{op index: (l, u)}`` at each ReLU's input;
  ``tighter(i, l, u)`` may tighten them (CROWN's intermediate bounds)."""
  bounds = {}
  for i, op in enumerate(net.ops):
    if isinstance(op, ReLU):
      if tighter is not None:
        lo, hi = tighter(i, lo, hi, bounds)
      bounds[i] = (lo, hi)
    lo, hi = op.ibp(lo, hi)
  return (lo, hi), bounds


@method("ibp")
def ibp(net: Network, lo, hi, spec=None):
  """IBP bounds on ``spec @ logits`` (or the logits). With a spec and a dense last layer, the
  spec is folded into it (Gowal et al.): intervals of ``(spec @ W) z`` over the last hidden
  layer, tighter than the spec applied to the logits' intervals."""
  if spec is None:
    return relu_inputs(net, lo, hi)[0]
  spec = _batched(spec, lo.shape[0])
  last = net.ops[-1]
  if isinstance(last, Dense):
    (z_lo, z_hi), _ = relu_inputs(Network(net.ops[:-1], net.input_shape), lo, hi)
    weight = jnp.einsum("bsk,hk->bsh", spec, last.kernel)
    offset = jnp.einsum("bsk,k->bs", spec, last.bias)
  else:
    (z_lo, z_hi), _ = relu_inputs(net, lo, hi)
    weight, offset = spec, 0.0
  mid, rad = (z_hi + z_lo) / 2, (z_hi - z_lo) / 2
  centre = jnp.einsum("bsh,bh->bs", weight, mid) + offset
  spread = jnp.einsum("bsh,bh->bs", jnp.abs(weight), rad)
  return centre - spread, centre + spread


# --- linear bounds: the backward pass ------------------------------------------------------


def _batched(spec, batch: int):
  spec = jnp.asarray(spec, jnp.float32)
  return jnp.broadcast_to(spec, (batch, *spec.shape)) if spec.ndim == 2 else spec


def relaxation(l, u, alpha=None):
  """A ReLU's linear bounds on ``[l, u]``: ``(lower slope, upper slope, upper intercept)``. The
  lower slope of an unstable ReLU is ``alpha`` (default: CROWN's adaptive 1 if u > -l else 0)."""
  active, unstable = l >= 0, (l < 0) & (u > 0)
  width = jnp.where(unstable, u - l, 1.0)
  up_slope = jnp.where(active, 1.0, jnp.where(unstable, u / width, 0.0))
  up_intercept = jnp.where(unstable, -l * u / width, 0.0)
  if alpha is None:
    alpha = (u > -l).astype(l.dtype)
  low_slope = jnp.where(active, 1.0, jnp.where(unstable, alpha, 0.0))
  return low_slope, up_slope, up_intercept


def _transpose(op, a, in_shape):
  """``a @ J`` for the linear part ``J`` of ``op``: a ``[B, S, *out]`` -> ``[B, S, *in]``."""
  b, s = a.shape[:2]
  t = jax.linear_transpose(op.linear, jax.ShapeDtypeStruct((b * s, *in_shape), a.dtype))
  return t(a.reshape(b * s, *a.shape[2:]))[0].reshape(b, s, *in_shape)


def backward_lower(net: Network, bounds, a, lo, hi, alphas=None, shapes=None):
  """The lower bound of ``a @ net(x)`` over the box, ``a`` ``[B, S, *output]`` (or
  ``[1, S, *output]``, the same rows for every example), given the ReLUs' input bounds;
  ``alphas[i]`` (``[B, S, *shape]``) sets ReLU ``i``'s lower slopes."""
  shapes = shapes or net.shapes()
  const = jnp.zeros(a.shape[:2], a.dtype)
  sum_rest = lambda t: t.reshape(*t.shape[:2], -1).sum(-1)
  for i in reversed(range(len(net.ops))):
    op = net.ops[i]
    if isinstance(op, ReLU):
      l, u = bounds[i]
      alpha = None if alphas is None else alphas[i]
      low, up, up_int = relaxation(l[:, None], u[:, None], alpha)
      pos, neg = jnp.maximum(a, 0), jnp.minimum(a, 0)
      const = const + sum_rest(neg * up_int)
      a = pos * low + neg * up
    elif is_affine(op):
      if op.bias is not None:
        const = const + sum_rest(a * op.bias)
      a = _transpose(op, a, shapes[i])
    else:
      raise ConfigError(f"{type(op).__name__}: no linear relaxation; lower the network "
                        "(verify.network.lowered) or use IBP")
  lo, hi = lo[:, None], hi[:, None]
  return sum_rest(jnp.maximum(a, 0) * lo + jnp.minimum(a, 0) * hi) + const


def chunk_size(batch: int, shapes, chunk: int | None = None) -> int:
  """Neurons per backward pass for intermediate bounds: ``chunk``, or as many as fit
  ``CHUNK_BYTES`` for the largest layer (both signs, float32)."""
  if chunk:
    return int(chunk)
  largest = max(math.prod(s) for s in shapes)
  return max(1, CHUNK_BYTES // (batch * 2 * largest * 4))


def _layer_bounds(net: Network, upto: int, bounds, lo, hi, shapes, chunk: int):
  """CROWN bounds on the input of op ``upto`` (all its neurons), ``chunk`` neurons a pass."""
  shape, batch = shapes[upto], lo.shape[0]
  n = math.prod(shape)
  chunk = min(chunk, n)
  prefix = Network(net.ops[:upto], net.input_shape)
  rows = jnp.arange(-(-n // chunk) * chunk).reshape(-1, chunk)   # rows >= n are zero: padding

  def one(r):
    # One copy of the identity rows, not one per example: until the first ReLU going back the
    # rows do not depend on the example, so the layer's (costly) transpose runs once.
    a = jax.nn.one_hot(r, n, dtype=lo.dtype).reshape(1, chunk, *shape)
    both = backward_lower(prefix, bounds, jnp.concatenate([a, -a], axis=1), lo, hi,
                          shapes=shapes[:upto + 1])
    return both[:, :chunk], -both[:, chunk:]

  l, u = jax.lax.map(one, rows)                      # [chunks, B, chunk]
  unchunk = lambda t: t.transpose(1, 0, 2).reshape(batch, -1)[:, :n].reshape(batch, *shape)
  return unchunk(l), unchunk(u)


def _unstable_bounds(net: Network, upto: int, bounds, lo, hi, shapes, l_ibp, u_ibp, k: int):
  """IBP's bounds on the input of op ``upto``, with CROWN's on each example's ``k`` widest
  unstable neurons (where IBP says ``l < 0 < u``); a stable neuron's relaxation is exact whatever
  its bounds, so with at most ``k`` unstable neurons this equals CROWN on every neuron."""
  shape, batch = shapes[upto], lo.shape[0]
  n = math.prod(shape)
  k = min(k, n)
  l, u = l_ibp.reshape(batch, n), u_ibp.reshape(batch, n)
  _, idx = jax.lax.top_k(jnp.where((l < 0) & (u > 0), u - l, -1.0), k)     # [B, k]
  a = jax.nn.one_hot(idx, n, dtype=lo.dtype).reshape(batch, k, *shape)
  prefix = Network(net.ops[:upto], net.input_shape)
  both = backward_lower(prefix, bounds, jnp.concatenate([a, -a], axis=1), lo, hi,
                        shapes=shapes[:upto + 1])
  rows = jnp.arange(batch)[:, None]
  l = l.at[rows, idx].max(both[:, :k])
  u = u.at[rows, idx].min(-both[:, k:])
  return l.reshape(batch, *shape), u.reshape(batch, *shape)


def crown_relu_bounds(net: Network, lo, hi, chunk: int | None = None,
                      max_unstable: int | None = None):
  """Every ReLU's input bounds by CROWN, intersected with IBP's. ``net`` is lowered.
  ``max_unstable``: refine only each example's widest unstable neurons per layer (the sparse
  intermediate bounds of auto_LiRPA; exact CROWN while no layer has more)."""
  shapes = net.shapes()
  chunk = chunk_size(lo.shape[0], shapes, chunk)
  weighted = lambda ops: sum(isinstance(op, ReLU) or hasattr(op, "kernel") for op in ops)

  def tighter(i, l_ibp, u_ibp, bounds):
    if weighted(net.ops[:i]) <= 1:   # one affine map of the box: intervals are exact
      return l_ibp, u_ibp
    if max_unstable:
      return _unstable_bounds(net, i, bounds, lo, hi, shapes, l_ibp, u_ibp, max_unstable)
    l, u = _layer_bounds(net, i, bounds, lo, hi, shapes, chunk)
    return jnp.maximum(l, l_ibp), jnp.minimum(u, u_ibp)

  _, bounds = relu_inputs(net, lo, hi, tighter)
  return bounds


def _spec_or_identity(net: Network, spec, batch: int):
  if spec is None:
    spec = jnp.eye(net.num_outputs)
  return _batched(spec, batch)


def _two_sided(net, bounds, spec, lo, hi, upper: bool = True):
  """``(lower, upper)`` of ``spec @ net`` in one backward pass (upper is None if not asked)."""
  if not upper:
    return backward_lower(net, bounds, spec, lo, hi), None
  both = backward_lower(net, bounds, jnp.concatenate([spec, -spec], axis=1), lo, hi)
  s = spec.shape[1]
  return both[:, :s], -both[:, s:]


@method("crown", per_neuron=True)
def crown(net: Network, lo, hi, spec=None, chunk: int | None = None,
          max_unstable: int | None = None):
  """CROWN bounds on ``spec @ logits``, intermediate bounds by CROWN."""
  net = lowered(net)
  spec = _spec_or_identity(net, spec, lo.shape[0])
  return _two_sided(net, crown_relu_bounds(net, lo, hi, chunk, max_unstable), spec, lo, hi)


@method("crown_ibp")
def crown_ibp(net: Network, lo, hi, spec=None, upper: bool = True):
  """CROWN-IBP: IBP's intermediate bounds, CROWN's pass from the output (``upper=False``: the
  lower bound alone, as training needs)."""
  net = lowered(net)
  spec = _spec_or_identity(net, spec, lo.shape[0])
  _, bounds = relu_inputs(net, lo, hi)
  return _two_sided(net, bounds, spec, lo, hi, upper)


@method("alpha_crown", per_neuron=True)
def alpha_crown(net: Network, lo, hi, spec=None, steps: int = 20, lr: float = 0.5,
                chunk: int | None = None, max_unstable: int | None = None):
  """alpha-CROWN: the output pass's lower slopes optimized per example and specification row
  (intermediate bounds are CROWN's); never looser than CROWN."""
  net = lowered(net)
  spec = _spec_or_identity(net, spec, lo.shape[0])
  bounds = crown_relu_bounds(net, lo, hi, chunk, max_unstable)
  a = jnp.concatenate([spec, -spec], axis=1)
  shapes = net.shapes()
  rows = a.shape[1]
  # CROWN's adaptive slopes, one copy per specification row, are the starting point
  alphas = {i: jnp.broadcast_to((u > -l).astype(lo.dtype)[:, None], (lo.shape[0], rows, *l.shape[1:]))
            for i, (l, u) in bounds.items()}
  bound = lambda al: backward_lower(net, bounds, a, lo, hi, al, shapes)
  tx = optax.adam(lr)

  def step(carry, _):
    al, opt_state, best = carry
    value, pullback = jax.vjp(bound, al)
    grads = pullback(-jnp.ones_like(value))[0]        # ascend every row's bound at once
    updates, opt_state = tx.update(grads, opt_state, al)
    al = jax.tree.map(lambda t: jnp.clip(t, 0.0, 1.0), optax.apply_updates(al, updates))
    return (al, opt_state, jnp.maximum(best, value)), None

  init = (alphas, tx.init(alphas), jnp.full(a.shape[:2], -jnp.inf, lo.dtype))
  (alphas, _, best), _ = jax.lax.scan(step, init, None, length=steps)
  best = jnp.maximum(best, bound(alphas))
  s = spec.shape[1]
  return best[:, :s], -best[:, s:]


def bounds(method: str, net: Network, lo, hi, spec=None, **options):
  """Bounds by the registered ``method``; ``options`` are the method's keyword options."""
  return METHODS[method].fn(net, lo, hi, spec, **options)
