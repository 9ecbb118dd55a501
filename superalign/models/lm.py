"""A language model for analysis in one line: ``load("hf:<dir>")``, TransformerLens'
``from_pretrained`` for any checkpoint the registry reads (GPT-2, GPT-NeoX, Llama, Mistral, Qwen2,
Qwen3, Gemma 2, Gemma 3).

``LanguageModel`` maps token ids ``[batch, pos]`` to LM logits ``[batch, pos, vocab]`` (or at chosen
``positions`` only, ``apply``); it holds
the ``Transformer`` (``transformer``: its weights, for analyses that read them) and the
checkpoint's tokenizer, with TransformerLens' tokenizer helpers (``to_tokens``, ``to_str_tokens``,
``to_string``, ``to_single_token``). No training state: no optimizer, and the classifier head the
registry builds with every transformer has one class and stays zero, unused.

Its parameters live on the default mesh (every local device on the ``data`` axis), each placed by
its logical axes as ``core.mesh`` places a run's. For ``jax.jit`` and the patching grids, which
take parameters as arguments, use the pure form: ``lm.apply(lm.params, tokens)`` (``params`` an
``nnx.State``; ``nnx.merge(lm.graphdef, params)`` is the ``Transformer``). Calling ``lm(tokens)``
is jitted, except under ``interp.hooks.run``, whose trace-time hooks need it traced afresh.

Weights come as stored (TransformerLens' ``from_pretrained_no_processing``); ``fold_ln``,
``center_writing_weights`` and ``center_unembed`` process them as TransformerLens'
``from_pretrained`` does by default (``models.fold``).
"""

from __future__ import annotations

import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from superalign.core import mesh as mesh_lib
from superalign.core.errors import ConfigError
from superalign.core.specs import InputSpec
from superalign.data import tokenizer as tokenizer_lib
from superalign.models import fold, hf_gpt2, registry, sites
from superalign.models.transformer import Transformer

KEY = "models.load"


