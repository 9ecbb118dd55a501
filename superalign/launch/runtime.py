"""Process set-up for a run: log lines, the persistent compilation cache, multi-host start."""

from __future__ import annotations

import logging as std_logging
import os
import sys

import jax
from absl import logging


def setup_logging() -> None:
  """Our progress lines at INFO on stderr; libraries (Orbax, absl) only at WARNING."""
  logging.set_verbosity(logging.WARNING)
  handler = std_logging.StreamHandler(sys.stderr)
  handler.setFormatter(std_logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
  logger = std_logging.getLogger("superalign")
  logger.handlers[:] = [handler]
  logger.setLevel(std_logging.INFO)
  logger.propagate = False


def setup_compilation() -> None:
  """Compiled programs persist across runs (``$SUPERALIGN_XLA_CACHE``, "" to disable); on CPU,
  non-partitionable threefry compiles random initializers 2-3x faster (values stay independent
  of the mesh either way)."""
  cache = os.environ.get("SUPERALIGN_XLA_CACHE",
                         os.path.join(os.path.expanduser("~"), ".cache", "superalign", "xla"))
  if cache:
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  if jax.default_backend() == "cpu":
    jax.config.update("jax_threefry_partitionable", False)


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> None:
  """Joins this process to a multi-host run (``jax.distributed.initialize``), before JAX touches a
  device. Arguments left ``None`` are detected on a TPU pod, SLURM or Open MPI. CPU processes
  exchange collectives over gloo (the default CPU client has none across processes)."""
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address, num_processes, process_id)
  log = std_logging.getLogger("superalign")
  log.info("process %d of %d: %d local device(s) of %d", jax.process_index(), jax.process_count(),
           jax.local_device_count(), jax.device_count())
