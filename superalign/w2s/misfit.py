"""Gain versus misfit in weak-to-strong regression: ``kind = "w2s_misfit"``.

Replicates the synthetic experiment of Charikar, Pabbaraju and Shiragur (2024), "Quantifying the
gain in weak-to-strong generalization", at small scale. Their Theorem 1: if the strong student fits
a linear head on a fixed representation ``h_s`` by least squares to the weak model's labels, and
the target is realizable on ``h_s`` (``f* = g o h_s`` for a linear ``g``), then

    err(w2s) <= err(weak) - d(w2s, weak),   i.e.   gain := err(weak) - err(w2s) >= misfit,

in squared error. (For least squares on a linear space the projection makes it an equality in the
norm the student was fit in: Pythagoras.) Empirically, with a *learned* strong representation
(not exactly realizable), they find gain ~= misfit.

Protocol (``config.misfit`` holds every knob):

1. ``x ~ N(0, input_scale^2 I_input_dim)``. Target representation ``h*``: a random
   ``target_depth``-layer ReLU MLP of width ``rep_dim`` (He-normal kernels, biases
   ``N(0, target_bias_std^2)``, fixed). Every task ``t`` has a true linear head ``w_t ~
   N(0, I / rep_dim)`` and target ``y_t = w_t . h*(x)``.
2. Strong (``strong_depth`` layers) and weak (``weak_depth`` layers) ReLU MLPs with ``rep_dim``
   outputs are pretrained with the core engine (``core.loop.fit``, MSE) on ``num_pretrain_tasks``
   tasks through the *frozen* true heads: the loss is ``mean_t (w_t . h(x) - y_t)^2``.
   Input standardization: every network, ``h*`` included, reads ``x / input_scale``, which is the
   same function class (the first layer absorbs the scale) but keeps Adam's steps well scaled.
3. ``num_tasks`` new heads. On ``num_points`` ground-truth points: the weak head is the least
   squares fit of ``y_t`` on ``[h_w(x), 1]``; its predictions there are the weak labels; the
   student head is the least squares fit of the weak labels on ``[h_s(x), 1]`` (``ridge`` > 0
   switches to ridge regression, intercept unpenalized). Two variants: ``realizable`` (``h_s =
   h*``) and ``pretrained`` (``h_s`` = the pretrained strong network).
4. On ``num_test_points`` fresh points: ``err(weak)``, ``err(w2s)`` (mean squared error against
   ``y_t``), ``gain = err(weak) - err(w2s)`` and ``misfit = mean (f_w2s - f_weak)^2``.

Sampling tolerance. Per task, ``gain - misfit = 2 <f_w - f_sw, f_sw - f*>`` on the test points
(exact algebra). In the realizable case its population value is ``-2 ||f_sw - P f_w||^2 - 2 <f_sw -
P f_w, P f_w - f*>`` where ``P`` is the population projection: an estimation bias of about ``-2 (p /
n) misfit`` (``p`` fitted coefficients, ``n`` = ``num_points``) plus a zero-mean term of standard
deviation about ``2 sqrt(misfit err(w2s) / n)``; the test average adds its standard error ``se``
(of the per-point ``2 (f_w - f_sw)(f_sw - f*)``). So

    tol = 2 (p / n) misfit + tol_sigmas * sqrt(se^2 + 4 misfit err(w2s) / n).

On the fitting points themselves the realizable identity gain = misfit is exact; ``in_sample``
reports that check (its largest gap is float rounding).
"""

from __future__ import annotations

import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from superalign.core import checkpoint, loop, optim, state as state_lib, steps
from superalign.core import mesh as mesh_lib
from superalign.core import plots as core_plots
from superalign.core.errors import ConfigError
from superalign.core.metrics import MetricWriter
from superalign.data import batches
from superalign.supervised.train import make_applier

log = logging.getLogger("superalign")

VARIANTS = ("realizable", "pretrained")
CLAIM = ("gain >= misfit in the realizable case (Theorem 1, least squares on a fixed "
         "representation); gain ~= misfit empirically with a pretrained strong representation")

