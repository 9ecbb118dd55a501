"""The launcher: ``superalign --config=experiments/<kind>/<name>.py[:ARGS] --workdir=DIR``.

Validates the config, claims and locks the workdir, runs ``config.kind``'s protocol
(``runners.py``). User mistakes print one line and exit 2, without a traceback
(``flag_errors.py``); SIGTERM and Ctrl-C save a checkpoint and exit 143 and 130.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import sys

import ml_collections
from absl import app, flags
from ml_collections import config_flags

import experiments
from superalign import flag_errors
from superalign.core.errors import first_line
from superalign.flag_errors import EXIT_FAILED, fail

DEFAULT_CONFIG = os.path.join(os.path.dirname(experiments.__file__), "w2s", "digits.py")

_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory; resumes if it holds a run.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Multi-host: one process per host joins one run (jax.distributed); "
    "on a TPU pod, SLURM or Open MPI the three flags below are found by themselves.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "With --distributed: HOST:PORT of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None,
                                      "With --distributed: how many processes join.", lower_bound=1)
_PROCESS_ID = flags.DEFINE_integer("process_id", None,
                                   "With --distributed: this process's index, 0 to num_processes-1.",
                                   lower_bound=0)
_PRINT_CONFIG = flags.DEFINE_bool("print_config", False,
                                  "Print the resolved config (every key, with overrides) and exit.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False,
                             "Validate the config against this machine's devices and exit, "
                             "writing nothing.")
_CONFIG = None  # defined in run(): ml_collections reads --config.KEY overrides when defining it

USAGE = """\
usage: superalign [--config=FILE[:ARGS]] [--workdir=DIR] [--config.KEY=VALUE ...]

Runs one experiment. FILE is an ml_collections config (experiments/<kind>/<name>.py, default
experiments/w2s/digits.py); ARGS are its comma-separated arguments, e.g. :smoke or
:smoke,model=cnn. Every key of the config can be overridden with --config.KEY=VALUE; list the
keys and their values with --config=FILE --print_config.

flags:
"""


def load_config() -> ml_collections.ConfigDict:
  """The parsed ``--config`` with its overrides, or one line naming what is wrong with it."""
  try:
    config = _CONFIG.value
    config.get("kind")  # forces the deferred load
  except Exception as e:
    fail(flag_errors.config_load_line(e, sys.argv))
  if not isinstance(config, ml_collections.ConfigDict):
    fail(f"--config: get_config() returned a {type(config).__name__}; return an "
         "ml_collections.ConfigDict (see experiments/ for examples)")
  if "kind" not in config:
    fail("--config: the config has no 'kind' key; set config.kind to a protocol (see "
         "superalign/runners.py RUNNERS)")
  line = flag_errors.tuple_element_line(config, _default_config())
  if line:
    fail(line)
  return config


def _default_config() -> ml_collections.ConfigDict:
  """The config file's own config, without overrides (the file is run again: it is cheap)."""
  path, _, arg = flags.FLAGS["config"].config_filename.partition(":")
  spec = importlib.util.spec_from_file_location("superalign_default_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg or None)


def main(argv):
  if len(argv) > 1:
    fail(f"unexpected argument {argv[1]!r}; use --config=FILE[:ARGS] --workdir=DIR "
         "[--config.KEY=VALUE ...]")
  config = load_config()
  if _PRINT_CONFIG.value:
    print(config)
    return
  import jax
  from superalign.core import runtime
  runtime.setup_logging()
  if _DISTRIBUTED.value or config.get("distributed", False):
    if not _WORKDIR.value and not _DRY_RUN.value:
      fail("--distributed: give --workdir, the one directory (on a file system every host "
           "sees) that all processes of the run share")
    try:
      runtime.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    except (RuntimeError, ValueError, TypeError) as e:  # no cluster found, or JAX already started
      fail(f"--distributed: jax.distributed.initialize() failed: {first_line(e).rstrip('.')}; "
           "pass --coordinator_address, --num_processes and --process_id, or on one host run "
           "without --distributed (and config.distributed=False)")
  elif any(f.present for f in (flags.FLAGS["coordinator_address"], flags.FLAGS["num_processes"],
                               flags.FLAGS["process_id"])):
    fail("--coordinator_address, --num_processes and --process_id take effect only with "
         "--distributed (or config.distributed=True)")
  from superalign import runners
  from superalign.core import workdir as workdir_lib
  runtime.setup_compilation()
  from superalign.core.errors import ConfigError
  from superalign.core.loop import NonFiniteError, Preempted
  workdir = _WORKDIR.value
  try:
    runners.validate(config)
    if _DRY_RUN.value:
      print(f"superalign: the {config.kind} config is valid on {jax.device_count()} "
            f"{jax.default_backend()} device(s)")
      return
    with workdir_lib.claim(config, workdir, os.environ.get("SUPERALIGN_RUNS", "runs")) as workdir:
      print(f"superalign: {config.kind} run in {workdir}", flush=True)
      results = runners.execute(config, workdir)
  except ConfigError as e:
    fail(str(e))
  except NonFiniteError as e:
    advice = "lower optim.learning_rate"
    if "optim" in config and not config.optim.get("clip_norm", 1.0):
      advice += " or set optim.clip_norm"
    where = ("in a new --workdir (this one holds checkpoints of the diverged run)"
             if workdir_lib.holds_work(workdir) else "(this workdir takes the new config)")
    fail(f"{e}; {advice} and run again {where}", EXIT_FAILED)
  except Preempted as e:
    fail(f"{e}; run the same command again to resume", 128 + int(e.signum))
  except KeyboardInterrupt:  # Ctrl-C outside training (loading data, compiling): nothing to save
    fail("interrupted; run the same command again to resume", 130)
  except OSError as e:
    if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
      raise
    fail(workdir_lib.os_error_line(workdir or ".", e), EXIT_FAILED)
  if jax.process_index() == 0:
    summary = results.get("summary") or {k: v for k, v in results.items()
                                          if isinstance(v, (int, float, str))}
    print(summary if isinstance(summary, str) else json.dumps(summary, indent=2))
    print(f"superalign: results in {os.path.join(workdir, 'results.json')}")


def print_help() -> None:
  print(USAGE, end="")
  for flag in ("config", "workdir", "print_config", "dry_run", "distributed", "coordinator_address",
               "num_processes", "process_id"):
    f = flags.FLAGS[flag]
    print(f"  --{flag}: {f.help}" + (f" (default: {f.default_as_str})" if f.default_as_str else ""))


def run():
  """Console-script entry point."""
  global _CONFIG
  os.environ.setdefault("MPLBACKEND", "Agg")   # plots are files; no display needed
  try:
    _CONFIG = config_flags.DEFINE_config_file(
        "config", DEFAULT_CONFIG, "Experiment config file, optionally with :ARGS.",
        lock_config=True)
  except (AttributeError, KeyError) as e:
    fail(flag_errors.unknown_override(e, sys.argv))
  if any(a in ("-h", "--help", "-?", "--helpshort", "--helpfull") for a in sys.argv[1:]):
    print_help()
    sys.exit(0)
  app.run(main, flags_parser=flag_errors.parse_flags)


if __name__ == "__main__":
  run()
