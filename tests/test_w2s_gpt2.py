"""``experiments/w2s/gpt2.py`` end to end on two tiny random GPT-2 checkpoints (saved by
``transformers``) sharing a BPE tokenizer trained here, on a small generated sciq set."""

import json

import pytest

from conftest import _assert_one_line_error, launch, superalign, write_gpt2_ladder
from superalign import models
from superalign.launch import runners


@pytest.fixture(scope="module")
def ladder(tmp_path_factory):
  return write_gpt2_ladder(tmp_path_factory.mktemp("gpt2_ladder"))


def _config(ladder, extra=""):
  from experiments.w2s import gpt2
  dirs, data = ladder
  config = gpt2.get_config(f"smoke,dirs={dirs},data={data}{extra}")
  config.mesh.num_devices = 1
  runners.validate(config)
  return config


@pytest.mark.e2e
@pytest.mark.parametrize("mode", [  # finetune, the default mode, also runs from the command line
    pytest.param("finetune", marks=pytest.mark.slow), "probe"])
def test_gpt2_ladder_end_to_end(ladder, tmp_path, mode):
  config = _config(ladder, f",mode={mode}")
  results = runners.execute(config, str(tmp_path))
  json.dumps(results)
  weak, strong = config.w2s.ladder
  assert results["ladder"] == [weak, strong]
  assert results["split_sizes"]["test"] == 80           # the directory's own test.jsonl
  assert len(results["pairs"]) == 1
  for loss in ("xent", "logconf"):
    pair = results["pairs"][0]["losses"][loss]
    assert len(pair["pgr_accuracy"]["per_seed"]) == 2
    assert {"mean", "lo", "hi"} <= set(pair["w2s_accuracy"])
  ceiling = results["models"][strong]["ceiling_accuracy"]["mean"]
  # The generated task is learnable by fine-tuning (chance is 0.5); a probe on a random tiny
  # checkpoint's features is not expected to be.
  assert ceiling > (0.6 if mode == "finetune" else 0.3), ceiling
  assert (tmp_path / "weak_labels" / f"{models.label(weak)}.npz").exists()
  assert (tmp_path / "checkpoints" / "student" / models.label(strong)).is_dir()


def test_gpt2_config_errors_are_one_line(ladder, tmp_path, monkeypatch, capsys):
  dirs, data = ladder
  cfg = "--config=experiments/w2s/gpt2.py:smoke"
  out = launch(monkeypatch, capsys, f"{cfg},dirs={tmp_path}/nope:{dirs},data={data}",
               f"--workdir={tmp_path}/a")
  _assert_one_line_error(out, "w2s.ladder=hf:")
  out = launch(monkeypatch, capsys, f"{cfg},dirs={dirs},data={tmp_path}/nodata",
               f"--workdir={tmp_path}/b")
  _assert_one_line_error(out, "data.path")
  out = launch(monkeypatch, capsys, f"{cfg},dirs={dirs},data={data}",
               f"--config.data.tokenizer={tmp_path}", f"--workdir={tmp_path}/c")
  _assert_one_line_error(out, "tokenizer.json")


@pytest.mark.e2e
def test_gpt2_smoke_from_the_command_line(ladder, tmp_path):
  dirs, data = ladder
  out = superalign(f"--config=experiments/w2s/gpt2.py:smoke,dirs={dirs},data={data},seeds=1",
                   f"--workdir={tmp_path}")
  assert out.returncode == 0, out.stderr[-3000:]
  weak, strong = (models.label(f"hf:{d}") for d in dirs.split(":"))
  assert f"{weak} supervises {strong}" in out.stdout + out.stderr


@pytest.mark.e2e
def test_a_weak_checkpoint_saved_again_retrains_the_students(tmp_path):
  """A rerun after the weak checkpoint was saved again (same path, same config) resumed the
  students taught by the old weak model and reported them beside the new weak model's numbers."""
  from conftest import save_tiny_gpt2
  ladder = write_gpt2_ladder(tmp_path / "ladder")
  runners.execute(_config(ladder), str(tmp_path / "run"))
  weak = ladder[0].split(":")[0]
  save_tiny_gpt2(weak, seed=7, tokenizer_from=tmp_path / "ladder" / "tok", n_layer=1, n_embd=16,
                 n_head=2)   # as write_gpt2_ladder's weak model, other weights
  again = runners.execute(_config(ladder), str(tmp_path / "run"))
  fresh = runners.execute(_config(ladder), str(tmp_path / "fresh"))
  strong = _config(ladder).w2s.ladder[1]
  assert json.dumps(again["pairs"]) == json.dumps(fresh["pairs"])   # the new weak's students
  students = tmp_path / "run" / "checkpoints" / "student" / models.label(strong)
  assert len(list(students.iterdir())) == 2      # the old weak model's students are kept
