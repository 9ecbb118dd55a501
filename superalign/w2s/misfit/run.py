"""The gain-versus-misfit experiment: ``kind = "w2s_misfit"`` (see ``theory.py`` for the claim).

A fixed random target representation h*; a strong and a weak representation pretrained through
h*'s frozen true heads (``representations.py``); then new tasks whose weak heads label the
fitting points for the students' heads, scored by gain and misfit on fresh points in the
``realizable`` (student on h*) and ``pretrained`` (student on the strong network) variants.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from superalign.config import schema
from superalign.core.errors import ConfigError
from superalign.core.spec import TrainSpec
from superalign.w2s.misfit import representations as reps_lib, theory
from superalign.w2s.misfit.report import plot, summary  # noqa: F401 (read by the launcher)

log = logging.getLogger("superalign")

RULES = {
    **{f"misfit.{key}": schema.COUNT for key in (
        "input_dim", "rep_dim", "target_depth", "strong_depth", "strong_width", "weak_depth",
        "weak_width", "num_pretrain_tasks", "num_pretrain_points", "num_val_points",
        "num_points")},
    "misfit.num_tasks": schema.at_least(2),          # a line fit of gain on misfit
    "misfit.num_test_points": schema.at_least(2),
    "misfit.input_scale": schema.POSITIVE,
    "misfit.tol_sigmas": schema.POSITIVE,
    "misfit.target_bias_std": schema.NON_NEGATIVE,
    "misfit.ridge": schema.NON_NEGATIVE,
    "train.num_steps": schema.COUNT,                 # the representations pretrain for steps
}


def validate(config) -> None:
  """The block itself, and that a head has fewer coefficients than fitting points."""
  m = config.get("misfit")
  if m is None:
    raise ConfigError("misfit: missing; a w2s_misfit config needs a misfit ConfigDict "
                      "(see experiments/w2s/misfit.py)")
  missing = [f.name for f in dataclasses.fields(reps_lib.Setting) if f.name not in m]
  if missing:
    raise ConfigError(f"misfit.{missing[0]}: missing (see experiments/w2s/misfit.py)")
  if m.rep_dim + 1 > m.num_points:
    raise ConfigError(f"misfit.num_points={m.num_points}: needs more points than the "
                      f"rep_dim + 1 = {m.rep_dim + 1} coefficients of a head")


def run(config, workdir: str) -> dict:
  """Builds the target representation and the tasks, pretrains the strong and weak
  representations through the true heads, and scores weak-to-strong on every new task in both
  variants (``realizable`` and ``pretrained``); returns the results per variant with the
  representations' and the target's figures."""
  m, spec = reps_lib.Setting.from_config(config.misfit), TrainSpec.from_config(config)
  pretrain_heads, task_heads = reps_lib.true_heads(m, spec.seed)
  h_star = reps_lib.target_features(m, spec, workdir)
  x = reps_lib.inputs(m, spec.seed)
  y_pre, y_val = h_star(x["pretrain"]) @ pretrain_heads, h_star(x["val"]) @ pretrain_heads
  phi_fit, phi_test = h_star(x["fit"]), h_star(x["test"])
  y_fit, y_test = phi_fit @ task_heads, phi_test @ task_heads
  rank = int(np.linalg.matrix_rank(phi_fit.astype(np.float64)))
  log.info("target h*: %d-layer ReLU MLP, feature rank %d of %d; new-task target variance %.4g",
           m.target_depth, rank, m.rep_dim, float(np.var(y_test, axis=0).mean()))

  features, reps = reps_lib.pretrain(m, spec, workdir, pretrain_heads, x["pretrain"], y_pre,
                                     x["val"], y_val)
  strong = {"realizable": (phi_fit, phi_test),
            "pretrained": (features["strong"](x["fit"]), features["strong"](x["test"]))}
  return {
      "claim": theory.CLAIM,
      "variants": reps_lib.variants(m, features["weak"], strong, x["fit"], x["test"], y_fit,
                                    y_test),
      "representations": reps,
      "target": {"depth": m.target_depth, "width": m.rep_dim, "feature_rank": rank,
                 "mean_task_variance": float(np.var(y_test, axis=0).mean())},
      "num_tasks": m.num_tasks, "num_points": m.num_points, "num_test_points": m.num_test_points,
      "ridge": float(m.ridge),
  }
