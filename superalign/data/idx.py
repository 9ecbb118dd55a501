"""MNIST-format IDX files from a local directory (MNIST, Fashion-MNIST), gzipped or not.

Debian's ``dataset-fashion-mnist`` package installs Fashion-MNIST under
``/usr/share/datasets/fashion-mnist``.
"""

from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

from superalign.core.specs import InputSpec
from superalign.data.source import DataError, Source

_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str) -> np.ndarray:
  """Parses one IDX file: 2 zero bytes, a dtype byte, a rank byte, big-endian dims, data."""
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rb") as f:
      raw = f.read()
  except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
    raise DataError(f"{path}: unreadable ({str(e) or type(e).__name__}); a truncated or "
                    "corrupt download? fetch the file again") from None
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
    raise DataError(f"{path}: not an IDX file (bad magic number)")
  rank = raw[3]
  dtype = np.dtype(_DTYPES[raw[2]])
  if len(raw) < 4 + 4 * rank:
    raise DataError(f"{path}: truncated IDX header (rank {rank})")
  dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=rank, offset=4))
  body = len(raw) - 4 - 4 * rank
  if body != int(np.prod(dims)) * dtype.itemsize:
    raise DataError(f"{path}: header says shape {dims} of {dtype.name} ({int(np.prod(dims))} "
                    f"values) but the file holds {body} bytes of data")
  return np.frombuffer(raw, dtype, offset=4 + 4 * rank).reshape(dims)


def find(directory: str, stem: str) -> str | None:
  """The path of file ``stem`` in ``directory``, plain or ``.gz``, or None when neither exists."""
  for suffix in ("", ".gz"):
    path = os.path.join(directory, stem + suffix)
    if os.path.exists(path):
      return path
  return None


def check_directory(directory: str) -> None:
  """Raises DataError, one line, unless ``directory`` exists and holds the four MNIST-format
  files (each plain or gzipped)."""
  if not os.path.isdir(directory):
    raise DataError(
        f"data.name='idx:{directory}': no such directory; give a directory holding "
        "train-images-idx3-ubyte[.gz] and friends (e.g. /usr/share/datasets/fashion-mnist from "
        "Debian's dataset-fashion-mnist package)")
  missing = [stem for stem in _FILES.values() if find(directory, stem) is None]
  if missing:
    raise DataError(f"data.name='idx:{directory}': missing {', '.join(missing)}[.gz]")


def load(directory: str) -> Source:
  """The MNIST-format data set in ``directory``: float32 images in [0, 1]
  ``[N, height, width, 1]`` and int32 labels ``[N]``, with its test set; a file that is
  unreadable or inconsistent raises DataError."""
  check_directory(directory)
  paths = {key: find(directory, stem) for key, stem in _FILES.items()}
  arrays = {key: read_idx(path) for key, path in paths.items()}
  _check(arrays, paths)
  scale = lambda a: (a.astype(np.float32) / 255.0)[..., None]
  height, width = arrays["train_x"].shape[1:]
  return Source(f"idx:{directory}", scale(arrays["train_x"]), arrays["train_y"].astype(np.int32),
                InputSpec((height, width, 1), "image", int(arrays["train_y"].max()) + 1),
                test_x=scale(arrays["test_x"]), test_y=arrays["test_y"].astype(np.int32))


def _check(arrays: dict[str, np.ndarray], paths: dict[str, str]) -> None:
  """Shapes and labels, before any training: images [n, h, w], labels [n] in 0..classes-1, the
  same n for both, some training examples, and no test class the training set lacks."""
  for split in ("train", "test"):
    x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
    if x.ndim != 3:
      raise DataError(f"{paths[split + '_x']}: images of shape {x.shape}; expected rank 3 "
                      "[examples, height, width]")
    if y.ndim != 1:
      raise DataError(f"{paths[split + '_y']}: labels of shape {y.shape}; expected rank 1")
    if len(x) != len(y):
      raise DataError(f"{paths[split + '_y']}: {len(y)} labels for {len(x)} images in "
                      f"{paths[split + '_x']}")
    if len(y) and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0):
      raise DataError(f"{paths[split + '_y']}: labels must be integers from 0")
  if not len(arrays["train_y"]):
    raise DataError(f"{paths['train_x']}: holds no training examples")
  classes = int(arrays["train_y"].max()) + 1
  if len(arrays["test_y"]) and int(arrays["test_y"].max()) >= classes:
    raise DataError(f"{paths['test_y']}: label {int(arrays['test_y'].max())} is not a training "
                    f"class (the training labels are 0..{classes - 1})")
