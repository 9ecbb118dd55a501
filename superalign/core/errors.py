"""User-facing errors: the launcher prints the message alone (no traceback) and exits 2."""


class ConfigError(ValueError):
  """Bad user input: the message names the key or file, the bad value, and what is valid."""
