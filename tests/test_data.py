"""Data sources, splits, batching, IDX files, the tfds: source and the word tokenizer."""

from __future__ import annotations

import gzip
import itertools
import os

import ml_collections
import numpy as np
import pytest

from superalign import data as data_lib
from superalign.core.specs import InputSpec
from superalign.core import batches
from superalign.data import idx, synthetic, text
from superalign.data.source import DataError, Source
from superalign.data.splits import make_splits

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
FRACTIONS = {"train": 0.5, "val": 0.2, "test": 0.3}


def _load(name: str, **kw) -> Source:
  return data_lib.load(ml_collections.ConfigDict({"name": name, **kw}))


def _assert_disjoint(splits):
  for (a, sa), (b, sb) in itertools.combinations(splits.items(), 2):
    common = np.intersect1d(sa.ids, sb.ids)
    assert common.size == 0, f"splits {a} and {b} share ids {common[:10]}"
  for name, s in splits.items():
    assert len(np.unique(s.ids)) == len(s.ids), f"split {name} repeats ids"


# ----------------------------------------------------------------------------- IDX files


def _idx_bytes(array: np.ndarray, dtype_code: int) -> bytes:
  header = bytes([0, 0, dtype_code, array.ndim])
  dims = np.asarray(array.shape, ">u4").tobytes()
  big_endian = array.astype(array.dtype.newbyteorder(">")) if array.dtype.itemsize > 1 else array
  return header + dims + big_endian.tobytes()


def _write_idx(path: str, array: np.ndarray, dtype_code: int = 0x08) -> str:
  raw = _idx_bytes(array, dtype_code)
  if path.endswith(".gz"):
    with gzip.open(path, "wb") as f:
      f.write(raw)
  else:
    with open(path, "wb") as f:
      f.write(raw)
  return path


def _write_idx_dir(directory, n_train=40, n_test=12, hw=(6, 5), num_classes=4, gz=True,
                   seed=0) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  arrays = {
      "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, *hw), dtype=np.uint8),
      "train-labels-idx1-ubyte": (np.arange(n_train) % num_classes).astype(np.uint8),
      "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, *hw), dtype=np.uint8),
      "t10k-labels-idx1-ubyte": (np.arange(n_test) % num_classes).astype(np.uint8),
  }
  os.makedirs(directory, exist_ok=True)
  for stem, array in arrays.items():
    _write_idx(os.path.join(str(directory), stem + (".gz" if gz else "")), array)
  return arrays


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_uint8_images(tmp_path, suffix):
  array = np.random.default_rng(1).integers(0, 256, (3, 4, 5), dtype=np.uint8)
  path = _write_idx(str(tmp_path / f"images{suffix}"), array)
  out = idx.read_idx(path)
  assert out.shape == (3, 4, 5)
  np.testing.assert_array_equal(out, array)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_big_endian_int32_labels(tmp_path, suffix):
  array = np.array([0, 1, 70000, -5, 2**30], np.int32)
  path = _write_idx(str(tmp_path / f"labels{suffix}"), array, dtype_code=0x0C)
  out = idx.read_idx(path)
  assert out.shape == (5,)
  np.testing.assert_array_equal(out.astype(np.int64), array.astype(np.int64))


def test_read_idx_bad_magic_raises(tmp_path):
  path = tmp_path / "bad"
  path.write_bytes(b"\x01\x02\x08\x01" + np.asarray([2], ">u4").tobytes() + b"\x00\x01")
  with pytest.raises(DataError, match="bad magic"):
    idx.read_idx(str(path))
  unknown_dtype = tmp_path / "bad_dtype"
  unknown_dtype.write_bytes(b"\x00\x00\x07\x01" + np.asarray([2], ">u4").tobytes() + b"\x00\x01")
  with pytest.raises(DataError, match="bad magic"):
    idx.read_idx(str(unknown_dtype))


def test_read_idx_size_mismatch_raises(tmp_path):
  path = tmp_path / "short"
  path.write_bytes(b"\x00\x00\x08\x02" + np.asarray([3, 4], ">u4").tobytes() + bytes(11))
  with pytest.raises(DataError, match="holds 11 bytes"):
    idx.read_idx(str(path))


