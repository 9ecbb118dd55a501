"""Weak-to-strong: PGR and summaries, split hygiene, stacked runs, the smoke pipeline end to end."""

import json
import math
import re

import jax
import numpy as np
import pytest

import ml_collections

from conftest import smoke_config
from superalign.launch import runners
from superalign import data as data_lib
from superalign.core import mesh as mesh_lib
from superalign.core.errors import ConfigError
from superalign.core.spec import TrainSpec
from superalign.parties import classifier as train_lib
from superalign.results import estimates as core_metrics
from superalign.w2s import cleaning, metrics, report

from experiments.w2s import digits as w2s_digits


def test_pgr_values_and_flags():
  assert metrics.pgr(0.6, 0.8, 1.0) == pytest.approx(0.5)
  assert metrics.pgr(0.6, 0.5, 1.0) == pytest.approx(-0.25)
  assert metrics.pgr(0.6, 1.1, 1.0) == pytest.approx(1.25)
  # A ceiling that is not above the weak model: PGR is flagged (NaN), never a division by zero.
  assert math.isnan(metrics.pgr(0.8, 0.9, 0.8))
  assert math.isnan(metrics.pgr(0.8, 0.9, 0.7))


def test_mean_ci_matches_t_interval_and_skips_flagged():
  values = [0.1, 0.3, 0.2, 0.4, 0.5]
  ci = core_metrics.mean_ci(values)
  half = 2.7764451051977987 * np.std(values, ddof=1) / math.sqrt(5)  # t(0.975, 4)
  assert ci["mean"] == pytest.approx(0.3)
  assert ci["lo"] == pytest.approx(0.3 - half) and ci["hi"] == pytest.approx(0.3 + half)
  flagged = core_metrics.mean_ci([0.2, math.nan, 0.4])
  assert flagged["n"] == 2 and flagged["flagged"] == 1 and flagged["mean"] == pytest.approx(0.3)
  assert math.isnan(core_metrics.mean_ci([math.nan])["mean"])
  assert metrics.median_ignoring_nan([1.0, math.nan, 3.0, 2.0]) == 2.0


def test_agreement_misfit_brier():
  a = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
  b = np.array([[0.7, 0.3], [0.6, 0.4], [0.6, 0.4]])
  assert metrics.agreement(a, b) == pytest.approx(2 / 3)
  assert metrics.misfit(a, b) == pytest.approx((0.08 + 0.32 + 0.0) / 3)
  assert metrics.brier(a, np.array([0, 1, 1])) == pytest.approx((0.02 + 0.08 + 0.72) / 3)


def test_weak_training_split_never_reaches_the_student():
  config = w2s_digits.get_config()
  source = data_lib.load(config.data)
  splits = data_lib.make_splits(source, dict(config.data.splits), config.data.split_seed)
  ids = {k: set(v.ids.tolist()) for k, v in splits.items()}
  for student_split in ("train_b", "val", "test"):
    assert not ids["train_a"] & ids[student_split], student_split
  for other in ("train_a", "train_b", "val", "test"):
    assert not ids["pretrain"] & ids[other], other
  assert sum(len(v) for v in ids.values()) == len(set().union(*ids.values()))


def _tiny_config():
  c = w2s_digits.get_config("smoke")
  c.train.update(num_epochs=0, num_steps=6, eval_every=3, batch_size=16, eval_batch_size=64)
  return c


@pytest.mark.e2e
def test_stacked_runs_equal_separate_runs(tmp_path):
  """Eight seeds in one vmapped step give what eight separate runs give."""
  config = _tiny_config()
  source = data_lib.load(config.data)
  splits = data_lib.make_splits(source, {"train": 0.5, "test": 0.2}, 0, 400)
  mesh = mesh_lib.make_mesh({"data": 1}, devices=jax.devices()[:1])
  seeds = list(range(8))
  spec = TrainSpec.from_config(config)
  model = train_lib.Model.from_blocks(config.model, config.data, "mlp_small")
  stacked = train_lib.train_classifier(spec, model, splits["train"], source.spec,
                                       str(tmp_path / "s"), tag="s", seeds=seeds, mesh=mesh)
  probs = stacked.predict(splits["test"].x)
  assert probs.shape == (8, len(splits["test"]), 10)
  for seed in (0, 5):
    one = train_lib.train_classifier(spec, model, splits["train"], source.spec,
                                     str(tmp_path / f"one{seed}"), tag="o", seeds=seed, mesh=mesh)
    np.testing.assert_allclose(probs[seed], one.predict(splits["test"].x), rtol=1e-4, atol=1e-5)
  assert not np.allclose(probs[0], probs[5])  # the runs really are different seeds


