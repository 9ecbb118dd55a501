"""The launcher's flags and the one-line errors: absl's and ml_collections' errors while parsing,
and the table from a run's exceptions to a line and an exit code (``exit_line``)."""

from __future__ import annotations

import errno
import importlib.util
import os
import re
import sys

import ml_collections
from absl import flags

import experiments
from superalign.config import RENAMED
from superalign.core.errors import ConfigError, first_line

EXIT_USAGE, EXIT_FAILED, EXIT_PREEMPTED = 2, 1, 143
DEFAULT_CONFIG = os.path.join(os.path.dirname(experiments.__file__), "w2s", "digits.py")

WORKDIR = flags.DEFINE_string("workdir", None, "Output directory; resumes if it holds a run.")
DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Multi-host: one process per host joins one run (jax.distributed); "
    "on a TPU pod, SLURM or Open MPI the three flags below are found by themselves.")
COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                  "With --distributed: HOST:PORT of process 0.")
NUM_PROCESSES = flags.DEFINE_integer("num_processes", None,
                                     "With --distributed: how many processes join.", lower_bound=1)
PROCESS_ID = flags.DEFINE_integer("process_id", None,
                                  "With --distributed: this process's index, 0 to num_processes-1.",
                                  lower_bound=0)
PRINT_CONFIG = flags.DEFINE_bool("print_config", False,
                                 "Print the resolved config (every key, with overrides) and exit.")
DRY_RUN = flags.DEFINE_bool("dry_run", False,
                            "Validate the config against this machine's devices and exit, "
                            "writing nothing.")
CLUSTER_FLAGS = ("coordinator_address", "num_processes", "process_id")

USAGE = """\
usage: superalign [--config=FILE[:ARGS]] [--workdir=DIR] [--config.KEY=VALUE ...]

Runs one experiment. FILE is an ml_collections config (experiments/<kind>/<name>.py, default
experiments/w2s/digits.py); ARGS are its comma-separated arguments, e.g. :smoke or
:smoke,model=cnn. Every key of the config can be overridden with --config.KEY=VALUE; list the
keys and their values with --config=FILE --print_config.

flags:
"""


def fail(message: str, code: int = EXIT_USAGE, hard: bool = False):
  """Prints the one line and exits; ``hard``: at once (``os._exit``), when a thread is blocked in
  a call that a normal exit would wait for."""
  print(f"superalign: error: {message}", file=sys.stderr, flush=True)
  if hard:
    os._exit(code)
  sys.exit(code)


def print_help() -> None:
  """Prints the usage and the launcher's own flags with their defaults (``--help``)."""
  print(USAGE, end="")
  for flag in ("config", "workdir", "print_config", "dry_run", "distributed", *CLUSTER_FLAGS):
    f = flags.FLAGS[flag]
    print(f"  --{flag}: {f.help}" + (f" (default: {f.default_as_str})" if f.default_as_str else ""))


def load_config(holder) -> ml_collections.ConfigDict:
  """The parsed ``--config`` (``holder``: its flag) with its overrides, or one line naming what is
  wrong with it."""
  try:
    config = holder.value
    config.get("kind")  # forces the deferred load
  except Exception as e:
    fail(config_load_line(e, sys.argv))
  if not isinstance(config, ml_collections.ConfigDict):
    fail(f"--config: get_config() returned a {type(config).__name__}; return an "
         "ml_collections.ConfigDict (see experiments/ for examples)")
  if "kind" not in config:
    fail("--config: the config has no 'kind' key; set config.kind to a protocol (see "
         "superalign/launch/runners.py RUNNERS)")
  line = tuple_element_line(config, _default_config())
  if line:
    fail(line)
  return config


