"""Folded and centered weights, as TransformerLens processes them (``fold_ln``,
``center_writing_weights``, ``center_unembed``): the same function, weights easier to read.

* ``fold_ln``: each norm's scale (and a LayerNorm's bias) moves into the weights that read its
  output: ``ln1`` into the queries, keys and values, ``ln2`` into the MLP's input (``fc``, or
  ``gate`` and ``up``), the final norm into the unembedding, which is untied from the token
  embedding (and gets a bias for a LayerNorm's). The norms are left as pure normalization (scale
  1, bias 0; Gemma's ``1 + w`` scale 0), so ``ln1.scale``-style sites keep their meaning and a
  head's ``W_Q`` is what it computes. For a LayerNorm, whose output has zero mean, the reading
  weights are also centered over ``embed`` (TransformerLens does both). Gemma's norms after
  attention and after the MLP and QK-norms are left as they are (TransformerLens too).
* ``center_writing_weights`` (LayerNorm models): subtracts the mean over ``embed`` from every
  weight and bias that writes to the residual stream (token and position embeddings, attention
  and MLP outputs). Every reader of the stream is a LayerNorm, which subtracts that mean anyway.
* ``center_unembed``: subtracts the unembedding's mean over the vocabulary (and its bias's): each
  position's logits shift by one constant, log-probabilities are unchanged.

Each takes a ``Transformer`` and returns a new one (the argument is untouched); logits (log-probs
for ``center_unembed``) are those of the original up to float rounding.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from superalign.core.errors import ConfigError
from superalign.models.transformer import LayerNorm, RMSNorm, Transformer


def _check(model: Transformer, what: str) -> None:
  if not isinstance(model, Transformer):
    raise ConfigError(f"{what}: folds a models.Transformer, not {type(model).__name__}")
  adapted = [path for path, node in nnx.iter_graph(model)
             if path and str(path[-1]).endswith("_lora") and node is not None]
  if adapted:
    raise ConfigError(f"{what}: the model has LoRA adapters ({'.'.join(map(str, adapted[0]))}); "
                      "merge them first (models.lora.merged)")


def _norm_weights(norm) -> tuple[jnp.ndarray, jnp.ndarray | None]:
  """A norm's effective scale (float32; Gemma's ``1 + w``) and bias (None for RMSNorm)."""
  w = norm.scale[...].astype(jnp.float32)
  if isinstance(norm, RMSNorm):
    return norm.offset + w, None
  return w, norm.bias[...].astype(jnp.float32)


def _identity(norm) -> None:
  """Leaves ``norm`` pure normalization."""
  if isinstance(norm, RMSNorm):
    norm.scale[...] = jnp.full_like(norm.scale[...], 1.0 - norm.offset)
  else:
    norm.scale[...] = jnp.ones_like(norm.scale[...])
    norm.bias[...] = jnp.zeros_like(norm.bias[...])


def _fold_into(owner, weight: str, bias: str, w, b, center: bool, bias_shape_from=None) -> None:
  """Folds scale ``w`` (and bias ``b``) into ``owner.<weight>`` ``[embed, ...]`` and
  ``owner.<bias>`` ``[...]`` (created if the layer has none and ``b`` is given); centers the
  weight over ``embed`` if ``center``."""
  param = getattr(owner, weight)
  old = param[...]
  kernel = old.astype(jnp.float32)
  shape = (-1,) + (1,) * (kernel.ndim - 1)
  if b is not None:
    extra = jnp.tensordot(b, kernel, axes=(0, 0))
    current = getattr(owner, bias)
    if current is None:
      setattr(owner, bias, nnx.data(nnx.Param(extra.astype(old.dtype))))
    else:
      current[...] = (current[...].astype(jnp.float32) + extra).astype(current[...].dtype)
  kernel = kernel * w.reshape(shape)
  if center:
    kernel = kernel - kernel.mean(axis=0, keepdims=True)
  param[...] = kernel.astype(old.dtype)


def _param(value: jnp.ndarray, axes: tuple[str, ...]) -> nnx.Param:
  """A new parameter carrying logical ``axes`` (placed later, as the model's others)."""
  with nnx.use_eager_sharding(False):   # nnx.data: the attribute it replaces was a static None
    return nnx.data(nnx.Param(value, out_sharding=axes))


def _table(model: Transformer) -> jnp.ndarray:
  return (model.embed.embedding if model.unembed is None else model.unembed)[...]


def _untie(model: Transformer, table: jnp.ndarray) -> None:
  """Sets the unembedding ``[vocab, embed]`` to ``table``, a parameter of its own."""
  if model.unembed is None:
    model.unembed = _param(table, ("vocab", "embed"))
  else:
    model.unembed[...] = table


def fold_ln(model: Transformer) -> Transformer:
  """``model`` with every pre-norm's scale and bias folded into the weights reading it, and the
  final norm's into an untied unembedding (TransformerLens' ``fold_ln``)."""
  _check(model, "fold_ln")
  model = nnx.clone(model)
  for block in model.blocks:
    attn = block.attn
    w, b = _norm_weights(block.ln1)
    center = b is not None   # a LayerNorm's output has zero mean over embed
    if attn.fused:
      _fold_into(attn, "qkv", "qkv_bias", w, b, center)
    else:
      for name in "qkv":
        _fold_into(attn, name, f"{name}_bias", w, b, center)
    _identity(block.ln1)
    w, b = _norm_weights(block.ln2)
    if block.gated:
      _fold_into(block.mlp, "gate", "gate_bias", w, b, center)
      _fold_into(block.mlp, "up", "up_bias", w, b, center)
    else:
      # nnx.Linear needs its bias (it always has one): kernel [embed, mlp], bias [mlp].
      _fold_into(block.fc, "kernel", "bias", w, b, center)
    _identity(block.ln2)
  w, b = _norm_weights(model.ln_f)
  old = _table(model)
  table = old.astype(jnp.float32) * w[None, :]
  if b is not None:
    table = table - table.mean(axis=1, keepdims=True)
    bias = old.astype(jnp.float32) @ b
    if model.unembed_bias is None:
      model.unembed_bias = _param(bias.astype(old.dtype), ("vocab",))
    else:
      model.unembed_bias[...] = (model.unembed_bias[...].astype(jnp.float32)
                                 + bias).astype(old.dtype)
  _untie(model, table.astype(old.dtype))
  _identity(model.ln_f)
  return model


def _centered(x: jnp.ndarray, axis: int) -> jnp.ndarray:
  x32 = x.astype(jnp.float32)
  return (x32 - x32.mean(axis=axis, keepdims=True)).astype(x.dtype)


def center_writing_weights(model: Transformer) -> Transformer:
  """``model`` with every weight and bias that writes to the residual stream centered over
  ``embed`` (TransformerLens' ``center_writing_weights``); the unembedding is untied first, as
  the token embedding changes. LayerNorm models only: an RMSNorm keeps the mean it reads."""
  _check(model, "center_writing_weights")
  norms = [model.ln_f] + [n for blk in model.blocks for n in (blk.ln1, blk.ln2)]
  if not all(isinstance(n, LayerNorm) for n in norms):
    raise ConfigError("center_writing_weights: this model normalizes with RMSNorm, which does not "
                      "subtract the mean, so centering the weights that write to the residual "
                      "stream would change its outputs; only LayerNorm models (GPT-2, GPT-NeoX)")
  model = nnx.clone(model)
  _untie(model, _table(model))
  model.embed.embedding[...] = _centered(model.embed.embedding[...], -1)
  if model.pos is not None:
    model.pos[...] = _centered(model.pos[...], -1)
  for block in model.blocks:
    block.attn.out[...] = _centered(block.attn.out[...], -1)
    if block.attn.out_bias is not None:
      block.attn.out_bias[...] = _centered(block.attn.out_bias[...], -1)
    layer = block.mlp if block.gated else block.proj
    weight, bias = ("down", "down_bias") if block.gated else ("kernel", "bias")
    getattr(layer, weight)[...] = _centered(getattr(layer, weight)[...], -1)
    if getattr(layer, bias) is not None:
      getattr(layer, bias)[...] = _centered(getattr(layer, bias)[...], -1)
  return model


def center_unembed(model: Transformer) -> Transformer:
  """``model`` with the unembedding (untied first) and its bias centered over the vocabulary
  (TransformerLens' ``center_unembed``): logits shift per position, log-probs are unchanged. Not
  under final-logit soft-capping (Gemma 2), where a shift changes the capped log-probs."""
  _check(model, "center_unembed")
  if model.final_softcap:
    raise ConfigError(f"center_unembed: this model soft-caps its logits (final_softcap="
                      f"{model.final_softcap}), so shifting them changes its log-probs; leave "
                      "center_unembed off")
  model = nnx.clone(model)
  _untie(model, _centered(_table(model), 0))
  if model.unembed_bias is not None:
    model.unembed_bias[...] = _centered(model.unembed_bias[...], 0)
  return model
