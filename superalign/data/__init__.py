"""Data sources by name, and their deterministic disjoint splits.

Names: ``digits``, ``breast_cancer`` (bundled with scikit-learn), ``idx:<dir>`` (MNIST-format
files), ``tfds:<name>`` (``tfds.data_source``, TensorFlow-free), ``text:<task>`` (the weak-to-strong
text tasks from local files, tokenized by a checkpoint's ``tokenizer.json``) and
``synthetic:<generator>``.
"""

from __future__ import annotations

import os

from superalign.data import bundled, idx, synthetic, text_tasks
from superalign.data.source import DataError, Source  # noqa: F401
from superalign.data.splits import Split, make_splits  # noqa: F401

BUNDLED = {"digits": bundled.digits, "breast_cancer": bundled.breast_cancer}
PREFIXES = ("idx:", "tfds:", "text:", "synthetic:")


def valid_names() -> str:
  """The data set names ``data.name`` accepts, comma-separated (for error lines)."""
  return ", ".join([*BUNDLED, "idx:<dir>", "tfds:<name>", *(f"text:{t}" for t in text_tasks.TASKS),
                    *(f"synthetic:{g}" for g in synthetic.GENERATORS)])


def check_name(name: str) -> None:
  """Cheap checks before any work: the name parses, a directory exists, a generator is known."""
  if name in BUNDLED:
    return
  if name.startswith("idx:"):
    idx.check_directory(os.path.expanduser(name[4:]))
    return
  if name.startswith("tfds:") and len(name) > 5:
    return
  if name.startswith("text:"):
    text_tasks.check_task(name[5:])
    return
  if name.startswith("synthetic:") and name[10:] in synthetic.GENERATORS:
    return
  raise DataError(f"data.name={name!r}: unknown data set; valid: {valid_names()}")


def load(data) -> Source:
  """The source named by ``data.name`` (a ``config.data`` block)."""
  name = data.name
  check_name(name)
  if name in BUNDLED:
    return BUNDLED[name]()
  if name.startswith("idx:"):
    return idx.load(os.path.expanduser(name[4:]))
  if name.startswith("tfds:"):
    from superalign.data import tfds_source
    return tfds_source.load(name[5:], data.get("tfds_dir") or None,
                            max_len=data.get("max_len", 128), vocab_size=data.get("vocab_size", 8192),
                            limit=data.get("tfds_limit") or None)
  if name.startswith("text:"):
    from superalign.data.tokenizer import HFTokenizer
    task, path = name[5:], data.get("path", "")
    text_tasks.check_path(task, path)  # the data before the tokenizer: cheapest check first
    return text_tasks.load(task, path, HFTokenizer.from_dir(data.get("tokenizer", "")),
                           max_len=data.get("max_len", 128), seed=data.get("source_seed", 0),
                           limit=data.get("limit") or None)
  return synthetic.GENERATORS[name[10:]](seed=data.get("source_seed", 0))


def load_splits(data) -> tuple[Source, dict[str, Split]]:
  """The source named by ``data.name`` (a ``config.data`` block) and its named splits."""
  source = load(data)
  return source, make_splits(source, dict(data.splits), data.split_seed, data.limit or None)
