"""``tfds:<name>`` sources through ``tfds.data_source`` (array_record files, no TensorFlow).

Image data sets (``image`` + ``label``) become float images in [0, 1]. Text data sets become token
ids from a ``WordTokenizer`` fitted on the training split only; known text layouts are listed in
``TEXT_FIELDS`` (the text fields joined with " | ", and the label field).
"""

from __future__ import annotations

import numpy as np

from superalign.core.specs import InputSpec
from superalign.data.source import DataError, Source
from superalign.data.text import WordTokenizer
from superalign.results.files import read_guarded

TEXT_FIELDS = {
    "imdb_reviews": (("text",), "label"),
    "bool_q": (("question", "passage"), "answer"),
}
_TEST_SPLITS = ("test", "validation")


def _open(name: str, split: str, data_dir: str | None):
  import tensorflow_datasets as tfds
  # download=False: offline, an unprepared data set fails at once instead of retrying for minutes.
  return tfds.data_source(name, split=split, data_dir=data_dir, download=False)


def _records(name: str, split: str, source, limit: int | None) -> list[dict]:
  """The first ``limit`` records; a record that cannot be read (a truncated or corrupt
  array_record file) is one DamagedFileError line naming the data set and split."""
  n = len(source) if limit is None else min(limit, len(source))
  return read_guarded(f"tfds:{name} {split} split", lambda _: [source[i] for i in range(n)],
                      "prepare it again under data.tfds_dir")


def load(name: str, data_dir: str | None = None, *, max_len: int = 128, vocab_size: int = 8192,
         limit: int | None = None) -> Source:
  """The prepared data set ``name`` under ``data_dir``, train split and ``test`` (or
  ``validation``), each capped at ``limit`` records: images as float32 in [0, 1]
  ``[N, height, width, channels]``, or text (a layout of ``TEXT_FIELDS``) as int32 word ids
  ``[N, max_len]`` from a ``WordTokenizer`` of ``vocab_size`` fitted on the training split."""
  try:
    train = _open(name, "train", data_dir)
  except Exception as e:  # tfds raises many types for "not prepared"; report one line.
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise DataError(
        f"data.name='tfds:{name}': cannot open its train split ({first[:200]}); prepare it "
        "with file_format='array_record' under data.tfds_dir") from None
  test = None
  for split in _TEST_SPLITS:
    try:
      test = _open(name, split, data_dir)
      break
    except Exception:  # try the next split name
      continue
  train_rec = _records(name, "train", train, limit)
  test_rec = _records(name, split, test, limit) if test is not None else None
  features = train.dataset_info.features
  if "image" in train_rec[0]:
    return _images(name, train_rec, test_rec, features)
  return _text(name, train_rec, test_rec, features, max_len, vocab_size)


def _num_classes(features, key: str) -> int:
  feature = features[key]
  return int(getattr(feature, "num_classes", None) or 2)


def _images(name, train_rec, test_rec, features) -> Source:
  stack = lambda recs: np.stack([r["image"] for r in recs]).astype(np.float32) / 255.0
  labels = lambda recs: np.array([r["label"] for r in recs], np.int32)
  x = stack(train_rec)
  spec = InputSpec(tuple(x.shape[1:]), "image", _num_classes(features, "label"))
  return Source(f"tfds:{name}", x, labels(train_rec), spec,
                test_x=stack(test_rec) if test_rec else None,
                test_y=labels(test_rec) if test_rec else None)


def _text(name, train_rec, test_rec, features, max_len, vocab_size) -> Source:
  if name not in TEXT_FIELDS:
    raise DataError(f"data.name='tfds:{name}': no image field and no known text layout; text "
                    f"data sets supported: {', '.join(sorted(TEXT_FIELDS))}")
  fields, label = TEXT_FIELDS[name]
  join = lambda r: " | ".join(_as_str(r[f]) for f in fields)
  train_text = [join(r) for r in train_rec]
  tokenizer = WordTokenizer.fit(train_text, vocab_size)
  encode = lambda recs: tokenizer.encode([join(r) for r in recs], max_len)
  labels = lambda recs: np.array([int(r[label]) for r in recs], np.int32)
  spec = InputSpec((max_len,), "tokens", _num_classes(features, label), tokenizer.vocab_size)
  return Source(f"tfds:{name}", tokenizer.encode(train_text, max_len), labels(train_rec), spec,
                test_x=encode(test_rec) if test_rec else None,
                test_y=labels(test_rec) if test_rec else None)


def _as_str(value) -> str:
  return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
