"""User-facing errors: the launcher prints the message alone (no traceback) and exits 2."""


class ConfigError(ValueError):
  """Bad user input: the message names the key or file, the bad value, and what is valid."""


def first_line(e: BaseException) -> str:
  """An exception's message as one line (its type when it has none), for one-line reports."""
  text = str(e).strip()
  return text.splitlines()[0] if text else type(e).__name__
