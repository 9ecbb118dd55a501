"""Weak-to-strong training losses: the student's logits against the weak supervisor's soft labels.

Every loss is a pure JAX function with one signature::

    loss(logits, weak_probs, step_frac, **hparams) -> scalar

``logits`` are the student's ``[batch, classes]`` logits, ``weak_probs`` the weak supervisor's soft
labels (``[batch, classes]``, rows summing to 1), ``step_frac`` the fraction of training done, in
``[0, 1]`` (a traced scalar is fine). Each returns the mean over the batch, computed in float32. No
Python control flow touches a traced value, so every loss jits, vmaps (over seeds or sweeps), and
differentiates; the only Python branches are on static shapes.

Targets built from the student's own predictions are detached (``jax.lax.stop_gradient``): the
gradient of every loss is that of a cross-entropy against a fixed target (times a fixed weight).

Losses (references in ``/work/shared/REFERENCES.md``, "Weak-to-strong generalization"):

- ``xent``: the weak soft labels (Burns et al., reference implementation).
- ``logconf``: ``(1-c) weak + c hardened(student)``, ``c`` ramped up (Burns et al., reference).
- ``product``: ``∝ student^beta * weak^alpha`` (Burns et al., reference).
- ``kl``: ``KL(weak || student)``, xent minus the weak labels' entropy (EleutherAI/w2s).
- ``entropy``: ``(1-c) weak + c student``, a soft self-target (EleutherAI/w2s).
- ``window``: xent on the examples where the student is unsure (EleutherAI/w2s).
- ``bootstrap_soft``: ``b weak + (1-b) student`` (Reed et al. 2014).
- ``bootstrap_hard``: ``b weak + (1-b) onehot(argmax student)`` (Reed et al. 2014).
- ``adaptconf``: a per-example mix of weak KD and self-CE (Guo et al. 2024).

Use :func:`get` to bind hyperparameters by name: ``get("logconf", aux_coef=0.75)`` returns a
function of ``(logits, weak_probs, step_frac)``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.scipy.special import xlogy

from superalign.w2s.config import LOSS_HPARAMS

LossFn = Callable[..., jax.Array]

# Rounds of coordinate updates in the multi-class prior-matched hardening (see
# `prior_matched_hard_labels`). Two classes need none (closed form); a handful is plenty for more.
PRIOR_MATCH_ROUNDS = 8


# --------------------------------------------------------------------------------------------
# Shared pieces.


def _as_f32(logits, weak_probs) -> tuple[jax.Array, jax.Array]:
  return jnp.asarray(logits, jnp.float32), jnp.asarray(weak_probs, jnp.float32)


def _soft_xent(log_probs: jax.Array, target: jax.Array) -> jax.Array:
  """Per-example cross-entropy ``-sum_k target_k log p_k`` (torch's soft-target cross_entropy)."""
  return -jnp.sum(target * log_probs, axis=-1)


def _onehot_argmax(x: jax.Array) -> jax.Array:
  return jax.nn.one_hot(jnp.argmax(x, axis=-1), x.shape[-1], dtype=jnp.float32)


def warmup_coef(step_frac, aux_coef, warmup_frac) -> jax.Array:
  """Auxiliary coefficient ramped linearly from 0 to ``aux_coef`` over the first ``warmup_frac``.

  ``c = aux_coef * step_frac / warmup_frac`` while ``step_frac < warmup_frac``, then ``aux_coef``
  ("past warm-up" means ``step_frac >= warmup_frac``; ``warmup_frac <= 0`` means no warm-up).

  The reference (openai/weak-to-strong ``logconf_loss_fn``) uses ``c = aux_coef * step_frac``
  during warm-up, so ``c`` jumps from ``aux_coef * warmup_frac`` to ``aux_coef`` when warm-up ends;
  the linear ramp is the paper's intent (REFERENCES.md). Past warm-up the two agree.
  """
  step_frac = jnp.asarray(step_frac, jnp.float32)
  warmup_frac = jnp.asarray(warmup_frac, jnp.float32)
  ramp = jnp.clip(step_frac / jnp.maximum(warmup_frac, jnp.finfo(jnp.float32).tiny), 0.0, 1.0)
  ramp = jnp.where(step_frac >= warmup_frac, 1.0, ramp)
  return jnp.asarray(aux_coef, jnp.float32) * ramp


def prior_matched_hard_labels(logits: jax.Array, prior: jax.Array,
                              rounds: int = PRIOR_MATCH_ROUNDS,
                              binary_closed_form: bool = True) -> jax.Array:
  """One-hot student predictions hardened so their class frequencies match ``prior``.

  The hardened label of example ``i`` is a *prior-adjusted argmax*::

      y_i = argmax_k (log p_ik + b_k)

  with per-class log-offsets ``b`` chosen so that the fraction of the batch assigned to class ``k``
  is ``prior_k`` (the weak labels' class balance, ``mean(weak_probs, 0)``). This is the decision
  rule of the student's posterior re-weighted to a new class prior (label-shift correction: the
  offsets are ``log w_k`` in ``argmax_k p_ik w_k``); at exact balance it is also the assignment
  maximizing ``sum_i log p_{i y_i}`` subject to the class counts (the offsets are the duals of that
  transport problem). Within each class the examples the student is relatively most confident
  about are the ones kept, which is what the quantile threshold does in the binary case. Apart
  from a few examples at the class boundaries (about one per two classes, from the solver's sweep
  order), it does not depend on how the classes are numbered, unlike thresholding the classes one
  after another.

  * Two classes (closed form, exactly the reference): with one free offset the rule thresholds
    ``p_0``; the threshold is the batch quantile ``t = quantile(p_0, prior_1)`` (linear
    interpolation, as ``torch.quantile``), and ``y = [p_0 >= t, p_0 < t]`` -- the same operations
    as openai/weak-to-strong's ``logconf_loss_fn``, in float32, so it hardens as the reference.
  * More classes: block-coordinate ascent on ``b``. For each class ``k`` in turn, with the other
    offsets fixed, class ``k`` wins example ``i`` iff its margin
    ``m_ik = log p_ik - max_{j != k}(log p_ij + b_j)`` satisfies ``m_ik + b_k >= 0``, so setting
    ``b_k = -quantile(m_k, 1 - prior_k)`` gives class ``k`` its share of the batch -- the binary
    rule applied one-versus-the-rest. ``rounds`` sweeps over the classes (a ``lax.fori_loop``, so
    any number of classes compiles the same). Sweeps are not guaranteed to reach exact balance
    (counts are integers); in practice the class counts settle within about two examples of
    ``n * prior_k`` after a few sweeps, where a plain argmax is often off by ten or more. For two
    classes one sweep reaches the closed form's partition (exactly, in real arithmetic; the tests
    check it with ``binary_closed_form=False``, which forces the iterative path).

  As in the reference, thresholding at the linear-interpolated quantile at level ``1 - prior_k``
  keeps about ``n * prior_k + (1 - prior_k)`` examples (those at or above it): a class whose weak
  share is 0 still keeps its single most confident example, as the reference hardens the top
  ``p_0`` to class 0 when ``mean(weak)_1 = 1``.

  Returns float32 ``[batch, classes]`` one-hot rows, detached.
  """
  logits = jax.lax.stop_gradient(jnp.asarray(logits, jnp.float32))
  prior = jax.lax.stop_gradient(jnp.asarray(prior, jnp.float32))
  num_classes = logits.shape[-1]
  if num_classes == 1:
    return jnp.ones_like(logits)
  if num_classes == 2 and binary_closed_form:
    p0 = jax.nn.softmax(logits, axis=-1)[:, 0]
    threshold = jnp.quantile(p0, prior[1])
    return jnp.stack([p0 >= threshold, p0 < threshold], axis=1).astype(jnp.float32)

  log_p = jax.nn.log_softmax(logits, axis=-1)
  classes = jnp.arange(num_classes)

  def update(step, offsets):
    k = step % num_classes
    others = jnp.where(classes == k, -jnp.inf, log_p + offsets).max(axis=-1)
    margin = log_p[:, k] - others
    # Share of the batch the other classes should keep: summed (not 1 - prior_k) so that for two
    # classes it is prior_other exactly, as in the closed form.
    level = jnp.clip(jnp.sum(jnp.where(classes == k, 0.0, prior)), 0.0, 1.0)
    return offsets.at[k].set(-jnp.quantile(margin, level))

  offsets = jax.lax.fori_loop(0, rounds * num_classes, update, jnp.zeros(num_classes, jnp.float32))
  return _onehot_argmax(log_p + offsets)


# --------------------------------------------------------------------------------------------
# The losses.


def xent(logits, weak_probs, step_frac=None) -> jax.Array:
  """Cross-entropy of the student's softmax against the weak soft labels (reference ``xent``)."""
  del step_frac
  logits, weak = _as_f32(logits, weak_probs)
  return jnp.mean(_soft_xent(jax.nn.log_softmax(logits, axis=-1), weak))


def logconf(logits, weak_probs, step_frac, aux_coef=0.5, warmup_frac=0.1) -> jax.Array:
  """Auxiliary confidence loss (Burns et al. 2023; openai/weak-to-strong ``logconf_loss_fn``).

  ``target = (1 - c) * weak + c * hardened``, detached, and the loss is the cross-entropy of the
  student against it. ``c`` ramps linearly from 0 to ``aux_coef`` over the first ``warmup_frac``
  of training (:func:`warmup_coef`; the reference's warm-up jumps, past warm-up they agree).
  ``hardened`` is the student's own prediction made one-hot at the batch quantile that matches the
  weak labels' class balance -- the threshold ``quantile(p_0, mean(weak)_1)`` for two classes,
  exactly as in the reference, and for more classes the prior-adjusted argmax whose class
  frequencies match ``mean(weak, 0)`` (:func:`prior_matched_hard_labels`).
  """
  logits, weak = _as_f32(logits, weak_probs)
  coef = warmup_coef(step_frac, aux_coef, warmup_frac)
  hardened = prior_matched_hard_labels(logits, jnp.mean(weak, axis=0))
  target = jax.lax.stop_gradient(weak * (1.0 - coef) + hardened * coef)
  return jnp.mean(_soft_xent(jax.nn.log_softmax(logits, axis=-1), target))


def product(logits, weak_probs, step_frac=None, alpha=1.0, beta=1.0) -> jax.Array:
  """Product-of-experts target (openai/weak-to-strong ``product_loss_fn``).

  ``target ∝ p_student^beta * weak^alpha`` (normalized per example, detached); the loss is the
  cross-entropy of the student against it. The reference's ``warmup_frac`` argument is unused
  there, so there is no warm-up here either. Computed in log space
  (``softmax(beta * log_softmax(logits) + alpha * log(weak))``, with ``0 * log 0 = 0`` as in
  ``0 ** 0 = 1``), which stays finite where the reference's product underflows to ``0 / 0``.
  """
  del step_frac
  logits, weak = _as_f32(logits, weak_probs)
  log_p = jax.nn.log_softmax(logits, axis=-1)
  alpha = jnp.asarray(alpha, jnp.float32)
  beta = jnp.asarray(beta, jnp.float32)
  target = jax.lax.stop_gradient(jax.nn.softmax(beta * log_p + xlogy(alpha, weak), axis=-1))
  return jnp.mean(_soft_xent(log_p, target))


def kl(logits, weak_probs, step_frac=None) -> jax.Array:
  """``KL(weak || student) = sum_k w_k (log w_k - log p_k)``: xent minus the weak labels' entropy.

  Same gradient as ``xent``; zero when the student's softmax equals the weak labels.
  """
  del step_frac
  logits, weak = _as_f32(logits, weak_probs)
  log_p = jax.nn.log_softmax(logits, axis=-1)
  return jnp.mean(jnp.sum(xlogy(weak, weak) - weak * log_p, axis=-1))


def entropy(logits, weak_probs, step_frac, aux_coef=0.5, warmup_frac=0.1) -> jax.Array:
  """``logconf`` with a soft self-target (EleutherAI/w2s ``log_confidence_loss(harden=False)``).

  ``target = (1 - c) * weak + c * p_student`` (detached), ``c`` ramped as in ``logconf``. The
  cross-entropy against one's own detached prediction has the gradient of its entropy, so the
  auxiliary term pushes the student toward confident predictions.
  """
  logits, weak = _as_f32(logits, weak_probs)
  coef = warmup_coef(step_frac, aux_coef, warmup_frac)
  log_p = jax.nn.log_softmax(logits, axis=-1)
  target = jax.lax.stop_gradient(weak * (1.0 - coef) + jnp.exp(log_p) * coef)
  return jnp.mean(_soft_xent(log_p, target))


def window_threshold(num_classes: int, radius) -> jax.Array:
  """Confidence below which an example is "unsure": ``1/k + 2 * radius * (k - 1) / k``.

  For two classes this is ``0.5 + radius`` (EleutherAI/w2s ``confidence_window_loss``). For ``k``
  classes the window keeps the same share of the range the top probability can take,
  ``[1/k, 1]``: ``radius`` is measured in units of half that range, so ``radius = 0.15`` keeps
  examples whose top probability lies in the lowest 30% of ``[1/k, 1]`` for every ``k``, and
  ``radius >= 0.5`` keeps every example.
  """
  k = num_classes
  return 1.0 / k + jnp.asarray(radius, jnp.float32) * (2.0 * (k - 1) / k)


def window(logits, weak_probs, step_frac=None, radius=0.15) -> jax.Array:
  """Cross-entropy only where the student is unsure (EleutherAI/w2s ``confidence_window_loss``).

  An example is selected when the student's top softmax probability is below
  :func:`window_threshold` (``0.5 + radius`` for two classes). The loss is the mean weak-label
  cross-entropy over the selected examples, and 0 (with zero gradient, no NaN) when none is
  selected. (EleutherAI divides the selected sum by the whole batch size instead; the mean over
  the selected examples keeps the loss's scale independent of how many are unsure.)
  """
  del step_frac
  logits, weak = _as_f32(logits, weak_probs)
  log_p = jax.nn.log_softmax(logits, axis=-1)
  confidence = jax.lax.stop_gradient(jnp.exp(log_p.max(axis=-1)))
  selected = (confidence < window_threshold(logits.shape[-1], radius)).astype(jnp.float32)
  per_example = _soft_xent(log_p, weak)
  return jnp.sum(selected * per_example) / jnp.maximum(jnp.sum(selected), 1.0)


def bootstrap_soft(logits, weak_probs, step_frac=None, beta=0.95) -> jax.Array:
  """Soft bootstrapping (Reed et al. 2014): target ``beta * weak + (1 - beta) * p_student``."""
  del step_frac
  logits, weak = _as_f32(logits, weak_probs)
  log_p = jax.nn.log_softmax(logits, axis=-1)
  beta = jnp.asarray(beta, jnp.float32)
  target = jax.lax.stop_gradient(beta * weak + (1.0 - beta) * jnp.exp(log_p))
  return jnp.mean(_soft_xent(log_p, target))


def bootstrap_hard(logits, weak_probs, step_frac=None, beta=0.8) -> jax.Array:
  """Hard bootstrapping (Reed et al. 2014): target ``beta * weak + (1-beta) * onehot(argmax p)``."""
  del step_frac
  logits, weak = _as_f32(logits, weak_probs)
  log_p = jax.nn.log_softmax(logits, axis=-1)
  beta = jnp.asarray(beta, jnp.float32)
  target = jax.lax.stop_gradient(beta * weak + (1.0 - beta) * _onehot_argmax(logits))
  return jnp.mean(_soft_xent(log_p, target))


def adaptconf(logits, weak_probs, step_frac=None, temperature=1.0) -> jax.Array:
  """AdaptConf (Guo et al. 2024, vision weak-to-strong), per example then averaged.

  ``CE_self = -log p[argmax p]`` (the student against its own argmax), ``CE_weak =
  -log p[argmax weak]``, ``a = exp(CE_self/T) / (exp(CE_self/T) + exp(CE_weak/T))``, detached
  (computed as ``sigmoid((CE_self - CE_weak) / T)``, which cannot overflow), and
  ``loss = (1 - a) * KD + a * CE_self`` with ``KD`` the cross-entropy against the weak soft labels.
  """
  del step_frac
  logits, weak = _as_f32(logits, weak_probs)
  log_p = jax.nn.log_softmax(logits, axis=-1)
  ce_self = _soft_xent(log_p, jax.lax.stop_gradient(_onehot_argmax(logits)))
  ce_weak = _soft_xent(log_p, _onehot_argmax(weak))
  temperature = jnp.asarray(temperature, jnp.float32)
  a = jax.lax.stop_gradient(jax.nn.sigmoid((ce_self - ce_weak) / temperature))
  kd = _soft_xent(log_p, weak)
  return jnp.mean((1.0 - a) * kd + a * ce_self)


# --------------------------------------------------------------------------------------------
# Registry.

LOSSES: dict[str, LossFn] = {
    "xent": xent,
    "logconf": logconf,
    "product": product,
    "kl": kl,
    "entropy": entropy,
    "window": window,
    "bootstrap_soft": bootstrap_soft,
    "bootstrap_hard": bootstrap_hard,
    "adaptconf": adaptconf,
}

DEFAULT_HPARAMS = LOSS_HPARAMS  # defined with the config defaults


def get(name: str, **overrides: Any) -> Callable[[jax.Array, jax.Array, Any], jax.Array]:
  """The loss ``name`` with its default hyperparameters, updated by ``overrides``.

  Returns ``fn(logits, weak_probs, step_frac) -> scalar``. Raises ``ValueError`` naming the unknown
  loss or hyperparameter and listing the valid ones.
  """
  if name not in LOSSES:
    raise ValueError(f"unknown w2s loss {name!r}; valid losses: {', '.join(sorted(LOSSES))}")
  defaults = DEFAULT_HPARAMS[name]
  unknown = sorted(set(overrides) - set(defaults))
  if unknown:
    valid = ", ".join(sorted(defaults)) if defaults else "none"
    raise ValueError(f"unknown hyperparameter(s) {', '.join(map(repr, unknown))} for w2s loss "
                     f"{name!r}; valid hyperparameters: {valid}")
  hparams = {**defaults, **overrides}
  fn = LOSSES[name]

  @functools.wraps(fn)
  def loss(logits, weak_probs, step_frac):
    return fn(logits, weak_probs, step_frac, **hparams)

  return loss
