"""safetensors files read in place: each tensor a read-only view of the memory-mapped file.

The format (https://github.com/huggingface/safetensors): an 8-byte little-endian header length
``n``, ``n`` bytes of JSON ``{name: {"dtype", "shape", "data_offsets": [begin, end]}, ...}`` (and
an optional ``__metadata__`` of strings), then the data, every tensor a C-ordered little-endian
byte range counted from the end of the header, ranges contiguous and covering it all. ``read``
checks all of it against the file's size before any tensor is touched, and returns views of one
``np.memmap``: no copy, no conversion (a bfloat16 tensor is an ``ml_dtypes.bfloat16`` array), and
a page of the file is read only when some slice of it is (``hf_gpt2.place`` reads each device's
slice). Writing is ``safetensors.numpy.save_file``, which writes ``ml_dtypes.bfloat16`` as BF16.
"""

from __future__ import annotations

import json
import math
import os
import struct

import ml_dtypes
import numpy as np

from superalign.results.files import DamagedFileError

# safetensors' dtype names (the ones numpy holds) and the arrays they read as.
DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
          "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
          "BOOL": np.bool_}
METADATA = "__metadata__"
# The header's own size cap (safetensors refuses larger ones): a length past it is garbage.
MAX_HEADER = 100_000_000


def read(file: str, fix: str = "") -> dict[str, np.ndarray]:
  """Every tensor of the safetensors ``file`` by name, each a read-only ``np.memmap`` view in
  the stored dtype; a missing, truncated or garbled file (header, dtypes, shapes, offsets) is one
  DamagedFileError line ``<file>: <what is wrong>; <fix>``."""
  def damaged(what: str) -> DamagedFileError:
    return DamagedFileError(f"{file}: {what}" + (f"; {fix}" if fix else ""))

  try:
    with open(file, "rb") as f:
      size = os.fstat(f.fileno()).st_size
      start = f.read(8)
      if len(start) < 8:
        raise damaged(f"unreadable (a {size}-byte file, shorter than a safetensors header)")
      (n,) = struct.unpack("<Q", start)
      if not 2 <= n <= min(MAX_HEADER, size - 8):
        raise damaged(f"unreadable (a header of {n} bytes in a {size}-byte file)")
      text = f.read(n)
  except OSError as e:
    raise damaged((e.strerror or str(e)).lower()) from e
  try:
    header = json.loads(text.decode("utf-8"))
  except (UnicodeDecodeError, ValueError) as e:
    raise damaged(f"unreadable (its header is not JSON: {e})") from None
  if not isinstance(header, dict):
    raise damaged("unreadable (its header is not a JSON object)")
  entries = {name: _entry(name, spec, damaged) for name, spec in header.items()
             if name != METADATA}
  data = size - 8 - n
  at = 0
  for name, (_, _, (begin, end)) in sorted(entries.items(), key=lambda kv: kv[1][2]):
    if begin != at:
      raise damaged(f"unreadable (tensor {name!r} starts at byte {begin} of the data, not {at})")
    at = end
  if at != data:
    raise damaged(f"unreadable (its tensors cover {at} bytes of data, the file holds {data}; "
                  "truncated or extended)")
  if not entries:
    return {}
  whole = np.memmap(file, dtype=np.uint8, mode="r")
  return {name: whole[8 + n + begin:8 + n + end].view(dtype).reshape(shape)
          for name, (dtype, shape, (begin, end)) in entries.items()}


def _entry(name: str, spec, damaged) -> tuple[np.dtype, tuple[int, ...], tuple[int, int]]:
  """``(dtype, shape, (begin, end))`` of one header entry, checked against itself."""
  if not isinstance(spec, dict):
    raise damaged(f"unreadable (header entry {name!r} is not an object)")
  code, shape, offsets = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
  if code not in DTYPES:
    raise damaged(f"unreadable (tensor {name!r} has dtype {code!r}; superalign reads "
                  f"{', '.join(DTYPES)})")
  if not (isinstance(shape, list) and
          all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
    raise damaged(f"unreadable (tensor {name!r} has shape {shape!r})")
  if not (isinstance(offsets, list) and len(offsets) == 2 and
          all(isinstance(o, int) and not isinstance(o, bool) for o in offsets) and
          0 <= offsets[0] <= offsets[1]):
    raise damaged(f"unreadable (tensor {name!r} has data_offsets {offsets!r})")
  dtype = np.dtype(DTYPES[code])
  if offsets[1] - offsets[0] != math.prod(shape) * dtype.itemsize:
    raise damaged(f"unreadable (tensor {name!r} has data_offsets {offsets} spanning "
                  f"{offsets[1] - offsets[0]} bytes, not the {math.prod(shape) * dtype.itemsize} "
                  f"of its shape {tuple(shape)} and dtype {code})")
  return dtype, tuple(shape), (offsets[0], offsets[1])