def config_from_file(path, arg: str | None = None) -> ml_collections.ConfigDict:
  """``get_config(arg)`` of the config file at ``path``, without overrides."""
  spec = importlib.util.spec_from_file_location("superalign_default_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def _default_config() -> ml_collections.ConfigDict:
  """The config file's own config, without overrides (the file is run again: it is cheap)."""
  path, _, arg = flags.FLAGS["config"].config_filename.partition(":")
  return config_from_file(path, arg or None)


def exit_line(e: BaseException, config, workdir: str | None) -> tuple[str, int] | None:
  """A run's exception as ``(one line, exit code)``, or None for a bug (its traceback shows)."""
  from superalign.core.loop import NonFiniteError, Preempted
  from superalign.launch import workdir as workdir_lib
  from superalign.results.files import DamagedFileError
  if isinstance(e, (ConfigError, DamagedFileError)):
    return str(e), EXIT_USAGE
  if isinstance(e, NonFiniteError) and e.loaded:  # loaded so, not diverged: no training advice
    if e.loaded.startswith("checkpoint "):
      return (f"{e}; move {e.loaded[len('checkpoint '):]} aside to resume from the checkpoint "
              "before it, or run again in a new workdir"), EXIT_FAILED
    return f"{e}; check the model files or the stage it starts from", EXIT_FAILED
  if isinstance(e, NonFiniteError):
    advice = "lower optim.learning_rate"
    if "optim" in config and not config.optim.get("clip_norm", 1.0):
      advice += " or set optim.clip_norm"
    if workdir is None:
      where = "(a new run directory is made)"
    else:
      where = ("in a new workdir (this one holds checkpoints of the diverged run)"
               if workdir_lib.holds_work(workdir) else "(this workdir takes the new config)")
    return f"{e}; {advice} and run again {where}", EXIT_FAILED
  if isinstance(e, Preempted):
    return f"{e}; run the same command again to resume", 128 + int(e.signum)
  if isinstance(e, KeyboardInterrupt):  # Ctrl-C before the launch's handler: nothing saved
    return "interrupted; nothing saved; run the same command again to resume", 130
  if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
    return workdir_lib.os_error_line(workdir or ".", e), EXIT_FAILED
  line = isinstance(e, OSError) and workdir and workdir_lib.blocked_line(workdir, e)
  return (line, EXIT_USAGE) if line else None


def flag_error_line(e: flags.Error) -> str:
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


def _config_arg(argv: list[str]) -> str:
  return next((a for a in argv if a.startswith("--config=")), "--config")


def unknown_override(e: BaseException, argv: list[str]) -> str:
  """An AttributeError or KeyError while ml_collections applies the ``--config`` file and its
  ``--config.KEY=VALUE`` overrides, as one line: the file has no ``get_config``, or an override
  names a key that does not exist (with ml_collections' "did you mean" suggestion)."""
  text = str(e)
  if "get_config" in text:
    return (f"{_config_arg(argv)}: defines no get_config(); a config file defines "
            "get_config(arg=None) returning an ml_collections.ConfigDict")
  for _ in range(3):  # ml_collections nests repr()s of its message: undo them
    text = text.replace("\\'", "'").replace("\\n", "\n").replace('\\"', '"')
  leaf = re.search(r"Attribute <class '(\w+)'>\.(\w+) does not exist.*lookup: ([\w.]+)", text)
  if leaf:  # a key below a leaf, such as --config.train.num_steps.value
    kind, name, path = leaf.groups()
    parent = path[:-len(name) - 1]
    return f"--config.{path}: {parent} is a value ({kind}), not a block with a key {name!r}"
  names = re.findall(r"'([A-Za-z_][\w]*)'", text)
  suggestion = re.search(r'Did you mean "([^"]+)"', text)
  name = names[0] if names else text.strip("\"' ")
  hint = (f"; did you mean {suggestion.group(1)!r}?" if suggestion else
          "; list the valid keys with --print_config")
  for arg in argv:
    if arg.startswith("--config."):
      path = arg[len("--config."):].split("=", 1)[0]
      parts = path.split(".")
      if path in RENAMED:
        return f"--config.{path}: no such key; it is now {RENAMED[path]}"
      if name in parts:
        parent = ".".join(parts[:parts.index(name)])
        where = f" in {parent}" if parent else " at the top level"
        return f"--config.{path}: no such key {name!r}{where}{hint}"
  return f"--config override: no such key {name!r}{hint}"


def tuple_element_line(config, default, prefix: str = "") -> str | None:
  """ml_collections checks an override's type against the default's, but not a tuple's
  elements (``--config.sandwich.sweep="('a',)"`` is a tuple): the first tuple whose elements
  are not of the type of the default's elements, as one line, or None."""
  for key, value in config.items():
    name, base = prefix + key, default.get(key) if hasattr(default, "get") else None
    if hasattr(value, "items"):
      line = tuple_element_line(value, base if hasattr(base, "items") else {}, name + ".")
      if line:
        return line
    elif isinstance(value, (tuple, list)) and isinstance(base, (tuple, list)) and base:
      kinds = {type(x) for x in base}
      if len(kinds) != 1:
        continue
      kind = kinds.pop()
      allowed = (int, float) if kind is float else kind
      if any(not isinstance(x, allowed) or isinstance(x, bool) != (kind is bool) for x in value):
        return f"--config.{name}={value!r}: expected a tuple of {kind.__name__}, like {base!r}"
  return None


def config_load_line(e: BaseException, argv: list[str] = ()) -> str:
  """ml_collections defers a config file's load errors to first access: the file's problem."""
  text = str(e)
  if isinstance(e, AttributeError) and "get_config" in text:
    return unknown_override(e, list(argv))
  if "Failed loading config file" not in text:   # ml_collections' wording adds nothing
    return f"--config: {first_line(e).split('earlier failure to load: ', 1)[-1]}"
  for line in text.splitlines():
    if "No such file" in line or "Errno" in line:
      return f"--config: {line.strip()}"
  return f"--config: {first_line(e)}"


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parser with every failure as one line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    fail(flag_error_line(e))
  except (AttributeError, KeyError) as e:  # an override of a key that does not exist
    fail(unknown_override(e, argv))
  except Exception as e:  # the config file itself failed to load or to run get_config
    fail(config_file_line(e, argv))


def config_file_line(e: BaseException, argv: list[str]) -> str:
  """An error raised while the ``--config`` file is run, naming that file and the error's type
  (``invalid syntax (x.py, line 3)`` or ``division by zero`` alone does not say where)."""
  kind = "" if isinstance(e, ConfigError) else f"{type(e).__name__}: "
  return f"{_config_arg(argv)}: {kind}{first_line(e)}"