def test_read_idx_size_mismatch_message_is_readable(tmp_path):
  path = tmp_path / "short"
  path.write_bytes(b"\x00\x00\x08\x02" + np.asarray([3, 4], ">u4").tobytes() + bytes(11))
  with pytest.raises(DataError, match=r"header says shape \(3, 4\) of uint8 \(12 values\) but the file holds 11 bytes"):
    idx.read_idx(str(path))


@pytest.mark.parametrize("raw", [
    b"\x00\x00\x08\x03" + np.asarray([2], ">u4").tobytes(),  # rank 3 but only 1 dim
    b"\x00\x00\x0c\x01" + np.asarray([2], ">u4").tobytes() + bytes(5),  # int32 body of 5 bytes
], ids=["short_header", "ragged_body"])
def test_read_idx_truncated_file_raises_data_error(tmp_path, raw):
  path = tmp_path / "truncated"
  path.write_bytes(raw)
  try:
    idx.read_idx(str(path))
  except DataError:
    return
  except ValueError as e:
    raise AssertionError(f"raised {type(e).__name__}, not DataError: {e}") from e
  raise AssertionError("no error for a truncated file")


@pytest.mark.parametrize("gz", [False, True])
def test_idx_load_directory(tmp_path, gz):
  arrays = _write_idx_dir(tmp_path / "mnistlike", gz=gz)
  source = idx.load(str(tmp_path / "mnistlike"))
  assert source.x.shape == (40, 6, 5, 1) and source.x.dtype == np.float32
  assert source.test_x.shape == (12, 6, 5, 1)
  np.testing.assert_allclose(source.x[..., 0], arrays["train-images-idx3-ubyte"] / 255.0,
                             rtol=1e-6)
  np.testing.assert_allclose(source.test_x[..., 0], arrays["t10k-images-idx3-ubyte"] / 255.0,
                             rtol=1e-6)
  assert source.x.min() >= 0.0 and source.x.max() <= 1.0
  np.testing.assert_array_equal(source.y, arrays["train-labels-idx1-ubyte"])
  np.testing.assert_array_equal(source.test_y, arrays["t10k-labels-idx1-ubyte"])
  assert source.y.dtype == np.int32 and source.test_y.dtype == np.int32
  assert source.spec == InputSpec((6, 5, 1), "image", 4)


def test_check_directory_missing_dir_names_path(tmp_path):
  missing = str(tmp_path / "nowhere")
  with pytest.raises(DataError, match="no such directory") as e:
    idx.check_directory(missing)
  assert missing in str(e.value)
  with pytest.raises(DataError) as e:
    data_lib.check_name(f"idx:{missing}")
  assert missing in str(e.value)


def test_check_directory_missing_file_names_it(tmp_path):
  directory = tmp_path / "partial"
  _write_idx_dir(directory)
  os.remove(directory / "t10k-labels-idx1-ubyte.gz")
  with pytest.raises(DataError) as e:
    idx.check_directory(str(directory))
  message = str(e.value)
  assert str(directory) in message
  assert "t10k-labels-idx1-ubyte" in message
  assert "train-images-idx3-ubyte" not in message  # only the missing one is named
  with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
    idx.load(str(directory))


# ----------------------------------------------------------------------------- names


@pytest.mark.parametrize("name", ["nope", "digits2", "tfds:", "synthetic:nope", "synthetic:",
                                  "idx", "DIGITS"])
def test_check_name_unknown(name):
  with pytest.raises(DataError) as e:
    data_lib.check_name(name)
  message = str(e.value)
  assert repr(name) in message
  for valid in ("digits", "breast_cancer", "synthetic:blobs", "idx:<dir>", "tfds:<name>"):
    assert valid in message


@pytest.mark.parametrize("name", ["digits", "breast_cancer", "synthetic:blobs",
                                  "synthetic:majority", "tfds:mnist"])
def test_check_name_known(name):
  assert data_lib.check_name(name) is None  # accepted: no DataError


# ----------------------------------------------------------------------------- splits


