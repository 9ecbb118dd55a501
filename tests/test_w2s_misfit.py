"""Gain vs misfit (Charikar et al. 2024): least-squares arithmetic on hand-made cases, config
validation, and the smoke run end to end."""

import os

import numpy as np
import pytest

from superalign.launch import runners
from superalign.core.errors import ConfigError
from superalign.w2s.misfit import representations, theory as misfit

from experiments.w2s import misfit as misfit_config

# Four points, one feature phi = 0..3 (plus the intercept). The residual r is orthogonal to both
# the constant and phi (sum 0, phi . r = 0), so it is exactly what least squares cannot fit.
PHI = np.array([[0.0], [1.0], [2.0], [3.0]])
F_STAR = 2 * PHI[:, 0] + 1                    # 1, 3, 5, 7: realizable on [phi, 1]
R = np.array([1.0, -1.0, -1.0, 1.0])


def test_least_squares_projects_out_the_orthogonal_error():
  coef = misfit.fit_linear(PHI, F_STAR + R)
  np.testing.assert_allclose(coef, [2.0, 1.0], atol=1e-12)  # slope, intercept
  np.testing.assert_allclose(misfit.predict_linear(PHI, coef), F_STAR, atol=1e-12)
  # Several tasks (columns) are solved at once, each as if alone.
  both = misfit.fit_linear(PHI, np.stack([F_STAR + R, -F_STAR], 1))
  np.testing.assert_allclose(both, [[2.0, -2.0], [1.0, -1.0]], atol=1e-12)
  # Ridge shrinks the slope by var(phi) / (var(phi) + ridge); the intercept is unpenalized.
  ridge = misfit.fit_linear(PHI, F_STAR, ridge=1.25)  # var(phi) = 1.25: the slope halves
  np.testing.assert_allclose(ridge, [1.0, 4.0 - 1.0 * 1.5], atol=1e-12)
  np.testing.assert_allclose(misfit.fit_linear(PHI, F_STAR, ridge=1e-12), [2.0, 1.0], atol=1e-9)


def test_gain_equals_misfit_by_pythagoras_on_the_fitting_points():
  # Weak labels: the orthogonal error R plus an error 0.5 (phi - 1.5) inside the student's span.
  inside = 0.5 * (PHI[:, 0] - 1.5)
  weak = F_STAR + R + inside
  w2s = misfit.predict_linear(PHI, misfit.fit_linear(PHI, weak))
  np.testing.assert_allclose(w2s, F_STAR + inside, atol=1e-12)  # R removed, the rest inherited
  s = misfit.gain_and_misfit(F_STAR[:, None], weak[:, None], w2s[:, None])
  assert s["err_weak"][0] == pytest.approx(1.0 + 0.3125)  # mean R^2 + mean inside^2
  assert s["err_w2s"][0] == pytest.approx(0.3125)
  assert s["gain"][0] == pytest.approx(1.0) and s["misfit"][0] == pytest.approx(1.0)
  # Not realizable: the target has a part 0.5 R the student cannot express and the weak model
  # got half right; then gain < misfit, by exactly 2 <f_w - f_sw, f_sw - f*> = -1.
  target = F_STAR + 0.5 * R
  s = misfit.gain_and_misfit(target[:, None], weak[:, None], w2s[:, None])
  cross = 2 * np.mean((weak - w2s) * (w2s - target))
  assert s["gain"][0] - s["misfit"][0] == pytest.approx(cross) == pytest.approx(-1.0)
  assert s["gain"][0] == pytest.approx(0.0) and s["misfit"][0] == pytest.approx(1.0)


def test_sampling_tolerance_scales_with_points():
  rng = np.random.default_rng(0)
  target = rng.normal(size=(1000, 3))
  weak = target + rng.normal(size=(1000, 3))
  w2s = target + 0.1 * rng.normal(size=(1000, 3))
  scores = misfit.gain_and_misfit(target, weak, w2s)
  few = misfit.sampling_tolerance(target, weak, w2s, num_coef=5, num_points=100, sigmas=3.0)
  many = misfit.sampling_tolerance(target, weak, w2s, num_coef=5, num_points=10000, sigmas=3.0)
  assert few.shape == (3,) and np.all(many < few)
  assert np.all(few > 2 * 5 / 100 * scores["misfit"])  # at least the estimation bias


