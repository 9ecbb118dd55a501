"""Attention-head detectors and a per-head attention-pattern plot.

``detect_head`` scores every head ``[layer, head]`` by how much of its attention falls where a
detection pattern ``[query_pos, key_pos]`` says it should, with TransformerLens's
``head_detector.detect_head`` semantics: its three built-in patterns (``previous_token_head``,
``duplicate_token_head``, ``induction_head``, made from the tokens), error measures ``"mul"``
(the share of attention on the pattern) and ``"abs"`` (1 - the summed absolute difference per
query, rounded to 3 decimals), ``exclude_bos`` and ``exclude_current_token``, and -1 for the
heads not asked about; a batch of sequences is scored row by row and averaged, as
TransformerLens averages a list of prompts. ``induction_scores`` is the induction score of
TransformerLens's tutorials: the mean attention from each token of a repeated random sequence to
the token after its first occurrence.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from superalign.interp.cache import ActivationCache, Named, run_with_cache
from superalign.interp.hooks import HookError

HEAD_NAMES = ("previous_token_head", "duplicate_token_head", "induction_head")


def head_detection_pattern(name: str, tokens) -> np.ndarray:
  """TransformerLens's built-in detection pattern ``name`` for one sequence ``tokens`` ``[pos]``:
  ``[query_pos, key_pos]``, lower triangular, 0/1."""
  tokens = np.asarray(tokens)
  n = tokens.shape[-1]
  if name == "previous_token_head":
    return np.eye(n, k=-1)
  duplicate = np.tril((tokens[None, :] == tokens[:, None]).astype(float), k=-1)
  if name == "duplicate_token_head":
    return duplicate
  if name == "induction_head":
    return np.tril(np.concatenate([np.zeros((n, 1)), duplicate[:, :-1]], axis=1))
  raise HookError(f"detection_pattern={name!r}; valid: {', '.join(HEAD_NAMES)} or a "
                  "[pos, pos] array")


def _layer_heads(heads, n_layers: int, n_heads: int) -> np.ndarray:
  """A ``[layer, head]`` mask of ``heads``: None (all), ``[(layer, head), ...]`` or
  ``{layer: [head, ...]}``."""
  if heads is None:
    return np.ones((n_layers, n_heads), bool)
  pairs = ([(l, h) for l, hs in heads.items() for h in hs] if isinstance(heads, Mapping)
           else list(heads))
  mask = np.zeros((n_layers, n_heads), bool)
  for l, h in pairs:
    if not (0 <= l < n_layers and 0 <= h < n_heads):
      raise HookError(f"heads: ({l}, {h}) is not a head; valid: layer 0..{n_layers - 1}, head "
                      f"0..{n_heads - 1}")
    mask[l, h] = True
  return mask


def _patterns(model_or_cache, tokens) -> tuple[jax.Array, ActivationCache]:
  """Every layer's attention ``[layer, batch, head, query_pos, key_pos]``."""
  cache = (model_or_cache if isinstance(model_or_cache, ActivationCache)
           else run_with_cache(model_or_cache, tokens, names=["blocks.*.attn.pattern"])[1])
  return jnp.stack([jnp.asarray(cache[f"blocks.{l}.attn.pattern"], jnp.float32)
                    for l in range(cache.n_layers)]), cache


def detect_head(model_or_cache, tokens, detection_pattern: str | np.ndarray,
                heads: Iterable[tuple[int, int]] | Mapping[int, Sequence[int]] | None = None,
                *, exclude_bos: bool = False, exclude_current_token: bool = False,
                error_measure: str = "mul") -> Named:
  """``[layer, head]`` scores of how well each head's attention on ``tokens`` (``[pos]`` or
  ``[batch, pos]``; with a model, run here; with an ``ActivationCache`` of them, read from it)
  matches ``detection_pattern`` (a name in ``HEAD_NAMES`` or a lower-triangular ``[pos, pos]``
  array); heads not in ``heads`` score -1 (TransformerLens's ``detect_head``)."""
  if error_measure not in ("mul", "abs"):
    raise HookError(f"error_measure={error_measure!r}; valid: mul, abs")
  tokens = np.atleast_2d(np.asarray(tokens))
  n = tokens.shape[-1]
  if isinstance(detection_pattern, str):
    detect = np.stack([head_detection_pattern(detection_pattern, row) for row in tokens])
  else:
    detect = np.broadcast_to(np.asarray(detection_pattern, float), (len(tokens), n, n))
    if detect.shape[1:] != (n, n) or np.any(np.triu(detect[0], 1)):
      raise HookError(f"detection_pattern of shape {np.shape(detection_pattern)}: must be lower "
                      f"triangular [pos, pos] with pos={n}")
  patterns, cache = _patterns(model_or_cache, tokens)      # [layer, batch, head, q, k]
  detect = jnp.asarray(detect)[None, :, None]
  # The measure is taken on the attention ("mul") or the difference ("abs"), then the excluded
  # keys are zeroed: the BOS column, the diagonal.
  keep = jnp.ones((n, n))
  if exclude_bos:
    keep = keep.at[:, 0].set(0.0)
  if exclude_current_token:
    keep = keep * (1 - jnp.eye(n))
  if error_measure == "mul":
    patterns = patterns * keep
    scores = (patterns * detect).sum((-1, -2)) / patterns.sum((-1, -2))
  else:
    diff = jnp.abs(patterns - detect) * keep
    scores = 1 - np.round(np.asarray(diff.sum((-1, -2)) / n, np.float64), 3)
  scores = np.asarray(scores).mean(1)                      # the rows' mean
  mask = _layer_heads(heads, cache.n_layers, cache.n_heads)
  return Named(np.where(mask, scores, -1.0), ("layer", "head"))



