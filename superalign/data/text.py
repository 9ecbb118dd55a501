"""A word-level tokenizer built from the training split (no downloaded vocabulary)."""

from __future__ import annotations

import collections
import re
from typing import Iterable, Sequence

import numpy as np

PAD, UNK = 0, 1
_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


def words(text: str) -> list[str]:
  """The lower-cased words (letters and digits) and punctuation marks of ``text``, in order."""
  return _WORD.findall(text.lower())


class WordTokenizer:
  """Lower-cased words and punctuation; id 0 pads, id 1 is out-of-vocabulary."""

  def __init__(self, vocab: Sequence[str]):
    self.vocab = list(vocab)
    self.index = {w: i + 2 for i, w in enumerate(self.vocab)}

  @classmethod
  def fit(cls, texts: Iterable[str], vocab_size: int) -> "WordTokenizer":
    """The tokenizer of the ``vocab_size - 2`` most frequent words of ``texts`` (ties
    alphabetical, so the vocabulary is a function of the data alone)."""
    counts = collections.Counter()
    for text in texts:
      counts.update(words(text))
    # Ties broken alphabetically so the vocabulary is a function of the data alone.
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return cls([w for w, _ in ranked[:max(vocab_size - 2, 0)]])

  @property
  def vocab_size(self) -> int:
    """Token ids in all: the vocabulary, PAD and UNK."""
    return len(self.vocab) + 2

  def encode(self, texts: Sequence[str], max_len: int) -> np.ndarray:
    """int32 ``[len(texts), max_len]``: the first ``max_len`` words, right-padded with PAD."""
    out = np.zeros((len(texts), max_len), np.int32)
    for row, text in enumerate(texts):
      ids = [self.index.get(w, UNK) for w in words(text)][:max_len]
      out[row, :len(ids)] = ids
    return out
