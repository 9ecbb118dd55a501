"""User-facing errors: the launcher prints the message alone (no traceback) and exits 2."""


class ConfigError(ValueError):
  """Bad user input: the message names the key or file, the bad value, and what is valid."""


def check_choices(key: str, names, valid, what: str) -> None:
  """One line for an empty list of ``names`` or one that is not in ``valid`` (a ``what``:
  monitor, protocol, ...)."""
  bad = [n for n in names if n not in valid]
  if bad:
    raise ConfigError(f"{key}={tuple(names)}: unknown {what} {bad[0]!r}; valid: "
                      f"{', '.join(valid)}")
  if not names:
    raise ConfigError(f"{key}: name at least one of {', '.join(valid)}")


def first_line(e: BaseException) -> str:
  """An exception's message as one line (its type when it has none), for one-line reports."""
  text = str(e).strip()
  return text.splitlines()[0] if text else type(e).__name__
