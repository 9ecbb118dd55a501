"""The launcher: ``superalign --config=experiments/<kind>/<name>.py[:ARGS] --workdir=DIR``.

Validates the config, prepares the workdir, runs ``config.kind``'s protocol (``runners.py``).
User mistakes print one line and exit 2, without a traceback (``flag_errors.py``).
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags
from ml_collections import config_flags

import experiments
from superalign import flag_errors
from superalign.flag_errors import EXIT_FAILED, EXIT_PREEMPTED, fail

DEFAULT_CONFIG = os.path.join(os.path.dirname(experiments.__file__), "w2s", "digits.py")

_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory; resumes if it holds a run.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False,
                                 "Call jax.distributed.initialize() (multi-host).")
_CONFIG = None  # defined in run(): ml_collections reads --config.KEY overrides when defining it


def main(argv):
  if len(argv) > 1:
    fail(f"unexpected argument {argv[1]!r}; use --config=FILE[:ARGS] --workdir=DIR "
         "[--config.KEY=VALUE ...]")
  try:
    config = _CONFIG.value
    config.get("kind")  # forces the deferred load
  except Exception as e:
    fail(flag_errors.config_load_line(e))
  import jax
  if _DISTRIBUTED.value or config.get("distributed", False):
    jax.distributed.initialize()
  from superalign import runners
  from superalign.core import runtime, workdir as workdir_lib
  runtime.setup_logging()
  runtime.setup_compilation()
  from superalign.core.errors import ConfigError
  from superalign.core.loop import NonFiniteError, Preempted
  try:
    runners.validate(config)
    workdir = workdir_lib.prepare(config, _WORKDIR.value, os.environ.get("SUPERALIGN_RUNS", "runs"))
    print(f"superalign: {config.kind} run in {workdir}", flush=True)
    results = runners.execute(config, workdir)
  except ConfigError as e:
    fail(str(e))
  except NonFiniteError as e:
    fail(f"{e}; lower optim.learning_rate or set optim.clip_norm", EXIT_FAILED)
  except Preempted as e:
    fail(f"{e}; run the same command again to resume", EXIT_PREEMPTED)
  if jax.process_index() == 0:
    summary = results.get("summary") or {k: v for k, v in results.items()
                                          if isinstance(v, (int, float, str))}
    print(summary if isinstance(summary, str) else json.dumps(summary, indent=2))
    print(f"superalign: results in {os.path.join(workdir, 'results.json')}")


def run():
  """Console-script entry point."""
  global _CONFIG
  try:
    _CONFIG = config_flags.DEFINE_config_file(
        "config", DEFAULT_CONFIG, "Experiment config file, optionally with :ARGS.",
        lock_config=True)
  except (AttributeError, KeyError) as e:
    fail(flag_errors.unknown_override(e, sys.argv))
  app.run(main, flags_parser=flag_errors.parse_flags)


if __name__ == "__main__":
  run()
