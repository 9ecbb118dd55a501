"""Named activation sites: the points of a forward pass that hooks read, write, add to or ablate.

A model marks a site with ``x = sites.site("resid_pre", x)``, inside ``sites.scope("blocks.0")``
for a block's sites, which gives the full name ``blocks.0.resid_pre`` (TransformerLens' names,
without the ``hook_`` prefix). ``interp.hooks`` is the front door that sets the hooks.

Hooks live in trace-time Python, not in the model's state: ``active(hooks)`` installs them for
the code traced inside it, and ``site`` calls them on the traced arrays. So a hook composes with
``jax.jit``, ``jax.vmap`` over stacked runs and sharded inputs exactly as the model's own
operations do, and with no hooks installed (always, in training) ``site`` returns its input: the
traced program is the one without sites. Install hooks inside the function you transform, so
that the transform's cache keys on that function (``interp.hooks.run`` does this).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Callable, Iterator

import jax

_LOCAL = threading.local()


def _hooks() -> Callable[[str, jax.Array], jax.Array] | None:
  return getattr(_LOCAL, "hooks", None)


def _prefix() -> str:
  return getattr(_LOCAL, "prefix", "")


def site(name: str, x: jax.Array) -> jax.Array:
  """``x`` as the active hooks leave it at the site ``name`` (within the current scope)."""
  hooks = _hooks()
  return x if hooks is None else hooks(_prefix() + name, x)


@contextlib.contextmanager
def scope(prefix: str) -> Iterator[None]:
  """Sites marked inside are named ``<prefix>.<name>``; scopes nest."""
  outer = _prefix()
  _LOCAL.prefix = f"{outer}{prefix}."
  try:
    yield
  finally:
    _LOCAL.prefix = outer


@contextlib.contextmanager
def active(hooks: Callable[[str, jax.Array], jax.Array]) -> Iterator[None]:
  """Every site traced inside calls ``hooks(full_name, x)`` and carries on with its result."""
  outer, outer_prefix = _hooks(), _prefix()
  if outer is not None:
    raise RuntimeError("hooks are already active: interp.hooks.run calls do not nest")
  _LOCAL.hooks, _LOCAL.prefix = hooks, ""
  try:
    yield
  finally:
    _LOCAL.hooks, _LOCAL.prefix = outer, outer_prefix