_POSITIVE_INT = ("input_dim", "rep_dim", "target_depth", "strong_depth", "strong_width",
                 "weak_depth", "weak_width", "num_pretrain_tasks", "num_pretrain_points",
                 "num_val_points", "pretrain_steps", "pretrain_batch_size", "num_tasks",
                 "num_points", "num_test_points")
_POSITIVE_FLOAT = ("input_scale", "tol_sigmas")
_NON_NEGATIVE = ("target_bias_std", "ridge", "eval_every")


# ---------------------------------------------------------------------------------------------
# Representations.


class Representation(nnx.Module):
  """``depth`` layers of Dense -> ReLU from ``x / input_scale`` to ``out_dim`` features (the
  last hidden activations are the representation; a linear head reads them)."""

  def __init__(self, in_dim: int, width: int, out_dim: int, depth: int, *, input_scale: float,
               bias_std: float = 0.0, rngs: nnx.Rngs):
    dims = [in_dim] + [width] * (depth - 1) + [out_dim]
    he = nnx.initializers.variance_scaling(2.0, "fan_in", "normal")
    bias = nnx.initializers.normal(bias_std) if bias_std > 0 else nnx.initializers.zeros_init()
    axes = lambda i: ("embed", "mlp") if i % 2 == 0 else ("mlp", "embed")  # as models.MLP
    self.layers = nnx.List([
        nnx.Linear(a, b, kernel_init=nnx.with_partitioning(he, axes(i)),
                   bias_init=nnx.with_partitioning(bias, axes(i)[1:]), rngs=rngs)
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:]))])
    self.input_scale = float(input_scale)

  def __call__(self, x: jax.Array) -> jax.Array:
    h = x.astype(jnp.float32) / self.input_scale
    for layer in self.layers:
      h = jax.nn.relu(layer(h))
    return h


def _features_fn(state, batch):
  return state.model()(batch["x"])


def frozen_head_mse(heads: jax.Array) -> steps.LossFn:
  """Pretraining objective: every task's fixed true head reads the learned representation,
  ``mean_{x,t} (h(x) . w_t - y_t)^2``; only the representation trains."""

  def loss_fn(model, batch, rng, step):
    del rng, step
    pred = model(batch["x"]) @ heads
    loss = jnp.mean((pred - batch["y"]) ** 2)
    return loss, {"relative_mse": loss / jnp.mean(jnp.var(batch["y"], axis=0))}

  return loss_fn


# ---------------------------------------------------------------------------------------------
# Least squares and the gain/misfit arithmetic (float64, host).


def fit_linear(features: np.ndarray, targets: np.ndarray, ridge: float = 0.0) -> np.ndarray:
  """Least squares ``[features, 1] @ coef ~= targets`` for every column of ``targets`` at once.

  ``ridge`` = 0: the exact (minimum-norm) least-squares solution. ``ridge`` > 0: minimizes
  ``mean residual^2 + ridge ||w||^2`` with the intercept unpenalized. Returns ``[d + 1, tasks]``,
  the intercept last.
  """
  phi = np.asarray(features, np.float64)
  y = np.asarray(targets, np.float64)
  squeeze = y.ndim == 1
  y = y[:, None] if squeeze else y
  if ridge == 0:
    design = np.concatenate([phi, np.ones((len(phi), 1))], axis=1)
    coef = np.linalg.lstsq(design, y, rcond=None)[0]
  else:
    mean_phi, mean_y = phi.mean(0), y.mean(0)
    centered = phi - mean_phi
    gram = centered.T @ centered / len(phi) + ridge * np.eye(phi.shape[1])
    w = np.linalg.solve(gram, centered.T @ (y - mean_y) / len(phi))
    coef = np.concatenate([w, (mean_y - mean_phi @ w)[None]], axis=0)
  return coef[:, 0] if squeeze else coef


def predict_linear(features: np.ndarray, coef: np.ndarray) -> np.ndarray:
  phi = np.asarray(features, np.float64)
  return phi @ coef[:-1] + coef[-1]


