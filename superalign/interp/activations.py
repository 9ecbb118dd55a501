"""An activation store: activations on disk in ``.npy`` shards with a small JSON index.

``ActivationWriter`` appends rows and writes a shard every ``shard_rows`` of them; ``close``
writes ``index.json`` (site name, row shape, dtype, shard files and their row counts). Every
file is written atomically (``results.files.atomic``) and the index last, so a store without an
index is an unfinished write, never a half-readable one.

``ActivationStore`` reads it back whole (``array``) or as shuffled batches: ``batch(step, ...)``
is a pure function of ``(seed, step)`` (``core.batches.train_indices``: a fresh permutation per
epoch), so a resumed training run reads the very batches it would have read. Every file is read
through ``results.files.read_guarded``, and every shard is checked against the index (its rows,
row shape and dtype) when the store opens and when it is read: a damaged store is one
DamagedFileError naming the file, never a short or recast read.
"""

from __future__ import annotations

import json
import os
from typing import Iterable

import jax.numpy as jnp
import numpy as np

from superalign.core import batches, mesh as mesh_lib
from superalign.core.errors import ConfigError
from superalign.results.files import DamagedFileError, atomic, read_guarded

INDEX = "index.json"
FORMAT = 1
# The dtypes the writer stores (bfloat16 is JAX's, which np.save writes as raw 2-byte records:
# the reader views them back through the index's dtype).
DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
          "float16", "bfloat16", "float32", "float64")
REWRITE = "the store is damaged: write it again"


def _save_npy(path: str, array: np.ndarray) -> None:
  def write(tmp):  # a file object: np.save on a name would append ".npy" to the temporary
    with open(tmp, "wb") as f:
      np.save(f, array)
  atomic(path, write)


class ActivationWriter:
  """Writes activations of one site to ``directory``; use as a context manager or ``close()``.

  Across processes every process makes the same calls with the same rows (whole arrays, e.g.
  from ``core.mesh.to_host``); process 0 writes them, and ``close`` returns the store on every
  process once it is complete."""

  def __init__(self, directory: str, site: str, shard_rows: int = 65536):
    if shard_rows < 1:
      raise ConfigError(f"activation store: shard_rows={shard_rows}: must be >= 1")
    # Process 0's look decides for all (and every process has looked before the store exists).
    if mesh_lib.from_writer(os.path.exists(os.path.join(directory, INDEX))):
      raise ConfigError(f"{directory}: already holds an activation store ({INDEX}); choose "
                        "another directory or remove it")
    if mesh_lib.from_writer(os.path.exists(directory) and not os.path.isdir(directory)):
      raise ConfigError(f"{directory}: is a file, not a directory; choose a directory for the "
                        "activation store")
    self.writes = mesh_lib.is_writer()
    if self.writes:
      os.makedirs(directory, exist_ok=True)
    self.directory, self.site, self.shard_rows = directory, site, int(shard_rows)
    self.shards: list[dict] = []
    self.row_shape: tuple[int, ...] | None = None
    self.dtype: np.dtype | None = None
    self._buffer: list[np.ndarray] = []
    self._buffered = 0
    self._rows = 0    # rows added on a process that does not write

  def add(self, rows: np.ndarray) -> None:
    """Appends ``rows`` (axis 0 indexes rows; every call has the same row shape and dtype)."""
    rows = np.asarray(rows)
    if rows.ndim < 1:
      raise ConfigError("activation store: add() takes an array of rows, got a scalar")
    if self.row_shape is None:
      if rows.dtype.name not in DTYPES:
        raise ConfigError(f"activation store {self.site!r}: rows of dtype {rows.dtype}; "
                          f"storable: {', '.join(DTYPES)}")
      self.row_shape, self.dtype = rows.shape[1:], rows.dtype
    elif rows.shape[1:] != self.row_shape or rows.dtype != self.dtype:
      raise ConfigError(f"activation store {self.site!r}: rows of shape {rows.shape[1:]} "
                        f"{rows.dtype}, but the store holds {self.row_shape} {self.dtype}")
    if not self.writes:
      self._rows += len(rows)
      return
    self._buffer.append(rows)
    self._buffered += len(rows)
    while self._buffered >= self.shard_rows:
      self._flush(self.shard_rows)

  def _flush(self, count: int) -> None:
    rows = np.concatenate(self._buffer)
    name = f"shard_{len(self.shards):05d}.npy"
    _save_npy(os.path.join(self.directory, name), rows[:count])
    self.shards.append({"file": name, "rows": int(count)})
    self._buffer = [rows[count:]] if count < len(rows) else []
    self._buffered = len(rows) - count

  def close(self) -> "ActivationStore":
    """Writes the last partial shard and the index (process 0), and returns the finished
    ``ActivationStore`` on every process; a writer that was given no rows is a ``ConfigError``."""
    if not (self._buffered or self.shards or self._rows):
      raise ConfigError(f"activation store {self.site!r}: no rows were added")

    def finish():
      if self._buffered:
        self._flush(self._buffered)
      index = {"format": FORMAT, "site": self.site, "row_shape": list(self.row_shape),
               "dtype": np.dtype(self.dtype).name,
               "num_rows": sum(s["rows"] for s in self.shards), "shards": self.shards}
      def write(tmp):
        with open(tmp, "w") as f:
          json.dump(index, f, indent=1)
      atomic(os.path.join(self.directory, INDEX), write)
    mesh_lib.write_once(f"activation store {self.directory}", finish)
    return ActivationStore(self.directory)

  def __enter__(self) -> "ActivationWriter":
    return self

  def __exit__(self, kind, value, traceback) -> None:
    if kind is None:  # a failed producer leaves no index: the store reads as unfinished
      self.close()


