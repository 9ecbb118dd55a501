"""Process set-up for a run: log lines, the persistent compilation cache, multi-host start."""

from __future__ import annotations

import contextlib
import logging as std_logging
import os
import sys
import threading
import time

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
                           process_id: int | None = None, *, report_every: float = 30.0) -> None:
  """Joins this process to a multi-host run (``jax.distributed.initialize``), before JAX touches a
  device. Arguments left ``None`` are detected on a TPU pod, SLURM or Open MPI. CPU processes
  exchange collectives over gloo (the default CPU client has none across processes). While the
  others have not joined, a line every ``report_every`` seconds says who is awaited."""
  from superalign.core.loop import stop_signals
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  with stop_signals(), waiting_lines(coordinator_address, num_processes, process_id, report_every):
    in_thread(lambda: jax.distributed.initialize(coordinator_address, num_processes, process_id))
  log = std_logging.getLogger("superalign")
  log.info("process %d of %d: %d local device(s) of %d", jax.process_index(), jax.process_count(),
           jax.local_device_count(), jax.device_count())


def in_thread(fn) -> None:
  """``fn()`` in a daemon thread while the main thread waits in short joins: Python runs a signal's
  handler in the main thread between bytecodes, never while it is blocked in a C++ call (a join
  waiting for peers), so SIGTERM or Ctrl-C there would otherwise kill the process without a line
  or wait for JAX's timeout. A stop leaves the thread blocked: exit with ``os._exit``."""
  if threading.current_thread() is not threading.main_thread():
    return fn()
  raised: list[BaseException] = []

  def target():
    try:
      fn()
    except BaseException as e:  # handed to the main thread
      raised.append(e)
  thread = threading.Thread(target=target, name="superalign-join", daemon=True)
  thread.start()
  while thread.is_alive():
    thread.join(0.1)
  if raised:
    raise raised[0]


def address_problem(address: str) -> str | None:
  """What is wrong with a coordinator address (``HOST:PORT``), or None."""
  host, sep, port = address.rpartition(":")
  if not sep or not host.strip("[]"):
    return "expected HOST:PORT of process 0, e.g. 10.0.0.2:8476"
  if not port.isdigit() or not 0 < int(port) < 65536:
    return f"port {port!r} is not a number in 1-65535; expected HOST:PORT, e.g. 10.0.0.2:8476"
  return None


@contextlib.contextmanager
def waiting_lines(address: str | None, num_processes: int | None, process_id: int | None,
                  every: float):
  """While the block runs (a blocking join), a line every ``every`` seconds from a background
  thread: a process that waits on peers that never start would otherwise say nothing."""
  done, started = threading.Event(), time.monotonic()
  where = f" at {address}" if address else ""

  def line(waited: float) -> str:
    if num_processes is None or process_id is None:
      return f"waited {waited:.0f} s for the other processes of the run to join{where}"
    if process_id == 0:
      others = "1" if num_processes == 2 else f"1 to {num_processes - 1}"
      return (f"process 0 of {num_processes}: waited {waited:.0f} s for the other "
              f"{num_processes - 1} process(es) to join{where}; start process(es) {others} "
              "with the same command and their own process id (--process_id)")
    return (f"process {process_id} of {num_processes}: waited {waited:.0f} s to reach process 0"
            f"{where}; is it running, and is the address right and reachable from here?")

  def report():
    log = std_logging.getLogger("superalign")
    while not done.wait(every):
      log.warning("%s", line(time.monotonic() - started))

  reporter = threading.Thread(target=report, name="superalign-waiting", daemon=True)
  reporter.start()
  try:
    yield
  finally:
    done.set()
    reporter.join()
