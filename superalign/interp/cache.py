"""An activation cache with TransformerLens's analyses on it: the residual stream accumulated,
decomposed by component and by head, the final norm's cached scale, the logit lens and direct
logit attribution.

``run_with_cache(model, tokens)`` is one jitted LM forward through ``hooks.run`` that returns
``(logits, cache)``; the ``ActivationCache`` holds every captured site with its axis names and
the model, whose weights the analyses read (each head's output projection, the final norm, the
unembedding). Each analysis returns a ``Named``: the array, the name of each axis and, for a
stack of residual-stream components, a label per component (TransformerLens's ``return_labels``,
always on). The analyses follow TransformerLens 3.9's ``ActivationCache`` (same arguments, same
labels, same numbers on an unprocessed model; tests/test_interp_cache.py), computed from the
sites our models have: TransformerLens's cached norm scales (``ln_final.hook_scale``,
``blocks.i.ln1.hook_scale``) are recomputed from the residual stream that norm reads, exactly as
the norm computes them.

Every family works: LayerNorm (centred) and RMSNorm (Gemma's ``1 + w`` too), parallel residual
blocks (GPT-NeoX: no ``resid_mid``), and Gemma's sandwich norms, where a head's or a neuron's
result is taken through the norm after it at that norm's cached scale, so that the components
still sum to the residual stream. Direct logit attribution is of the logits before a final
soft-cap (it is not linear after one).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from superalign.interp import hooks
from superalign.interp.hooks import HookError
from superalign.models import sites
from superalign.models.transformer import LayerNorm, RMSNorm, Transformer

PosSlice = int | slice | tuple | Sequence[int] | None


@dataclasses.dataclass(frozen=True)
class Named:
  """An array with the name of each axis (``("component", "batch", "pos", "embed")``) and, when
  its first axis stacks components, one label per component (``"L0H1"``, ``"0_attn_out"``)."""
  array: Any
  axes: tuple[str, ...]
  labels: tuple[str, ...] | None = None

  def __post_init__(self):
    if len(self.axes) != np.ndim(self.array):
      raise ValueError(f"Named: axes {self.axes} for a {np.ndim(self.array)}-d array")

  @property
  def shape(self) -> tuple[int, ...]:
    """The array's shape, one size per name in ``axes``."""
    return tuple(np.shape(self.array))

  def __array__(self, dtype=None, copy=None):
    return np.asarray(self.array, dtype)

  def __getitem__(self, label: str) -> Named:
    """The component labelled ``label`` (its other axes kept)."""
    if self.labels is None or label not in self.labels:
      raise HookError(f"no component {label!r}; labels: {', '.join(self.labels or ()) or 'none'}")
    return Named(self.array[self.labels.index(label)], self.axes[1:])


jax.tree_util.register_pytree_node(
    Named, lambda n: ((n.array,), (n.axes, n.labels)),
    lambda aux, children: Named(children[0], *aux))


def transformer_of(model) -> Transformer:
  """The ``Transformer`` itself, or the one a wrapper holds (``models.load``'s ``.transformer``)."""
  inner = getattr(model, "transformer", model)
  if not isinstance(inner, Transformer):
    raise HookError(f"model: a {type(model).__name__} is not a superalign Transformer (nor "
                    "holds one as .transformer)")
  return inner


def lm_forward(model: Transformer, tokens: jax.Array) -> jax.Array:
  """Next-token logits ``[batch, pos, vocab]``."""
  return model.lm_logits(model.hidden_states(tokens))


@functools.partial(jax.jit, static_argnums=(0, 3))
def _run(graphdef, state, tokens, names):
  model = nnx.merge(graphdef, state)
  return hooks.run(lambda x: lm_forward(model, x), tokens,
                   capture=True if names is None else list(names))


def run_with_cache(model, tokens, names: str | Sequence[str] | None = None):
  """``(logits, cache)``: the LM logits ``[batch, pos, vocab]`` of ``tokens`` ``[batch, pos]``
  and an ``ActivationCache`` of the sites ``names`` match (exact names or ``fnmatch`` patterns;
  None: every site), from one jitted forward pass (TransformerLens's ``run_with_cache``)."""
  model = transformer_of(model)
  names = None if names is None else ((names,) if isinstance(names, str) else tuple(names))
  graphdef, state = nnx.split(model)
  logits, captured = _run(graphdef, state, jnp.asarray(tokens), names)
  return logits, ActivationCache(captured, model)


