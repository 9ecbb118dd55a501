"""absl and ml_collections errors, and the launcher's own, as one line on stderr with exit 2."""

from __future__ import annotations

import re
import sys

from absl import flags

from superalign.core.errors import first_line

EXIT_USAGE, EXIT_FAILED, EXIT_PREEMPTED = 2, 1, 143


def fail(message: str, code: int = EXIT_USAGE):
  print(f"superalign: error: {message}", file=sys.stderr)
  sys.exit(code)


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
