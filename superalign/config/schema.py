"""Validation as data: the choices and ranges of config keys, declared beside their defaults and
checked by one function (``check``), each failure one line naming the key, its value and what is
valid. No JAX here: configs and the launcher's first checks import it.

A room declares ``{dotted key: rule}`` (``"control.tasks": at_least(1)``); keys its config does
not have are skipped, so one table serves every variant of a kind. Rules across fields (a
monitor named in two lists, a batch that shards over the mesh) stay hand-written next to it.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Callable, Iterable, Mapping

from superalign.core.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Rule:
  """``ok(value)`` decides; ``expect`` ends the error line ``key=value: <expect>``.

  The other fields describe what ``ok`` accepts, for whoever draws values from a rule (the fuzz
  tests): an interval's bounds, whether it takes integers only, the choices of ``one_of``, the
  element rule of ``each``. A rule built from a bare predicate leaves them empty."""
  ok: Callable[[Any], bool]
  expect: str
  lo: float | None = None
  hi: float | None = None
  lo_open: bool = False
  hi_open: bool = False
  integer: bool = False
  choices: tuple | None = None
  element: Rule | None = None      # ``each``: every element's rule
  non_empty: bool = False          # ``each``: at least one element

  def because(self, expect: str) -> Rule:
    """The same rule, its error line ending in ``expect``."""
    return dataclasses.replace(self, expect=expect)

  def __call__(self, key: str, value) -> None:
    if not self.ok(value):
      raise ConfigError(f"{key}={value!r}: {self.expect}")


def _number(value) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def interval(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
             hi_open: bool = False, integer: bool = False) -> Rule:
  """A number (an integer with ``integer``) in the interval; ``None`` leaves a side open."""
  def ok(v):
    if not (_integer(v) if integer else _number(v)):
      return False
    if lo is not None and (v <= lo if lo_open else v < lo):
      return False
    return hi is None or (v < hi if hi_open else v <= hi)
  if lo is not None and hi is not None:
    where = f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
  elif lo == 0:
    where = "positive" if lo_open else "zero or positive"
  elif lo is not None:
    where = f"{'>' if lo_open else '>='} {lo:g}"
  elif hi is not None:
    where = f"{'<' if hi_open else '<='} {hi:g}"
  else:
    where = "a finite number"
  return Rule(ok, "must be " + where + (" (an integer)" if integer else ""), lo=lo, hi=hi,
              lo_open=lo_open, hi_open=hi_open, integer=integer)


def at_least(n: int) -> Rule:
  """A count: an integer >= ``n`` (1: "positive", 0: "zero or positive")."""
  return interval(n - 1, lo_open=True, integer=True) if n == 1 else interval(n, integer=True)


POSITIVE = interval(0, lo_open=True)              # a rate, a scale
NON_NEGATIVE = interval(0)                        # a coefficient, a norm (0 = off)
COUNT = at_least(1)
COUNT_OR_ZERO = at_least(0)                       # 0 = off, or all
FRACTION = interval(0, 1, lo_open=True)           # a share of something that must be there
SHARE = interval(0, 1)                            # a share that may be none or all
PROBABILITY_BELOW_ONE = interval(0, 1, hi_open=True)


NAME = Rule(lambda v: isinstance(v, str) and bool(v), "must be a name (a non-empty string)")


def one_of(*choices) -> Rule:
  """A value equal to one of ``choices`` (the error line lists them)."""
  return Rule(lambda v: v in choices, "valid: " + ", ".join(map(str, choices)),
              choices=tuple(choices))


def each(rule: Rule, *, non_empty: bool = True) -> Rule:
  """A sequence whose every element satisfies ``rule``."""
  def ok(values):
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
      return False
    values = list(values)
    return (bool(values) or not non_empty) and all(rule.ok(v) for v in values)
  return Rule(ok, f"{'one or more' if non_empty else 'any'} values, each {rule.expect}",
              element=rule, non_empty=non_empty)


def choices_of(*choices) -> Rule:
  """A non-empty sequence of names, each one of ``choices``."""
  return each(one_of(*choices)).because("valid: one or more of " + ", ".join(map(str, choices)))


def lookup(tree: Mapping, dotted: str, missing=None):
  """The value at ``dotted`` of a config (or any block of one), or ``missing`` when a block on
  the way is absent."""
  node = tree
  for part in dotted.split("."):
    if not hasattr(node, "keys") or part not in node:
      return missing
    node = node[part]
  return node


_ABSENT = object()


def check(tree: Mapping, rules: Mapping[str, Rule], prefix: str = "") -> None:
  """Raises ConfigError on the first key of ``rules`` present in ``tree`` (a config, or a block of
  one with its dotted ``prefix``) that breaks its rule."""
  for key, rule in rules.items():
    value = lookup(tree, key, _ABSENT)
    if value is not _ABSENT:
      rule(prefix + key, value)


def require_splits(splits: Iterable[str], needed: Iterable[str]) -> None:
  """One line when ``data.splits`` lacks a split the kind reads."""
  have = list(splits)
  for name in needed:
    if name not in have:
      raise ConfigError(f"data.splits: needs a {name!r} split; has {', '.join(have)}")
