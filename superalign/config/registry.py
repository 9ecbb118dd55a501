"""Components by name: a registry maps the names a config uses to the things they build.

A room declares ``MONITORS = Registry("monitor")`` and registers each component where it is
defined (``@MONITORS.register("probe")``); the config names them (``monitors.names``), validation
checks the names against the registry (one line naming the key and what is valid), and the runner
builds each by name. A new component is one definition and one registration. No JAX here.
"""

from __future__ import annotations

from typing import Callable, Generic, Iterable, Iterator, TypeVar

from superalign.core.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
  """An ordered name -> component table; ``what`` names the kind in error lines."""

  def __init__(self, what: str):
    self.what = what
    self._items: dict[str, T] = {}

  def register(self, name: str, item: T | None = None):
    """``REG.register("x", thing)``, or ``@REG.register("x")`` over a function or class."""
    def add(item: T) -> T:
      if name in self._items:
        raise ValueError(f"{self.what} {name!r}: registered twice")
      self._items[name] = item
      return item
    return add(item) if item is not None else add

  def __getitem__(self, name: str) -> T:
    if name not in self._items:
      raise ConfigError(f"{name!r}: unknown {self.what}; valid: {', '.join(self._items)}")
    return self._items[name]

  def __contains__(self, name) -> bool:
    return name in self._items

  def __iter__(self) -> Iterator[str]:
    return iter(self._items)

  def __len__(self) -> int:
    return len(self._items)

  @property
  def names(self) -> tuple[str, ...]:
    """The registered names, in registration order."""
    return tuple(self._items)

  def check(self, key: str, names: Iterable[str], allow_empty: bool = False) -> None:
    """One line for a name in ``names`` that is not registered (or for none, unless
    ``allow_empty``), naming the config ``key`` and the valid names."""
    if not isinstance(names, (str, tuple, list)):
      raise ConfigError(f"{key}={names!r}: must be a name or a tuple of names; valid: "
                        f"{', '.join(self._items)}")
    names = tuple(names) if not isinstance(names, str) else (names,)
    bad = [n for n in names if n not in self._items]
    if bad:
      raise ConfigError(f"{key}={names}: unknown {self.what} {bad[0]!r}; valid: "
                        f"{', '.join(self._items)}")
    if not names and not allow_empty:
      raise ConfigError(f"{key}: name at least one of {', '.join(self._items)}")

  def build(self, name: str, *args, **kwargs):
    """The component ``name`` called with the arguments (for factories and classes)."""
    return self[name](*args, **kwargs)


def table(what: str, items: dict[str, Callable]) -> Registry:
  """A registry filled from a dict (order kept)."""
  reg = Registry(what)
  for name, item in items.items():
    reg.register(name, item)
  return reg
