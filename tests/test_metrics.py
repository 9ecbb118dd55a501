"""Classification metrics and the JSONL metric writer."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from superalign.results import metrics
from superalign.results import estimates

sklearn_metrics = pytest.importorskip("sklearn.metrics")


@pytest.mark.parametrize("seed", range(5))
def test_auroc_matches_sklearn_continuous(seed):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 2, 200)
  scores = rng.normal(size=200) + 0.7 * labels
  assert estimates.auroc(scores, labels) == pytest.approx(
      sklearn_metrics.roc_auc_score(labels, scores), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_auroc_matches_sklearn_with_ties(seed):
  rng = np.random.default_rng(100 + seed)
  n = int(rng.integers(5, 300))
  labels = rng.integers(0, 2, n)
  labels[:2] = [0, 1]  # both classes present
  scores = rng.integers(0, 4, n).astype(np.float32) / 3.0  # heavy ties
  assert estimates.auroc(scores, labels) == pytest.approx(
      sklearn_metrics.roc_auc_score(labels, scores), abs=1e-12)


def test_auroc_known_values():
  assert estimates.auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
  assert estimates.auroc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
  assert estimates.auroc([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1]) == 0.5
  assert estimates.auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
  # boolean labels and plain lists work too
  assert estimates.auroc(np.array([0.2, 0.9]), np.array([False, True])) == 1.0


@pytest.mark.parametrize("labels", [[0, 0, 0], [1, 1, 1], [True]])
def test_auroc_one_class_is_nan(labels):
  assert math.isnan(estimates.auroc(np.linspace(0, 1, len(labels)), labels))


def test_accuracy():
  probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
  assert estimates.accuracy(probs, np.array([0, 1, 1, 1])) == 0.75
  assert estimates.accuracy(probs, np.array([1, 0, 1, 0])) == 0.0
  three = np.eye(3)[[2, 0, 1, 1]]
  assert estimates.accuracy(three, np.array([2, 0, 1, 0])) == 0.75


def test_cross_entropy_and_classification_metrics():
  probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
  labels = np.array([0, 1, 1, 1])
  out = estimates.classification_metrics(probs, labels)
  assert set(out) == {"accuracy", "loss", "auroc"}
  assert out["accuracy"] == 0.75
  assert out["loss"] == pytest.approx(-np.mean(np.log([0.9, 0.8, 0.4, 0.7])))
  assert out["auroc"] == pytest.approx(sklearn_metrics.roc_auc_score(labels, probs[:, 1]))
  three = estimates.classification_metrics(np.full((2, 3), 1 / 3), np.array([0, 2]))
  assert "auroc" not in three
  assert three["loss"] == pytest.approx(math.log(3))
  # a zero probability on the label is clipped, not infinite
  assert math.isfinite(estimates.cross_entropy(np.array([[1.0, 0.0]]), np.array([1])))


def _rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


@pytest.mark.parametrize("n", [1, 7, 64, 359, 1000, 5000])
def test_a_wilson_interval_always_holds_its_estimate(n):
  # At p = 0 the Wilson centre minus its half-width rounds to +2e-19 for some n (1000 among
  # them): an interval that missed its own estimate made an error bar negative.
  for outcomes in (np.zeros(n), np.ones(n), np.r_[np.ones(n - 1), 0.0]):
    ci = estimates.proportion_ci(outcomes)
    assert 0.0 <= ci["lo"] <= ci["mean"] <= ci["hi"] <= 1.0, (n, ci)


def test_writer_writes_jsonl(tmp_path):
  workdir = str(tmp_path / "run")
  writer = metrics.MetricWriter(workdir, tag="weak")
  writer.write(1, {"loss": np.float32(0.5), "accuracy": 1})
  writer.write(2, {"loss": 0.25})
  writer.close()
  rows = _rows(workdir)
  assert rows == [{"run": "weak", "step": 1, "loss": 0.5, "accuracy": 1.0},
                  {"run": "weak", "step": 2, "loss": 0.25}]
  assert metrics.read_metrics(workdir) == rows
  assert metrics.read_metrics(str(tmp_path / "missing")) == []
  if writer._tb is not None:  # tensorboardX installed: events mirrored under tensorboard/<tag>
    events = os.listdir(os.path.join(workdir, "tensorboard", "weak"))
    assert any(name.startswith("events.out.tfevents") for name in events)


def test_the_writer_leaves_torch_unimported_and_still_mirrors_to_tensorboard(tmp_path):
  """tensorboardX's writer imports PyTorch when it is installed (seconds per launched process);
  the writer imports it without, leaving no placeholder in ``sys.modules`` (``import torch``
  works afterwards). A fresh process: this one may hold torch already."""
  import subprocess
  import sys
  pytest.importorskip("tensorboardX")
  code = ("import sys; from superalign.results import metrics; "
          f"w = metrics.MetricWriter({str(tmp_path)!r}, tag='t'); w.write(1, {{'loss': 0.5}}); "
          "w.close(); assert w._tb is not None; print('torch' in sys.modules)")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "JAX_PLATFORMS": "cpu"},
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.split() == ["False"], out.stdout
  events = os.listdir(tmp_path / "tensorboard" / "t")
  assert any(name.startswith("events.out.tfevents") for name in events)


def test_writer_resume_truncates_own_tag_only(tmp_path):
  workdir = str(tmp_path)
  for tag in ("weak", "strong"):
    w = metrics.MetricWriter(workdir, tag=tag)
    for step in range(1, 6):
      w.write(step, {"loss": step / 10, "tag_is_" + tag: 1.0})
    w.close()
  assert len(_rows(workdir)) == 10

  resumed = metrics.MetricWriter(workdir, tag="weak", resume_step=3)
  rows = _rows(workdir)
  assert [r["step"] for r in rows if r["run"] == "weak"] == [1, 2, 3]
  assert [r["step"] for r in rows if r["run"] == "strong"] == [1, 2, 3, 4, 5]
  resumed.write(4, {"loss": 0.4, "tag_is_weak": 1.0})
  resumed.close()
  rows = _rows(workdir)
  assert [r["step"] for r in rows if r["run"] == "weak"] == [1, 2, 3, 4]
  assert len(rows) == 9
  # what the resumed run leaves equals what an uninterrupted run would have written for it
  assert [r for r in rows if r["run"] == "weak"] == [
      {"run": "weak", "step": s, "loss": s / 10, "tag_is_weak": 1.0} for s in range(1, 5)]


def test_writer_fresh_start_drops_own_rows_only(tmp_path):
  workdir = str(tmp_path)
  for tag in ("a", "b"):
    w = metrics.MetricWriter(workdir, tag=tag)
    w.write(1, {"x": 1.0})
    w.close()
  metrics.MetricWriter(workdir, tag="a").close()  # no resume step: a fresh run of "a"
  assert _rows(workdir) == [{"run": "b", "step": 1, "x": 1.0}]


def test_writer_untagged_keeps_tagged_rows(tmp_path):
  workdir = str(tmp_path)
  w = metrics.MetricWriter(workdir, tag="probe")
  w.write(7, {"x": 1.0})
  w.close()
  w = metrics.MetricWriter(workdir, resume_step=0)
  w.write(1, {"y": 2.0})
  w.close()
  assert _rows(workdir) == [{"run": "probe", "step": 7, "x": 1.0},
                            {"run": "", "step": 1, "y": 2.0}]


GOOD = b'{"run": "supervised", "step": 1, "train/loss": 2.0}\n'
OTHER = b'{"run": "other", "step": 5, "train/loss": 1.0}\n'


@pytest.mark.parametrize("content,torn", [
    # Issue 14.2: a crash in mid-append leaves a torn last line.
    (GOOD + OTHER + b'{"run": "supervised", "step": 2', b'{"run": "supervised", "step": 2\n'),
    # Issue 32: bytes that are not UTF-8 (a disk error, a binary write) raised UnicodeDecodeError
    # on every rerun; such a row is a torn row too.
    (GOOD + b'{"run": "supervised", "step": 2, "x": "\xff\xfe"}\n\x00\x9c\x80garbage\n' + OTHER,
     b'{"run": "supervised", "step": 2, "x": "\xff\xfe"}\n\x00\x9c\x80garbage\n'),
], ids=["torn_last_line", "non_utf8"])
def test_a_torn_metrics_row_does_not_block_resume_and_is_kept_aside(tmp_path, content, torn):
  """Resuming drops a torn row from metrics.jsonl, keeps it in metrics.jsonl.torn, and readers
  skip it."""
  from superalign.results.metrics import MetricWriter, read_metrics
  (tmp_path / "metrics.jsonl").write_bytes(content)
  assert [r["step"] for r in read_metrics(str(tmp_path))] == [1, 5]
  writer = MetricWriter(str(tmp_path), tag="supervised", resume_step=1)
  writer.write(2, {"train/loss": 1.5})
  writer.close()
  assert [(r["run"], r["step"]) for r in read_metrics(str(tmp_path))] == [
      ("supervised", 1), ("other", 5), ("supervised", 2)]
  assert (tmp_path / "metrics.jsonl.torn").read_bytes() == torn


def test_an_unreadable_metrics_file_is_one_line_naming_it(tmp_path):
  from superalign.results.files import DamagedFileError
  from superalign.results.metrics import read_metrics
  (tmp_path / "metrics.jsonl").mkdir()  # a folder where the file should be
  with pytest.raises(DamagedFileError, match=r"metrics.jsonl: is a directory; move it aside"):
    read_metrics(str(tmp_path))
