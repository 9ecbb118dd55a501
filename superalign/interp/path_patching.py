"""Path patching (Wang et al. 2022, the IOI circuit; as TransformerLens's IOI tutorials do it):
how much of a behaviour flows from sender heads (or MLPs) to receivers along direct paths only.

Three runs per sender: (a) the clean and corrupted runs, caching every head's ``attn.z`` (and
each ``mlp_out``); (b) the base run (clean, when noising: ``patch_from="corrupted"``) with the
senders' ``z`` taken from the other run and every other head frozen at its base ``z`` (and,
with ``"mlp_out"`` in ``freeze``, every MLP at its base output; by default MLPs are recomputed,
as in the IOI paper), recording what the receivers read; (c) the base run with only the
receivers' inputs patched to those records, measured by ``metric``. A sender's effect thus
reaches a receiver through the residual stream alone (and the MLPs between, unless frozen),
never through another head.

Receivers: ``"logits"`` (the direct path to the output: step (c) is step (b)'s logits), a
residual-stream site (``blocks.i.resid_pre``, ``resid_mid``, ``resid_post``: its whole value
patched), heads ``(layer, head)``, which read a sender through their queries, keys and values
together (step (b) records the receiver head's ``z`` as computed from the patched residual
stream, and step (c) writes that ``z``), or one of a head's inputs ``(layer, head, "q")``,
``(layer, head, "k")``, ``(layer, head, "v")``, as TransformerLens's IOI path patching does with
``hook_q`` / ``hook_k`` / ``hook_v``: step (b) records that head's slice of the site
``blocks.<layer>.attn.q`` (``.k``, ``.v``: after the projection and bias, before QK-norm and
rotary) and step (c) writes only that slice, everything else the base run. Under grouped-query
attention a ``"k"`` / ``"v"`` receiver names a key/value head (``head < num_kv_heads``), which
the query heads of its group share. A list may mix any of these but ``"logits"``. In step (b) a
receiver head is frozen like every other head (when ``"attn.z"`` is in ``freeze``): its own
``z`` is recorded before the freeze, so receivers in later blocks read no path through it.

Every cell of a sender grid (one head, an MLP, or a group patched together) is a mask over the
model's heads and MLPs; the cells are ``jax.vmap``-ed (``chunk`` at a time), so a whole grid is
one jitted call, as ``patching.activation_patching``.
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from superalign.interp import hooks
from superalign.interp.cache import Named, lm_forward, transformer_of
from superalign.interp.hooks import HookError

Metric = Callable[[jax.Array], jax.Array]
FREEZABLE = ("attn.z", "mlp_out")
_RESID = re.compile(r"^blocks\.(\d+)\.(resid_pre|resid_mid|resid_post)$")
_SENDER_SITE = re.compile(r"^blocks\.(\d+)\.(attn_out|mlp_out)$")
COMPONENTS = ("q", "k", "v")     # a head's inputs a receiver may name; "z": the head itself
_RECEIVERS = ("'logits', 'blocks.<i>.resid_pre|resid_mid|resid_post', (layer, head), "
              "(layer, head, 'q'|'k'|'v')")


def _is_head(entry) -> bool:
  return (isinstance(entry, tuple) and len(entry) == 2
          and all(isinstance(i, (int, np.integer)) for i in entry))


def _is_input(entry) -> bool:
  """``(layer, head, component)``: one of a head's inputs (the component checked later)."""
  return (isinstance(entry, tuple) and len(entry) == 3 and _is_head(entry[:2])
          and isinstance(entry[2], str))


class _Shape:
  """The model's layers and heads, and the residual-stream order of what writes and reads it:
  block ``l``'s heads write at ``2l + 1``, its MLP at ``2l + 2``; a reader sees the writers
  before its own point (``resid_pre`` / a head of block ``r``: ``2r + 1``; ``resid_mid``:
  ``2r + 2``; ``resid_post``: ``2r + 3``; the logits: after everything)."""

  def __init__(self, model):
    self.layers, self.heads = len(model.blocks), model.blocks[0].attn.num_heads
    self.kv_heads = model.blocks[0].attn.num_kv_heads
    self.parallel = model.blocks[0].parallel_residual

  def head(self, entry, role: str) -> tuple[int, int]:
    """``(layer, head)`` of ``entry``, or a one-line HookError naming it as ``role``."""
    l, h = map(int, entry)
    if not (0 <= l < self.layers and 0 <= h < self.heads):
      raise HookError(f"path_patching {role} head {entry}: no such head; valid: (layer 0.."
                      f"{self.layers - 1}, head 0..{self.heads - 1})")
    return l, h

  def input(self, entry) -> tuple[int, int, str]:
    """A receiver ``(layer, head, "q"|"k"|"v")``; ``k`` and ``v`` count key/value heads."""
    l, h, component = int(entry[0]), int(entry[1]), entry[2]
    if component not in COMPONENTS:
      raise HookError(f"path_patching receiver {entry}: {component!r} is not a head's input; "
                      "valid: 'q', 'k', 'v' (or (layer, head) for the head's z)")
    n, what = ((self.heads, "head") if component == "q" or self.kv_heads == self.heads
               else (self.kv_heads, "key/value head (grouped-query attention)"))
    if not (0 <= l < self.layers and 0 <= h < n):
      raise HookError(f"path_patching receiver {entry}: no such {what}; valid: (layer 0.."
                      f"{self.layers - 1}, {what.split(' (')[0]} 0..{n - 1}, {component!r})")
    return l, h, component

  def layer(self, l: int, what: str) -> int:
    """Block ``l``, or a one-line HookError naming ``what`` and the valid blocks."""
    if not 0 <= l < self.layers:
      raise HookError(f"path_patching: {what}: no block {l}; valid: 0..{self.layers - 1}")
    return l


