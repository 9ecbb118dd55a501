"""The launcher: ``superalign --config=experiments/<kind>/<name>.py[:ARGS] --workdir=DIR``.

Validates the config, prepares the workdir, dispatches on ``config.kind`` (see ``runners.py``),
writes ``results.json``. User mistakes print one line and exit 2, without a traceback.
"""

from __future__ import annotations

import datetime
import json
import logging as std_logging
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

import experiments

DEFAULT_CONFIG = os.path.join(os.path.dirname(experiments.__file__), "w2s", "digits.py")
DEFAULT_ROOT = "runs"  # fresh workdirs go to ./runs/<kind>-<timestamp> (or $SUPERALIGN_RUNS)

_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory; resumes if it holds a run.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False,
                                 "Call jax.distributed.initialize() (multi-host).")
_CONFIG = None  # defined in run(): ml_collections reads --config.KEY overrides when defining it


EXIT_USAGE, EXIT_FAILED, EXIT_PREEMPTED = 2, 1, 143


def _fail(message: str, code: int = EXIT_USAGE):
  print(f"superalign: error: {message}", file=sys.stderr)
  sys.exit(code)


def _parse_flags(argv: list[str]) -> list[str]:
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _fail(_flag_error_line(e))
  except (AttributeError, KeyError) as e:  # an override of a key that does not exist
    _fail(_unknown_override(e, argv))
  except Exception as e:  # the config file itself failed to load or to run get_config
    _fail(_first_line(e))


def _flag_error_line(e: flags.Error) -> str:
  """absl wraps errors from a config file (with their traceback) in its own message: keep the
  flag and the underlying error's last line, e.g. ``--config=x.py: FileNotFoundError: ...``."""
  lines = [l for l in str(e).splitlines() if l.strip()]
  if len(lines) > 1 and any(l.startswith("Traceback") for l in lines):
    flag = lines[0].split(": ", 1)[0]
    cause = lines[-1]
    name, sep, text = cause.partition(": ")
    if sep and "." in name and " " not in name:  # drop a dotted exception class path
      cause = text if name.endswith("ConfigError") else f"{name.rsplit('.', 1)[-1]}: {text}"
    return f"{flag}: {cause}"
  return lines[0] if lines else type(e).__name__


def _first_line(e: BaseException) -> str:
  text = str(e).strip()
  return text.splitlines()[0] if text else type(e).__name__


def _prepare_workdir(config, workdir: str | None) -> str:
  import jax
  if workdir is None:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    workdir = os.path.join(os.environ.get("SUPERALIGN_RUNS", DEFAULT_ROOT), f"{config.kind}-{stamp}")
  workdir = os.path.abspath(os.path.expanduser(workdir))
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    _fail(f"--workdir={workdir}: exists and is not a directory")
  saved_path = os.path.join(workdir, "config.json")
  resolved = json.loads(config.to_json_best_effort())
  if os.path.exists(saved_path):
    with open(saved_path) as f:
      saved = json.load(f)
    diff = _first_difference(saved, resolved)
    if diff:
      _fail(f"--workdir={workdir}: holds a run with a different config ({diff}); resume with the "
            "same config or choose a new --workdir")
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(saved_path, "w") as f:
      json.dump(resolved, f, indent=2, sort_keys=True)
  return workdir


def _first_difference(a, b, prefix: str = "") -> str | None:
  if isinstance(a, dict) and isinstance(b, dict):
    for key in sorted(set(a) | set(b)):
      d = _first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
      if d:
        return d
    return None
  return None if a == b else f"{prefix[:-1]}: {a!r} then, {b!r} now"


def _setup_logging() -> None:
  """Our progress lines at INFO on stderr; libraries (Orbax, absl) only at WARNING."""
  logging.set_verbosity(logging.WARNING)
  handler = std_logging.StreamHandler(sys.stderr)
  handler.setFormatter(std_logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
  logger = std_logging.getLogger("superalign")
  logger.handlers[:] = [handler]
  logger.setLevel(std_logging.INFO)
  logger.propagate = False


def _setup_compilation() -> None:
  """Compiled programs persist across runs (``$SUPERALIGN_XLA_CACHE``, "" to disable); on CPU,
  non-partitionable threefry compiles random initializers 2-3x faster (sharding cannot matter
  there, and values stay independent of the mesh either way)."""
  import jax
  cache = os.environ.get("SUPERALIGN_XLA_CACHE",
                         os.path.join(os.path.expanduser("~"), ".cache", "superalign", "xla"))
  if cache:
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  if jax.default_backend() == "cpu":
    jax.config.update("jax_threefry_partitionable", False)


def main(argv):
  if len(argv) > 1:
    _fail(f"unexpected argument {argv[1]!r}; use --config=FILE[:ARGS] --workdir=DIR "
          "[--config.KEY=VALUE ...]")
  try:
    config = _CONFIG.value
    config.get("kind")  # forces the deferred load
  except Exception as e:  # ml_collections defers config-file load errors to first access
    _fail(f"--config: {_first_line(e)}" if "Failed loading config file" not in str(e)
          else "--config: " + _missing_config_line(e))
  if _DISTRIBUTED.value or config.get("distributed", False):
    import jax
    jax.distributed.initialize()
  _setup_logging()
  _setup_compilation()

  from superalign import config as config_lib, runners
  from superalign.core.errors import ConfigError
  from superalign.core.loop import NonFiniteError, Preempted
  try:
    config_lib.validate(config)
    workdir = _prepare_workdir(config, _WORKDIR.value)
    print(f"superalign: {config.kind} run in {workdir}", flush=True)
    results = runners.get(config.kind).run(config, workdir)
  except ConfigError as e:
    _fail(str(e))
  except NonFiniteError as e:
    _fail(f"{e}; lower optim.learning_rate or set optim.clip_norm", EXIT_FAILED)
  except Preempted as e:
    _fail(f"{e}; run the same command again to resume", EXIT_PREEMPTED)
  import jax
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump(results, f, indent=2)
    summary = results.get("summary") or {k: v for k, v in results.items()
                                          if isinstance(v, (int, float, str))}
    print(summary if isinstance(summary, str) else json.dumps(summary, indent=2))
    print(f"superalign: results in {os.path.join(workdir, 'results.json')}")


def _unknown_override(e: BaseException, argv: list[str]) -> str:
  """The ``--config.KEY=VALUE`` override whose key does not exist, as one line."""
  name = str(e).strip("\"' ").split("'")[0]
  for arg in argv:
    if arg.startswith("--config."):
      path = arg[len("--config."):].split("=", 1)[0]
      if name in path.split("."):
        return f"--config.{path}: no such key in the config; see the config file for valid keys"
  return f"--config override: no such key {name!r}; see the config file for valid keys"


def _missing_config_line(e: BaseException) -> str:
  text = str(e)
  for line in text.splitlines():
    if "No such file" in line or "Errno" in line:
      return line.strip()
  return _first_line(e)


def run():
  """Console-script entry point."""
  global _CONFIG
  try:
    _CONFIG = config_flags.DEFINE_config_file(
        "config", DEFAULT_CONFIG, "Experiment config file, optionally with :ARGS.",
        lock_config=True)
  except (AttributeError, KeyError) as e:
    _fail(_unknown_override(e, sys.argv))
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
