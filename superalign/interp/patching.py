"""Activation patching and attribution patching between clean and corrupted inputs.

``activation_patching`` runs the model on the corrupted inputs once per cell of a grid, each time
writing the clean run's activation into one site at one index (a position, a head, a pixel), and
records a metric of the logits: how much of the clean behaviour that one activation restores.
The grid's axes are named as the sites name them (``"pos"``, ``"head"``, ``("height",
"width")``; ``models.sites``), so one call covers sites whose axes sit in different places.
Cells along the indexed axes are ``jax.vmap``-ed and the sites unrolled, so a whole grid is one
traced function: jit it (``patching_grid`` does) and it is one call.

``attribution_patching`` is its first-order estimate from one forward and one backward pass:
gradient of the metric with respect to each activation (taken through an ``add`` perturbation
at zero, ``hooks.add``) times (clean - corrupted) activation, summed over everything but the
indexed axes (Nanda 2023; Syed et al. 2023).
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

from superalign.interp import hooks

Metric = Callable[[jax.Array], jax.Array]   # logits -> scalar (a mean over the batch)


def logit_diff(answer, wrong) -> Metric:
  """Mean logit of ``answer`` minus that of ``wrong`` (ints, or per-row int arrays) over the
  batch; logits ``[batch, classes]`` (or ``[batch, length, vocab]``: the last position)."""

  def metric(logits: jax.Array) -> jax.Array:
    logits = logits if logits.ndim == 2 else logits[:, -1]
    rows = jnp.arange(logits.shape[0])
    right = logits[rows, jnp.broadcast_to(answer, rows.shape)]
    return (right - logits[rows, jnp.broadcast_to(wrong, rows.shape)]).astype(jnp.float32).mean()

  return metric


Axes = str | int | Sequence[str | int]


def _axes(axes: Axes, name: str, site_axes: hooks.Axes) -> tuple[int, ...]:
  """The positions of the grid's ``axes`` (names, or numbers) in the site's activation."""
  axes = (axes,) if isinstance(axes, (str, int)) else tuple(axes)
  return tuple(hooks.axis_index(name, site_axes, a) for a in axes)


def _one_hot(shape, axes: tuple[int, ...], flat_index) -> jax.Array:
  """A mask of ``shape``'s rank, true at one index of ``axes`` (row-major ``flat_index``) and
  broadcast over the other axes."""
  dims = [shape[a] for a in axes]
  mask = (jnp.arange(math.prod(dims)) == flat_index).reshape(dims)
  full = [1] * len(shape)
  for a, d in zip(axes, dims):
    full[a] = d
  return mask.reshape(full)


def activation_patching(model_fn: Callable[[jax.Array], jax.Array], clean, corrupted,
                        metric: Metric, sites: Sequence[str], axes: Axes = "pos",
                        chunk: int | None = None) -> dict[str, jax.Array]:
  """``{site: grid}``: ``grid[index]`` is ``metric`` of the corrupted run with the clean
  activation written at ``site``, at ``index`` of ``axes`` (``"pos"``: positions; ``"head"``:
  the heads of ``attn.z``; ``("height", "width")``: the cells of a feature map), every batch
  row at once.

  The corrupted run up to the site does not depend on the cell, so it is computed once and each
  cell runs only the model downstream of the site; cells run ``chunk`` at a time
  (``jax.lax.map``'s ``batch_size``; None: all at once), which bounds the memory of ``chunk``
  copies of everything downstream (on a CPU, small chunks keep them in cache). Traceable: jit it, or use
  ``patching_grid``. Sites whose indexed axes have the same sizes can
  be stacked into one ``[sites, ...]`` heatmap with ``stack``.
  """
  _, clean_acts = hooks.run(model_fn, clean, capture=list(sites))
  _, corrupt_acts = hooks.run(model_fn, corrupted, capture=list(sites))
  grids = {}
  for name in sites:
    act, base = clean_acts[name], corrupt_acts[name]
    index_axes = _axes(axes, name, clean_acts.axes[name])
    dims = [act.shape[a] for a in index_axes]

    def cell(flat_index, name=name, act=act, base=base, index_axes=index_axes):
      # The whole activation is written (the corrupted one with the clean cell), so the model
      # up to the site is dead code here and XLA drops it: each cell costs only what is
      # downstream of the site, and the corrupted prefix runs once, above.
      patched = jnp.where(_one_hot(act.shape, index_axes, flat_index), act, base)
      out, _ = hooks.run(model_fn, corrupted, interventions={name: hooks.replace(patched)})
      return metric(out)

    cells = jnp.arange(math.prod(dims))
    grid = jax.vmap(cell)(cells) if chunk is None else jax.lax.map(cell, cells, batch_size=chunk)
    grids[name] = grid.reshape(dims)
  return grids


def attribution_patching(model_fn: Callable[[jax.Array], jax.Array], clean, corrupted,
                         metric: Metric, sites: Sequence[str], axes: Axes = "pos"
                         ) -> dict[str, jax.Array]:
  """First-order estimate of ``activation_patching(...) - metric(model_fn(corrupted))``, one
  backward pass for every site and index."""
  _, clean_acts = hooks.run(model_fn, clean, capture=list(sites))
  _, corrupt_acts = hooks.run(model_fn, corrupted, capture=list(sites))
  zeros = {name: jnp.zeros_like(corrupt_acts[name]) for name in sites}

  def perturbed(deltas):
    out, _ = hooks.run(model_fn, corrupted,
                       interventions={n: hooks.add(d) for n, d in deltas.items()})
    return metric(out)

  grads = jax.grad(perturbed)(zeros)
  out = {}
  for name in sites:
    effect = (grads[name] * (clean_acts[name] - corrupt_acts[name])).astype(jnp.float32)
    index_axes = _axes(axes, name, clean_acts.axes[name])
    out[name] = effect.sum(axis=tuple(a for a in range(effect.ndim) if a not in index_axes))
  return out


def baselines(model_fn: Callable[[jax.Array], jax.Array], clean, corrupted,
              metric: Metric) -> tuple[jax.Array, jax.Array]:
  """``(metric on clean, metric on corrupted)``: the ends a patched metric is normalized by."""
  return metric(model_fn(clean)), metric(model_fn(corrupted))


def normalized(grid: jax.Array, clean_metric, corrupt_metric) -> jax.Array:
  """0 where patching did nothing, 1 where it restored the clean metric."""
  return (grid - corrupt_metric) / (clean_metric - corrupt_metric)


def stack(grids: Mapping[str, jax.Array]) -> jax.Array:
  """``[sites, ...]`` from grids of one shape (a layer x position heatmap)."""
  return jnp.stack([grids[name] for name in grids])


def patching_grid(model_fn: Callable[[object, jax.Array], jax.Array], params, clean, corrupted,
                  metric: Metric, sites: Sequence[str], axes: Axes = "pos",
                  attribution: bool = False, chunk: int | None = None) -> dict[str, jax.Array]:
  """The whole grid (or its attribution estimate) as one jitted call of ``model_fn(params, x)``
  (parameters are arguments, not constants folded into the program), with the baselines under
  ``"clean"`` and ``"corrupted"``. The program is compiled once per ``model_fn``, ``metric``,
  sites, axes and shapes: pass the same functions again to reuse it."""
  axes = axes if isinstance(axes, (str, int)) else tuple(axes)
  return _grid(model_fn, params, clean, corrupted, metric=metric, sites=tuple(sites), axes=axes,
               attribution=attribution, chunk=chunk)


@functools.partial(jax.jit, static_argnums=0,
                   static_argnames=("metric", "sites", "axes", "attribution", "chunk"))
def _grid(model_fn, params, clean, corrupted, *, metric, sites, axes, attribution, chunk):
  forward = lambda x: model_fn(params, x)
  out = (attribution_patching(forward, clean, corrupted, metric, sites, axes) if attribution
         else activation_patching(forward, clean, corrupted, metric, sites, axes, chunk))
  out["clean"], out["corrupted"] = baselines(forward, clean, corrupted, metric)
  return out