@pytest.fixture(scope="module")
def pool_sources():
  return {"digits": _load("digits"), "breast_cancer": _load("breast_cancer"),
          "synthetic:blobs": _load("synthetic:blobs")}


@pytest.mark.parametrize("name", ["digits", "breast_cancer", "synthetic:blobs"])
def test_make_splits_disjoint_sized_and_deterministic(pool_sources, name):
  source = pool_sources[name]
  n = len(source.y)
  splits = make_splits(source, FRACTIONS, split_seed=3)
  assert list(splits) == list(FRACTIONS)
  _assert_disjoint(splits)
  for split_name, frac in FRACTIONS.items():
    s = splits[split_name]
    assert abs(len(s) - frac * n) <= 1, (split_name, len(s), frac * n)
    assert len(s.x) == len(s.y) == len(s.ids)
    assert s.ids.min() >= 0 and s.ids.max() < n
    np.testing.assert_array_equal(s.y, source.y[s.ids])
  again = make_splits(source, FRACTIONS, split_seed=3)
  other = make_splits(source, FRACTIONS, split_seed=4)
  for split_name in FRACTIONS:
    np.testing.assert_array_equal(splits[split_name].ids, again[split_name].ids)
    np.testing.assert_array_equal(splits[split_name].x, again[split_name].x)
  assert not np.array_equal(splits["train"].ids, other["train"].ids)


def test_make_splits_images_are_not_transformed(pool_sources):
  source = pool_sources["digits"]
  splits = make_splits(source, FRACTIONS)
  for s in splits.values():
    np.testing.assert_array_equal(s.x, source.x[s.ids])


def test_make_splits_limit_caps_pool(pool_sources):
  source = pool_sources["digits"]
  splits = make_splits(source, {"a": 0.5, "b": 0.5}, limit=100)
  assert len(splits["a"]) + len(splits["b"]) == 100
  _assert_disjoint(splits)
  # the limited pool is a prefix of the same permutation: its splits come from the full pool's
  full_order = np.random.default_rng(0).permutation(len(source.y))[:100]
  np.testing.assert_array_equal(np.sort(np.concatenate([splits["a"].ids, splits["b"].ids])),
                                np.sort(full_order))


@pytest.mark.parametrize("fractions", [
    {"train": 0.6, "test": 0.5},
    {"train": 0.0, "test": 0.5},
    {"train": -0.1, "test": 0.5},
    {"train": 1.01},
])
def test_make_splits_bad_fractions_raise(pool_sources, fractions):
  with pytest.raises(DataError, match="data.splits"):
    make_splits(pool_sources["digits"], fractions)


def test_make_splits_tiny_fraction_raises(pool_sources):
  with pytest.raises(DataError, match=r"data.splits.b=0.001.*out of 100"):
    make_splits(pool_sources["digits"], {"a": 0.5, "b": 0.001}, limit=100)


def test_make_splits_rounding_does_not_accumulate(pool_sources):
  fractions = {"a": 0.25, "b": 0.25, "c": 0.25, "d": 0.25}
  splits = make_splits(pool_sources["digits"], fractions, limit=6)
  sizes = [len(s) for s in splits.values()]
  assert sum(sizes) == 6
  assert all(abs(size - 1.5) <= 1 for size in sizes), sizes


