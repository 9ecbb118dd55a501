"""``text:<task>``: the five binary text tasks of Burns et al. (2023), from local files.

Each formatter is openai/weak-to-strong's (``weak_to_strong/datasets.py``): ``(example, rng) ->
(text, hard_label)`` with its prompt template. As there, each split is formatted in file order
with a fresh ``random.Random(source_seed)`` (the same seed for train and test), and ``data.limit``
keeps a split's first records (the reference's ``select(range(n))``) before formatting, so the
labels of the records kept do not depend on the limit. The reference's test split is
``validation`` for boolq (it has no labelled test) and cosmos_qa (its test labels are hidden).

Data are read from disk only, per split: ``<split>.jsonl[.gz]``, parquet (``<split>.parquet``,
``<split>-*.parquet`` or the Hub's ``data/<split>-*.parquet``), or a ``save_to_disk`` directory
(``dataset_dict.json`` and ``<split>/*.arrow``, read with pyarrow, so ``datasets`` is not needed).
"""

from __future__ import annotations

import dataclasses
import glob
import gzip
import json
import os
import random
from typing import Callable

import numpy as np

from superalign.core.specs import InputSpec
from superalign.data.source import DataError, Source
from superalign.results.files import read_guarded


def format_amazon_polarity(ex, rng):
  """An Amazon review's title and text, labelled by its polarity (1: positive)."""
  return f"{ex['title']} {ex['content']}", int(ex["label"])


def format_sciq(ex, rng):
  """A science question with its correct answer (label 1) or, half of the time by ``rng``, one of
  its three distractors (label 0)."""
  hard_label = int(rng.random() < 0.5)
  if hard_label:
    answer = ex["correct_answer"]
  else:
    answer = rng.choice([ex["distractor1"], ex["distractor2"], ex["distractor3"]])
  return f"Q: {ex['question']} A: {answer}", hard_label


def format_anthropic_hh(ex, rng):
  """A dialogue of Anthropic's HH-RLHF: the chosen response (label 1) or, half of the time by
  ``rng``, the rejected one (label 0)."""
  hard_label = int(rng.random() < 0.5)
  return (ex["chosen"] if hard_label else ex["rejected"]), hard_label


def format_cosmos_qa(ex, rng):
  """A context, question and answer of Cosmos QA: the true answer (label 1) or, half of the time
  by ``rng``, a wrong one (label 0); a true "None of the above choices ." is always shown as a
  wrong answer."""
  true_answer = ex["answer" + str(ex["label"])]
  # As the reference: a true "None of the above" is always shown with a wrong answer (label 0),
  # without drawing the label from rng.
  if "None of the above choices ." in true_answer:
    hard_label = 0
  elif "None of the above choices" in true_answer:
    raise ValueError(f"a true answer mentions 'None of the above choices' other than as "
                     f"'None of the above choices .': {true_answer!r}")
  else:
    hard_label = int(rng.random() < 0.5)
  if hard_label:
    answer = true_answer
  else:
    answer = rng.choice([a for a in (ex["answer" + str(i)] for i in range(4)) if a != true_answer])
  return f"Context: {ex['context']}\nQuestion: {ex['question']}\nAnswer: {answer}", hard_label


def format_boolq(ex, rng):
  """A passage and a yes/no question, labelled by the answer (1: yes)."""
  return f"Passage: {ex['passage']}\nQuestion: {ex['question']}", int(ex["answer"])


@dataclasses.dataclass(frozen=True)
class Task:
  """One text task: its formatter ``(example, rng) -> (text, label)``, its Hugging Face name (for
  the missing-data message) and the split used as the test set."""
  format: Callable[[dict, random.Random], tuple[str, int]]
  hf_name: str              # for load_dataset(...), in the missing-data message
  test_split: str = "test"  # the reference's test split


TASKS = {
    "sciq": Task(format_sciq, "sciq"),
    "boolq": Task(format_boolq, "boolq", "validation"),
    "amazon_polarity": Task(format_amazon_polarity, "amazon_polarity"),
    "cosmos_qa": Task(format_cosmos_qa, "cosmos_qa", "validation"),
    "anthropic_hh": Task(format_anthropic_hh, "Anthropic/hh-rlhf"),
}
PATTERNS = ("{s}.jsonl", "{s}.jsonl.gz", "{s}.parquet", "{s}-*.parquet", "data/{s}-*.parquet",
            "*/{s}-*.parquet", "*/{s}.jsonl.gz")


def check_task(task: str) -> None:
  """Raises DataError, one line naming the valid ones, unless ``task`` is a known text task."""
  if task not in TASKS:
    raise DataError(f"data.name='text:{task}': unknown text task; valid: "
                    f"{', '.join('text:' + t for t in TASKS)}")


