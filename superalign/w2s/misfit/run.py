"""The gain-versus-misfit experiment: ``kind = "w2s_misfit"`` (see ``theory.py`` for the claim).

Representations are core MLPs (``features``: Dense -> ReLU layers reading ``x / input_scale``)
trained through the core trainer under frozen true heads; least squares and the arithmetic of gain
and misfit run in float64 on the host. Random streams are named ``misfit/<what>``.
"""

from __future__ import annotations

import logging

import jax.numpy as jnp
import numpy as np

from superalign.core import steps
from superalign.core.errors import ConfigError
from superalign.core.rng import numpy_rng, stream_seed
from superalign.core.trainer import Trainer
from superalign.models.mlp import MLP
from superalign.w2s.misfit import theory

from superalign.core import plots as core_plots

log = logging.getLogger("superalign")

VARIANTS = ("realizable", "pretrained")
_POSITIVE_INT = ("input_dim", "rep_dim", "target_depth", "strong_depth", "strong_width",
                 "weak_depth", "weak_width", "num_pretrain_tasks", "num_pretrain_points",
                 "num_val_points", "num_tasks", "num_points", "num_test_points")
_POSITIVE_FLOAT = ("input_scale", "tol_sigmas")
_NON_NEGATIVE = ("target_bias_std", "ridge")


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
  if config.train.num_steps <= 0:
    raise ConfigError("train.num_steps=0: the representations pretrain for a number of steps")


def representation(m, depth: int, width: int, bias_std: float = 0.0):
  """``depth`` Dense -> ReLU layers from ``x / input_scale`` to ``rep_dim`` features (He-normal
  kernels): a core MLP whose ``features`` a linear head reads."""
  hidden = (width,) * (depth - 1) + (m.rep_dim,)

  return lambda rngs: MLP((m.input_dim,), 1, hidden, input_scale=m.input_scale,
                          kernel_init="he_normal", bias_std=bias_std, rngs=rngs)


def frozen_head_mse(heads: jnp.ndarray) -> steps.LossFn:
  """Pretraining objective: every task's fixed true head reads the learned representation,
  ``mean_{x,t} (h(x) . w_t - y_t)^2``; only the representation trains."""

  def loss_fn(model, batch, rng, step):
    del rng, step
    pred = model.features(batch["x"]) @ heads
    loss = jnp.mean((pred - batch["y"]) ** 2)
    return loss, {"relative_mse": loss / jnp.mean(jnp.var(batch["y"], axis=0))}

  return loss_fn