@pytest.mark.parametrize("name", ["breast_cancer", "synthetic:blobs"])
def test_standardization_fits_first_split_only(pool_sources, name):
  source = pool_sources[name]
  assert source.spec.kind == "vector"
  fractions = {"val": 0.3, "train": 0.5, "test": 0.2}  # "val" comes first: it is the fit split
  splits = make_splits(source, fractions, split_seed=1)
  first = source.x[splits["val"].ids].astype(np.float64)
  mean, std = first.mean(0), first.std(0) + 1e-6
  for s in splits.values():
    assert s.x.dtype == np.float32
    expected = (source.x[s.ids] - mean) / std
    np.testing.assert_allclose(s.x, expected, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(splits["val"].x.mean(0), 0.0, atol=1e-4)
  np.testing.assert_allclose(splits["val"].x.std(0), 1.0, atol=1e-3)
  # the other splits are not standardized with their own statistics
  assert np.abs(splits["train"].x.mean(0)).max() > 1e-3


def _check_native_test(source: Source, limit: int):
  fractions = {"train": 0.6, "val": 0.4, "test": 0.5}  # "test" is native: not counted in the sum
  splits = make_splits(source, fractions, split_seed=0, limit=limit)
  _assert_disjoint(splits)
  n_pool = len(source.y)
  assert len(splits["train"]) + len(splits["val"]) == limit
  assert len(splits["test"]) == min(limit, len(source.test_y))
  pool_ids = np.concatenate([splits["train"].ids, splits["val"].ids])
  assert pool_ids.max() < n_pool
  assert splits["test"].ids.min() >= n_pool
  assert np.intersect1d(pool_ids, splits["test"].ids).size == 0
  test_rows = splits["test"].ids - n_pool
  np.testing.assert_array_equal(splits["test"].x, source.test_x[test_rows])
  np.testing.assert_array_equal(splits["test"].y, source.test_y[test_rows])
  for s in (splits["train"], splits["val"]):
    np.testing.assert_array_equal(s.x, source.x[s.ids])
  again = make_splits(source, fractions, split_seed=0, limit=limit)
  for k in fractions:
    np.testing.assert_array_equal(splits[k].ids, again[k].ids)


def test_native_test_split_tmp_idx(tmp_path):
  _write_idx_dir(tmp_path / "d", n_train=50, n_test=30)
  source = _load(f"idx:{tmp_path / 'd'}")
  assert len(source.test_y) == 30
  _check_native_test(source, limit=20)  # asserts disjoint ids and sizes
  _check_native_test(source, limit=50)


@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST), reason="Fashion-MNIST IDX files absent")
def test_native_test_split_fashion_mnist():
  source = _load(f"idx:{FASHION_MNIST}")
  assert source.x.shape == (60000, 28, 28, 1) and source.test_x.shape == (10000, 28, 28, 1)
  assert source.spec.num_classes == 10
  _check_native_test(source, limit=500)


def test_source_length_mismatch_raises():
  with pytest.raises(DataError, match="3 inputs but 2 labels"):
    Source("s", np.zeros((3, 2), np.float32), np.zeros(2, np.int32), InputSpec((2,), "vector", 2))


def test_synthetic_sources_deterministic_in_seed():
  a, b, c = synthetic.blobs(seed=0), synthetic.blobs(seed=0), synthetic.blobs(seed=1)
  np.testing.assert_array_equal(a.x, b.x)
  assert not np.array_equal(a.x, c.x)
  m = synthetic.majority(num_examples=200, seed=0)
  assert m.spec.kind == "tokens" and m.x.dtype == np.int32
  np.testing.assert_array_equal(m.y, ((m.x == 2).sum(1) > (m.x == 3).sum(1)).astype(np.int32))
  # right padding: once a 0 appears the rest of the row is 0
  nonpad = m.x != 0
  assert np.all(np.diff(nonpad.astype(int), axis=1) <= 0)


# ----------------------------------------------------------------------------- batches


def test_train_indices_pure_function_of_seed_and_step():
  n, bs = 103, 10
  for step in (0, 5, 11, 37):
    first = batches.train_indices(7, step, n, bs).copy()
    # interleave calls with other seeds/epochs to disturb any cache
    for s in range(6):
      batches.train_indices(s, step + 50, n, bs)
    np.testing.assert_array_equal(first, batches.train_indices(7, step, n, bs))
    assert len(first) == bs
    assert first.min() >= 0 and first.max() < n
  assert not np.array_equal(batches.train_indices(0, 0, n, bs), batches.train_indices(1, 0, n, bs))


def test_train_indices_epochs():
  n, bs = 103, 10
  per_epoch = batches.steps_per_epoch(n, bs)
  assert per_epoch == 10
  epochs = []
  for epoch in range(3):
    seen = np.concatenate([batches.train_indices(2, epoch * per_epoch + s, n, bs)
                           for s in range(per_epoch)])
    assert len(seen) == per_epoch * bs
    assert len(np.unique(seen)) == len(seen), "an example repeats within one epoch"
    epochs.append(seen)
  assert not np.array_equal(epochs[0], epochs[1])
  assert not np.array_equal(epochs[1], epochs[2])


