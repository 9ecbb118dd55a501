"""The one batched apply: a jitted per-batch function over whole arrays.

Fixed-size batches (the last padded with row 0, so one program serves every batch), each sharded
over the mesh's batch axes from this process's share of it, and the outputs gathered across
processes. Every "run a model over a data set" in the framework goes through here: predictions,
features, subquestion answers, debate games.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from superalign.core import batches, mesh as mesh_lib


def batched_apply(fn: Callable[..., jax.Array], params: Any, arrays: Mapping[str, np.ndarray],
                  mesh: Mesh, batch_size: int, *, stacked: bool = False,
                  seed: int | None = None) -> np.ndarray:
  """``fn(params, batch)`` (or ``fn(params, batch, key)`` with ``seed``: batch ``i`` gets
  ``fold_in(key(seed), i)``) over the rows of ``arrays``, concatenated on the host.

  ``stacked``: ``fn`` returns ``[runs, batch, ...]`` (independent runs on a leading axis) and the
  result is ``[runs, rows, ...]``.
  """
  n = len(next(iter(arrays.values())))
  out = []
  for i, (idx, valid) in enumerate(batches.eval_indices(n, batch_size)):
    share = batches.process_slice(idx)
    batch = mesh_lib.shard_batch({k: v[share] for k, v in arrays.items()}, mesh)
    args = (params, batch) if seed is None else (
        params, batch, jax.random.fold_in(jax.random.key(seed), i))
    y = np.asarray(multihost_utils.process_allgather(fn(*args), tiled=True))
    out.append(y[:, :valid] if stacked else y[:valid])
  return np.concatenate(out, axis=1 if stacked else 0)
