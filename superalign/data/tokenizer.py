"""A pretrained checkpoint's own tokenizer (``tokenizer.json``, e.g. GPT-2's byte-level BPE).

Read with Hugging Face ``tokenizers`` alone (no ``transformers``). Classification inputs are
right-padded and keep their last tokens when too long, since a last-token probe reads the answer
there; generation prompts are left-padded to a few fixed lengths, so a compiled program is reused
across batches instead of recompiled for every new prompt length. An instruction-tuned checkpoint's
chat template (``chat.py``) turns a conversation into the prompt it was trained on.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Mapping, Sequence

import numpy as np

from superalign.data.chat import SPECIAL_TOKENS, ChatTemplate
from superalign.data.source import DataError
from superalign.results.files import load_json, read_guarded

FILE = "tokenizer.json"
EOS = "<|endoftext|>"
BUCKETS = (16, 32, 64, 128, 256, 512, 1024)


def bucket(length: int, buckets: Sequence[int] = BUCKETS) -> int:
  """The smallest bucket that holds ``length`` tokens."""
  for b in sorted(buckets):
    if length <= b:
      return b
  raise ValueError(f"a prompt of {length} tokens is longer than the largest bucket "
                   f"({max(buckets)}); shorten it or add a larger bucket")


def _special(path: str, name: str) -> str | None:
  """A special token (``pad_token``, ``eos_token``) from the files ``save_pretrained`` writes.
  Either file may be absent; a damaged one is one DamagedFileError line, not a silently
  different pad or EOS id."""
  for file in ("special_tokens_map.json", "tokenizer_config.json"):
    file = os.path.join(path, file)
    if not os.path.isfile(file):
      continue
    saved = read_guarded(file, load_json, "save the tokenizer again (save_pretrained) or delete "
                                           "this file")
    token = saved.get(name) if isinstance(saved, dict) else None
    token = token.get("content") if isinstance(token, dict) else token
    if isinstance(token, str):
      return token
  return None


class HFTokenizer:
  """A ``tokenizers.Tokenizer`` with the pad and EOS ids this framework needs; ``path``, the
  checkpoint directory it came from, holds its chat template."""

  def __init__(self, tokenizer, pad_id: int, eos_id: int | None, path: str | None = None,
               key: str = "data.tokenizer"):
    self.tokenizer, self.pad_id, self.eos_id = tokenizer, pad_id, eos_id
    self.path, self.key = path, key

  @classmethod
  def from_dir(cls, path: str, key: str = "data.tokenizer") -> "HFTokenizer":
    """The ``tokenizer.json`` of a Hugging Face checkpoint directory ``path``, with its pad and EOS
    ids; a missing directory or file is a ``DataError`` naming ``key``."""
    path = os.path.expanduser(path or "")
    file = os.path.join(path, FILE)
    if not os.path.isfile(file):
      what = "no such directory" if not os.path.isdir(path) else f"no {FILE} in it"
      raise DataError(
          f"{key}={path!r}: {what}; a tokenizer directory holds {FILE}: on a machine with internet "
          f"run transformers.AutoTokenizer.from_pretrained('gpt2').save_pretrained(DIR)")
    import tokenizers
    try:
      tok = tokenizers.Tokenizer.from_file(file)
    except Exception as e:  # tokenizers raises a bare Exception for a malformed file
      raise DataError(f"{key}={path!r}: cannot read {file}: {str(e).strip()[:200]}") from None
    first = lambda *ids: next((i for i in ids if i is not None), None)
    token_id = lambda name: tok.token_to_id(name) if name is not None else None
    eos_id = first(token_id(_special(path, "eos_token")), tok.token_to_id(EOS))
    # GPT-2 has no pad token: pad with EOS, as its users do (masked out either way).
    pad_id = first((tok.padding or {}).get("pad_id"), token_id(_special(path, "pad_token")),
                   eos_id, 0)
    return cls(tok, int(pad_id), eos_id, path, key)

  @functools.cached_property
  def chat_template(self) -> ChatTemplate:
    """The checkpoint's chat template, read on first use (a base model has none: that is a
    ``DataError`` only for a caller that asks). Assign a ``ChatTemplate`` to use another."""
    if self.path is None:
      raise DataError(f"{self.key}: a tokenizer built without its checkpoint directory has no "
                      f"chat template; load it with HFTokenizer.from_dir")
    tokens = {name: t for name in SPECIAL_TOKENS if (t := _special(self.path, name)) is not None}
    return ChatTemplate.from_dir(self.path, tokens, self.key)

  def apply_chat_template(self, messages: Sequence[Mapping[str, Any]],
                          add_generation_prompt: bool = True, **extra) -> str:
    """``messages`` (``[{"role": "user", "content": ...}, ...]``) as the prompt text the
    checkpoint was trained on, equal to transformers' ``apply_chat_template(messages,
    tokenize=False, ...)``. ``add_generation_prompt`` ends it with the assistant's header (on by
    default, unlike transformers: a prompt here is for generating the reply); ``extra`` are
    template variables (``tools``, ``enable_thinking``, ...)."""
    return self.chat_template.render(messages, add_generation_prompt, **extra)

  def encode_chat(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True,
                  **extra) -> list[int]:
    """The token ids of ``apply_chat_template``'s text, as transformers' ``tokenize=True`` gives
    them: the template writes BOS itself, so no special tokens are added. For a batch of
    generation prompts, pass the texts to ``encode_prompts``."""
    return self._ids([self.apply_chat_template(messages, add_generation_prompt, **extra)])[0]

  @property
  def vocab_size(self) -> int:
    """Token ids in all, the added tokens included."""
    return self.tokenizer.get_vocab_size()

  def _ids(self, texts: Sequence[str]) -> list[list[int]]:
    # No special tokens: GPT-2 adds none, and a probe must see exactly the formatted text.
    return [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

  def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
    """Each text's token ids, unpadded, no special tokens added (``models.lm.to_tokens`` puts
    BOS first where asked)."""
    return self._ids(texts)

  def encode(self, texts: Sequence[str], max_len: int) -> np.ndarray:
    """int32 ``[len(texts), max_len]``: each text's last ``max_len`` tokens, right-padded."""
    out = np.full((len(texts), max_len), self.pad_id, np.int32)
    for row, ids in enumerate(self._ids(texts)):
      ids = ids[-max_len:]
      out[row, :len(ids)] = ids
    return out

  def encode_prompts(self, texts: Sequence[str],
                     buckets: Sequence[int] = BUCKETS) -> tuple[np.ndarray, np.ndarray]:
    """(ids, mask), int32 ``[len(texts), L]``, left-padded: ``L`` is the smallest bucket that
    holds the longest prompt, so generation continues every prompt from the same position."""
    all_ids = self._ids(texts)
    length = bucket(max((len(i) for i in all_ids), default=1), buckets)
    ids = np.full((len(texts), length), self.pad_id, np.int32)
    mask = np.zeros((len(texts), length), np.int32)
    for row, seq in enumerate(all_ids):
      if seq:
        ids[row, -len(seq):], mask[row, -len(seq):] = seq, 1
    return ids, mask

  def decode(self, ids) -> list[str]:
    """Strings of token id rows, pad ids dropped."""
    rows = [[int(i) for i in row if int(i) != self.pad_id] for row in ids]
    return self.tokenizer.decode_batch(rows, skip_special_tokens=False)
