"""absl and ml_collections errors, and the launcher's own, as one line on stderr with exit 2."""

from __future__ import annotations

import sys

from absl import flags

EXIT_USAGE, EXIT_FAILED, EXIT_PREEMPTED = 2, 1, 143


def fail(message: str, code: int = EXIT_USAGE):
  print(f"superalign: error: {message}", file=sys.stderr)
  sys.exit(code)


def first_line(e: BaseException) -> str:
  text = str(e).strip()
  return text.splitlines()[0] if text else type(e).__name__


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


def unknown_override(e: BaseException, argv: list[str]) -> str:
  """The ``--config.KEY=VALUE`` override whose key does not exist, as one line."""
  name = str(e).strip("\"' ").split("'")[0]
  for arg in argv:
    if arg.startswith("--config."):
      path = arg[len("--config."):].split("=", 1)[0]
      if name in path.split("."):
        return f"--config.{path}: no such key in the config; see the config file for valid keys"
  return f"--config override: no such key {name!r}; see the config file for valid keys"


def config_load_line(e: BaseException) -> str:
  """ml_collections defers a config file's load errors to first access: the file's problem."""
  text = str(e)
  if "Failed loading config file" not in text:
    return f"--config: {first_line(e)}"
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
    fail(first_line(e))