def repeated_tokens(key: jax.Array, vocab_size: int, seq_len: int, batch: int = 1,
                    bos: int | None = None) -> jax.Array:
  """``[batch, (1 +) 2 * seq_len]``: ``seq_len`` uniform random tokens, then the same again,
  after ``bos`` if given (TransformerLens's tutorials' repeated sequence)."""
  first = jax.random.randint(key, (batch, seq_len), 0, vocab_size)
  prefix = [] if bos is None else [jnp.full((batch, 1), bos, first.dtype)]
  return jnp.concatenate([*prefix, first, first], axis=1)


def induction_scores(model_or_cache, tokens, seq_len: int) -> Named:
  """``[layer, head]``: each head's mean attention (over the batch and the positions) along the
  stripe ``key = query - seq_len + 1`` of ``tokens`` from ``repeated_tokens`` (TransformerLens's
  tutorials: ``pattern.diagonal(offset=1 - seq_len)``), where an induction head attends to the
  token after the current token's previous occurrence."""
  patterns, _ = _patterns(model_or_cache, tokens)
  if not 1 <= seq_len < patterns.shape[-1]:
    raise HookError(f"induction_scores: seq_len={seq_len} for sequences of "
                    f"{patterns.shape[-1]} tokens; valid: 1..{patterns.shape[-1] - 1}")
  stripe = jnp.diagonal(patterns, offset=1 - seq_len, axis1=-2, axis2=-1)
  return Named(np.asarray(stripe.mean((1, 3))), ("layer", "head"))


def plot_attention(model_or_cache, layer: int, tokens=None, labels: Sequence[str] | None = None,
                   heads: Sequence[int] | None = None, row: int = 0):
  """A matplotlib ``Figure`` of block ``layer``'s attention patterns on batch row ``row``, one
  panel per head (``heads``: those; default all), queries down and keys across, with ``labels``
  (a string per token) as tick labels; ``tokens`` are run through the model unless a cache is
  given."""
  import matplotlib.pyplot as plt
  cache = (model_or_cache if isinstance(model_or_cache, ActivationCache)
           else run_with_cache(model_or_cache, np.atleast_2d(tokens),
                               names=[f"blocks.{layer}.attn.pattern"])[1])
  if not 0 <= layer < cache.n_layers:
    raise HookError(f"plot_attention: layer={layer}; valid: 0..{cache.n_layers - 1}")
  pattern = np.asarray(cache[f"blocks.{layer}.attn.pattern"][row], np.float32)
  heads = list(range(pattern.shape[0]) if heads is None else heads)
  n = pattern.shape[-1]
  if labels is not None and len(labels) != n:
    raise HookError(f"plot_attention: {len(labels)} labels for {n} tokens")
  cols = min(len(heads), 4)
  rows = -(-len(heads) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols + 1, 2.6 * rows), squeeze=False,
                           layout="constrained")
  for ax in axes.ravel()[len(heads):]:
    ax.set_axis_off()
  for ax, h in zip(axes.ravel(), heads):
    image = ax.imshow(pattern[h], cmap="Blues", vmin=0, vmax=1)
    ax.set_title(f"L{layer}H{h}", fontsize=8)
    if labels is None:
      ax.set_xticks([]), ax.set_yticks([])
    else:
      ax.set_xticks(range(n), labels, rotation=90, fontsize=6)
      ax.set_yticks(range(n), labels, fontsize=6)
  fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.6, label="attention")
  fig.suptitle(f"block {layer} attention (query down, key across)", fontsize=9)
  return fig