def test_line_fits():
  m = np.array([1.0, 2.0, 3.0, 4.0])
  fit = misfit.line_fits(m, 2 * m)
  assert fit["slope_through_origin"] == pytest.approx(2.0)
  assert fit["slope"] == pytest.approx(2.0) and fit["intercept"] == pytest.approx(0.0, abs=1e-12)
  assert fit["r2"] == pytest.approx(1.0) and fit["r2_through_origin"] == pytest.approx(1.0)
  assert fit["r2_of_identity"] < 0  # gain = misfit is a bad line for gain = 2 misfit
  fit = misfit.line_fits(m, m + 1)
  assert fit["slope"] == pytest.approx(1.0) and fit["intercept"] == pytest.approx(1.0)
  assert fit["slope_through_origin"] == pytest.approx(1 + m.sum() / (m @ m))


@pytest.mark.parametrize("key, value", [("rep_dim", 0), ("num_tasks", -3), ("num_points", 0),
                                        ("strong_depth", 0), ("input_scale", 0.0),
                                        ("ridge", -1.0)])
def test_validate_names_the_bad_key(key, value):
  config = misfit_config.get_config("smoke")
  config.misfit[key] = value
  with pytest.raises(ConfigError, match=rf"misfit\.{key}="):
    runners.validate(config)


def test_misfit_config_has_no_unused_blocks_and_checks_its_batch():
  config = misfit_config.get_config("smoke")
  assert "data" not in config and "model" not in config   # no key that nothing reads
  config.train.batch_size = 12
  with pytest.raises(ConfigError, match="train.batch_size=12: not divisible"):
    runners.validate(config, num_devices=8)


@pytest.mark.e2e
@pytest.mark.xdist_group("smoke-w2s_misfit")   # beside its shared smoke run
def test_smoke_end_to_end(smoke):
  results, tmp_path = smoke("w2s_misfit")   # the session's shared smoke run (conftest)
  config = misfit_config.get_config("smoke")
  m = config.misfit
  assert results["claim"] == misfit.CLAIM and isinstance(results["summary"], str)
  assert os.path.isfile(tmp_path / "plots" / "misfit.png")
  assert set(results["variants"]) == set(representations.VARIANTS)
  for name, v in results["variants"].items():
    for key in ("gain", "misfit", "err_weak", "err_w2s", "tolerance"):
      assert len(v[key]) == m.num_tasks and np.all(np.isfinite(v[key])), (name, key)
    assert np.all(np.array(v["misfit"]) >= 0) and np.all(np.array(v["tolerance"]) > 0)
    np.testing.assert_allclose(np.array(v["err_weak"]) - v["err_w2s"], v["gain"], rtol=1e-9)
    assert set(v["fit"]) >= {"slope_through_origin", "slope", "intercept", "r2"}
    assert 0 <= v["fraction_gain_ge_misfit_minus_tol"] <= 1
  # Both variants share the weak model, hence its error.
  np.testing.assert_allclose(results["variants"]["realizable"]["err_weak"],
                             results["variants"]["pretrained"]["err_weak"])

  real = results["variants"]["realizable"]
  gain, mis, tol = (np.array(real[k]) for k in ("gain", "misfit", "tolerance"))
  # Theorem 1 (realizable, least squares): gain >= misfit on fresh points, up to sampling error...
  assert np.all(gain >= mis - tol), np.min(gain - mis + tol)
  assert real["fraction_gain_ge_misfit_minus_tol"] == 1.0
  # ...and exactly (Pythagoras) on the points the student was fit on.
  assert real["in_sample"]["max_relative_gap"] < 1e-6
  assert real["mean_err_strong_ceiling"] < 1e-8  # h* itself: new tasks fit exactly
  # The weak model is imperfect, so the strong student really gains, and the gain tracks misfit.
  assert real["mean_err_w2s"] < real["mean_err_weak"]
  assert 0.8 < real["fit"]["slope_through_origin"] < 1.2 and real["fit"]["r2"] > 0.9
