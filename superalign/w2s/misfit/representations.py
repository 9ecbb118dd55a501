"""The representations of the gain-versus-misfit experiment (``theory.py`` says what they are for).

Representations are core MLPs (``features``: Dense -> ReLU layers reading ``x / input_scale``)
trained through the core trainer under frozen true heads; everything downstream of their
features (least squares, gain, misfit) runs in float64 on the host. Random streams are named
``misfit/<what>``.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

import jax.numpy as jnp
import numpy as np

from superalign.core import steps
from superalign.core.rng import numpy_rng, stream_seed
from superalign.core.spec import TrainSpec
from superalign.core.trainer import Trainer
from superalign.models.mlp import MLP
from superalign.w2s.misfit import theory

Features = Callable[[np.ndarray], np.ndarray]
VARIANTS = ("realizable", "pretrained")


@dataclasses.dataclass(frozen=True)
class Setting:
  """Every knob of the experiment (``experiments/w2s/misfit.py`` says what each does)."""
  input_dim: int
  input_scale: float
  rep_dim: int
  target_depth: int
  target_bias_std: float
  strong_depth: int
  strong_width: int
  weak_depth: int
  weak_width: int
  num_pretrain_tasks: int
  num_pretrain_points: int
  num_val_points: int
  num_tasks: int
  num_points: int
  num_test_points: int
  ridge: float
  tol_sigmas: float

  @classmethod
  def from_config(cls, block: Mapping) -> "Setting":
    """From the config's ``misfit`` block."""
    return cls(**{f.name: block[f.name] for f in dataclasses.fields(cls)})


def representation(m: Setting, depth: int, width: int, bias_std: float = 0.0):
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


def _trainer(spec: TrainSpec, workdir: str, name: str, build, **fields) -> Trainer:
  return Trainer(build, spec, workdir, name, seeds=stream_seed(spec.seed, f"misfit/{name}"),
                 name=f"{name} MLP", **fields)


def true_heads(m: Setting, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """The pretraining tasks' heads (float32: the pretraining loss reads them) and the new tasks'
  heads, ``w_t ~ N(0, I / rep_dim)``."""
  rng = numpy_rng(seed, "misfit/heads")
  scale = 1 / np.sqrt(m.rep_dim)
  pretrain = (rng.standard_normal((m.rep_dim, m.num_pretrain_tasks)) * scale).astype(np.float32)
  return pretrain, rng.standard_normal((m.rep_dim, m.num_tasks)) * scale


def target_features(m: Setting, spec: TrainSpec, workdir: str) -> Features:
  """The target representation h*: fixed random weights, never trained."""
  target = _trainer(spec, workdir, "target",
                    representation(m, m.target_depth, m.rep_dim, m.target_bias_std)).init()
  return lambda x: target.apply(x, steps.features_fn)


def inputs(m: Setting, seed: int) -> dict[str, np.ndarray]:
  """Disjoint draws: the pretraining pool, its validation, the fitting points, the test points."""
  return {name: (numpy_rng(seed, f"misfit/x/{name}").standard_normal((n, m.input_dim)) *
                 m.input_scale).astype(np.float32)
          for name, n in (("pretrain", m.num_pretrain_points), ("val", m.num_val_points),
                          ("fit", m.num_points), ("test", m.num_test_points))}


def pretrain(m: Setting, spec: TrainSpec, workdir: str, heads: np.ndarray, x_pre: np.ndarray,
             y_pre: np.ndarray, x_val: np.ndarray, y_val: np.ndarray
             ) -> tuple[dict[str, Features], dict[str, dict]]:
  """The strong and the weak representation trained through the frozen ``heads`` on the
  pretraining pool: their features, and what they are (size, validation MSE)."""
  val_var = float(np.mean(np.var(y_val, axis=0)))

  def evaluate(trained):
    mse = float(np.mean((trained.apply(x_val, steps.features_fn) @ heads - y_val) ** 2))
    return {"mse": mse, "relative_mse": mse / val_var}

  features, reps = {}, {}
  for name, depth, width in (("strong", m.strong_depth, m.strong_width),
                             ("weak", m.weak_depth, m.weak_width)):
    job = _trainer(spec, workdir, f"pretrain_{name}", representation(m, depth, width),
                   loss_fn=frozen_head_mse(jnp.asarray(heads)))
    trained = job.fit({"x": x_pre, "y": y_pre}, evaluate=evaluate)
    final = trained.fit.history[-1] if trained.fit.history else evaluate(trained)
    features[name] = lambda x, t=trained: t.apply(x, steps.features_fn)
    reps[name] = {"depth": depth, "width": width, "num_params": trained.num_params,
                  "val_mse": final["mse"], "val_relative_mse": final["relative_mse"]}
  return features, reps


def variants(m: Setting, weak: Features, strong: Mapping[str, tuple[np.ndarray, np.ndarray]],
             x_fit: np.ndarray, x_test: np.ndarray, y_fit: np.ndarray, y_test: np.ndarray
             ) -> dict[str, dict]:
  """Weak heads on ground truth, students on weak labels, for each strong representation of
  ``strong`` (its features on the fitting and the test points), summarized per variant."""
  weak_fit, weak_test = weak(x_fit), weak(x_test)
  out = {}
  for name, (strong_fit, strong_test) in strong.items():
    scores = theory.weak_to_strong(weak_fit, strong_fit, y_fit, weak_test, strong_test, y_test,
                                   m.ridge, m.tol_sigmas)
    out[name] = theory.summarize_variant(scores, m.tol_sigmas)
  return out