def gain_and_misfit(target: np.ndarray, weak: np.ndarray, w2s: np.ndarray) -> dict[str, np.ndarray]:
  """Per task (columns; points are rows): squared errors, gain and misfit, means over points."""
  err_weak = np.mean((weak - target) ** 2, axis=0)
  err_w2s = np.mean((w2s - target) ** 2, axis=0)
  return {"err_weak": err_weak, "err_w2s": err_w2s, "gain": err_weak - err_w2s,
          "misfit": np.mean((w2s - weak) ** 2, axis=0)}


def sampling_tolerance(target: np.ndarray, weak: np.ndarray, w2s: np.ndarray, num_coef: int,
                       num_points: int, sigmas: float) -> np.ndarray:
  """Per-task tolerance on ``gain >= misfit`` for a student fit on ``num_points`` points with
  ``num_coef`` coefficients and measured on the rows given here (see the module docstring)."""
  scores = gain_and_misfit(target, weak, w2s)
  per_point = 2 * (weak - w2s) * (w2s - target)  # averages to gain - misfit exactly
  se = per_point.std(axis=0, ddof=1) / np.sqrt(len(per_point))
  fit_sd = np.sqrt(4 * scores["misfit"] * scores["err_w2s"] / num_points)
  bias = 2 * num_coef / num_points * scores["misfit"]
  return bias + sigmas * np.sqrt(se ** 2 + fit_sd ** 2)


def line_fits(misfit: np.ndarray, gain: np.ndarray) -> dict[str, float]:
  """Least-squares lines of gain on misfit: through the origin and with an intercept, their
  R^2 (through the origin: ``1 - SS_res / SS_tot`` about the mean of gain, so comparable), and
  the R^2 of the line gain = misfit itself."""
  m, g = np.asarray(misfit, np.float64), np.asarray(gain, np.float64)
  ss_tot = np.sum((g - g.mean()) ** 2)
  r2 = lambda pred: float(1 - np.sum((g - pred) ** 2) / ss_tot) if ss_tot > 0 else float("nan")
  slope0 = float(m @ g / (m @ m))
  slope, intercept = (float(v) for v in np.polyfit(m, g, 1))
  return {"slope_through_origin": slope0, "r2_through_origin": r2(slope0 * m),
          "slope": slope, "intercept": intercept, "r2": r2(slope * m + intercept),
          "r2_of_identity": r2(m)}


def weak_to_strong(weak_train: np.ndarray, strong_train: np.ndarray, y_train: np.ndarray,
                   weak_test: np.ndarray, strong_test: np.ndarray, y_test: np.ndarray,
                   ridge: float, tol_sigmas: float) -> dict:
  """Weak heads on ground truth, student heads on weak labels, scored on the test rows."""
  n = len(y_train)
  weak_coef = fit_linear(weak_train, y_train, ridge)
  weak_labels = predict_linear(weak_train, weak_coef)
  student_coef = fit_linear(strong_train, weak_labels, ridge)
  ceiling_coef = fit_linear(strong_train, y_train, ridge)
  f_w, f_sw = predict_linear(weak_test, weak_coef), predict_linear(strong_test, student_coef)
  test = gain_and_misfit(y_test, f_w, f_sw)
  tol = sampling_tolerance(y_test, f_w, f_sw, strong_train.shape[1] + 1, n, tol_sigmas)
  in_sample = gain_and_misfit(y_train, weak_labels, predict_linear(strong_train, student_coef))
  ceiling = np.mean((predict_linear(strong_test, ceiling_coef) - y_test) ** 2, axis=0)
  return {"test": test, "tol": tol, "in_sample": in_sample, "err_strong_ceiling": ceiling}


# ---------------------------------------------------------------------------------------------
# The runner.