@pytest.mark.e2e
def test_probe_mode_leaves_the_backbone_frozen(tmp_path):
  config = _tiny_config()
  source = data_lib.load(config.data)
  splits = data_lib.make_splits(source, {"train": 0.5}, 0, 300)
  mesh = mesh_lib.make_mesh({"data": 1}, devices=jax.devices()[:1])
  rng = np.random.default_rng(0)
  warm = {"layers": {0: {"kernel": rng.normal(size=(2, 64, 32)).astype(np.float32),
                         "bias": np.zeros((2, 32), np.float32)}}}
  trained = train_lib.train_classifier(
      TrainSpec.from_config(config),
      train_lib.Model.from_blocks(config.model, config.data, "mlp_small"),
      splits["train"], source.spec, str(tmp_path), tag="p", seeds=[0, 1], warm=warm,
      trainable="head", mesh=mesh)
  params = trained.state.params.to_pure_dict()
  np.testing.assert_array_equal(np.asarray(params["layers"][0]["kernel"]),
                                warm["layers"][0]["kernel"])
  assert np.abs(np.asarray(params["head"]["kernel"])).sum() > 0


def test_the_pretrain_split_is_needed_only_with_pretraining():
  config = w2s_digits.get_config("smoke")
  config.data.splits = ml_collections.ConfigDict(
      {k: v for k, v in config.data.splits.items() if k != "pretrain"})
  with pytest.raises(ConfigError, match="data.splits: needs a 'pretrain' split"):
    runners.validate(config)
  config.pretrain.task = "none"
  runners.validate(config)


@pytest.mark.parametrize("key, value, match", [
    ("w2s.ladder", ("mlp_tiny",), "w2s.ladder=('mlp_tiny',): needs at least two models"),
    ("w2s.losses", ("xent", "nope"), "w2s.losses=('xent', 'nope'): valid: one or more of xent"),
    ("w2s.mode", "sideways", "w2s.mode='sideways': valid: probe, finetune"),
    ("w2s.cleaning", "scrub", "w2s.cleaning='scrub': valid: none, knn_relabel"),
    ("w2s.drop_frac", 1.0, "w2s.drop_frac=1.0: must be in [0, 1)"),
    ("w2s.knn_k", 0, "w2s.knn_k=0: must be positive"),
    ("pretrain.task", "guess", "pretrain.task='guess': valid: coarse, labels, none"),
    ("w2s.loss_hparams.logconf.aux_coef_typo", 1.0, "w2s.loss_hparams.logconf: unknown hyper"),
])
def test_bad_w2s_config_is_one_line(key, value, match):
  config = w2s_digits.get_config("smoke")
  block, name = config, key
  while "." in name:
    head, name = name.split(".", 1)
    block = block[head]
  with block.unlocked():
    block[name] = value
  with pytest.raises(ConfigError, match=re.escape(match)):
    runners.validate(config)


def test_the_table_prints_estimates_with_two_decimals_and_flags_no_gap():
  one = {"mean": 0.5, "lo": math.nan, "hi": math.nan, "n": 1}
  assert report.show({"mean": 0.61111, "lo": 0.30234, "hi": 0.91989, "n": 2},
                     pct=True) == "61.11 [30.23, 91.99]"
  assert report.show(one) == "0.50"
  assert report.show({**one, "mean": math.nan}) == "flagged (no gap)"


def test_knn_relabel_smooths_isolated_errors():
  rng = np.random.default_rng(0)
  centres = np.eye(3) * 5
  labels = np.repeat(np.arange(3), 20)
  features = centres[labels] + rng.normal(size=(60, 3)) * 0.3
  weak = np.eye(3)[labels].astype(np.float32)
  weak[[0, 25, 50]] = np.eye(3)[[1, 2, 0]]  # three isolated wrong weak labels
  cleaned = cleaning.knn_probe(features, weak, k=5)
  assert (cleaned.argmax(-1) == labels).all()