def test_train_indices_batch_larger_than_split():
  a = batches.train_indices(0, 3, 5, 16)
  assert a.shape == (16,) and a.min() >= 0 and a.max() < 5
  np.testing.assert_array_equal(a, batches.train_indices(0, 3, 5, 16))
  assert not np.array_equal(a, batches.train_indices(0, 4, 5, 16))


@pytest.mark.parametrize("n,bs", [(10, 3), (9, 3), (1, 4), (7, 7), (8, 16)])
def test_eval_indices_cover_range_once(n, bs):
  out = batches.eval_indices(n, bs)
  assert len(out) == -(-n // bs)
  valid_rows = []
  for indices, valid in out:
    assert indices.shape == (bs,)
    assert 0 < valid <= bs
    valid_rows.append(indices[:valid])
    np.testing.assert_array_equal(indices[valid:], 0)  # padding repeats index 0
  np.testing.assert_array_equal(np.concatenate(valid_rows), np.arange(n))
  assert sum(v for _, v in out) == n


def test_process_slice_single_process():
  indices = np.arange(12)
  np.testing.assert_array_equal(batches.process_slice(indices), indices)


# ----------------------------------------------------------------------------- tokenizer


def test_words_lowercases_and_splits_punctuation():
  assert text.words("Hello, World! it's 42") == ["hello", ",", "world", "!", "it", "'", "s", "42"]


def test_word_tokenizer_fit_and_encode():
  texts = ["the cat sat", "the dog sat", "the cat ran"]
  tok = text.WordTokenizer.fit(texts, vocab_size=100)
  # frequency first (the 3, cat 2, sat 2), ties alphabetical (cat < sat; dog < ran)
  assert tok.vocab == ["the", "cat", "sat", "dog", "ran"]
  assert tok.vocab_size == 7
  ids = tok.encode(["the cat sat", "zebra the", ""], max_len=5)
  assert ids.dtype == np.int32 and ids.shape == (3, 5)
  np.testing.assert_array_equal(ids, [[2, 3, 4, 0, 0],
                                      [text.UNK, 2, 0, 0, 0],
                                      [0, 0, 0, 0, 0]])
  assert text.PAD == 0 and text.UNK == 1


def test_word_tokenizer_vocab_cap_and_truncation():
  texts = ["a a a a b b b c c d"]
  tok = text.WordTokenizer.fit(texts, vocab_size=4)  # 2 specials + 2 words
  assert tok.vocab == ["a", "b"] and tok.vocab_size == 4
  ids = tok.encode(["d c b a a b", "a"], max_len=3)
  np.testing.assert_array_equal(ids, [[1, 1, 3], [2, 0, 0]])
  assert ids.max() < tok.vocab_size


def test_word_tokenizer_deterministic_with_ties():
  texts = ["zeta alpha mid", "mid beta", "alpha zeta", "gamma beta"]
  a = text.WordTokenizer.fit(texts, vocab_size=6)
  b = text.WordTokenizer.fit(list(reversed(texts)), vocab_size=6)
  assert a.vocab == b.vocab == ["alpha", "beta", "mid", "zeta"]
  np.testing.assert_array_equal(a.encode(texts, 4), b.encode(texts, 4))


# ----------------------------------------------------------------------------- tfds: source

try:
  import tensorflow_datasets as tfds
except ImportError:  # a dependency; without it only the tfds: tests skip
  tfds = None
from superalign.data import tfds_source  # noqa: E402  (imports tfds lazily)

needs_tfds = pytest.mark.skipif(tfds is None, reason="tensorflow_datasets is not installed")

@pytest.fixture
def tfds_load():
  """``tfds_source.load`` (records read one index at a time, which works on mock sources)."""
  return tfds_source.load


def _mock_records(name, split, n):
  with tfds.testing.mock_data(num_examples=n):
    source = tfds.data_source(name, split=split)
    return [source[i] for i in range(len(source))]


@needs_tfds
def test_tfds_mnist_images(tfds_load):
  with tfds.testing.mock_data(num_examples=6):
    source = tfds_load("mnist")
  assert source.name == "tfds:mnist"
  assert source.x.shape == (6, 28, 28, 1) and source.x.dtype == np.float32
  assert source.x.min() >= 0.0 and source.x.max() <= 1.0 and source.x.max() > 0.0
  assert source.y.dtype == np.int32 and source.y.min() >= 0 and source.y.max() < 10
  assert source.spec == InputSpec((28, 28, 1), "image", 10)
  assert source.test_x is not None and source.test_x.shape == (6, 28, 28, 1)
  assert source.test_y.shape == (6,)
  records = _mock_records("mnist", "train", 6)
  np.testing.assert_allclose(source.x, np.stack([r["image"] for r in records]) / 255.0, rtol=1e-6)
  np.testing.assert_array_equal(source.y, [r["label"] for r in records])


@needs_tfds
def test_tfds_limit(tfds_load):
  with tfds.testing.mock_data(num_examples=10):
    source = tfds_load("mnist", limit=4)
  assert len(source.y) == 4 and len(source.test_y) == 4


def _as_str(v):
  return v.decode() if isinstance(v, bytes) else str(v)


@needs_tfds
@pytest.mark.parametrize("name,fields,label", [
    ("imdb_reviews", ("text",), "label"),
    ("bool_q", ("question", "passage"), "answer"),
])
def test_tfds_text_token_ids(tfds_load, name, fields, label):
  max_len, vocab_size = 12, 40
  with tfds.testing.mock_data(num_examples=10):
    source = tfds_load(name, max_len=max_len, vocab_size=vocab_size)
  assert source.name == f"tfds:{name}"
  assert source.x.shape == (10, max_len) and source.x.dtype == np.int32
  assert source.spec.kind == "tokens" and source.spec.shape == (max_len,)
  assert source.spec.num_classes == 2
  assert 2 < source.spec.vocab_size <= vocab_size
  assert source.x.min() >= 0 and source.x.max() < source.spec.vocab_size
  assert set(np.unique(source.y)) <= {0, 1}
  # right padding with 0: once a pad appears, the rest of the row is pad
  nonpad = source.x != text.PAD
  assert np.all(np.diff(nonpad.astype(int), axis=1) <= 0)
  assert nonpad[:, 0].any()
  assert source.test_x is not None and source.test_x.shape[1] == max_len
  # the same as fitting a WordTokenizer on the joined train texts
  records = _mock_records(name, "train", 10)
  joined = [" | ".join(_as_str(r[f]) for f in fields) for r in records]
  tok = text.WordTokenizer.fit(joined, vocab_size)
  assert source.spec.vocab_size == tok.vocab_size
  np.testing.assert_array_equal(source.x, tok.encode(joined, max_len))
  np.testing.assert_array_equal(source.y, [int(r[label]) for r in records])


class _FakeFeature:
  num_classes = 2


class _FakeInfo:
  features = {"label": _FakeFeature()}


class _FakeSource:
  """Enough of a tfds data source for ``tfds_source.load``: len, indexing, dataset_info."""

  dataset_info = _FakeInfo()

  def __init__(self, records):
    self.records = records

  def __len__(self):
    return len(self.records)

  def __getitem__(self, i):
    return self.records[i]

  def __getitems__(self, keys):
    return [self.records[i] for i in keys]


def test_tfds_text_vocab_from_train_split_only(monkeypatch):
  splits = {
      "train": [{"text": b"good movie good", "label": 1}, {"text": b"bad movie", "label": 0}],
      "test": [{"text": b"unseen good words", "label": 1}],
  }

  def fake_open(name, split, data_dir):
    if split not in splits:
      raise ValueError(f"no split {split}")
    return _FakeSource(splits[split])

  monkeypatch.setattr(tfds_source, "_open", fake_open)
  source = tfds_source.load("imdb_reviews", max_len=4, vocab_size=100)
  # vocab: good(2) movie(2) -> alphabetical tie -> good=2, movie=3, bad=4
  assert source.spec.vocab_size == 5
  np.testing.assert_array_equal(source.x, [[2, 3, 2, 0], [4, 3, 0, 0]])
  np.testing.assert_array_equal(source.test_x, [[text.UNK, 2, text.UNK, 0]])
  np.testing.assert_array_equal(source.y, [1, 0])
  np.testing.assert_array_equal(source.test_y, [1])


def test_tfds_unknown_text_layout_raises(monkeypatch):
  monkeypatch.setattr(tfds_source, "_open",
                      lambda name, split, data_dir: _FakeSource([{"text": "x", "label": 0}]))
  with pytest.raises(DataError, match="no known text layout"):
    tfds_source.load("some_text_set")


@needs_tfds
def test_tfds_missing_data_set_raises_data_error(tmp_path):
  with pytest.raises(DataError, match="tfds:no_such_dataset_xyz"):
    tfds_source.load("no_such_dataset_xyz", str(tmp_path))


@pytest.mark.parametrize("damage", ["non_utf8", "truncated_gzip", "garbage_gzip"])
def test_a_damaged_jsonl_split_is_one_line_naming_it(tmp_path, damage):
  """Issue 32: a text task's jsonl with bytes that are not UTF-8, or a truncated or garbled
  ``.jsonl.gz``, raised UnicodeDecodeError / EOFError / BadGzipFile with a traceback."""
  from conftest import write_sciq_jsonl
  from superalign.data import text_tasks
  from superalign.results.files import DamagedFileError
  path = write_sciq_jsonl(str(tmp_path / "sciq"), n_train=6, n_test=2)
  good = (tmp_path / "sciq" / "train.jsonl").read_bytes()
  os.remove(tmp_path / "sciq" / "train.jsonl")
  if damage == "non_utf8":
    lines = good.splitlines(keepends=True)
    (tmp_path / "sciq" / "train.jsonl").write_bytes(b"".join(lines[:2]) + b'{"q": "\xff"}\n')
    error, match = DataError, r"train\.jsonl line 3: not a UTF-8 JSON record"
  else:
    packed = gzip.compress(good)
    bad = packed[:len(packed) // 2] if damage == "truncated_gzip" else b"\x1f\x8b" + b"\x00" * 40
    (tmp_path / "sciq" / "train.jsonl.gz").write_bytes(bad)
    error, match = DamagedFileError, r"train\.jsonl\.gz: .*; fetch or write the file again"
  with pytest.raises(error, match=match) as e:
    text_tasks.read_split("sciq", path, "train")
  assert "\n" not in str(e.value)


@pytest.mark.parametrize("content", [b"{not json", b'{"pad_token": "\xff"}'])
def test_a_damaged_tokenizer_config_is_one_line_not_a_silent_pad_id(tmp_path, content):
  """Issue 32: a damaged ``tokenizer_config.json`` was skipped silently, so the pad id changed
  without a word; an absent one is still fine."""
  from conftest import train_tiny_bpe
  from superalign.data.tokenizer import HFTokenizer
  from superalign.results.files import DamagedFileError
  path = train_tiny_bpe(str(tmp_path), ["a tiny corpus", "of two texts"], vocab_size=270)
  assert HFTokenizer.from_dir(path).pad_id == 0
  (tmp_path / "tokenizer_config.json").write_bytes(content)
  with pytest.raises(DamagedFileError, match=r"tokenizer_config\.json: unreadable .*; save the "
                                             r"tokenizer again") as e:
    HFTokenizer.from_dir(path)
  assert "\n" not in str(e.value)


def test_an_unreadable_tfds_record_is_one_line_naming_the_split(monkeypatch):
  """Issue 32: a record that cannot be read (a truncated array_record file) was a traceback."""
  from superalign.results.files import DamagedFileError

  class Truncated:
    def __len__(self):
      return 3

    def __getitem__(self, i):
      raise RuntimeError("DATA_LOSS: truncated record\nmore detail")

  monkeypatch.setattr(tfds_source, "_open", lambda name, split, data_dir: Truncated())
  with pytest.raises(DamagedFileError, match=r"^tfds:mnist train split: unreadable \(RuntimeError: "
                                             r"DATA_LOSS: truncated record\); prepare it again"):
    tfds_source.load("mnist")
