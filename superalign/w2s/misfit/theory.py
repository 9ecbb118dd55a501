"""The theory of gain versus misfit (Charikar, Pabbaraju and Shiragur 2024), in float64 on the host.

Replicates the synthetic experiment of Charikar, Pabbaraju and Shiragur (2024), "Quantifying the
gain in weak-to-strong generalization", at small scale. Their Theorem 1: if the strong student fits
a linear head on a fixed representation ``h_s`` by least squares to the weak model's labels, and
the target is realizable on ``h_s`` (``f* = g o h_s`` for a linear ``g``), then

    err(w2s) <= err(weak) - d(w2s, weak),   i.e.   gain := err(weak) - err(w2s) >= misfit,

in squared error. (For least squares on a linear space the projection makes it an equality in the
norm the student was fit in: Pythagoras.) Empirically, with a *learned* strong representation
(not exactly realizable), they find gain ~= misfit.

Protocol (``representations.Setting``, the config's ``misfit`` block, holds every knob; ``run.py``
runs it):

1. ``x ~ N(0, input_scale^2 I_input_dim)``. Target representation ``h*``: a random
   ``target_depth``-layer ReLU MLP of width ``rep_dim`` (He-normal kernels, biases
   ``N(0, target_bias_std^2)``, fixed). Every task ``t`` has a true linear head ``w_t ~
   N(0, I / rep_dim)`` and target ``y_t = w_t . h*(x)``.
2. Strong (``strong_depth`` layers) and weak (``weak_depth`` layers) ReLU MLPs with ``rep_dim``
   outputs are pretrained with the core trainer (MSE) on ``num_pretrain_tasks``
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

import numpy as np

CLAIM = ("gain >= misfit in the realizable case (Theorem 1, least squares on a fixed "
         "representation); gain ~= misfit empirically with a pretrained strong representation")


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
  """``[points, tasks]`` (or ``[points]``): ``[features, 1] @ coef`` for ``features``
  ``[points, d]`` and ``coef`` ``[d + 1, tasks]`` (or ``[d + 1]``) from ``fit_linear``, in
  float64."""
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


def summarize_variant(scores: dict, tol_sigmas: float) -> dict:
  """One variant's results as JSON from ``weak_to_strong``'s ``scores``: per task (lists over
  tasks) gain, misfit, errors and tolerance; the line fits of gain on misfit; the share of tasks
  with ``gain >= misfit - tol`` and ``gain >= misfit``; means; and the in-sample check's largest
  gap. ``tol_sigmas`` is written into the tolerance rule it states."""
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
