"""Certified training as losses for the core engine, and the PGD attack that measures empirical
robustness.

``certified_loss`` is a ``core.steps.LossFn``: it bounds the model it trains (its parameters
traced, ``network.from_model``) and mixes the fit with the worst case, Gowal et al. 2018:

  loss = kappa * CE(logits, y) + (1 - kappa) * CE(worst-case logits, y)

with the radius ramped linearly from 0 to ``eps`` and kappa from 1 to ``kappa_end`` over the same
steps, after ``warmup`` steps of natural training. CROWN-IBP (Zhang et al. 2020) bounds the margins
by ``beta * CROWN-IBP + (1 - beta) * IBP``, beta ramped from 1 to ``beta_end``. The methods
are registered in ``TRAINING`` by the names configs use (``verify.training``).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from superalign.core import steps
from superalign.config.registry import Registry
from superalign.verify import bounds, network

# name -> loss(schedule, input_shape, num_classes, domain) -> core.steps.LossFn
TRAINING: Registry = Registry("certified training method")


@dataclasses.dataclass(frozen=True)
class Schedule:
  """Certified training's schedule: the radius reaches ``eps`` after ``warmup`` natural steps and
  a linear ``ramp`` (steps), over which kappa goes from 1 to ``kappa_end`` and CROWN-IBP's beta
  from 1 to ``beta_end``."""
  eps: float              # the training radius once ramped
  warmup: int = 0         # steps of natural training first
  ramp: int = 1           # steps of the linear ramp
  kappa_end: float = 0.5
  beta_end: float = 0.0

  @classmethod
  def from_config(cls, block) -> Schedule:
    """From the config's ``verify`` block (``train_eps``, ``warmup_steps``, ``ramp_steps``, ...)."""
    return cls(eps=float(block.train_eps), warmup=int(block.warmup_steps),
               ramp=int(block.ramp_steps), kappa_end=float(block.kappa_end),
               beta_end=float(block.beta_end))

  def at(self, step):
    """``(eps, kappa, beta)`` at ``step`` (traceable)."""
    t = jnp.clip((step - self.warmup) / max(self.ramp, 1), 0.0, 1.0)
    return (self.eps * t, 1.0 - (1.0 - self.kappa_end) * t, 1.0 - (1.0 - self.beta_end) * t)


@TRAINING.register("natural")
def natural_loss(schedule: Schedule, input_shape, num_classes: int, domain) -> steps.LossFn:
  """Natural training: the plain cross-entropy (``core.steps.cross_entropy_loss``); the schedule
  and the box are ignored."""
  del schedule, input_shape, num_classes, domain
  return steps.cross_entropy_loss


def robust_loss(margins: Callable, schedule: Schedule, input_shape, num_classes: int,
                domain) -> steps.LossFn:
  """The fit mixed with the worst case over the box, whose margins' lower bounds are
  ``margins(net, lo, hi, spec, beta)``."""

  def loss_fn(model, batch, rng, step):
    del rng
    x, y = batch["x"], batch["y"]
    eps, kappa, beta = schedule.at(step)
    logits = model(x).astype(jnp.float32)
    fit = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    net = network.from_model(model, input_shape)
    lo, hi = bounds.input_box(x, eps, domain)
    lower = margins(net, lo, hi, bounds.margin_spec(y, num_classes), beta)
    robust = optax.softmax_cross_entropy_with_integer_labels(
        bounds.worst_logits(lower), jnp.zeros_like(y)).mean()
    loss = kappa * fit + (1 - kappa) * robust
    return loss, {"accuracy": (logits.argmax(-1) == y).mean(), "robust_loss": robust,
                  "verified": bounds.verified(lower).mean(), "eps": eps}

  return loss_fn


def robust(name: str):
  """Registers the decorated margins function as the robust training method ``name``."""
  def add(margins):
    TRAINING.register(name, functools.partial(robust_loss, margins))
    return margins
  return add


@robust("ibp")
def ibp_margins(net, lo, hi, spec, beta):
  """IBP's lower bounds ``[N, K - 1]`` on the margins ``spec @ logits`` (``spec``
  ``[N, K - 1, K]``) over the box ``[lo, hi]``; ``beta`` is unused."""
  del beta
  return bounds.ibp(net, lo, hi, spec)[0]


@robust("crown_ibp")
def crown_ibp_margins(net, lo, hi, spec, beta):
  """Lower bounds ``[N, K - 1]`` on the margins ``spec @ logits`` (``spec`` ``[N, K - 1, K]``)
  over the box ``[lo, hi]``: ``beta * CROWN-IBP + (1 - beta) * IBP``."""
  lower = bounds.ibp(net, lo, hi, spec)[0]
  # Always computed: a lax.cond that skips it once beta is 0 makes XLA:CPU run the whole step
  # 5-20x slower (measured), more than the pass itself costs.
  return beta * bounds.crown_ibp(net, lo, hi, spec, upper=False)[0] + (1 - beta) * lower


def certified_loss(method: str, schedule: Schedule, input_shape, num_classes: int,
                   domain=(0.0, 1.0)) -> steps.LossFn:
  """The training objective of the registered ``method``."""
  return TRAINING[method](schedule, input_shape, num_classes, domain)


def _margin_loss(logits, y):
  """The best wrong logit minus the right one (positive: misclassified)."""
  right = jnp.take_along_axis(logits, y[:, None], axis=1)[:, 0]
  wrong = jnp.where(jax.nn.one_hot(y, logits.shape[-1], dtype=bool), -jnp.inf, logits).max(-1)
  return wrong - right


def pgd(forward: Callable, x, y, lo, hi, *, steps: int = 20, rng=None):
  """Projected gradient ascent on the margin loss over the box ``[lo, hi]`` (Madry et al. 2018):
  signed steps (``optax.scale_by_sign``) of 2.5 / ``steps`` of each coordinate's half-width (a
  coordinate the box pins never moves), from a random point of the box when ``rng`` is given,
  else from ``x``. Returns, per example, whether some iterate was misclassified (the attack's
  success) and the strongest iterate."""
  size = 2.5 * (hi - lo) / (2 * steps)
  start = x if rng is None else lo + (hi - lo) * jax.random.uniform(rng, x.shape)
  tx = optax.scale_by_sign()     # +sign(grad), added as is: ascent
  loss = lambda z: _margin_loss(forward(z).astype(jnp.float32), y)
  rows = lambda t: t.reshape((-1,) + (1,) * (x.ndim - 1))

  def step(carry, _):
    z, opt_state, fooled, best, best_z = carry
    value, pullback = jax.vjp(loss, z)
    grad = pullback(jnp.ones_like(value))[0]
    best_z = jnp.where(rows(value > best), z, best_z)
    fooled, best = fooled | (value > 0), jnp.maximum(best, value)
    updates, opt_state = tx.update(grad, opt_state)
    z = jnp.clip(z + size * updates, lo, hi)
    return (z, opt_state, fooled, best, best_z), None

  init = (start, tx.init(start), jnp.zeros(len(x), bool), jnp.full(len(x), -jnp.inf), start)
  (z, _, fooled, best, best_z), _ = jax.lax.scan(step, init, None, length=steps)
  last = loss(z)
  return fooled | (last > 0), jnp.where(rows(last > best), z, best_z)