def run(config, workdir: str) -> dict:
  m, seed = config.misfit, int(config.seed)
  trainer = lambda name, build, **kw: Trainer.from_config(
      config, build, workdir, name, seeds=stream_seed(seed, f"misfit/{name}"),
      name=f"{name} MLP", **kw)
  heads_rng = numpy_rng(seed, "misfit/heads")
  scale = 1 / np.sqrt(m.rep_dim)
  pretrain_heads = (heads_rng.standard_normal((m.rep_dim, m.num_pretrain_tasks)) * scale).astype(
      np.float32)
  task_heads = heads_rng.standard_normal((m.rep_dim, m.num_tasks)) * scale

  # The target representation h*: fixed random weights, never trained.
  target = trainer("target", representation(m, m.target_depth, m.rep_dim, m.target_bias_std))
  target = target.init()
  h_star = lambda inputs: target.apply(inputs, steps.features_fn)

  # Disjoint draws: pretraining pool, its validation, the fitting points, the test points.
  x_pre, x_val, x_fit, x_test = (
      (numpy_rng(seed, f"misfit/x/{name}").standard_normal((n, m.input_dim)) *
       m.input_scale).astype(np.float32)
      for name, n in (("pretrain", m.num_pretrain_points), ("val", m.num_val_points),
                      ("fit", m.num_points), ("test", m.num_test_points)))
  y_pre, y_val = h_star(x_pre) @ pretrain_heads, h_star(x_val) @ pretrain_heads
  phi_fit, phi_test = h_star(x_fit), h_star(x_test)
  y_fit, y_test = phi_fit @ task_heads, phi_test @ task_heads
  rank = int(np.linalg.matrix_rank(phi_fit.astype(np.float64)))
  log.info("target h*: %d-layer ReLU MLP, feature rank %d of %d; new-task target variance %.4g",
           m.target_depth, rank, m.rep_dim, float(np.var(y_test, axis=0).mean()))

  val_var = float(np.mean(np.var(y_val, axis=0)))

  def evaluate(trained):
    mse = float(np.mean((trained.apply(x_val, steps.features_fn) @ pretrain_heads - y_val) ** 2))
    return {"mse": mse, "relative_mse": mse / val_var}

  reps, features = {}, {}
  for name, depth, width in (("strong", m.strong_depth, m.strong_width),
                             ("weak", m.weak_depth, m.weak_width)):
    job = trainer(f"pretrain_{name}", representation(m, depth, width),
                  loss_fn=frozen_head_mse(jnp.asarray(pretrain_heads)))
    trained = job.fit({"x": x_pre, "y": y_pre}, evaluate=evaluate)
    final = trained.fit.history[-1] if trained.fit.history else evaluate(trained)
    features[name] = lambda inputs, t=trained: t.apply(inputs, steps.features_fn)
    reps[name] = {"depth": depth, "width": width, "num_params": trained.num_params,
                  "val_mse": final["mse"], "val_relative_mse": final["relative_mse"]}

  weak_fit, weak_test = features["weak"](x_fit), features["weak"](x_test)
  strong = {"realizable": (phi_fit, phi_test),
            "pretrained": (features["strong"](x_fit), features["strong"](x_test))}
  variants = {}
  for name in VARIANTS:
    scores = theory.weak_to_strong(weak_fit, strong[name][0], y_fit, weak_test, strong[name][1],
                                   y_test, m.ridge, m.tol_sigmas)
    variants[name] = theory.summarize_variant(scores, m.tol_sigmas)
  return {
      "claim": theory.CLAIM,
      "variants": variants,
      "representations": reps,
      "target": {"depth": m.target_depth, "width": m.rep_dim, "feature_rank": rank,
                 "mean_task_variance": float(np.var(y_test, axis=0).mean())},
      "num_tasks": m.num_tasks, "num_points": m.num_points, "num_test_points": m.num_test_points,
      "ridge": float(m.ridge),
  }


def summary(results: dict) -> str:
  reps = results["representations"]
  lines = [f"w2s_misfit ({results['num_tasks']} tasks, {results['num_points']} fitting points, "
           f"{results['num_test_points']} test points, ridge={results['ridge']:g}, "
           f"{results['wall_time_s']:.0f}s)",
           f"pretrained representations, validation relative MSE on the pretraining tasks: "
           f"strong {reps['strong']['val_relative_mse']:.4f}, weak "
           f"{reps['weak']['val_relative_mse']:.4f}"]
  for name in VARIANTS:
    v = results["variants"][name]
    f = v["fit"]
    lines.append(
        f"{name:>10}: slope {f['slope_through_origin']:.3f} (origin), {f['slope']:.3f} + "
        f"{f['intercept']:.2g} (R^2 {f['r2']:.3f}); R^2 of gain=misfit {f['r2_of_identity']:.3f}; "
        f"gain >= misfit - tol on {100 * v['fraction_gain_ge_misfit_minus_tol']:.0f}% of tasks "
        f"({100 * v['fraction_gain_ge_misfit']:.0f}% without tol); mean err weak "
        f"{v['mean_err_weak']:.4g}, w2s {v['mean_err_w2s']:.4g}, strong ceiling "
        f"{v['mean_err_strong_ceiling']:.3g}")
  lines.append(f"claim: {theory.CLAIM}")
  return "\n".join(lines)


def plot(results: dict, out_dir: str) -> list[str]:
  """``misfit.png``: gain against misfit per task, one panel per variant, with y = x."""
  import matplotlib.pyplot as plt

  variants = results["variants"]
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
  return [core_plots.save(fig, out_dir, "misfit.png", dpi=120)]