def _layer_norm_like(norm) -> bool:
  return isinstance(norm, (LayerNorm, nnx.LayerNorm))


def _norm_weight(norm) -> jax.Array:
  """The norm's elementwise scale as it multiplies (Gemma's ``1 + w`` for an offset RMSNorm)."""
  if isinstance(norm, RMSNorm):
    return norm.offset + norm.scale[...].astype(jnp.float32)
  return norm.scale[...].astype(jnp.float32)


def norm_scale(norm, x: jax.Array) -> jax.Array:
  """What the norm divides ``x`` by, ``[..., 1]``: sqrt(var + eps) for a LayerNorm, sqrt(mean
  square + eps) for an RMSNorm (TransformerLens's ``hook_scale``)."""
  x = jnp.asarray(x, jnp.float32)
  if _layer_norm_like(norm):
    x = x - x.mean(-1, keepdims=True)
  return jnp.sqrt((x * x).mean(-1, keepdims=True) + norm.epsilon)


def _through_norm(norm, parts: jax.Array, total: jax.Array) -> jax.Array:
  """``parts`` (summing, with the rest, to the norm's input ``total``) taken through ``norm`` at
  the scale ``total`` gives it: linear in each part, so the parts still sum to the norm's output
  (less a LayerNorm's bias, which the caller adds once)."""
  if _layer_norm_like(norm):
    parts = parts - parts.mean(-1, keepdims=True)
  return parts / norm_scale(norm, total) * _norm_weight(norm)


def _norm_bias(norm):
  """A LayerNorm's bias (0 for an RMSNorm or none)."""
  bias = getattr(norm, "bias", None) if _layer_norm_like(norm) else None
  return 0.0 if bias is None else bias[...].astype(jnp.float32)


def _pos_slice(x: jax.Array, axes: tuple[str, ...], pos_slice: PosSlice):
  """TransformerLens's ``Slice`` on the ``pos`` axis: an int drops it, a tuple is ``slice(*t)``,
  a list takes those positions, None keeps all."""
  if pos_slice is None:
    return x, axes
  i = axes.index("pos")
  if isinstance(pos_slice, (int, np.integer)):
    return jnp.take(x, int(pos_slice), axis=i), axes[:i] + axes[i + 1:]
  index = slice(*pos_slice) if isinstance(pos_slice, tuple) else (
      pos_slice if isinstance(pos_slice, slice) else jnp.asarray(pos_slice))
  return x[(slice(None),) * i + (index,)], axes


def _stack(rows: list, labels: list[str], axes, empty_shape) -> Named:
  array = jnp.stack(rows) if rows else jnp.zeros((0, *empty_shape), jnp.float32)
  return Named(array, ("component", *axes), tuple(labels))