def split_files(path: str, split: str) -> list[str]:
  """The files of one split, in order (none: an empty list)."""
  dict_json = os.path.join(path, "dataset_dict.json")
  if os.path.isfile(dict_json) and os.path.isdir(os.path.join(path, split)):
    try:  # save_to_disk lists its shards, in order, in state.json
      with open(os.path.join(path, split, "state.json")) as f:
        return [os.path.join(path, split, d["filename"]) for d in json.load(f)["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError):
      return sorted(glob.glob(os.path.join(glob.escape(path), split, "*.arrow")))
  for pattern in PATTERNS:
    files = sorted(glob.glob(os.path.join(glob.escape(path), pattern.format(s=split))))
    if files:
      return files
  return []


def _rows(file: str):
  """(where, record) pairs of one file; where is 'FILE line N' or 'FILE row N'."""
  if file.endswith((".jsonl", ".jsonl.gz")):
    yield from _jsonl(file)
    return
  import pyarrow as pa
  try:
    if file.endswith(".parquet"):
      import pyarrow.parquet as pq
      batches = pq.ParquetFile(file).iter_batches()
    else:
      batches = pa.ipc.open_stream(pa.memory_map(file)).read_all().to_batches()
    n = 0
    for batch in batches:
      for record in batch.to_pylist():
        yield f"{file} row {n}", record
        n += 1
  except (pa.ArrowException, OSError) as e:
    raise DataError(f"{file}: cannot read it with pyarrow ({str(e).strip()[:200]})") from None


def _jsonl(file: str):
  """(where, record) pairs of a jsonl file, read as bytes and decoded line by line, so a line that
  is not UTF-8 or not JSON is named exactly; a truncated or corrupt gzip stream or an OS error is
  one DamagedFileError line."""
  fix = "fetch or write the file again"
  opener = gzip.open if file.endswith(".gz") else open
  with read_guarded(file, lambda p: opener(p, "rb"), fix) as f:
    n = 0
    while line := read_guarded(file, lambda _: f.readline(), fix):  # a bad gzip stream fails here
      n += 1
      if line.strip():
        try:
          yield f"{file} line {n}", json.loads(line.decode("utf-8"))
        except ValueError as e:  # UnicodeDecodeError is a ValueError too
          raise DataError(f"{file} line {n}: not a UTF-8 JSON record ({e})") from None


def read_split(task: str, path: str, split: str, seed: int = 0,
               limit: int | None = None) -> tuple[list[str], np.ndarray] | None:
  """(texts, int32 labels) of one split, formatted in file order; None if it has no files."""
  files = split_files(path, split)
  if not files:
    return None
  rng, texts, labels = random.Random(seed), [], []
  for file in files:
    for where, record in _rows(file):
      if limit is not None and len(texts) >= limit:
        return texts, np.array(labels, np.int32)
      try:
        text, label = TASKS[task].format(record, rng)
      except KeyError as e:
        raise DataError(f"data.path={path!r}: {where} has no field {e.args[0]!r}, which "
                        f"text:{task} needs") from None
      except (ValueError, TypeError, IndexError) as e:
        raise DataError(f"data.path={path!r}: {where}: {e}") from None
      texts.append(text)
      labels.append(label)
  return texts, np.array(labels, np.int32)


def _test_splits(task: str) -> tuple[str, str]:
  """The test split names to look for, the reference's first."""
  first = TASKS[task].test_split
  return first, "validation" if first == "test" else "test"


def check_path(task: str, path: str) -> None:
  """Raises DataError, one line saying how to get the data, unless ``path`` is a directory
  holding the train split of ``task``."""
  if not path or not os.path.isdir(os.path.expanduser(path)):
    raise DataError(
        f"data.path={path!r}: no such directory for text:{task}; get the data on a machine with "
        f"internet: python -c \"import datasets; datasets.load_dataset('{TASKS[task].hf_name}')"
        f".save_to_disk('DIR')\"")
  if not split_files(os.path.expanduser(path), "train"):
    raise DataError(
        f"data.path={path!r}: no train split for text:{task}; looked for "
        f"{', '.join(p.format(s='train') for p in PATTERNS)} and a save_to_disk directory "
        f"(dataset_dict.json and train/*.arrow)")


def load(task: str, path: str, tokenizer, *, max_len: int = 128, seed: int = 0,
         limit: int | None = None) -> Source:
  """``text:<task>`` from ``path``: token ids right-padded with the tokenizer's pad id."""
  check_task(task)
  check_path(task, path)
  path = os.path.expanduser(path)
  texts, y = read_split(task, path, "train", seed, limit)
  if not texts:
    raise DataError(f"data.path={path!r}: the train split of text:{task} has no records")
  test = next((t for t in (read_split(task, path, s, seed, limit) for s in _test_splits(task))
               if t is not None and t[0]), None)
  spec = InputSpec((max_len,), "tokens", 2, tokenizer.vocab_size, pad_id=tokenizer.pad_id)
  return Source(f"text:{task}", tokenizer.encode(texts, max_len), y, spec,
                test_x=tokenizer.encode(test[0], max_len) if test else None,
                test_y=test[1] if test else None)