def validate(config) -> None:
  m = config.get("misfit")
  if m is None:
    raise ConfigError("misfit: missing; a w2s_misfit config needs a misfit ConfigDict "
                      "(see experiments/w2s/misfit.py)")
  for key in _POSITIVE_INT:
    value = m.get(key)
    if not isinstance(value, int) or value <= 0:
      raise ConfigError(f"misfit.{key}={value!r}: must be a positive integer")
  for key in _POSITIVE_FLOAT:
    value = m.get(key)
    if not isinstance(value, (int, float)) or not value > 0:
      raise ConfigError(f"misfit.{key}={value!r}: must be positive")
  for key in _NON_NEGATIVE:
    value = m.get(key)
    if not isinstance(value, (int, float)) or value < 0:
      raise ConfigError(f"misfit.{key}={value!r}: must be zero or positive")
  if m.rep_dim + 1 > m.num_points:
    raise ConfigError(f"misfit.num_points={m.num_points}: needs more points than the "
                      f"rep_dim + 1 = {m.rep_dim + 1} coefficients of a head")
  if m.num_test_points < 2:
    raise ConfigError(f"misfit.num_test_points={m.num_test_points}: needs at least 2")
  if m.num_tasks < 2:
    raise ConfigError(f"misfit.num_tasks={m.num_tasks}: needs at least 2 for a line fit")
  axes = dict(config.mesh)
  num_devices = int(axes.pop("num_devices", 0)) or jax.device_count()  # 0: all devices
  try:
    sizes = mesh_lib.resolve_axis_sizes(axes, num_devices)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  shards = sizes["data"] * sizes["fsdp"]
  if m.pretrain_batch_size % shards:
    raise ConfigError(f"misfit.pretrain_batch_size={m.pretrain_batch_size}: not divisible by the "
                      f"batch shards (mesh data x fsdp = {shards})")


def _gaussian(seed: int, purpose: int, n: int, m) -> np.ndarray:
  rng = np.random.default_rng([seed, purpose])
  return (rng.standard_normal((n, m.input_dim)) * m.input_scale).astype(np.float32)


def _build(m, depth: int, width: int, bias_std: float = 0.0):
  return lambda rngs: Representation(m.input_dim, width, m.rep_dim, depth,
                                     input_scale=m.input_scale, bias_std=bias_std, rngs=rngs)


def pretrain_representation(config, name: str, depth: int, width: int, heads: np.ndarray,
                            x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                            workdir: str, mesh, seed: int):
  """Trains a representation under the frozen ``heads`` with ``core.loop.fit``; returns the
  final state, a feature function ``x -> h(x)``, and the validation record."""
  m = config.misfit
  build = _build(m, depth, width)
  tx = optim.make(config.optim, m.pretrain_steps)
  state, shardings = state_lib.create(build, tx, seed, mesh,
                                      cache_key=("w2s_misfit", depth, width, m.input_dim,
                                                 m.rep_dim, m.input_scale))
  train_step = steps.make_train_step(frozen_head_mse(jnp.asarray(heads)), shardings, mesh)
  applier = make_applier(shardings, mesh, config.train.eval_batch_size, stacked=False)
  val_var = float(np.mean(np.var(y_val, axis=0)))

  def batch_at(step: int, _state):
    idx = batches.process_slice(batches.train_indices(seed, step, len(x), m.pretrain_batch_size))
    return mesh_lib.shard_batch({"x": x[idx], "y": y[idx]}, mesh)

  def evaluate(s):
    mse = float(np.mean((applier(s, x_val, _features_fn) @ heads - y_val) ** 2))
    return {"mse": mse, "relative_mse": mse / val_var}

  tag = f"pretrain_{name}"
  ckpt = None  # train.checkpoint_every = 0: no checkpoints (smoke runs), else resumable
  if config.train.checkpoint_every > 0:
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints", tag),
                                   config.train.checkpoint_every, config.train.keep_checkpoints)
  writer = MetricWriter(workdir, tag=tag, resume_step=ckpt.latest_step() if ckpt else None)
  try:
    result = loop.fit(state, train_step, batch_at, m.pretrain_steps, evaluate=evaluate,
                      eval_every=m.eval_every, checkpointer=ckpt, writer=writer,
                      log_every=config.train.log_every, desc=tag)
  finally:
    writer.close()
    if ckpt is not None:
      ckpt.close()
  final = result.history[-1] if result.history else evaluate(result.state)
  log.info("%s: %d-layer MLP, %s parameters, validation relative MSE %.4g", tag, depth,
           f"{state_lib.param_count(result.state.params):,}", final["relative_mse"])
  features = lambda inputs: applier(result.state, inputs, _features_fn)
  return features, {"depth": depth, "width": width,
                    "num_params": state_lib.param_count(result.state.params),
                    "val_mse": final["mse"], "val_relative_mse": final["relative_mse"]}


