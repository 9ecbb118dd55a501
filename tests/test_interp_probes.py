"""Probes (logistic, mass-mean, contrast pairs, random floor), their metrics, layer sweeps, and
CCS with the Farquhar et al. distractor check, on planted synthetic activations."""

from __future__ import annotations

import numpy as np
import pytest

from superalign.core.errors import ConfigError
from superalign.core.trainer import Trainer
from superalign.interp import ccs, probes


def planted(n, d, separation, seed):
  """Gaussian activations whose two classes differ by ``separation`` noise stds along a unit
  direction ``v`` (plus a common offset, which standardization and thresholds must absorb)."""
  rng = np.random.default_rng([seed, 1])
  v = rng.normal(size=d)
  v /= np.linalg.norm(v)
  labels = rng.integers(0, 2, n)
  acts = (rng.normal(size=(n, d)) + np.outer(labels - 0.5, v) * separation
          + rng.normal(scale=3.0, size=d))
  return acts.astype(np.float32), labels, v


def test_logistic_and_mass_mean_find_a_planted_direction_above_the_random_floor(tmp_path):
  acts, labels, v = planted(2000, 64, 3.0, seed=0)
  fit, held = slice(0, 1000), slice(1000, None)
  logistic = probes.fit_logistic(acts[fit], labels[fit], str(tmp_path))
  mass_mean = probes.fit_mass_mean(acts[fit], labels[fit])
  np.testing.assert_allclose(logistic.mean, acts[fit].mean(0), atol=1e-4)
  for probe, min_cos in ((logistic, 0.85), (mass_mean, 0.95)):
    assert abs(np.linalg.norm(probe.direction) - 1) < 1e-5
    assert probe.direction @ v > min_cos
    result = probe.evaluate(acts[held], labels[held])
    assert result["auroc"]["mean"] > 0.95, result
    assert result["accuracy"]["mean"] > 0.85, result
  scores = logistic.scores(acts[held])
  assert scores.min() >= 0 and scores.max() <= 1
  assert logistic.evaluate(acts[held], labels[held])["accuracy"]["threshold_from"] == \
      probes.PROBABILITY
  np.testing.assert_allclose(logistic.probs(acts[held])[:, 1], scores, rtol=1e-6)

  floor = probes.random_floor(acts[fit], labels[fit], acts[held], labels[held], draws=20, seed=0)
  assert len(floor["auroc"]["draws"]) == 20 and floor["auroc"]["std"] > 0
  assert abs(floor["auroc"]["mean"] - 0.5) < 0.1, floor["auroc"]
  assert max(floor["auroc"]["draws"]) < 0.8, floor["auroc"]


def test_contrast_pair_direction_separates_the_classes_without_their_labels():
  acts, labels, v = planted(1000, 64, 3.0, seed=1)
  rng = np.random.default_rng(2)
  content = rng.normal(size=(200, 64))           # generic pairs: same content, +-v
  probe = probes.from_contrast_pairs(content + 0.5 * v, content - 0.5 * v)
  assert probe.direction @ v > 0.99
  assert probe.threshold_from == probes.PAIR_MIDPOINT
  assert probe.evaluate(acts, labels)["auroc"]["mean"] > 0.95
  calibrated = probe.calibrated(acts, labels)
  assert calibrated.threshold_from == probes.FIT_MIDPOINT
  assert calibrated.evaluate(acts, labels)["accuracy"]["mean"] > 0.85
  with pytest.raises(ConfigError, match="same shape"):
    probes.from_contrast_pairs(content, content[:10])


def test_recall_at_1pct_fpr_on_a_hand_made_example():
  negatives = np.arange(100, dtype=np.float64)   # 1% quantile from the top: 98.01
  positives = np.array([99.5, 98.5, 50.0, 120.0])
  scores = np.concatenate([negatives, positives])
  labels = np.concatenate([np.zeros(100, int), np.ones(4, int)])
  recall, threshold, fpr = probes.recall_at_fpr(scores, labels, 0.01)
  assert threshold == pytest.approx(98.01)
  assert recall == 0.75 and fpr == 0.01          # 50 is below; only 99 of the negatives above
  result = probes.evaluate(scores, labels, threshold=98.0, threshold_from="given", resamples=200)
  entry = result["recall_at_1pct_fpr"]
  assert entry["mean"] == 0.75 and entry["threshold"] == pytest.approx(98.01)
  assert result["accuracy"]["mean"] == pytest.approx(102 / 104)   # 99 and 50 wrong
  assert set(probes.evaluate(scores, labels, fprs=(0.01, 0.05), resamples=50)) >= {
      "recall_at_1pct_fpr", "recall_at_5pct_fpr"}


