"""Named activation sites: the points of a forward pass that hooks read, write, add to or ablate.

A model marks a site with ``x = site("resid_pre", x, RESID)``, inside ``sites.scope("blocks.0")``
for a block's sites, which gives the full name ``blocks.0.resid_pre`` (TransformerLens' names,
without the ``hook_`` prefix), and names each axis of the activation where it is defined
(``RESID = ("batch", "pos", "embed")``, as TransformerLens states each hook point's shape; the
transformer's sites are listed in ``models.transformer``'s docstring): a
patching grid, an intervention's mask or a captured activation then says ``"pos"`` or ``"head"``,
not an axis number. ``interp.hooks`` is the front door that sets the hooks.

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


Axes = tuple[str, ...]

# The axis names the models use.
RESID = ("batch", "pos", "embed")               # residual stream, attention and MLP outputs
HEADS = ("batch", "pos", "head", "head_dim")    # each head's output (attn.z)
QKV = HEADS                                     # attn.q, .k, .v, .rot_q, .rot_k (k and v: kv heads)
PATTERN = ("batch", "head", "query_pos", "key_pos")
ATTN_SCORES = PATTERN                           # attn.attn_scores: the pattern's logits
SCALE = RESID                                   # a norm's divisor [batch, pos, 1]: embed of size 1
NEURONS = ("batch", "pos", "mlp")               # a transformer MLP's hidden units
HIDDEN = ("batch", "mlp")                       # a dense layer's units (MLP, CNN head)
FEATURES = ("batch", "features")                # a flat input vector
IMAGE = ("batch", "height", "width", "channel")  # an image or a feature map
LOGITS = ("batch", "classes")


# TransformerLens spells a site with ``hook_`` before its last part (``blocks.0.hook_resid_pre``,
# ``blocks.0.attn.hook_z``, ``ln_final.hook_scale``). Two of ours are its unembedding's hooks: the
# final norm's output ``ln_final`` (weight and bias applied; TransformerLens'
# ``ln_final.hook_normalized`` is before them, our ``ln_final.normalized``) and ``lm_logits``. The
# classifier's ``logits`` has no hook there.
_UNEMBED = {"ln_final": "unembed.hook_in", "lm_logits": "unembed.hook_out"}
OURS_ONLY = ("logits",)


def to_transformer_lens(name: str) -> str | None:
  """TransformerLens' hook name for our site ``name`` (``blocks.0.resid_pre`` ->
  ``blocks.0.hook_resid_pre``, ``embed`` -> ``hook_embed``, ``ln_final.scale`` ->
  ``ln_final.hook_scale``, ``ln_final`` -> ``unembed.hook_in``), or None for a site it has no
  hook at (``OURS_ONLY``)."""
  if name in OURS_ONLY:
    return None
  if name in _UNEMBED:
    return _UNEMBED[name]
  head, _, last = name.rpartition(".")
  return f"{head}.hook_{last}" if head else f"hook_{last}"


def from_transformer_lens(hook_name: str) -> str | None:
  """Our site name for TransformerLens' ``hook_name`` (the inverse of ``to_transformer_lens``),
  or None when it is not spelled as a TransformerLens hook."""
  for ours, theirs in _UNEMBED.items():
    if hook_name == theirs:
      return ours
  head, _, last = hook_name.rpartition(".")
  if not last.startswith("hook_") or len(last) == len("hook_"):
    return None
  return f"{head}.{last[len('hook_'):]}" if head else last[len("hook_"):]


def _hooks() -> Callable[[str, jax.Array, Axes], jax.Array] | None:
  return getattr(_LOCAL, "hooks", None)


def _prefix() -> str:
  return getattr(_LOCAL, "prefix", "")


def hooked() -> bool:
  """Whether hooks are active. A model may then compute an activation in the form its site
  names (a norm's divisor, where it otherwise multiplies by ``rsqrt``), the same values as its
  unhooked form: the unhooked program stays the fast one."""
  return _hooks() is not None


def site(name: str, x: jax.Array, axes: Axes) -> jax.Array:
  """``x`` as the active hooks leave it at the site ``name`` (within the current scope);
  ``axes`` names each of ``x``'s axes."""
  hooks = _hooks()
  return x if hooks is None else hooks(_prefix() + name, x, tuple(axes))


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
def active(hooks: Callable[[str, jax.Array, Axes], jax.Array]) -> Iterator[None]:
  """Every site traced inside calls ``hooks(full_name, x, axes)`` and carries on with its
  result."""
  outer, outer_prefix = _hooks(), _prefix()
  if outer is not None:
    raise RuntimeError("hooks are already active: interp.hooks.run calls do not nest")
  _LOCAL.hooks, _LOCAL.prefix = hooks, ""
  try:
    yield
  finally:
    _LOCAL.hooks, _LOCAL.prefix = outer, outer_prefix
