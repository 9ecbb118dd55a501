"""Optimizers and learning-rate schedules from a spec's ``Optim``."""

from __future__ import annotations

from typing import NamedTuple

import jax
import optax

from superalign.core.spec import OPTIMIZERS, SCHEDULES, Optim


def schedule(o: Optim, num_steps: int) -> optax.Schedule:
  """The learning-rate schedule ``o.schedule`` over ``num_steps``: ``constant``, ``cosine`` decay
  to 0, ``warmup_cosine`` (linear warmup from 0 over ``o.warmup_steps``, then cosine decay) or
  ``linear`` decay to 0, from ``o.learning_rate``."""
  lr, warmup, name = float(o.learning_rate), int(o.warmup_steps), o.schedule
  if name == "constant":
    return optax.constant_schedule(lr)
  if name == "cosine":
    return optax.cosine_decay_schedule(lr, max(num_steps, 1))
  if name == "warmup_cosine":
    return optax.warmup_cosine_decay_schedule(0.0, lr, max(warmup, 1), max(num_steps, warmup + 1))
  if name == "linear":
    return optax.linear_schedule(lr, 0.0, max(num_steps, 1))
  raise ValueError(f"optim.schedule={name!r}: unknown; valid: {', '.join(SCHEDULES)}")


class EmaState(NamedTuple):
  """``params_ema``'s optimizer state: ``ema``, the parameters' moving average (a pytree)."""
  ema: optax.Params           # the moving average of the parameters (a teacher)


def params_ema(decay: float) -> optax.GradientTransformation:
  """Leaves updates unchanged and tracks ``ema <- decay * ema + (1 - decay) * new params``.

  Last in a chain, it sees the final updates; keeping the average in the optimizer state means
  it is sharded like the parameters and checkpointed with them at no extra cost.
  """

  def init(params):
    return EmaState(jax.tree.map(lambda p: p.copy(), params))

  def update(updates, state, params):
    new = optax.apply_updates(params, updates)
    return updates, EmaState(jax.tree.map(lambda e, p: decay * e + (1 - decay) * p,
                                          state.ema, new))

  return optax.GradientTransformation(init, update)


def ema_params(opt_state: optax.OptState) -> optax.Params:
  """The parameter average kept by ``params_ema`` (ValueError if the optimizer has none)."""
  found = optax.tree_utils.tree_get(opt_state, "ema")
  if found is None:
    raise ValueError("the optimizer keeps no parameter average: set optim.ema_decay > 0")
  return found


def make(o: Optim, num_steps: int, trainable_mask=None) -> optax.GradientTransformation:
  """Gradient clipping, then the optimizer; frozen parameters (mask False) get zero updates.
  With ``ema_decay > 0`` a moving average of the parameters is kept (``ema_params``)."""
  lr = schedule(o, num_steps)
  if o.name == "adamw":
    opt = optax.adamw(lr, weight_decay=float(o.weight_decay))
  elif o.name == "adam":
    opt = optax.adam(lr)
  elif o.name == "sgd":
    opt = optax.sgd(lr, momentum=float(o.momentum) or None)
  else:
    raise ValueError(f"optim.name={o.name!r}: unknown; valid: {', '.join(OPTIMIZERS)}")
  chain = []
  if o.clip_norm:
    chain.append(optax.clip_by_global_norm(float(o.clip_norm)))
  chain.append(opt)
  tx = optax.chain(*chain)
  if trainable_mask is not None:
    tx = optax.multi_transform({True: tx, False: optax.set_to_zero()}, trainable_mask)
  decay = float(o.ema_decay)
  if decay:
    tx = optax.chain(tx, params_ema(decay))
  return tx
