"""Certificates and attacks on a trained model, through the core's one batched apply.

A certificate question is a box per example (``lo``, ``hi``) and a specification ``spec``
``[N, S, K]``: the answer is the lower bound of every row of ``spec @ logits`` over the box, and
an example is certified when all of them are positive. Boxes are built on the host, so the same
compiled program serves an L-infinity ball, a ball over some pixels only (a judge's revealed
ones) or a patch free to take any value (a backdoor's trigger).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from superalign.core.errors import ConfigError
from superalign.core.trainer import Trained
from superalign.verify import bounds, network, training


@dataclasses.dataclass(frozen=True)
class BoundOptions:
  """How the bound methods run: neurons per backward pass (``chunk``, 0: as memory allows),
  alpha-CROWN's optimizer, the unstable neurons CROWN refines per layer (0: all), and examples
  per program of a per-neuron method (``crown_batch``: its memory scales with it)."""
  chunk: int = 0
  alpha_steps: int = 20
  alpha_lr: float = 0.5
  max_unstable: int = 0
  crown_batch: int = 64

  @classmethod
  def from_config(cls, block) -> "BoundOptions":
    """From the keys of a config block (``verify``, ``certify``) it has, each of its default's
    type."""
    return cls(**{f.name: type(f.default)(block[f.name]) for f in dataclasses.fields(cls)
                  if f.name in block})

  def kwargs(self, method: str) -> dict:
    """``lower_bounds``/``certified`` keywords for ``method``."""
    return {"chunk": self.chunk, "alpha_steps": self.alpha_steps, "alpha_lr": self.alpha_lr,
            "max_unstable": self.max_unstable,
            "batch_size": self.crown_batch if bounds.METHODS[method].per_neuron else None}


@functools.lru_cache(maxsize=None)   # one function (so one compiled program) per question
def lower_bound_fn(method: str, input_shape: tuple, chunk: int = 0, alpha_steps: int = 20,
                   alpha_lr: float = 0.5, max_unstable: int = 0):
  """``fn(state, batch) -> [rows, specs]``: the lower bounds of ``batch["spec"]`` over the box
  ``[batch["x"], batch["hi"]]`` by bound ``method`` (a name of ``bounds.METHODS``), for
  ``Trained.apply``; one function per question, so one compiled program."""
  kw = bounds.METHODS[method].options(chunk=chunk or None, max_unstable=max_unstable or None,
                                      steps=alpha_steps, lr=alpha_lr)

  def fn(state, batch):
    net = network.from_model(state.model(), input_shape)
    return bounds.bounds(method, net, batch["x"], batch["hi"], batch["spec"], **kw)[0]

  return fn


@functools.lru_cache(maxsize=None)
def unstable_fn(input_shape: tuple):
  """Per example, the IBP-unstable neurons (``l < 0 < u``) of each ReLU layer of the lowered
  net: what ``max_unstable`` must cover for CROWN to be exact."""

  def fn(state, batch):
    net = network.lowered(network.from_model(state.model(), input_shape))
    _, relus = bounds.relu_inputs(net, batch["x"], batch["hi"])
    count = lambda l, u: ((l < 0) & (u > 0)).reshape(len(l), -1).sum(-1)
    return jnp.stack([count(l, u) for _, (l, u) in sorted(relus.items())], -1)

  return fn


def unstable_counts(trained: Trained, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
  """``[N, relu layers]`` unstable-neuron counts under IBP."""
  return trained.apply(lo.astype(np.float32), unstable_fn(tuple(lo.shape[1:])),
                       hi=hi.astype(np.float32))


@functools.lru_cache(maxsize=None)
def pgd_fn(steps: int, seed: int):
  """``fn(state, batch) -> [rows]`` bool: whether ``steps`` of PGD from seed ``seed`` find an
  input in ``[batch["lo"], batch["hi"]]`` that the model misclassifies (``batch["y"]``)."""

  def fn(state, batch):
    fooled, _ = training.pgd(state.model(), batch["x"], batch["y"], batch["lo"], batch["hi"],
                             steps=steps, rng=jax.random.key(seed))
    return fooled

  return fn


def margin_spec(labels: np.ndarray, num_classes: int) -> np.ndarray:
  """The margin specification ``[N, K - 1, K]`` of labels ``labels`` ``[N]``, as a NumPy array
  (``bounds.margin_spec``): rows ``e_y - e_j`` for every class ``j != y``; all their lower bounds
  positive over a box certify the label."""
  return np.asarray(bounds.margin_spec(jnp.asarray(labels), num_classes))


def check_domain(x: np.ndarray, domain, key: str) -> None:
  """One line naming ``key`` when the inputs ``x`` leave the input ``domain`` (boxes clip to it)."""
  lo, hi = domain
  if x.min() < lo or x.max() > hi:
    raise ConfigError(f"{key}={tuple(domain)}: must contain the data's range [{x.min():g}, "
                      f"{x.max():g}] (boxes are clipped to it)")


def ball(x: np.ndarray, eps: float, domain=(0.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
  """The L-infinity ball of radius ``eps`` around each input of ``x`` ``[N, ...]``, as a box
  ``(lo, hi)`` shaped like ``x``, clipped to ``domain`` unless it is None; a negative radius is a
  ConfigError."""
  bounds.check_eps(eps)
  lo, hi = x - eps, x + eps
  return (np.clip(lo, *domain), np.clip(hi, *domain)) if domain is not None else (lo, hi)


def lower_bounds(trained: Trained, method: str, lo: np.ndarray, hi: np.ndarray,
                 spec: np.ndarray, *, batch_size: int | None = None, **kw) -> np.ndarray:
  """``[N, S]`` lower bounds of ``spec @ logits`` over each box, by ``method``; ``batch_size``
  overrides the eval batch (linear bounds hold more memory per example)."""
  bounds.check_box(lo, hi)
  if batch_size:
    trained = dataclasses.replace(trained, eval_batch_size=int(batch_size))
  fn = lower_bound_fn(method, tuple(lo.shape[1:]), **kw)
  return trained.apply(lo.astype(np.float32), fn, hi=hi.astype(np.float32),
                       spec=spec.astype(np.float32))


def certified(trained: Trained, method: str, lo, hi, spec, **kw) -> np.ndarray:
  """Per example: every row of ``spec`` is certified positive over its box."""
  return (lower_bounds(trained, method, lo, hi, spec, **kw) > 0).all(-1)


def pgd_fooled(trained: Trained, x: np.ndarray, y: np.ndarray, lo: np.ndarray, hi: np.ndarray,
               *, steps: int, seed: int = 0) -> np.ndarray:
  """Per example: a PGD iterate in its box was not classified ``y`` (nor, maybe, ``x``)."""
  bounds.check_box(lo, hi)
  f32 = lambda a: np.asarray(a, np.float32)
  return trained.apply(f32(x), pgd_fn(int(steps), int(seed)), y=np.asarray(y, np.int32),
                       lo=f32(lo), hi=f32(hi))


def patch_boxes(x: np.ndarray, size: int, row: int, col: int, domain) -> tuple:
  """Boxes ``(lo, hi)`` shaped like the images ``x`` ``[N, height, width, channels]``: the
  ``size`` x ``size`` patch at ``(row, col)`` free over the whole ``domain`` ``(lo, hi)``, every
  other pixel fixed."""
  lo, hi = x.copy(), x.copy()
  lo[:, row:row + size, col:col + size, :] = domain[0]
  hi[:, row:row + size, col:col + size, :] = domain[1]
  return lo, hi


def scan_places(shape, size: int, stride: int) -> tuple[list[int], list[int]]:
  """The rows and columns of the scanned patches: every ``stride``-th place, the last included."""
  places = lambda n: sorted(set(range(0, n - size + 1, stride)) | {n - size})
  return places(shape[0]), places(shape[1])
