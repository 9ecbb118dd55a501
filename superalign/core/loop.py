"""The one training loop: steps, periodic evaluation, early stopping, checkpoints, resume.

Every protocol trains through ``fit``. The loop owns no randomness: the batch for step ``s`` is
``batch_at(s, state)`` and the step's key is ``fold_in(state.rng, s)``, so restoring a checkpoint at
step ``s`` and continuing gives bitwise the same run as never stopping. A batch may depend on the
current state (targets made by the model being trained, as in amplification); host-side state that
batches depend on (a curriculum level) travels in the checkpoint through a ``HostState``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import threading
from typing import Callable, Mapping, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from superalign.core.checkpoint import Checkpointer
from superalign.results.metrics import MetricWriter, Progress
from superalign.core.state import TrainState

log = logging.getLogger("superalign")

# Steps dispatched ahead of the host at most: enough to keep a device busy, few enough that
# XLA:CPU's collectives across many (fake) devices never time out with hundreds queued.
MAX_IN_FLIGHT = 32


class NonFiniteError(RuntimeError):
  """A training metric became NaN or infinite, or the parameters a stage starts from already were
  (``loaded``: "checkpoint <path>", "warm start"): then training is not to blame."""

  def __init__(self, message: str, loaded: str | None = None):
    super().__init__(message)
    self.loaded = loaded


@jax.jit
def _finite_leaves(params):
  return jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(params)] or [True])


def _check_loaded(params, loaded: str, desc: str) -> None:
  finite = np.asarray(jax.device_get(_finite_leaves(params)))
  if not finite.all():
    path = jax.tree_util.tree_leaves_with_path(params)[int(np.argmin(finite))][0]
    raise NonFiniteError(f"{desc}: the {loaded} holds non-finite parameters (NaN or infinite, first"
                         f" {jax.tree_util.keystr(path, simple=True, separator='/')})", loaded)


class Preempted(BaseException):
  """SIGTERM or SIGINT (Ctrl-C) stopped the run, after saving checkpoint ``saved`` (step ``step``)
  or, outside a training loop, saving nothing since ``last``. A BaseException, as
  KeyboardInterrupt: no ``except Exception`` (a guarded read, a checkpoint restore) swallows it."""

  def __init__(self, signum: int = signal.SIGTERM, step: int | None = None,
               saved: str | None = None, last: str | None = None):
    at = f"stopped by {signal.Signals(signum).name}" + (f" at step {step}" if step else "")
    super().__init__(f"{at}; checkpoint saved in {saved}" if saved else
                     f"{at}; nothing saved since {last or 'this command started'}")
    self.step, self.signum, self.saved, self.last = step, signum, saved, last


@dataclasses.dataclass(frozen=True)
class EarlyStop:
  """When ``fit`` stops before ``num_steps``: ``metric`` (a key of ``evaluate``'s dict) has not
  improved, in the direction ``mode``, for ``patience`` evaluations (of every stacked run);
  ``restore_best`` ends on the best evaluated parameters."""
  metric: str                 # a key of evaluate()'s dict, e.g. "accuracy" or "loss"
  mode: str = "max"           # "max" or "min"
  patience: int = 5           # evaluations without improvement before stopping
  restore_best: bool = True   # end with the best evaluated parameters


class HostState(Protocol):
  """Host-side state that batches depend on, saved with every checkpoint (e.g. a curriculum).
  ``observe`` sees every step's training metrics, in step order, when the loop fetches them from
  the device (every ``log_every`` steps); decisions it takes there are exact under resume when
  ``checkpoint_every`` is a multiple of ``log_every``."""

  def observe(self, step: int, metrics: Mapping[str, float]) -> None:
    """Sees step ``step``'s training metrics (scalars, averaged over stacked runs)."""

  def state_dict(self) -> dict:
    """The state to save with a checkpoint, as JSON."""

  def load_state_dict(self, saved: dict) -> None:
    """Restores what ``state_dict`` saved (an empty dict when the checkpoint holds none)."""


@dataclasses.dataclass
class FitResult:
  """What ``fit`` returns: the final ``state`` (the best evaluated parameters with
  ``EarlyStop.restore_best``), the evaluation ``history`` (one row per evaluation), the last
  logged window's mean ``train_metrics`` (over stacked runs too), the ``best`` evaluation
  (``{"step", "value"}``, per run if stacked; None without early stopping), whether it
  ``stopped_early``, and the step it ``resumed_from`` (None for a fresh start)."""
  state: TrainState
  history: list[dict]            # one row per evaluation
  train_metrics: dict[str, float]  # last logged window of training metrics
  best: dict | None              # {"step", "value"} of the best evaluation (per run if stacked)
  stopped_early: bool
  resumed_from: int | None


class _StopFlag:
  """The first of SIGTERM (preemptible TPU VMs) or SIGINT (Ctrl-C) that arrived, if any."""
  signum: int | None = None
  deferred = 0             # > 0 inside a training loop, which checks the flag after every step
  last: str | None = None  # the last checkpoint saved or restored, for the stop's line

  def is_set(self) -> bool:
    """Whether a stop signal arrived."""
    return self.signum is not None

  def check(self) -> None:
    """Raises Preempted if a stop signal arrived."""
    if self.is_set():
      raise Preempted(self.signum, last=self.last)


_ACTIVE: list[_StopFlag] = []   # the flag of the outermost stop_signals() block


@contextlib.contextmanager
def stop_signals():
  """SIGTERM and SIGINT for the whole block (the launcher holds one for the whole run): inside a
  training loop they set a flag it checks after every step, so it saves and raises Preempted;
  anywhere else (loading data, between stages) they raise Preempted at once, as Ctrl-C raises
  KeyboardInterrupt. A nested block shares the outer flag: no fit removes the launch's handler."""
  if _ACTIVE or threading.current_thread() is not threading.main_thread():
    yield _ACTIVE[0] if _ACTIVE else _StopFlag()   # signals reach the main thread only
    return
  flag = _StopFlag()

  def handler(signum, _):
    first, flag.signum = not flag.is_set(), flag.signum or signum
    if first and not flag.deferred:
      flag.check()
  previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
  _ACTIVE.append(flag)
  try:
    yield flag
  finally:
    _ACTIVE.clear()
    for s, h in previous.items():
      signal.signal(s, h)


def _stop_agreed(flag: _StopFlag, step: int, every: int, final: bool = False) -> bool:
  """Whether to stop after ``step``. One process: as soon as its signal arrived. Several: every
  process must stop at the same step (a checkpoint save is collective), so they agree every
  ``every`` steps, where the loop syncs with the device anyway, and after the ``final`` save;
  any process's signal stops all."""
  if jax.process_count() == 1:
    return flag.is_set()
  if step % every and not final:
    return False
  from jax.experimental import multihost_utils
  signums = multihost_utils.process_allgather(np.int32(flag.signum or 0))
  flag.signum = flag.signum or int(np.max(signums)) or None
  return flag.is_set()


def _check_finite(rows: list[tuple[int, dict]], desc: str) -> None:
  for step, metrics in rows:
    for name, value in metrics.items():
      value = np.asarray(value)
      if not np.all(np.isfinite(value)):
        if value.ndim:  # stacked runs: name the first bad one
          run = int(np.argmin(np.isfinite(value)))
          raise NonFiniteError(f"{desc}: training metric {name!r} is {float(value[run])} at "
                               f"step {step} (run {run})")
        raise NonFiniteError(f"{desc}: training metric {name!r} is {float(value)} at step {step}")


def _jsonable(value):
  value = np.asarray(value)
  return value.tolist() if value.ndim else float(value)


class _BestTracker:
  """Early-stopping bookkeeping, per run when evaluation returns one value per stacked run."""

  def __init__(self, rule: EarlyStop):
    self.rule = rule
    self.value = None      # best value so far, scalar or [runs]
    self.step = None       # step of that value
    self.bad = None        # evaluations since the last improvement
    self.params = None     # best parameters (only with restore_best)

  def update(self, step: int, value, params) -> None:
    """Takes the evaluation at ``step``: ``value`` (a scalar, or ``[runs]`` if stacked) is
    compared with each run's best so far; an improved run's ``params`` are kept (with
    ``restore_best``) and its patience count restarts."""
    value = np.asarray(value, np.float64)
    if self.value is None:
      improved = np.ones(value.shape, bool)
      self.value, self.step, self.bad = value, np.full(value.shape, step), np.zeros(value.shape, int)
    else:
      improved = value > self.value if self.rule.mode == "max" else value < self.value
    self.value = np.where(improved, value, self.value)
    self.step = np.where(improved, step, self.step)
    self.bad = np.where(improved, 0, self.bad + 1)
    if self.rule.restore_best and improved.any():
      if self.params is None or improved.all():
        self.params = jax.tree.map(lambda x: x.copy(), params)
      else:  # stacked runs: keep each run's own best
        mask = jnp.asarray(improved)
        self.params = jax.tree.map(
            lambda new, old: jnp.where(mask.reshape(mask.shape + (1,) * (new.ndim - 1)), new, old),
            params, self.params)

  @property
  def exhausted(self) -> bool:
    """Whether every run has gone ``patience`` evaluations without improving."""
    return self.bad is not None and bool(np.all(self.bad >= self.rule.patience))

  def state(self) -> dict:
    """The best values, their steps and the evaluations since, as JSON for the checkpoint (empty
    before the first evaluation)."""
    if self.value is None:
      return {}
    return {"value": _jsonable(self.value), "step": _jsonable(self.step),
            "bad": _jsonable(self.bad)}

  def load(self, saved: dict) -> None:
    """Restores what ``state`` saved (nothing when ``saved`` is empty)."""
    if saved:
      self.value = np.asarray(saved["value"], np.float64)
      self.step = np.asarray(saved["step"]).astype(int)
      self.bad = np.asarray(saved["bad"]).astype(int)


def fit(
    state: TrainState,
    train_step: Callable,
    batch_at: Callable[[int, TrainState], dict],
    num_steps: int,
    *,
    evaluate: Callable[[TrainState], dict] | None = None,
    eval_every: int = 0,
    early_stop: EarlyStop | None = None,
    checkpointer: Checkpointer | None = None,
    writer: MetricWriter | None = None,
    log_every: int = 50,
    host: HostState | None = None,
    desc: str = "train",
    warm: bool = False,
) -> FitResult:
  """Trains ``state`` for ``num_steps`` steps (resuming from ``checkpointer`` if it has one).

  For stacked runs, ``evaluate`` may return one value per run; early stopping then tracks each
  run's best separately and stops when every run has run out of patience. Logged training
  metrics are means over the window and over runs. Parameters that are not finite before the
  first step (a restored checkpoint; ``warm``: a warm start) raise NonFiniteError naming them.
  """
  history: list[dict] = []
  best = _BestTracker(early_stop) if early_stop is not None else None
  stopped_early, train_metrics, resumed_from = False, {}, None
  keep_best = best is not None and early_stop.restore_best

  def items():
    out = {"state": state.checkpoint_items()}
    if keep_best:
      out["best_params"] = best.params if best.params is not None else state.params
    return out

  def meta(finished: bool, pending=()):
    # ``pending``: the steps since the last logged row, so a resumed run averages the same window
    return {"history": history, "best": best.state() if best else {},
            "stopped_early": stopped_early, "train_metrics": train_metrics, "finished": finished,
            "host": host.state_dict() if host is not None else {},
            "pending": [[s, {k: _jsonable(v) for k, v in m.items()}] for s, m in pending]}

  with stop_signals() as stop:
    stop.check()  # a stop that arrived since the last check (a caller swallowed Preempted)
    pending: list[tuple[int, dict]] = []
    restored = checkpointer.restore_latest(items()) if checkpointer is not None else None
    if writer is not None:
      writer.rewind(restored[0] if restored else None)
    if restored is not None:
      resumed_from, restored, m = restored
      stop.last = checkpointer.path(resumed_from)
      state = state.replace_items(restored["state"])
      if best is not None:
        best.load(m["best"])
        if keep_best and m["best"]:
          best.params = restored["best_params"]
      history, stopped_early, train_metrics = m["history"], m["stopped_early"], m["train_metrics"]
      if host is not None:
        host.load_state_dict(m.get("host", {}))
      pending = [(s, {k: np.asarray(v, np.float32) for k, v in row.items()})
                 for s, row in m.get("pending", [])]
      log.info("%s: resumed %s", desc, f"a finished run at step {resumed_from} of {num_steps}; "
               f"nothing to train" if m["finished"] else f"from checkpoint at step {resumed_from}")
      if m["finished"]:
        return _finish(state, best, history, train_metrics, stopped_early, resumed_from)
    _check_loaded(state.all_params(), f"checkpoint {stop.last}" if restored is not None else
                  "warm start" if warm else "initial parameters", desc)

    def save(step, finished, rows=()):
      checkpointer.save(step, items(), meta(finished=finished, pending=rows))
      stop.last = checkpointer.path(step)

    def preempted(step):
      if checkpointer is None:
        return Preempted(stop.signum, step, last=stop.last)
      checkpointer.wait()
      return Preempted(stop.signum, step, saved=checkpointer.path(step))

    start = int(jax.device_get(state.step).max())
    progress = Progress(num_steps, start, desc)
    step = start
    stop.deferred += 1   # from here a signal sets the flag, checked after every step
    try:
      while step < num_steps and not stopped_early:
        state, metrics = train_step(state, batch_at(step, state))
        step += 1
        pending.append((step, metrics))
        if len(pending) % MAX_IN_FLIGHT == 0:
          jax.block_until_ready(metrics)
        last = step == num_steps
        do_eval = evaluate is not None and ((eval_every and step % eval_every == 0) or last)
        if step % log_every == 0 or last or do_eval:
          rows = jax.device_get(pending)
          _check_finite(rows, desc)
          if host is not None:
            for row_step, row in rows:
              host.observe(row_step, {k: float(np.mean(v)) for k, v in row.items()})
          train_metrics = {k: float(np.mean([m[k] for _, m in rows])) for k in rows[-1][1]}
          if writer is not None:
            writer.write(step, {f"train/{k}": v for k, v in train_metrics.items()})
          progress.update(step, train_metrics, len(rows))
          pending = []
        if do_eval:
          scores = {k: _jsonable(v) for k, v in evaluate(state).items()}
          history.append({"step": step, **scores})
          means = {k: float(np.mean(v)) for k, v in scores.items()}
          if writer is not None:
            writer.write(step, {f"val/{k}": v for k, v in means.items()})
          log.info("%s step %d: validation %s", desc, step,
                   " ".join(f"{k}={v:.4g}" for k, v in means.items()))
          if best is not None:
            best.update(step, scores[early_stop.metric], state.params)
            stopped_early = best.exhausted
        if last or stopped_early:  # the final save below covers these, and checks the flag after
          break
        halt = _stop_agreed(stop, step, log_every)
        if checkpointer is not None and (checkpointer.due(step) or halt):
          rows = jax.device_get(pending)
          _check_finite(rows, desc)
          save(step, False, rows)
        if halt:
          raise preempted(step)
      if checkpointer is not None:
        save(step, True)
        checkpointer.wait()
      if _stop_agreed(stop, step, log_every, final=True):  # a stop during the last step or save
        raise preempted(step)
    finally:
      stop.deferred -= 1
      progress.close()
    return _finish(state, best, history, train_metrics, stopped_early, resumed_from)


def _finish(state, best, history, train_metrics, stopped_early, resumed_from) -> FitResult:
  best_row = None
  if best is not None and best.value is not None:
    best_row = {"step": _jsonable(best.step), "value": _jsonable(best.value)}
    if best.params is not None:
      state = state.replace(params=best.params)
  return FitResult(state=state, history=history, train_metrics=train_metrics, best=best_row,
                   stopped_early=stopped_early, resumed_from=resumed_from)