class LanguageModel:
  """A ``Transformer``'s LM logits on a mesh, with its tokenizer (None when the checkpoint has no
  ``tokenizer.json``) and ``bos_id`` (the config's ``bos_token_id``, or None)."""

  def __init__(self, transformer: Transformer, tokenizer: tokenizer_lib.HFTokenizer | None = None,
               bos_id: int | None = None, mesh: jax.sharding.Mesh | None = None,
               name: str = "model"):
    self.mesh = mesh if mesh is not None else default_mesh()
    self.graphdef, params = nnx.split(transformer)
    self.params = jax.device_put(params, mesh_lib.param_shardings(params, self.mesh))
    self.tokenizer, self.bos_id, self.name = tokenizer, bos_id, name
    self.max_len = transformer.max_len if transformer.pos is not None else None
    self._jitted = jax.jit(self.apply)

  @property
  def transformer(self) -> Transformer:
    """The model, its weights this ``LanguageModel``'s ``params``."""
    return nnx.merge(self.graphdef, self.params)

  @property
  def cfg(self) -> dict:
    """Sizes in TransformerLens' names: ``n_layers``, ``d_model``, ``n_heads``, ``d_head``,
    ``n_key_value_heads``, ``d_vocab``."""
    model = self.transformer
    attn = model.blocks[0].attn
    vocab, width = model.embed.embedding.shape
    return {"n_layers": len(model.blocks), "d_model": width, "n_heads": attn.num_heads,
            "d_head": attn.head_dim, "n_key_value_heads": attn.num_kv_heads, "d_vocab": vocab}

  def apply(self, params: nnx.State, tokens, attention_mask=None, positions=None) -> jax.Array:
    """LM logits ``[batch, pos, vocab]`` (float32) of int ``tokens`` ``[batch, pos]`` under
    ``params``: pure, so ``jax.jit`` and ``interp.patching`` can take ``params`` as an argument.
    ``attention_mask`` (1 = real token) serves left padding (``Transformer.forward``).

    ``positions`` computes logits at those positions only (the final activations are indexed
    before the unembedding, whose vocabulary-wide matmul dominates a small model's cost; XLA does
    not move a slice of the logits through it): an int (negative counts from the end) gives
    ``[batch, vocab]``, a 1-D index array ``[k]`` gives ``[batch, k, vocab]``, each equal to the
    full logits there (``logits[:, p]``). The ``lm_logits`` site then sees ``[batch, k, vocab]``
    (``k = 1`` for an int) at those positions; the sites before it are unchanged. For a patching
    grid whose metric reads the last position: ``lambda p, x: lm.apply(p, x, positions=-1)``."""
    tokens = jnp.asarray(tokens)
    if tokens.ndim != 2:
      raise ConfigError(f"{self.name}: tokens of shape {tuple(tokens.shape)}; needs int ids "
                        "[batch, pos] (to_tokens gives them)")
    if self.max_len is not None and tokens.shape[1] > self.max_len:
      raise ConfigError(f"{self.name}: {tokens.shape[1]} positions, beyond the model's "
                        f"{self.max_len}; pass at most {self.max_len}")
    model = nnx.merge(self.graphdef, params)
    hidden = model.hidden_states(tokens, attention_mask)
    if positions is None:
      return model.lm_logits(hidden)
    index = _positions(positions, tokens.shape[1], self.name)
    logits = model.lm_logits(hidden[:, index.reshape(-1)])
    return logits[:, 0] if index.ndim == 0 else logits

  def __call__(self, tokens, attention_mask=None, positions=None) -> jax.Array:
    """``apply(params, tokens, attention_mask, positions)``; jitted, but traced afresh under
    hooks."""
    if sites.hooked():
      return self.apply(self.params, tokens, attention_mask, positions)
    if positions is not None and np.ndim(tokens) == 2:   # checked here: jit traces an int
      _positions(positions, np.shape(tokens)[1], self.name)
    return self._jitted(self.params, tokens, attention_mask, positions)

  def replace(self, transformer: Transformer) -> "LanguageModel":
    """This model's tokenizer and mesh around another ``transformer`` (e.g. ``models.fold``'s)."""
    return LanguageModel(transformer, self.tokenizer, self.bos_id, self.mesh, self.name)

  # ---- Tokenizer glue (TransformerLens' names) -------------------------------------------------

  def _tokenizer(self, what: str) -> tokenizer_lib.HFTokenizer:
    if self.tokenizer is None:
      raise ConfigError(f"{what}: the checkpoint {self.name} has no {tokenizer_lib.FILE}; pass "
                        "token ids instead, or copy its tokenizer.json into the directory")
    return self.tokenizer

  def _encode(self, texts: Sequence[str], prepend_bos: bool, what: str) -> list[list[int]]:
    ids = self._tokenizer(what).token_ids(texts)
    if prepend_bos:
      if self.bos_id is None:
        raise ConfigError(f"{what}(prepend_bos=True): the checkpoint {self.name} names no "
                          "bos_token_id in its config.json; pass prepend_bos=False")
      ids = [[self.bos_id, *row] for row in ids]
    return ids

  def to_tokens(self, text: str | Sequence[str], prepend_bos: bool = True) -> np.ndarray:
    """int32 ``[batch, pos]``: each text's tokens (BOS first if ``prepend_bos``, as
    TransformerLens does by default), right-padded with the tokenizer's pad id to the longest.
    Causal attention never reads right padding: a row's real positions compute as that row alone
    (read its last token at ``len - 1``)."""
    texts = [text] if isinstance(text, str) else list(text)
    rows = self._encode(texts, prepend_bos, "to_tokens")
    out = np.full((len(rows), max((len(r) for r in rows), default=0)),
                  self._tokenizer("to_tokens").pad_id, np.int32)
    for i, row in enumerate(rows):
      out[i, :len(row)] = row
    return out

  def _piece(self, token: int) -> str:
    return self._tokenizer("to_str_tokens").tokenizer.decode([int(token)],
                                                             skip_special_tokens=False)

  def to_str_tokens(self, text_or_ids, prepend_bos: bool = True) -> list:
    """Each token as a string: of a text (``prepend_bos`` as ``to_tokens``; a list of texts gives
    one list each, unpadded) or of ids ``[pos]`` or ``[1, pos]``."""
    texts = ([text_or_ids] if isinstance(text_or_ids, str) else text_or_ids
             if isinstance(text_or_ids, (list, tuple)) and text_or_ids
             and isinstance(text_or_ids[0], str) else None)
    if texts is not None:
      rows = [[self._piece(t) for t in row]
              for row in self._encode(texts, prepend_bos, "to_str_tokens")]
      return rows[0] if isinstance(text_or_ids, str) else rows
    ids = np.asarray(text_or_ids)
    if ids.ndim == 2 and ids.shape[0] == 1:
      ids = ids[0]
    if ids.ndim != 1:
      raise ConfigError(f"to_str_tokens: ids of shape {ids.shape}; needs [pos] or [1, pos]")
    return [self._piece(t) for t in ids]

  def to_string(self, ids) -> str | list[str]:
    """The text of ids ``[pos]`` (a string) or ``[batch, pos]`` (one per row), every token
    decoded (pads and BOS included, as TransformerLens)."""
    tok = self._tokenizer("to_string").tokenizer
    ids = np.asarray(ids)
    if ids.ndim == 1:
      return tok.decode([int(i) for i in ids], skip_special_tokens=False)
    return [tok.decode([int(i) for i in row], skip_special_tokens=False) for row in ids]

  def to_single_token(self, string: str) -> int:
    """The id of ``string`` when it is exactly one token (no BOS); else a one-line error."""
    ids = self._encode([string], False, "to_single_token")[0]
    if len(ids) != 1:
      pieces = [self._piece(t) for t in ids]
      raise ConfigError(f"to_single_token({string!r}): {len(ids)} tokens {pieces}, not one")
    return ids[0]