def _receivers(spec, shape: _Shape):
  """``(point, sites, masks)``: the first point any receiver reads at, the residual sites, and
  per component (``"z"``: whole heads; ``"q"``, ``"k"``, ``"v"``: their inputs) the receivers'
  ``[layer, head]`` mask (``k`` / ``v``: ``[layer, kv_head]``)."""
  entries = ([spec] if isinstance(spec, str) or _is_head(spec) or _is_input(spec)
             else list(spec))
  if not entries:
    raise HookError(f"path_patching receivers: none given; valid: {_RECEIVERS}")
  if "logits" in entries and len(entries) > 1:
    raise HookError("path_patching receivers: 'logits' is the whole output; give it alone")
  points, resid = [], []
  masks = {c: np.zeros((shape.layers, shape.heads if c in ("z", "q") else shape.kv_heads), bool)
           for c in ("z",) + COMPONENTS}
  for e in entries:
    if isinstance(e, str) and e == "logits":
      points.append(2 * shape.layers + 3)
    elif _is_head(e):
      l, h = shape.head(e, "receiver")
      masks["z"][l, h] = True
      points.append(2 * l + 1)
    elif _is_input(e):
      l, h, component = shape.input(e)
      masks[component][l, h] = True
      points.append(2 * l + 1)
    elif isinstance(e, str) and _RESID.match(e):
      l, kind = shape.layer(int(_RESID.match(e)[1]), e), _RESID.match(e)[2]
      if kind == "resid_mid" and shape.parallel:
        raise HookError(f"path_patching receiver {e!r}: a parallel-residual block has no "
                        "resid_mid; valid: resid_pre, resid_post")
      resid.append(e)
      points.append(2 * l + {"resid_pre": 1, "resid_mid": 2, "resid_post": 3}[kind])
    else:
      raise HookError(f"path_patching receiver {e!r}: not a receiver; valid: {_RECEIVERS}")
  return min(points), resid, masks


def _sender_cells(spec, shape: _Shape, before: int):
  """``(head_masks [cells, layer, head], mlp_masks [cells, layer], grid axes, labels)``."""
  if isinstance(spec, str) and spec == "heads":
    layers = [l for l in range(shape.layers) if 2 * l + 1 < before]
    if not layers:
      raise HookError("path_patching senders='heads': no head writes before the receivers "
                      "read (a receiver at block 0's input); valid: receivers after block 0")
    cells = [[(l, h)] for l in layers for h in range(shape.heads)]
    axes, labels = ("layer", "head"), None
  else:
    entries = [spec] if isinstance(spec, str) or _is_head(spec) else list(spec)
    cells = [e if isinstance(e, (list, set, frozenset)) else [e] for e in entries]
    axes, labels = ("sender",), []
  heads = np.zeros((len(cells), shape.layers, shape.heads), bool)
  mlps = np.zeros((len(cells), shape.layers), bool)
  for i, cell in enumerate(cells):
    names = []
    for e in cell:
      if _is_head(e):
        l, h = shape.head(e, "sender")
        heads[i, l, h], point, name = True, 2 * l + 1, f"L{l}H{h}"
      elif isinstance(e, str) and _SENDER_SITE.match(e):
        l, kind = shape.layer(int(_SENDER_SITE.match(e)[1]), e), _SENDER_SITE.match(e)[2]
        if kind == "attn_out":
          heads[i, l] = True
        else:
          mlps[i, l] = True
        point, name = 2 * l + (1 if kind == "attn_out" else 2), f"{l}_{kind}"
      else:
        raise HookError(f"path_patching sender {e!r}: not a sender; valid: (layer, head), "
                        "'blocks.<i>.attn_out' (all its heads), 'blocks.<i>.mlp_out', or a "
                        "list of them patched together")
      if point >= before:
        raise HookError(f"path_patching sender {name}: it writes at or after where the "
                        "receivers read, so there is no path; valid senders are in earlier "
                        "blocks (a head before a resid_mid of its own block is fine)")
      names.append(name)
    if labels is not None:
      labels.append("+".join(names))
  if axes == ("layer", "head"):
    n = heads.shape[0] // shape.heads
    return heads, mlps, (n, shape.heads), axes, None
  return heads, mlps, (len(cells),), axes, tuple(labels)