def test_logreg_relabel_cross_fits():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, 200)
  features = np.stack([labels * 3.0 + rng.normal(size=200), rng.normal(size=200)], 1)
  weak = np.eye(2)[labels].astype(np.float32)
  weak[:20] = np.eye(2)[1 - labels[:20]]  # 10% flipped
  out = cleaning.logreg_probe(features, weak, seed=0)
  assert out.shape == weak.shape and np.allclose(out.sum(-1), 1)
  assert np.mean(out[:20].argmax(-1) == labels[:20]) > 0.8  # the flipped ones are repaired


@pytest.mark.e2e
@pytest.mark.xdist_group("smoke-w2s")   # beside its shared smoke run
def test_smoke_pipeline_end_to_end(smoke, tmp_path):
  import shutil
  results, shared = smoke("w2s")   # the session's shared smoke run (conftest)
  config = smoke_config("w2s")
  ladder, losses = results["ladder"], results["losses"]
  assert ladder == list(config.w2s.ladder) and losses == ["xent", "logconf"]
  assert len(results["pairs"]) == 3  # tiny<small, tiny<base, small<base
  for name in ladder:
    for key in ("weak_accuracy", "ceiling_accuracy"):
      assert len(results["models"][name][key]["per_seed"]) == 2
      assert 0.0 <= results["models"][name][key]["mean"] <= 1.0
  pair = results["pairs"][0]["losses"]["logconf"]
  for key in ("w2s_accuracy", "pgr_accuracy", "agreement_with_weak", "misfit", "gain"):
    assert len(pair[key]["per_seed"]) == 2
  assert set(results["by_loss"]) == {"xent", "logconf"}
  for name in ladder:
    assert (shared / "weak_labels" / f"{name}.npz").exists()
  assert (shared / "plots" / "pgr_by_loss.png").stat().st_size > 0
  assert (shared / "plots" / "accuracy_by_strong_model.png").stat().st_size > 0
  assert "mlp_tiny supervises mlp_base" in results["summary"]
  # A rerun restores every stage from its checkpoint and the saved weak labels: same numbers.
  shutil.copytree(shared, tmp_path / "again")
  runners.execute(config, str(tmp_path / "again"))
  again = json.loads((tmp_path / "again" / "results.json").read_text())
  assert again["pairs"] == results["pairs"]


def _run_smoke(config, workdir):
  config.mesh.num_devices = 1
  runners.validate(config)
  results = runners.execute(config, str(workdir))
  json.dumps(results)
  return results


@pytest.mark.e2e
def test_fashion_mnist_smoke_on_local_idx(tmp_path):
  from experiments.w2s import fashion_mnist
  from conftest import write_idx
  data = write_idx(str(tmp_path / "idx"), n_train=400, n_test=100)
  config = fashion_mnist.get_config(f"smoke,dir={data}")
  config.pretrain.coarse_map = (0, 0, 1, 1)  # the fake data has four classes
  config.train.batch_size = config.pretrain.train.batch_size = 32
  config.train.num_steps = config.pretrain.train.num_steps = 40
  results = _run_smoke(config, tmp_path / "run")
  assert results["split_sizes"]["test"] == 100  # the directory's own t10k files
  assert results["models"]["mlp_small"]["ceiling_accuracy"]["mean"] > 0.3  # chance: 0.25


@pytest.mark.e2e
def test_text_smoke_on_tfds_mock_data(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  from experiments.w2s import text
  config = text.get_config("smoke")
  with tfds.testing.mock_data(num_examples=200):
    results = _run_smoke(config, tmp_path)
  assert results["ladder"] == ["gpt_nano", "gpt_tiny"]
  assert results["split_sizes"]["test"] == 200
  assert len(results["pairs"]) == 1


@pytest.mark.e2e
def test_cleaning_and_strong_to_strong_rounds(tmp_path):
  config = w2s_digits.get_config("smoke")
  config.w2s.ladder = ("mlp_tiny", "mlp_small")
  config.w2s.cleaning = "knn_drop"
  config.w2s.drop_frac = 0.2
  config.w2s.s2s_rounds = 1
  results = _run_smoke(config, tmp_path)
  assert results["cleaning"] == "knn_drop" and results["s2s_rounds"] == 1
  assert (tmp_path / "checkpoints" / "student" / "mlp_small" / "round1").is_dir()