def write_store(directory: str, rows: np.ndarray | Iterable[np.ndarray], site: str,
                shard_rows: int = 65536) -> "ActivationStore":
  """Writes one array, or an iterable of row batches, as a store and opens it."""
  writer = ActivationWriter(directory, site, shard_rows)
  for chunk in ([rows] if isinstance(rows, np.ndarray) else rows):
    writer.add(chunk)
  return writer.close()


class ActivationStore:
  """A finished store, read through memory maps (one shard in memory at a time, at most)."""

  def __init__(self, directory: str):
    index = read_guarded(os.path.join(directory, INDEX), _read_index,
                         "not an activation store, or its write did not finish: write it again")
    self.directory = directory
    self.site: str = index["site"]
    self.row_shape = tuple(index["row_shape"])
    self.dtype = np.dtype(jnp.bfloat16 if index["dtype"] == "bfloat16" else index["dtype"])
    self.shards = index["shards"]
    self.num_rows = int(index["num_rows"])
    self._starts = np.cumsum([0] + [s["rows"] for s in self.shards])
    for i in range(len(self.shards)):   # headers only (memory maps): a damaged shard fails here
      self._shard(i)

  def __len__(self) -> int:
    return self.num_rows

  def _shard(self, i: int) -> np.ndarray:
    """Shard ``i`` as a memory map, checked against the index."""
    shape = (self.shards[i]["rows"], *self.row_shape)

    def read(path):
      rows = np.load(path, mmap_mode="r")
      if self.dtype.name == "bfloat16" and rows.dtype == np.dtype("V2"):
        rows = rows.view(self.dtype)
      if rows.shape != shape or rows.dtype != self.dtype:
        raise DamagedFileError(f"{path}: holds {rows.shape} {rows.dtype}, but {INDEX} says "
                               f"{shape} {self.dtype}; {REWRITE}")
      return rows
    return read_guarded(os.path.join(self.directory, self.shards[i]["file"]), read, REWRITE)

  def array(self) -> np.ndarray:
    """Every row, in write order, as one in-memory array."""
    return np.concatenate([np.asarray(self._shard(i)) for i in range(len(self.shards))])

  def rows(self, indices: np.ndarray) -> np.ndarray:
    """The rows at global ``indices`` (any order, repeats allowed), read shard by shard."""
    indices = np.asarray(indices, np.int64)
    if indices.size and (indices.min() < 0 or indices.max() >= self.num_rows):
      raise IndexError(f"activation store {self.site!r}: index out of range [0, {self.num_rows})")
    out = np.empty((len(indices), *self.row_shape), self.dtype)
    shard_of = np.searchsorted(self._starts, indices, side="right") - 1
    for i in np.unique(shard_of):
      where = np.nonzero(shard_of == i)[0]
      local = indices[where] - self._starts[i]
      order = np.argsort(local)  # memory maps read fastest in file order
      out[where[order]] = self._shard(int(i))[local[order]]
    return out

  def batch(self, step: int, batch_size: int, seed: int = 0) -> np.ndarray:
    """The shuffled batch of ``step``: a pure function of ``(seed, step)``."""
    if batch_size < 1:
      raise ConfigError(f"activation store batch: batch_size={batch_size}: must be >= 1")
    return self.rows(batches.train_indices(seed, step, self.num_rows, batch_size))


def _read_index(path: str) -> dict:
  """``index.json``, its entries checked: a wrong one is a DamagedFileError naming it."""
  with open(path) as f:
    index = json.load(f)
  wrong = _index_fault(index)
  if wrong:
    raise DamagedFileError(f"{path}: {wrong}; {REWRITE}")
  return index


def _index_fault(index) -> str:
  """What is wrong with a parsed index, or ``""``."""
  sizes = lambda v: isinstance(v, list) and all(type(n) is int and n >= 0 for n in v)
  shard = lambda s: (isinstance(s, dict) and isinstance(s.get("file"), str) and bool(s["file"])
                     and os.path.basename(s["file"]) == s["file"] and sizes([s.get("rows")]))
  if not isinstance(index, dict):
    return f"holds a {type(index).__name__}, not an index"
  if index.get("format") != FORMAT:
    return f"format {index.get('format')!r}; this reader knows {FORMAT}"
  if not isinstance(index["site"], str):
    return f"site {index['site']!r} is not a name"
  if not sizes(index["row_shape"]):
    return f"row_shape {index['row_shape']!r} is not a list of sizes"
  if index["dtype"] not in DTYPES:
    return f"dtype {index['dtype']!r} is none the writer writes ({', '.join(DTYPES)})"
  if not (isinstance(index["shards"], list) and all(map(shard, index["shards"]))):
    return "shards is not a list of {file, rows} entries (a file name in the store, a count)"
  total = sum(s["rows"] for s in index["shards"])
  if index["num_rows"] != total:
    return f"num_rows {index['num_rows']!r} is not its shards' {total} rows"
  return ""