def plot_gain_vs_misfit(variants: dict, out_dir: str) -> str:
  """``misfit.png``: gain against misfit per task, one panel per variant, with y = x."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  os.makedirs(out_dir, exist_ok=True)
  fig, axes = plt.subplots(1, len(variants), figsize=(4.2 * len(variants), 4))
  for ax, (name, v) in zip(np.atleast_1d(axes), variants.items()):
    misfit, gain = np.asarray(v["misfit"]), np.asarray(v["gain"])
    ax.scatter(misfit, gain, s=12, alpha=0.7, label="tasks")
    hi = max(misfit.max(), gain.max()) * 1.05
    lo = min(0.0, misfit.min(), gain.min())
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="gain = misfit")
    f = v["fit"]
    ax.plot([lo, hi], [f["slope"] * lo + f["intercept"], f["slope"] * hi + f["intercept"]],
            "r-", lw=0.8, label=f"fit: slope {f['slope']:.2f}, R$^2$ {f['r2']:.2f}")
    ax.set_xlabel("misfit  d(w2s, weak)")
    ax.set_ylabel("gain  err(weak) - err(w2s)")
    ax.set_title(f"{name} strong representation")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.tight_layout()
  path = os.path.join(out_dir, "misfit.png")
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def _summarize(scores: dict, tol_sigmas: float) -> dict:
  test, tol = scores["test"], scores["tol"]
  gain, misfit = test["gain"], test["misfit"]
  gap_in = scores["in_sample"]["gain"] - scores["in_sample"]["misfit"]
  return {
      "gain": gain.tolist(), "misfit": misfit.tolist(),
      "err_weak": test["err_weak"].tolist(), "err_w2s": test["err_w2s"].tolist(),
      "tolerance": tol.tolist(),
      "err_strong_ceiling": scores["err_strong_ceiling"].tolist(),
      "fit": line_fits(misfit, gain),
      "fraction_gain_ge_misfit_minus_tol": float(np.mean(gain >= misfit - tol)),
      "fraction_gain_ge_misfit": float(np.mean(gain >= misfit)),
      "tolerance_rule": (f"tol = 2 (p/n) misfit + {tol_sigmas:g} sqrt(se_test^2 + "
                         "4 misfit err_w2s / n), p = student coefficients, n = fitting points"),
      "mean_gain": float(gain.mean()), "mean_misfit": float(misfit.mean()),
      "mean_err_weak": float(test["err_weak"].mean()),
      "mean_err_w2s": float(test["err_w2s"].mean()),
      "mean_err_strong_ceiling": float(scores["err_strong_ceiling"].mean()),
      "mean_relative_gap": float(np.mean((gain - misfit) / misfit)),
      "in_sample": {"max_abs_gain_minus_misfit": float(np.abs(gap_in).max()),
                    "max_relative_gap": float(np.max(np.abs(gap_in) /
                                                     scores["in_sample"]["misfit"]))},
  }


def run(config, workdir: str) -> dict:
  t0 = time.time()
  m = config.misfit
  seed = int(config.seed)
  mesh = mesh_lib.make_mesh(dict(config.mesh))
  rng = np.random.default_rng([seed, 0])
  scale = 1 / np.sqrt(m.rep_dim)
  pretrain_heads = (rng.standard_normal((m.rep_dim, m.num_pretrain_tasks)) * scale).astype(
      np.float32)
  task_heads = rng.standard_normal((m.rep_dim, m.num_tasks)) * scale

  # The target representation h*: fixed random weights, never trained (a zero-update optimizer).
  target_state, target_shardings = state_lib.create(
      _build(m, m.target_depth, m.rep_dim, m.target_bias_std), optax.set_to_zero(),
      seed + 1, mesh)
  target_apply = make_applier(target_shardings, mesh, config.train.eval_batch_size, False)
  h_star = lambda inputs: target_apply(target_state, inputs, _features_fn)

  # Disjoint draws: pretraining pool, its validation, the fitting points, the test points.
  x_pre, x_val, x_fit, x_test = (
      _gaussian(seed, i + 1, n, m)
      for i, n in enumerate((m.num_pretrain_points, m.num_val_points, m.num_points,
                             m.num_test_points)))
  y_pre, y_val = h_star(x_pre) @ pretrain_heads, h_star(x_val) @ pretrain_heads
  phi_fit, phi_test = h_star(x_fit), h_star(x_test)
  y_fit, y_test = phi_fit @ task_heads, phi_test @ task_heads
  rank = int(np.linalg.matrix_rank(phi_fit.astype(np.float64)))
  log.info("target h*: %d-layer ReLU MLP, feature rank %d of %d; new-task target variance %.4g",
           m.target_depth, rank, m.rep_dim, float(np.var(y_test, axis=0).mean()))

  reps = {}
  feature_fns = {}
  for name, depth, width, offset in (("strong", m.strong_depth, m.strong_width, 2),
                                     ("weak", m.weak_depth, m.weak_width, 3)):
    feature_fns[name], reps[name] = pretrain_representation(
        config, name, depth, width, pretrain_heads, x_pre, y_pre, x_val, y_val, workdir, mesh,
        seed + offset)

  weak_fit, weak_test = feature_fns["weak"](x_fit), feature_fns["weak"](x_test)
  strong = {"realizable": (phi_fit, phi_test),
            "pretrained": (feature_fns["strong"](x_fit), feature_fns["strong"](x_test))}
  variants = {}
  for name in VARIANTS:
    scores = weak_to_strong(weak_fit, strong[name][0], y_fit, weak_test, strong[name][1], y_test,
                            m.ridge, m.tol_sigmas)
    variants[name] = _summarize(scores, m.tol_sigmas)

  plot_paths = [os.path.join(workdir, "plots", "misfit.png")]
  if jax.process_index() == 0:  # one writer in multi-host runs
    plot_gain_vs_misfit(variants, os.path.dirname(plot_paths[0]))
    plot_paths += core_plots.learning_curves(workdir)  # pretraining curves from metrics.jsonl
  runtime = time.time() - t0
  lines = [f"w2s_misfit ({m.num_tasks} tasks, {m.num_points} fitting points, "
           f"{m.num_test_points} test points, ridge={m.ridge:g}, {runtime:.0f}s)",
           f"pretrained representations, validation relative MSE on the pretraining tasks: "
           f"strong {reps['strong']['val_relative_mse']:.4f}, weak "
           f"{reps['weak']['val_relative_mse']:.4f}"]
  for name in VARIANTS:
    v = variants[name]
    f = v["fit"]
    lines.append(
        f"{name:>10}: slope {f['slope_through_origin']:.3f} (origin), {f['slope']:.3f} + "
        f"{f['intercept']:.2g} (R^2 {f['r2']:.3f}); R^2 of gain=misfit {f['r2_of_identity']:.3f}; "
        f"gain >= misfit - tol on {100 * v['fraction_gain_ge_misfit_minus_tol']:.0f}% of tasks "
        f"({100 * v['fraction_gain_ge_misfit']:.0f}% without tol); mean err weak "
        f"{v['mean_err_weak']:.4g}, w2s {v['mean_err_w2s']:.4g}, strong ceiling "
        f"{v['mean_err_strong_ceiling']:.3g}")
  lines.append(f"claim: {CLAIM}")
  return {
      "kind": "w2s_misfit",
      "claim": CLAIM,
      "variants": variants,
      "representations": reps,
      "target": {"depth": m.target_depth, "width": m.rep_dim, "feature_rank": rank,
                 "mean_task_variance": float(np.var(y_test, axis=0).mean())},
      "num_tasks": m.num_tasks, "num_points": m.num_points, "num_test_points": m.num_test_points,
      "ridge": float(m.ridge),
      "plots": [os.path.relpath(p, workdir) for p in plot_paths],
      "runtime_s": runtime,
      "summary": "\n".join(lines),
  }
