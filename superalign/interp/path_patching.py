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
patched), or heads ``(layer, head)``, which read a sender through their queries, keys and values
together: each receiver head is left live in step (b), so its ``z`` is computed from the patched
residual stream, and step (c) writes that ``z``. The per-head query / key / value inputs of
TransformerLens's ``hook_q`` / ``hook_k`` / ``hook_v`` path patching need sites our models do
not yet have (``blocks.i.attn.q`` ...): the receiver would then be that site at that head.

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


def _is_head(entry) -> bool:
  return (isinstance(entry, tuple) and len(entry) == 2
          and all(isinstance(i, (int, np.integer)) for i in entry))


class _Shape:
  """The model's layers and heads, and the residual-stream order of what writes and reads it:
  block ``l``'s heads write at ``2l + 1``, its MLP at ``2l + 2``; a reader sees the writers
  before its own point (``resid_pre`` / a head of block ``r``: ``2r + 1``; ``resid_mid``:
  ``2r + 2``; ``resid_post``: ``2r + 3``; the logits: after everything)."""

  def __init__(self, model):
    self.layers, self.heads = len(model.blocks), model.blocks[0].attn.num_heads
    self.parallel = model.blocks[0].parallel_residual

  def head(self, entry, role: str) -> tuple[int, int]:
    l, h = map(int, entry)
    if not (0 <= l < self.layers and 0 <= h < self.heads):
      raise HookError(f"path_patching {role} head {entry}: no such head; valid: (layer 0.."
                      f"{self.layers - 1}, head 0..{self.heads - 1})")
    return l, h

  def layer(self, l: int, what: str) -> int:
    if not 0 <= l < self.layers:
      raise HookError(f"path_patching: {what}: no block {l}; valid: 0..{self.layers - 1}")
    return l


def _receivers(spec, shape: _Shape):
  """``(point, sites, heads, label)``: the first point any receiver reads at, the residual
  sites, the receiver heads ``[layer, head]`` mask, and a description."""
  entries = [spec] if isinstance(spec, str) or _is_head(spec) else list(spec)
  if not entries:
    raise HookError("path_patching receivers: none given; valid: 'logits', "
                    "'blocks.<i>.resid_pre|resid_mid|resid_post', (layer, head)")
  if "logits" in entries and len(entries) > 1:
    raise HookError("path_patching receivers: 'logits' is the whole output; give it alone")
  points, resid, heads = [], [], np.zeros((shape.layers, shape.heads), bool)
  for e in entries:
    if e == "logits":
      points.append(2 * shape.layers + 3)
    elif _is_head(e):
      l, h = shape.head(e, "receiver")
      heads[l, h] = True
      points.append(2 * l + 1)
    elif isinstance(e, str) and _RESID.match(e):
      l, kind = shape.layer(int(_RESID.match(e)[1]), e), _RESID.match(e)[2]
      if kind == "resid_mid" and shape.parallel:
        raise HookError(f"path_patching receiver {e!r}: a parallel-residual block has no "
                        "resid_mid; valid: resid_pre, resid_post")
      resid.append(e)
      points.append(2 * l + {"resid_pre": 1, "resid_mid": 2, "resid_post": 3}[kind])
    else:
      raise HookError(f"path_patching receiver {e!r}: not a receiver; valid: 'logits', "
                      "'blocks.<i>.resid_pre|resid_mid|resid_post', (layer, head)")
  return min(points), resid, heads


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
  ``[sender]`` grid with labels). ``freeze``: what stays at the base run in step (b) besides
  the senders, a subset of ``FREEZABLE`` (``()``: nothing, which is activation patching of the
  senders). ``patch_from="corrupted"`` runs clean with corrupted senders (noising, as IOI);
  ``"clean"`` the reverse. One jitted call; ``chunk`` cells at a time (None: all)."""
  model = transformer_of(model)
  shape = _Shape(model)
  bad = [f for f in freeze if f not in FREEZABLE]
  if bad:
    raise HookError(f"path_patching freeze={bad[0]!r}; valid: {', '.join(FREEZABLE)}")
  if patch_from not in ("corrupted", "clean"):
    raise HookError(f"path_patching patch_from={patch_from!r}; valid: corrupted, clean")
  before, resid_sites, recv_heads = _receivers(receivers, shape)
  head_cells, mlp_cells, dims, axes, labels = _sender_cells(senders, shape, before)
  freeze_heads, freeze_mlps = "attn.z" in freeze, "mlp_out" in freeze
  z_sites = [f"blocks.{l}.attn.z" for l in range(shape.layers)]
  mlp_sites = [f"blocks.{l}.mlp_out" for l in range(shape.layers)]
  recv_z = [f"blocks.{l}.attn.z" for l in range(shape.layers) if recv_heads[l].any()]
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
      interventions = {}
      for l, name in enumerate(z_sites):
        sender = heads[l][None, None, :, None]
        live = jnp.asarray(recv_heads[l])[None, None, :, None]

        def z(x, l=l, name=name, sender=sender, live=live):
          other = jnp.where(live, x, base_acts[name]) if freeze_heads else x
          return jnp.where(sender, source_acts[name], other).astype(x.dtype)
        interventions[name] = z
      for l, name in enumerate(mlp_sites):
        def mlp(x, l=l, name=name):
          other = base_acts[name] if freeze_mlps else x
          return jnp.where(mlps[l], source_acts[name], other).astype(x.dtype)
        interventions[name] = mlp
      out, recorded = hooks.run(forward, base, capture=resid_sites + recv_z,
                                interventions=interventions)
      if not resid_sites and not recv_z:        # the logits: step (b) is the answer
        return metric(out)
      patch = {name: hooks.replace(recorded[name]) for name in resid_sites}
      for name in recv_z:
        l = int(name.split(".")[1])
        patch[name] = hooks.replace(recorded[name],
                                    jnp.asarray(recv_heads[l])[None, None, :, None])
      out, _ = hooks.run(forward, base, interventions=patch)
      return metric(out)

    masks = (jnp.asarray(head_cells), jnp.asarray(mlp_cells))
    grid = (jax.vmap(cell)(masks) if chunk is None
            else jax.lax.map(cell, masks, batch_size=chunk))
    ends = (metric(base_out), metric(source_out))
    return (grid.reshape(dims),) + (ends if patch_from == "corrupted" else ends[::-1])

  grid, clean_m, corrupt_m = run(state, jnp.asarray(clean), jnp.asarray(corrupted))
  return {"grid": Named(grid, axes, labels), "clean": clean_m, "corrupted": corrupt_m}