def test_intervals_contain_the_estimate_and_narrow_with_more_rows():
  acts, labels, _ = planted(4000, 16, 1.5, seed=3)
  probe = probes.fit_mass_mean(acts[:2000], labels[:2000])
  widths = []
  for n in (200, 2000):
    result = probe.evaluate(acts[2000:2000 + n], labels[2000:2000 + n], seed=0)
    for key in ("accuracy", "auroc", "recall_at_1pct_fpr"):
      e = result[key]
      assert e["lo"] <= e["mean"] <= e["hi"] and e["n"] == n, (key, e)
    assert 0.7 < result["auroc"]["mean"] < 0.95    # not trivially perfect: the CI has width
    widths.append({k: result[k]["hi"] - result[k]["lo"] for k in ("accuracy", "auroc")})
  for key in ("accuracy", "auroc"):
    assert widths[1][key] < 0.6 * widths[0][key], widths
  again = probe.evaluate(acts[2000:2200], labels[2000:2200], seed=0)
  assert again["auroc"]["lo"] == probe.evaluate(acts[2000:2200], labels[2000:2200])["auroc"]["lo"]


def test_sweep_fits_each_layer_and_a_missing_layer_is_one_line(tmp_path):
  acts, labels, _ = planted(800, 32, 3.0, seed=4)
  noise = np.random.default_rng(5).normal(size=acts.shape).astype(np.float32)
  by_layer = {"blocks.0.resid_post": noise, "blocks.1.resid_post": acts}
  # Logistic probes checkpoint by tag: a layer that reused another's tag would resume its probe.
  result = probes.sweep(by_layer, labels, probes.fitter("logistic", str(tmp_path)), seed=0)
  assert set(result) == set(by_layer)
  assert result["blocks.1.resid_post"]["auroc"]["mean"] > 0.95
  assert abs(result["blocks.0.resid_post"]["auroc"]["mean"] - 0.5) < 0.15
  assert result["blocks.1.resid_post"]["auroc"]["n"] == 240   # the held-out 30%

  with pytest.raises(ConfigError) as e:
    probes.sweep(by_layer, labels, probes.fitter("mass_mean"), layers=["blocks.7.resid_post"])
  message = str(e.value)
  assert "\n" not in message and "blocks.7.resid_post" in message
  assert "blocks.0.resid_post, blocks.1.resid_post" in message
  with pytest.raises(ConfigError, match="unknown probe fitter; valid: logistic, mass_mean"):
    probes.fitter("svm")
  with pytest.raises(ConfigError, match="both classes"):
    probes.fit_mass_mean(acts, np.zeros(len(acts), int))


def test_normalize_centres_and_scales_each_template_and_half():
  pairs = ccs.contrast_pairs_with_distractor(300, 16, seed=0, distractor_strength=0.0,
                                             templates=3)
  xp, xn = ccs.normalize(pairs.x_pos, pairs.x_neg, pairs.template_ids)
  for t in range(3):
    rows = pairs.template_ids == t
    for x in (xp[rows], xn[rows]):
      np.testing.assert_allclose(x.mean(0), 0, atol=1e-5)
      assert np.linalg.norm(x, axis=1).mean() == pytest.approx(1.0, rel=1e-5)
  raw_means = [pairs.x_pos[pairs.template_ids == t].mean() for t in range(3)]
  assert np.ptp(raw_means) > 0.1     # the templates really differed before