class ActivationCache:
  """The activations of one forward pass (``{site: array}``, axis names in ``axes``) and the
  model that made them, with TransformerLens's analyses. Index it by our site name
  (``blocks.0.resid_pre``) or TransformerLens's (``blocks.0.hook_resid_pre``)."""

  def __init__(self, captured: hooks.Captured, model):
    self.model = transformer_of(model)
    self.activations = dict(captured)
    self.axes: dict[str, tuple[str, ...]] = dict(captured.axes)
    self.n_layers = len(self.model.blocks)
    self.n_heads = self.model.blocks[0].attn.num_heads

  # ---- access ----

  def _name(self, key: str) -> str:
    if key in self.activations:
      return key
    ours = sites.from_transformer_lens(key)
    if ours in self.activations:
      return ours
    raise HookError(f"the cache has no site {key!r} (run_with_cache(names=...) must match it); "
                    f"cached: {hooks._summary(self.activations) or 'none'}")

  def __getitem__(self, key: str) -> jax.Array:
    return self.activations[self._name(key)]

  def __contains__(self, key: str) -> bool:
    return key in self.activations or sites.from_transformer_lens(key) in self.activations

  def __len__(self) -> int:
    return len(self.activations)

  def keys(self):
    """The cached sites' names, in the order the forward pass reached them."""
    return self.activations.keys()

  def __repr__(self) -> str:
    return f"ActivationCache({hooks._summary(self.activations)})"

  def _resid(self, key: str) -> jax.Array:
    """A residual-stream-shaped site as float32 ``[batch, pos, embed]`` (``pos_embed`` has no
    batch axis: broadcast)."""
    x = jnp.asarray(self[key], jnp.float32)
    if x.ndim == 2:
      x = jnp.broadcast_to(x, self["embed"].shape)
    return x

  def _layer(self, layer: int | None, what: str) -> int:
    if layer is None or layer == -1:
      return self.n_layers
    if not isinstance(layer, (int, np.integer)) or not 0 <= layer <= self.n_layers:
      raise HookError(f"{what}: layer={layer!r}; valid: 0..{self.n_layers} (or -1/None: the "
                      "unembedding)")
    return int(layer)

  def _mid(self, layer: int) -> jax.Array:
    if self.model.blocks[layer].parallel_residual:
      raise HookError(f"blocks.{layer}.resid_mid: a parallel-residual block (GPT-NeoX) has no "
                      "resid_mid; its MLP reads resid_pre")
    return self._resid(f"blocks.{layer}.resid_mid")

  @property
  def _embeds(self) -> tuple[str, ...]:
    """The embeddings' sites: learned positions have one of their own, rotary ones none."""
    return ("embed",) if self.model.pos is None else ("embed", "pos_embed")

  @property
  def _width(self) -> int:
    return self["embed"].shape[-1]

  def _empty(self, pos_slice) -> tuple[int, ...]:
    return _pos_slice(self._resid("embed"), sites.RESID, pos_slice)[0].shape

  # ---- the norms' cached scales ----

  def ln_scale(self, layer: int | None = None, mlp_input: bool = False,
               pos_slice: PosSlice = None) -> Named:
    """The scale of the norm read at ``layer`` (``ln1``, or ``ln2`` with ``mlp_input``; n_layers
    or None: ``ln_final``), ``[batch, pos, 1]``: TransformerLens's cached ``hook_scale``. The
    cached ``*.scale`` site when the cache holds it, else recomputed from the residual stream."""
    layer = self._layer(layer, "ln_scale")
    site = ("ln_final.scale" if layer == self.n_layers else
            f"blocks.{layer}.{'ln2' if mlp_input else 'ln1'}.scale")
    if site in self.activations:   # the scale the pass used (an intervention there included)
      scale, axes = _pos_slice(self.activations[site].astype(jnp.float32), sites.RESID, pos_slice)
      return Named(scale, axes)
    if layer == self.n_layers:
      if mlp_input:
        raise HookError("ln_scale: mlp_input=True at the unembedding; valid only for a block's "
                        f"layer 0..{self.n_layers - 1}")
      norm, x = self.model.ln_f, self._resid(f"blocks.{self.n_layers - 1}.resid_post")
    elif mlp_input:
      block = self.model.blocks[layer]
      norm = block.ln2
      x = (self._resid(f"blocks.{layer}.resid_pre") if block.parallel_residual
           else self._mid(layer))
    else:
      norm, x = self.model.blocks[layer].ln1, self._resid(f"blocks.{layer}.resid_pre")
    scale, axes = _pos_slice(norm_scale(norm, x), sites.RESID, pos_slice)
    return Named(scale, axes)

  def _norm_at(self, layer: int, mlp_input: bool):
    if layer == self.n_layers:
      return self.model.ln_f
    return self.model.blocks[layer].ln2 if mlp_input else self.model.blocks[layer].ln1

  def apply_ln_to_stack(self, stack, layer: int | None = None, mlp_input: bool = False,
                        pos_slice: PosSlice = None) -> Named:
    """``stack`` (``[component, batch, pos, embed]``, sliced at ``pos_slice`` already) as input
    to the norm at ``layer``: centred if it is a LayerNorm, divided by that norm's cached scale
    (TransformerLens's ``apply_ln_to_stack``; the norm's weight is not applied, as on
    TransformerLens's folded models)."""
    layer = self._layer(layer, "apply_ln_to_stack")
    array, axes, labels = ((stack.array, stack.axes, stack.labels) if isinstance(stack, Named)
                           else (stack, None, None))
    array = jnp.asarray(array, jnp.float32)
    scale = self.ln_scale(layer, mlp_input, pos_slice).array
    if array.shape[-scale.ndim:-1] != scale.shape[:-1]:
      raise HookError(f"apply_ln_to_stack: a stack of shape {array.shape} does not fit the "
                      f"cached scale {scale.shape[:-1]} (pass the pos_slice it was taken with)")
    if _layer_norm_like(self._norm_at(layer, mlp_input)):
      array = array - array.mean(-1, keepdims=True)
    axes = axes or ("component", "batch", "pos", "embed")[-array.ndim:]
    return Named(array / scale, axes, labels)

  def _recompute_final_ln(self, stack: Named) -> Named:
    """Each component through the whole final norm (weights and bias), its own statistics."""
    return Named(self.model.ln_f(stack.array).astype(jnp.float32), stack.axes, stack.labels)

  # ---- the residual stream ----

  def accumulated_resid(self, layer: int | None = None, incl_mid: bool = False,
                        apply_ln: bool = False, pos_slice: PosSlice = None,
                        mlp_input: bool = False) -> Named:
    """The residual stream at the input of each block up to ``layer`` (``{l}_pre``, with
    ``incl_mid`` also ``{l}_mid``; at n_layers or None also the final ``final_post``),
    ``[component, batch, pos, embed]``. ``apply_ln``: to the unembedding, each through the whole
    final norm (the logit lens); to a block, the cached scale of its ``ln1``."""
    layer = self._layer(layer, "accumulated_resid")
    rows, labels = [], []
    for l in range(layer + 1):
      if l == self.n_layers:
        rows.append(self._resid(f"blocks.{l - 1}.resid_post"))
        labels.append("final_post")
        continue
      rows.append(self._resid(f"blocks.{l}.resid_pre"))
      labels.append(f"{l}_pre")
      if (incl_mid and l < layer) or (mlp_input and l == layer):
        rows.append(self._mid(l))
        labels.append(f"{l}_mid")
    rows = [_pos_slice(r, sites.RESID, pos_slice)[0] for r in rows]
    axes = _pos_slice(rows[0], sites.RESID, pos_slice)[1]
    out = _stack(rows, labels, axes, ())
    if apply_ln:
      out = (self._recompute_final_ln(out) if layer == self.n_layers else
             self.apply_ln_to_stack(out, layer, mlp_input, pos_slice))
    return out

  def decompose_resid(self, layer: int | None = None, mlp_input: bool = False,
                      mode: str = "all", apply_ln: bool = False, pos_slice: PosSlice = None,
                      incl_embeds: bool = True) -> Named:
    """The residual stream at the input of ``layer`` as the sum of what wrote it: ``embed``,
    ``pos_embed`` (learned positions only), then ``{l}_attn_out`` and ``{l}_mlp_out`` of each
    block before it (``mode``: ``"all"``, ``"attn"`` or ``"mlp"``; ``mlp_input``: also that
    block's attention), ``[component, batch, pos, embed]``."""
    layer = self._layer(layer, "decompose_resid")
    if mode not in ("all", "attn", "mlp"):
      raise HookError(f"decompose_resid: mode={mode!r}; valid: all, attn, mlp")
    rows, labels = [], []
    if incl_embeds:
      for name in self._embeds:
        rows.append(self._resid(name))
        labels.append(name)
    for l in range(layer):
      for kind in (("attn",) if mode == "attn" else ("mlp",) if mode == "mlp" else
                   ("attn", "mlp")):
        rows.append(self._resid(f"blocks.{l}.{kind}_out"))
        labels.append(f"{l}_{kind}_out")
    if mlp_input and mode != "mlp":
      rows.append(self._resid(f"blocks.{layer}.attn_out"))
      labels.append(f"{layer}_attn_out")
    axes = _pos_slice(self._resid("embed"), sites.RESID, pos_slice)[1]
    out = _stack([_pos_slice(r, sites.RESID, pos_slice)[0] for r in rows], labels, axes,
                 self._empty(pos_slice))
    return self.apply_ln_to_stack(out, layer, mlp_input, pos_slice) if apply_ln else out

  def _out_weight(self, l: int) -> jax.Array:
    """Block ``l``'s attention output projection ``[heads, head_dim, embed]`` (an adapter's
    term folded in)."""
    attn = self.model.blocks[l].attn
    w = attn.out[...].astype(jnp.float32)
    return w if attn.out_lora is None else w + attn.out_lora.delta().astype(jnp.float32)

  def _out_bias(self, l: int) -> jax.Array:
    attn = self.model.blocks[l].attn
    return (jnp.zeros(self._width) if attn.out_bias is None
            else attn.out_bias[...].astype(jnp.float32))

  def head_results(self, layer: int) -> Named:
    """Each head's write to the residual stream at block ``layer``, ``[batch, pos, head,
    embed]``: its ``z`` times its slice of the output projection (TransformerLens's
    ``attn.hook_result``); with a norm after the attention (Gemma 2/3) taken through it at its
    cached scale, so the heads sum to ``attn_out`` less the bias term."""
    z = jnp.asarray(self[f"blocks.{layer}.attn.z"], jnp.float32)
    result = jnp.einsum("bphd,hde->bphe", z, self._out_weight(layer))
    post = self.model.blocks[layer].post_attn_norm
    if post is not None:
      total = result.sum(2) + self._out_bias(layer)
      result = _through_norm(post, result, total[:, :, None])
    return Named(result, ("batch", "pos", "head", "embed"))

  def stack_head_results(self, layer: int | None = -1, pos_slice: PosSlice = None,
                         apply_ln: bool = False, incl_remainder: bool = False) -> Named:
    """Every head's result in the blocks before ``layer``, ``[component, batch, pos, embed]``
    with labels ``L{l}H{h}`` (``incl_remainder``: and ``remainder``, the rest of the residual
    stream there)."""
    layer = self._layer(layer, "stack_head_results")
    rows, labels = [], []
    for l in range(layer):
      rows.extend(jnp.moveaxis(self.head_results(l).array, 2, 0))
      labels.extend(f"L{l}H{h}" for h in range(self.n_heads))
    if incl_remainder:
      total = (self._resid(f"blocks.{layer - 1}.resid_post") if layer
               else self._resid("blocks.0.resid_pre"))
      rows.append(total - sum(rows) if rows else total)
      labels.append("remainder")
    axes = _pos_slice(self._resid("embed"), sites.RESID, pos_slice)[1]
    out = _stack([_pos_slice(r, sites.RESID, pos_slice)[0] for r in rows], labels, axes,
                 self._empty(pos_slice))
    return self.apply_ln_to_stack(out, layer, False, pos_slice) if apply_ln else out

  def _mlp_down(self, l: int) -> tuple[jax.Array, jax.Array]:
    """Block ``l``'s MLP output weight ``[mlp, embed]`` and bias ``[embed]``."""
    block = self.model.blocks[l]
    if block.gated:
      mlp = block.mlp
      w, lora = mlp.down[...], mlp.down_lora
      b = None if mlp.down_bias is None else mlp.down_bias[...]
    else:
      w, b, lora = block.proj.kernel[...], block.proj.bias[...], block.proj_lora
    w = w.astype(jnp.float32)
    w = w if lora is None else w + lora.delta().astype(jnp.float32)
    return w, (jnp.zeros(self._width) if b is None else b.astype(jnp.float32))

  def neuron_results(self, layer: int) -> Named:
    """Each MLP neuron's write at block ``layer``, ``[batch, pos, neuron, embed]`` (its
    activation times its row of the output weight; through a following norm, as heads are)."""
    post = jnp.asarray(self[f"blocks.{layer}.mlp.post"], jnp.float32)
    w, b = self._mlp_down(layer)
    result = post[..., None] * w
    norm = self.model.blocks[layer].post_mlp_norm
    if norm is not None:
      result = _through_norm(norm, result, (result.sum(2) + b)[:, :, None])
    return Named(result, ("batch", "pos", "neuron", "embed"))

  def _raw_attn_out(self, l: int) -> jax.Array:
    """Block ``l``'s attention output before its bias and any norm after it."""
    z = jnp.asarray(self[f"blocks.{l}.attn.z"], jnp.float32)
    return jnp.einsum("bphd,hde->bpe", z, self._out_weight(l))

  def _bias_term(self, layer: int, mlp_input: bool, neurons: bool) -> jax.Array:
    """What the biases of the blocks before ``layer`` wrote, ``[batch, pos, embed]``: each
    attention's output bias (and each MLP's, when its neurons are split out; with
    ``mlp_input``, the attention of ``layer`` too), through a norm after them at its cached
    scale, plus that norm's own bias (TransformerLens's ``accumulated_bias``)."""
    total = jnp.zeros(self._resid("embed").shape)
    for l in range(min(layer + (1 if mlp_input else 0), self.n_layers)):
      norm, b = self.model.blocks[l].post_attn_norm, self._out_bias(l)
      total = total + (b if norm is None else
                       _through_norm(norm, b, self._raw_attn_out(l) + b) + _norm_bias(norm))
    for l in range(layer if neurons else 0):
      norm, (w, b) = self.model.blocks[l].post_mlp_norm, self._mlp_down(l)
      if norm is None:
        total = total + b
      else:
        post = jnp.asarray(self[f"blocks.{l}.mlp.post"], jnp.float32)
        total = total + _through_norm(norm, b, post @ w + b) + _norm_bias(norm)
    return total

  def get_full_resid_decomposition(self, layer: int | None = None, mlp_input: bool = False,
                                   expand_neurons: bool = True, apply_ln: bool = False,
                                   pos_slice: PosSlice = None) -> Named:
    """The residual stream at the input of ``layer`` as every head's result (``L{l}H{h}``),
    every MLP neuron's (``L{l}N{n}``; or, without ``expand_neurons``, each MLP's output
    ``{l}_mlp_out``), ``embed``, ``pos_embed`` and ``bias`` (the biases' sum), in
    TransformerLens's order; the components sum to the residual stream there."""
    layer = self._layer(layer, "get_full_resid_decomposition")
    heads = self.stack_head_results(layer + (1 if mlp_input else 0), pos_slice)
    rows, labels = [heads.array], list(heads.labels)
    if layer > 0:
      if expand_neurons:
        for l in range(layer):
          n = jnp.moveaxis(self.neuron_results(l).array, 2, 0)
          rows.append(jax.vmap(lambda r: _pos_slice(r, sites.RESID, pos_slice)[0])(n))
          labels.extend(f"L{l}N{i}" for i in range(n.shape[0]))
      else:
        mlps = self.decompose_resid(layer, mode="mlp", pos_slice=pos_slice, incl_embeds=False)
        rows.append(mlps.array)
        labels.extend(mlps.labels)
    for name in self._embeds:
      rows.append(_pos_slice(self._resid(name), sites.RESID, pos_slice)[0][None])
      labels.append(name)
    bias = self._bias_term(layer, mlp_input, expand_neurons)
    rows.append(_pos_slice(bias, sites.RESID, pos_slice)[0][None])
    labels.append("bias")
    out = Named(jnp.concatenate(rows), heads.axes, tuple(labels))
    return self.apply_ln_to_stack(out, layer, mlp_input, pos_slice) if apply_ln else out

  # ---- to the vocabulary ----

  def logit_lens(self, incl_mid: bool = False, pos_slice: PosSlice = None) -> Named:
    """Each layer's residual stream through the final norm and the unembedding (with the final
    soft-cap, as the model's logits), ``[component, batch, pos, vocab]``; the last row is the
    model's logits (TransformerLens: ``model.unembed(cache.accumulated_resid(apply_ln=True))``)."""
    resid = self.accumulated_resid(None, incl_mid, apply_ln=True, pos_slice=pos_slice)
    logits = self.model.lm_logits(resid.array).astype(jnp.float32)
    return Named(logits, resid.axes[:-1] + ("vocab",), resid.labels)

  def _unembed_rows(self, tokens) -> jax.Array:
    table = (self.model.embed.embedding if self.model.unembed is None else self.model.unembed)
    return jnp.take(table[...].astype(jnp.float32), jnp.asarray(tokens), axis=0)

  def logit_attrs(self, stack, tokens, incorrect_tokens=None, pos_slice: PosSlice = None,
                  fold_ln: bool = True) -> Named:
    """Direct logit attribution: each component of ``stack`` (``[component, batch, pos,
    embed]``, sliced at ``pos_slice``) through the final norm's cached scale
    (``apply_ln_to_stack``), dotted with the unembedding of ``tokens`` (an id, or per row /
    per position ids broadcast against the stack's batch and position axes), less that of
    ``incorrect_tokens``: ``[component, batch, pos]``. ``fold_ln`` multiplies the unembedding by
    the final norm's weight, so that a full decomposition sums to the logit (difference) less
    the norm's bias term: what TransformerLens's ``cache.logit_attrs`` gives on a model loaded
    with ``fold_ln=True`` (its default); ``fold_ln=False`` is its number on an unprocessed
    model. Of the logits before a final soft-cap."""
    if incorrect_tokens is not None and np.shape(tokens) != np.shape(incorrect_tokens):
      raise HookError(f"logit_attrs: tokens of shape {np.shape(tokens)} and incorrect_tokens of "
                      f"shape {np.shape(incorrect_tokens)}; they must match")
    direction = self._unembed_rows(tokens)
    if incorrect_tokens is not None:
      direction = direction - self._unembed_rows(incorrect_tokens)
    if fold_ln:
      direction = direction * _norm_weight(self.model.ln_f)
    scaled = self.apply_ln_to_stack(stack, None, False, pos_slice)
    return Named((scaled.array * direction).sum(-1), scaled.axes[:-1], scaled.labels)