def path_patching(model, clean, corrupted, metric: Metric, senders="heads",
                  receivers="logits", freeze: Sequence[str] = ("attn.z",),
                  patch_from: str = "corrupted", chunk: int | None = None) -> dict:
  """``{"grid": Named, "clean": m, "corrupted": m}``: ``metric`` (of the LM logits ``[batch,
  pos, vocab]``, a mean over the batch) after path patching each sender cell to ``receivers``,
  with the two runs' metrics. ``senders``: ``"heads"`` (every head that writes before the
  receivers read, a ``[layer, head]`` grid) or a list of cells ((layer, head),
  ``"blocks.<i>.mlp_out"``, ``"blocks.<i>.attn_out"``, or a list of those patched together; a
  ``[sender]`` grid with labels). ``receivers``: ``"logits"``, ``"blocks.<i>.resid_pre"``
  (``resid_mid``, ``resid_post``), a head ``(layer, head)``, a head's input ``(layer, head,
  "q"|"k"|"v")`` (``k`` / ``v``: a key/value head under grouped-query attention), or a list of
  these (not ``"logits"``) patched together. ``freeze``: what stays at the base run in step (b)
  besides the senders, a subset of ``FREEZABLE`` (``()``: nothing, which is activation patching
  of the senders). ``patch_from="corrupted"`` runs clean with corrupted senders (noising, as
  IOI); ``"clean"`` the reverse. One jitted call; ``chunk`` cells at a time (None: all)."""
  model = transformer_of(model)
  shape = _Shape(model)
  bad = [f for f in freeze if f not in FREEZABLE]
  if bad:
    raise HookError(f"path_patching freeze={bad[0]!r}; valid: {', '.join(FREEZABLE)}")
  if patch_from not in ("corrupted", "clean"):
    raise HookError(f"path_patching patch_from={patch_from!r}; valid: corrupted, clean")
  before, resid_sites, recv = _receivers(receivers, shape)
  head_cells, mlp_cells, dims, axes, labels = _sender_cells(senders, shape, before)
  freeze_heads, freeze_mlps = "attn.z" in freeze, "mlp_out" in freeze
  z_sites = [f"blocks.{l}.attn.z" for l in range(shape.layers)]
  mlp_sites = [f"blocks.{l}.mlp_out" for l in range(shape.layers)]
  # (site, head mask [1, 1, heads, 1]) of every receiver head's z and input.
  recv_sites = [(f"blocks.{l}.attn.{c}", recv[c][l][None, None, :, None])
                for c in ("z",) + COMPONENTS for l in range(shape.layers) if recv[c][l].any()]
  recv_inputs = [name for name, _ in recv_sites if not name.endswith(".z")]
  graphdef, state = nnx.split(model)

  @jax.jit
  def run(state, clean, corrupted):
    m = nnx.merge(graphdef, state)
    forward = lambda x: lm_forward(m, x)
    base, source = (clean, corrupted) if patch_from == "corrupted" else (corrupted, clean)
    base_out, base_acts = hooks.run(forward, base, capture=z_sites + mlp_sites)
    source_out, source_acts = hooks.run(forward, source, capture=z_sites + mlp_sites)

    def cell(masks):
      heads, mlps = masks
      interventions, live = {}, {}
      for l, name in enumerate(z_sites):
        sender = heads[l][None, None, :, None]

        def z(x, name=name, sender=sender):
          live[name] = x       # a receiver head's z, computed from the patched residual
          other = base_acts[name] if freeze_heads else x
          return jnp.where(sender, source_acts[name], other).astype(x.dtype)
        interventions[name] = z
      for l, name in enumerate(mlp_sites):
        def mlp(x, l=l, name=name):
          other = base_acts[name] if freeze_mlps else x
          return jnp.where(mlps[l], source_acts[name], other).astype(x.dtype)
        interventions[name] = mlp
      out, recorded = hooks.run(forward, base, capture=resid_sites + recv_inputs,
                                interventions=interventions)
      if not resid_sites and not recv_sites:    # the logits: step (b) is the answer
        return metric(out)
      recorded = {**recorded, **live}
      patch = {name: hooks.replace(recorded[name]) for name in resid_sites}
      for name, where in recv_sites:
        patch[name] = hooks.replace(recorded[name], jnp.asarray(where))
      out, _ = hooks.run(forward, base, interventions=patch)
      return metric(out)

    masks = (jnp.asarray(head_cells), jnp.asarray(mlp_cells))
    grid = (jax.vmap(cell)(masks) if chunk is None
            else jax.lax.map(cell, masks, batch_size=chunk))
    ends = (metric(base_out), metric(source_out))
    return (grid.reshape(dims),) + (ends if patch_from == "corrupted" else ends[::-1])

  grid, clean_m, corrupt_m = run(state, jnp.asarray(clean), jnp.asarray(corrupted))
  return {"grid": Named(grid, axes, labels), "clean": clean_m, "corrupted": corrupt_m}