def test_ccs_recovers_the_truth_without_labels_in_one_stacked_fit(tmp_path, monkeypatch):
  calls = []
  fit = Trainer.fit
  def counting_fit(self, *args, **kw):
    calls.append((self.stacked, len(self.run_seeds)))
    return fit(self, *args, **kw)
  monkeypatch.setattr(Trainer, "fit", counting_fit)

  pairs = ccs.contrast_pairs_with_distractor(1024, 64, seed=0, distractor_strength=0.0)
  probe = ccs.fit_ccs(pairs.x_pos, pairs.x_neg, str(tmp_path), template_ids=pairs.template_ids)
  assert calls == [(True, 10)]                   # 10 restarts, one vmapped fit
  assert len(probe.losses) == 10 and probe.best_run == int(np.argmin(probe.losses))
  assert probe.loss == pytest.approx(probe.losses.min()) and np.ptp(probe.losses) > 0

  args = (pairs.x_pos, pairs.x_neg, pairs.labels, pairs.template_ids)
  assert probe.accuracy(*args, sign_free=True) >= 0.9
  raw = probe.accuracy(*args)
  assert raw >= 0.9 or raw <= 0.1                # right up to the sign, which it cannot know
  report = ccs.feature_report(probe, pairs)
  assert report["finds"] == "truth" and report["cos_truth"] > 0.8, report
  oriented = probe.orient(*args[:2], pairs.labels[:16], pairs.template_ids, rows=np.arange(16))
  assert oriented.oriented and oriented.accuracy(*args) >= 0.9


def test_ccs_finds_a_stronger_distractor_instead_of_the_truth(tmp_path):
  # Farquhar et al. 2023: a binary feature with the pair structure satisfies CCS as well as the
  # truth does; stronger than the truth, it is what the lowest-loss restart finds.
  pairs = ccs.contrast_pairs_with_distractor(1024, 64, seed=1, distractor_strength=2.0)
  probe = ccs.fit_ccs(pairs.x_pos, pairs.x_neg, str(tmp_path), template_ids=pairs.template_ids)
  report = ccs.feature_report(probe, pairs)
  assert report["accuracy_distractor"] >= 0.9, report
  assert report["accuracy_truth"] < 0.6, report  # sign-free, so 0.5 is chance
  assert report["cos_distractor"] > 0.7 and report["cos_truth"] < 0.2, report
  assert report["finds"] == "distractor"


def test_whitened_mass_mean_cancels_correlated_noise():
  """Marks and Tegmark's IID correction: with a large noise direction that leans on the signal,
  the raw difference of means points at the signal but its scores carry the noise; the whitened
  direction (Sigma^-1 of it) is the LDA direction and separates the classes, also from contrast
  pairs."""
  rng = np.random.default_rng(0)
  n, d = 4000, 12
  labels = rng.integers(0, 2, n)
  lean = np.zeros(d)
  lean[:2] = 1 / np.sqrt(2)                       # the noise leans 45 degrees on the signal e0
  acts = (rng.normal(size=(n, d)) + np.outer(labels, np.eye(d)[0]) * 3.0
          + np.outer(rng.normal(size=n), lean) * 10.0).astype(np.float32)
  fit, test = slice(0, 2000), slice(2000, None)
  raw = probes.fit_mass_mean(acts[fit], labels[fit])
  iid = probes.fit_mass_mean(acts[fit], labels[fit], whitened=True)
  assert iid.kind == "mass_mean_iid" and raw.kind == "mass_mean"
  auroc = lambda p: p.evaluate(acts[test], labels[test], resamples=20)["auroc"]["mean"]
  assert auroc(raw) < 0.7 < 0.9 < auroc(iid), (auroc(raw), auroc(iid))  # LDA optimum 0.93
  lda = np.linalg.solve(np.eye(d) + 100.0 * np.outer(lean, lean), np.eye(d)[0])
  assert abs(iid.direction @ lda / np.linalg.norm(lda)) > 0.98
  # The same from contrast pairs: each positive row paired with a negative one.
  pos, neg = acts[fit][labels[fit] == 1][:500], acts[fit][labels[fit] == 0][:500]
  pairs = probes.from_contrast_pairs(pos, neg, whitened=True)
  assert pairs.kind == "contrast_pairs_whitened" and auroc(pairs) > 0.9
  assert auroc(probes.from_contrast_pairs(pos, neg)) < 0.7