def _positions(positions, length: int, name: str) -> jax.Array:
  """``positions`` (an int or a 1-D int array, maybe traced) as an int array; concrete ones are
  checked against ``length`` (negative count from the end)."""
  index = jnp.asarray(positions)
  if index.ndim > 1 or not jnp.issubdtype(index.dtype, jnp.integer):
    raise ConfigError(f"{name}: positions of shape {tuple(index.shape)} and dtype {index.dtype}; "
                      "needs an int or a 1-D int array of positions")
  if not isinstance(index, jax.core.Tracer):
    bad = [int(p) for p in np.asarray(index).reshape(-1) if not -length <= p < length]
    if bad:
      raise ConfigError(f"{name}: positions {bad} outside a sequence of {length}")
  return index


def default_mesh() -> jax.sharding.Mesh:
  """Every local device on the ``data`` axis."""
  return mesh_lib.make_mesh({"data": -1}, devices=jax.local_devices())


def load(name: str, *, compute_dtype: str = "float32", param_dtype: str = "float32",
         fold_ln: bool = False, center_writing_weights: bool = False,
         center_unembed: bool = False, mesh: jax.sharding.Mesh | None = None) -> LanguageModel:
  """The checkpoint ``name`` (``hf:<dir>``) as a ``LanguageModel`` on ``mesh`` (default: every
  local device on ``data``), computing in ``compute_dtype`` with ``param_dtype`` parameters
  (``registry.DTYPES``), its weights as stored unless ``fold_ln``, ``center_writing_weights``,
  ``center_unembed`` (``models.fold``; TransformerLens' ``from_pretrained`` sets all three).
  A bad name, directory or checkpoint is one ConfigError line."""
  if not isinstance(name, str) or not name.startswith(registry.HF):
    raise ConfigError(f"{KEY}={name!r}: not a checkpoint; name one as {registry.HF}<checkpoint "
                      "dir> (a directory transformers' save_pretrained wrote)")
  for key, value in (("compute_dtype", compute_dtype), ("param_dtype", param_dtype)):
    if value not in registry.DTYPES:
      raise ConfigError(f"{KEY}({key}={value!r}): valid: {', '.join(registry.DTYPES)}")
  arch = registry.architecture(name, KEY)
  path = registry.checkpoint_dir(name)
  spec = InputSpec((arch["max_len"],), "tokens", 1, arch["vocab_size"])
  build = registry.builder(name, spec, compute_dtype, param_dtype=param_dtype)
  mesh = mesh if mesh is not None else default_mesh()
  abstract = nnx.eval_shape(lambda: build(nnx.Rngs(0)))
  graphdef, abstract_params = nnx.split(abstract)
  shardings = mesh_lib.param_shardings(abstract_params, mesh)
  stored = registry.pretrained(name, param_dtype)(shardings.to_pure_dict())

  def fill(shapes, placed, stored):   # the unused head is the one parameter not stored: zeros
    if not isinstance(shapes, dict):
      return stored if stored is not None else jax.device_put(
          jnp.zeros(shapes.shape, shapes.dtype), placed)
    return {k: fill(v, placed[k], (stored or {}).get(k)) for k, v in shapes.items()}

  params = abstract_params
  params.replace_by_pure_dict(fill(abstract_params.to_pure_dict(), shardings.to_pure_dict(),
                                   stored))
  model = nnx.merge(graphdef, params)
  if fold_ln:
    model = fold.fold_ln(model)
  if center_writing_weights:
    model = fold.center_writing_weights(model)
  if center_unembed:
    model = fold.center_unembed(model)
  tokenizer = (tokenizer_lib.HFTokenizer.from_dir(path, KEY)
               if os.path.isfile(os.path.join(path, tokenizer_lib.FILE)) else None)
  bos = hf_gpt2.read_json(path, KEY).get("bos_token_id")
  bos = bos[0] if isinstance(bos, list) else bos
  return LanguageModel(model, tokenizer, None if bos is None else int(bos), mesh, name)
