"""The launcher: ``superalign --config=experiments/<kind>/<name>.py[:ARGS] --workdir=DIR``.

Parses the flags and runs the one launch sequence (``launch.runners.launch``: validate, claim and
lock the workdir, run ``config.kind``'s protocol, write results.json). User mistakes print one
line and exit 2, without a traceback; SIGTERM and Ctrl-C save a checkpoint and exit 143 and 130
(``launch.flags.exit_line``).
"""

from __future__ import annotations

import os
import sys

from absl import app, flags
from ml_collections import config_flags

from superalign.core.errors import first_line
from superalign.launch import flags as launch_flags
from superalign.launch.flags import fail

_CONFIG = None  # defined in run(): ml_collections reads --config.KEY overrides when defining it


def main(argv):
  """Runs the experiment the parsed flags name (``app.run``'s main; ``argv``, what the flags
  left, must be the program name alone): prints the config with ``--print_config``, joins a
  multi-host run with ``--distributed``, then launches; a user mistake or a stop exits with its
  one line."""
  if len(argv) > 1:
    fail(f"unexpected argument {argv[1]!r}; use --config=FILE[:ARGS] --workdir=DIR "
         "[--config.KEY=VALUE ...]")
  config = launch_flags.load_config(_CONFIG)
  if launch_flags.PRINT_CONFIG.value:
    print(config)
    return
  from superalign.launch import runners, runtime
  runtime.setup_logging()
  workdir, distributed = launch_flags.WORKDIR.value, launch_flags.DISTRIBUTED.value
  if distributed or config.get("distributed", False):
    if not workdir and not launch_flags.DRY_RUN.value:
      fail("--distributed: give --workdir, the one directory (on a file system every host "
           "sees) that all processes of the run share")
    address = launch_flags.COORDINATOR.value
    problem = address is not None and runtime.address_problem(address)
    if problem:
      fail(f"--coordinator_address={address}: {problem}")
    count, index = launch_flags.NUM_PROCESSES.value, launch_flags.PROCESS_ID.value
    if count is not None and index is not None and index >= count:
      fail(f"--process_id={index}: the processes are numbered 0 to {count - 1} "
           f"(--num_processes={count})")
    try:
      runtime.initialize_distributed(address, count, index)
    except (RuntimeError, ValueError, TypeError) as e:  # no cluster found, or JAX already started
      fail(f"--distributed: jax.distributed.initialize() failed: {first_line(e).rstrip('.')}; "
           "pass --coordinator_address, --num_processes and --process_id, or on one host run "
           "without --distributed (and config.distributed=False)")
    except BaseException as e:  # SIGTERM or Ctrl-C while waiting for the other processes
      line = launch_flags.exit_line(e, config, workdir)
      if line is None:
        raise
      fail(*line, hard=True)   # the join's thread is still blocked in JAX
  elif any(flags.FLAGS[f].present for f in launch_flags.CLUSTER_FLAGS):
    fail("--coordinator_address, --num_processes and --process_id take effect only with "
         "--distributed (or config.distributed=True)")
  from superalign.core.loop import Preempted
  try:
    runners.launch(config, workdir, dry_run=launch_flags.DRY_RUN.value,
                   root=os.environ.get("SUPERALIGN_RUNS", "runs"))
  except (Exception, KeyboardInterrupt, Preempted) as e:
    line = launch_flags.exit_line(e, config, workdir)
    if line is None:
      raise
    fail(*line)


def run():
  """Console-script entry point."""
  global _CONFIG
  os.environ.setdefault("MPLBACKEND", "Agg")   # plots are files; no display needed
  try:
    _CONFIG = config_flags.DEFINE_config_file(
        "config", launch_flags.DEFAULT_CONFIG, "Experiment config file, optionally with :ARGS.",
        lock_config=True)
  except (AttributeError, KeyError) as e:
    fail(launch_flags.unknown_override(e, sys.argv))
  if any(a in ("-h", "--help", "-?", "--helpshort", "--helpfull") for a in sys.argv[1:]):
    launch_flags.print_help()
    sys.exit(0)
  app.run(main, flags_parser=launch_flags.parse_flags)


if __name__ == "__main__":
  run()
