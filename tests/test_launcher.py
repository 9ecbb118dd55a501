"""The ``superalign`` command: smoke runs of every config, bad input, preemption and resume."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, SAFETY_S, _assert_one_line_error, _env, launch, superalign, write_idx



def _results(workdir):
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)


@pytest.mark.e2e
@pytest.mark.parametrize("config", [
    "experiments/supervised/digits.py:smoke",
    "experiments/supervised/digits.py:smoke,model=cnn",
])
def test_smoke_configs_end_to_end(tmp_path, config):
  out = superalign(f"--config={config}", f"--workdir={tmp_path}")
  assert out.returncode == 0, out.stderr[-2000:]
  results = _results(tmp_path)
  assert results["num_steps"] == 30 and np.isfinite(results["final_train_loss"])
  assert results["test_accuracy"] > 0.3  # 30 steps on digits; chance is 0.1
  for name in ("config.json", "metrics.jsonl"):
    assert (tmp_path / name).stat().st_size > 0
  assert list((tmp_path / "plots").glob("*.png"))
  assert list((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))
  assert (tmp_path / "checkpoints" / "supervised" / "30").is_dir()
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["model"]["name"] in ("mlp_base", "cnn_small") and saved["train"]["num_steps"] == 30


@pytest.mark.e2e
def test_fashion_mnist_config_on_local_idx(tmp_path):
  data = write_idx(str(tmp_path / "idx"))
  out = superalign(f"--config=experiments/supervised/fashion_mnist.py:smoke,dir={data}",
                   f"--workdir={tmp_path / 'run'}")
  assert out.returncode == 0, out.stderr[-2000:]
  results = _results(tmp_path / "run")
  assert results["split_sizes"]["test"] == 40  # the IDX directory's own t10k files
  assert results["test_accuracy"] > 0.5        # bright-quadrant task; chance is 0.25


BAD_INPUT = [
    (["--config.model.name=resnet9000"], "model.name='resnet9000': unknown model; valid:"),
    (["--config.data.name=imagenet"], "data.name='imagenet': unknown data set; valid:"),
    (["--config.mesh.data=3"], "axis sizes multiply to 3 but there are 8 devices"),
    (["--config.mesh.rules.embed=('tensor',)"], "mesh.rules.embed=('tensor',): 'tensor' is not a mesh axis"),
    (["--config.mesh.data=2", "--config.mesh.fsdp=-1", "--config.mesh.model=-1"],
     "only one axis may be -1"),
    (["--config.train.batch_size=0"], "train.batch_size=0: must be positive"),
    (["--config.optim.learning_rate=-0.1"], "optim.learning_rate=-0.1: must be positive"),
    (["--config.train.num_steps=-5"], "train.num_steps=-5: must be zero or positive"),
    (["--config.train.bogus_key=3"], "--config.train.bogus_key: no such key 'bogus_key' in train"),
    (["--config.optim.schedule=sawtooth"], "optim.schedule='sawtooth': valid:"),
    (["--config.optim.ema_decay=1.0"], "optim.ema_decay=1.0: must be in [0, 1)"),
    (["--config.train.early_stop_metric=f1"], "train.early_stop_metric='f1'"),
    (["--config.data.splits.train=1.5"], "data.splits.train=1.5"),
    (["--config.data.name=idx:/no/such/dir"], "data.name='idx:/no/such/dir': no such directory"),
    (["--config.kind=telepathy"], "kind='telepathy': unknown; valid:"),
]


@pytest.mark.parametrize("args,message", BAD_INPUT)
def test_bad_config_is_one_clear_line(tmp_path, monkeypatch, capsys, args, message):
  out = launch(monkeypatch, capsys, "--config=experiments/supervised/digits.py:smoke",
               f"--workdir={tmp_path / 'w'}", *args)
  _assert_one_line_error(out, message)
  assert not (tmp_path / "w").exists()  # validation runs before anything is written


@pytest.mark.e2e
def test_a_user_mistake_exits_2_without_a_traceback(tmp_path):
  """The one subprocess case: the real exit code and stderr of the installed entry point."""
  out = superalign("--config=experiments/supervised/digits.py:smoke",
                   f"--workdir={tmp_path / 'w'}", "--config.model.name=resnet9000")
  _assert_one_line_error(out, "model.name='resnet9000': unknown model; valid:")


def test_batch_not_divisible_by_data_axis(tmp_path, monkeypatch, capsys):
  out = launch(monkeypatch, capsys, "--config=experiments/supervised/digits.py:smoke",
               f"--workdir={tmp_path}", "--config.mesh.data=8", "--config.train.batch_size=12")
  _assert_one_line_error(out, "train.batch_size=12: not divisible by the batch shards")


@pytest.mark.parametrize("args,message", [
    (["--config=experiments/nope.py"], "nope.py"),
    (["--config=experiments/supervised/digits.py:smok"], "config argument 'smok': unknown"),
    (["--config=experiments/supervised/fashion_mnist.py:dir=/no/such/idx"],
     "idx:/no/such/idx': no such directory"),
])
def test_bad_config_file_or_argument(tmp_path, monkeypatch, capsys, args, message):
  out = launch(monkeypatch, capsys, *args, f"--workdir={tmp_path / 'w'}")
  _assert_one_line_error(out, message)


@pytest.mark.parametrize("text, message", [
    ("def get_config(:\n", "SyntaxError: invalid syntax"),
    ("def get_config(arg=None):\n  return 1 / 0\n", "ZeroDivisionError: division by zero"),
    (None, "--config: [Errno 21] Is a directory"),
], ids=["syntax_error", "raises", "a_directory"])
def test_a_broken_config_file_is_named(tmp_path, monkeypatch, capsys, text, message):
  """A config file with a syntax error said only "invalid syntax (x.py, line 1)", one that raised
  only "division by zero"; a directory added ml_collections' "Configuration is not available"."""
  path = tmp_path / "exp.py"
  path.write_text(text) if text else path.mkdir()
  out = launch(monkeypatch, capsys, f"--config={path}", f"--workdir={tmp_path / 'w'}")
  _assert_one_line_error(out, (f"--config={path}: " if text else "") + message)
  assert "not available" not in out.stderr and not (tmp_path / "w").exists()


def test_workdir_that_is_a_file(tmp_path, monkeypatch, capsys):
  path = tmp_path / "file"
  path.write_text("precious")
  out = launch(monkeypatch, capsys, "--config=experiments/supervised/digits.py:smoke",
               f"--workdir={path}")
  _assert_one_line_error(out, "exists and is not a directory")
  assert path.read_text() == "precious"


@pytest.mark.e2e
def test_workdir_with_a_different_config_is_refused(tmp_path):
  first = superalign("--config=experiments/supervised/digits.py:smoke", f"--workdir={tmp_path}")
  assert first.returncode == 0, first.stderr[-2000:]
  before = (tmp_path / "results.json").read_text()
  out = superalign("--config=experiments/supervised/digits.py:smoke", f"--workdir={tmp_path}",
                   "--config.seed=7")
  _assert_one_line_error(out, "seed: 0 then, 7 now")
  assert (tmp_path / "results.json").read_text() == before


@pytest.mark.e2e
def test_sigterm_then_rerun_matches_uninterrupted(tmp_path):
  # 1000 steps: the stop lands past step 50 with ~950 steps to spare (seconds on any CPU).
  args = ["--config=experiments/supervised/digits.py:smoke", "--config.train.num_steps=1000",
          "--config.train.checkpoint_every=50", "--config.train.eval_every=500"]
  full = superalign(*args, f"--workdir={tmp_path / 'full'}")
  assert full.returncode == 0, full.stderr[-2000:]

  workdir = tmp_path / "preempted"
  proc = subprocess.Popen([sys.executable, "-m", "superalign.main", *args, f"--workdir={workdir}"],
                          cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  # Past the step-50 checkpoint, as the run's own progress lines say: no deadline that a slow
  # machine would miss (the loop also ends if the run fails first).
  seen = ""
  for line in proc.stderr:
    seen += line
    step = re.search(r"supervised step (\d+):", line)
    if step and int(step.group(1)) > 50:
      break
  proc.send_signal(signal.SIGTERM)
  _, stderr = proc.communicate(timeout=SAFETY_S)
  stderr = seen + stderr
  assert proc.returncode == 143, stderr[-2000:]
  assert "Traceback" not in stderr
  assert "stopped by SIGTERM at step" in stderr
  assert not (workdir / "results.json").exists()

  again = superalign(*args, f"--workdir={workdir}")
  assert again.returncode == 0, again.stderr[-2000:]
  a, b = _results(tmp_path / "full"), _results(workdir)
  assert b["resumed_from_step"] is not None and 0 < b["resumed_from_step"] < 1000
  for key in ("final_train_loss", "test_accuracy", "test_loss", "val"):
    assert a[key] == b[key], key


@pytest.mark.e2e
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_while_waiting_for_the_other_processes_is_one_line(tmp_path, signum):
  """Process 0 of 2 blocks in jax.distributed.initialize's C++ join while its peer never starts:
  SIGTERM there killed it without a line (Python runs handlers only between bytecodes)."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  proc = subprocess.Popen(
      [sys.executable, "-m", "superalign.main", "--config=experiments/supervised/digits.py:smoke",
       f"--workdir={tmp_path}", "--distributed", f"--coordinator_address=127.0.0.1:{port}",
       "--num_processes=2", "--process_id=0"],
      cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  while proc.poll() is None:   # inside the join once its coordinator service listens
    with socket.socket() as s:
      if s.connect_ex(("127.0.0.1", port)) == 0:
        break
    time.sleep(0.05)
  proc.send_signal(signum)
  _, stderr = proc.communicate(timeout=SAFETY_S)
  assert proc.returncode == 128 + signum, stderr[-2000:]
  assert "Traceback" not in stderr
  errors = [l for l in stderr.splitlines() if l.startswith("superalign: error:")]
  assert len(errors) == 1 and f"stopped by {signal.Signals(signum).name}" in errors[0], stderr


@pytest.mark.slow   # 42 s: three whole runs
def test_results_do_not_depend_on_the_compilation_cache(tmp_path):
  """A cold persistent compilation cache, the same cache warm, and none: the same results to the
  last bit (docs/concepts/reproducibility.md)."""
  runs = {}
  for name, cache in (("cold", tmp_path / "xla"), ("warm", tmp_path / "xla"), ("none", "")):
    env = {**_env(), "SUPERALIGN_XLA_CACHE": str(cache)}
    out = subprocess.run([sys.executable, "-m", "superalign.main",
                          "--config=experiments/supervised/digits.py:smoke,model=cnn",
                          f"--workdir={tmp_path / name}"], cwd=ROOT, capture_output=True,
                         text=True, env=env, timeout=SAFETY_S)
    assert out.returncode == 0, out.stderr[-2000:]
    results = _results(tmp_path / name)
    runs[name] = {k: results[k] for k in ("final_train_loss", "test_accuracy", "test_loss", "val")}
  assert any((tmp_path / "xla").iterdir())   # the cache was written, then read
  assert runs["cold"] == runs["warm"] == runs["none"]


def test_an_empty_workdir_flag_is_an_error(tmp_path, monkeypatch, capsys):
  """Issue 14.6: ``--workdir=`` used to write the whole run into the current directory."""
  monkeypatch.chdir(tmp_path)
  out = launch(monkeypatch, capsys, f"--config={ROOT}/experiments/supervised/digits.py:smoke",
               "--workdir=")
  _assert_one_line_error(out, "workdir '': empty; give a directory")
  assert list(tmp_path.iterdir()) == []


def test_an_invalid_config_json_is_named_and_kept(tmp_path, monkeypatch, capsys):
  """Issue 14.8: an empty or torn config.json gave a traceback naming no file."""
  (tmp_path / "config.json").write_text('{"kind": "superv')
  out = launch(monkeypatch, capsys, "--config=experiments/supervised/digits.py:smoke",
               f"--workdir={tmp_path}")
  _assert_one_line_error(out, f"{tmp_path / 'config.json'}: not valid JSON (an interrupted "
                         "write?); move it aside")   # what to do, as for an unreadable one
  assert (tmp_path / "config.json").read_text() == '{"kind": "superv'


def test_a_workdir_of_another_kind_of_run_is_named_by_its_kind(tmp_path, monkeypatch, capsys):
  """A w2s run's workdir given to a supervised config was refused over data.splits.pretrain."""
  (tmp_path / "config.json").write_text(json.dumps({"kind": "w2s", "data": {"splits": {}}}))
  (tmp_path / "results.json").write_text("{}")
  out = launch(monkeypatch, capsys, "--config=experiments/supervised/digits.py:smoke",
               f"--workdir={tmp_path}")
  _assert_one_line_error(out, "holds a run with a different config (kind: 'w2s' then, "
                         "'supervised' now); resume with the same config or choose another")
  assert (tmp_path / "results.json").read_text() == "{}"


@pytest.mark.parametrize("text", ["[]", "null", '"w2s"'])
def test_a_config_json_that_is_not_a_config_is_named(tmp_path, monkeypatch, capsys, text):
  """Valid JSON but no dict was compared key by key: ": [] then, {...the whole config} now"."""
  (tmp_path / "config.json").write_text(text)
  (tmp_path / "results.json").write_text("{}")
  out = launch(monkeypatch, capsys, "--config=experiments/supervised/digits.py:smoke",
               f"--workdir={tmp_path}")
  _assert_one_line_error(out, f"{tmp_path / 'config.json'}: holds a JSON ")
  assert "not a run's config; move it aside" in out.stderr


def test_a_hugging_face_checkpoint_is_not_taken_as_a_workdir(tmp_path, monkeypatch, capsys):
  """Its config.json (no work beside it) was set aside as config.json.old and replaced by the
  run's, leaving a checkpoint transformers cannot load."""
  hf = '{"model_type": "gpt2", "n_layer": 2}'
  (tmp_path / "config.json").write_text(hf)
  out = launch(monkeypatch, capsys, "--config=experiments/supervised/digits.py:smoke",
               f"--workdir={tmp_path}")
  _assert_one_line_error(out, f"{tmp_path / 'config.json'}: not a superalign run's config (no "
                         "'kind'; model_type 'gpt2': a Hugging Face checkpoint's)")
  assert sorted(os.listdir(tmp_path)) == [".lock", "config.json"]
  assert (tmp_path / "config.json").read_text() == hf


def test_a_config_json_that_cannot_be_read_is_named(tmp_path, monkeypatch, capsys):
  """Issue 32: a directory in config.json's place was an IsADirectoryError traceback."""
  (tmp_path / "config.json").mkdir()
  out = launch(monkeypatch, capsys, "--config=experiments/supervised/digits.py:smoke",
               f"--workdir={tmp_path}")
  _assert_one_line_error(out, f"{tmp_path / 'config.json'}: is a directory; move it aside")


def test_default_workdirs_started_in_the_same_second_differ(tmp_path):
  """Issue 14.4: two runs without --workdir in one second collided on runs/<kind>-<time>."""
  from superalign.launch import workdir as workdir_lib
  made = {workdir_lib.fresh(str(tmp_path), "supervised") for _ in range(3)}
  assert len(made) == 3 and all(os.path.isdir(p) for p in made)


@pytest.mark.parametrize("args, message", [
    (["--process_id=1"], "take effect only with --distributed"),
    (["--distributed", "--num_processes=2", "--process_id=0"], "--distributed: give --workdir"),
    # Issue 32: an IndexError from inside jax.distributed.initialize
    (["--distributed", "--coordinator_address=localhost", "--num_processes=2", "--process_id=0",
      "--workdir=/tmp/unused"], "--coordinator_address=localhost: expected HOST:PORT"),
    (["--distributed", "--coordinator_address=localhost:http", "--num_processes=2",
      "--process_id=0", "--workdir=/tmp/unused"], "port 'http' is not a number"),
    (["--distributed", "--coordinator_address=localhost:1234", "--num_processes=2",
      "--process_id=2", "--workdir=/tmp/unused"], "--process_id=2: the processes are numbered 0 "
                                                   "to 1"),
])
def test_distributed_flags_are_checked_before_jax_starts(monkeypatch, capsys, args, message):
  out = launch(monkeypatch, capsys, "--config=experiments/supervised/digits.py:smoke", *args)
  _assert_one_line_error(out, message)


@pytest.mark.parametrize("process_id,expected", [
    (0, "process 0 of 2: waited N s for the other 1 process(es) to join at localhost:1234; start "
        "process(es) 1 with the same command"),
    (1, "process 1 of 2: waited N s to reach process 0 at localhost:1234; is it running"),
])
def test_a_process_waiting_for_its_peers_says_so_every_interval(process_id, expected):
  """Issue 32: process 0 of 2 printed nothing for minutes while its peer never joined. The join
  (here a fake that blocks until three lines came) is reported every interval, then no more."""
  import logging
  import re
  import threading
  from superalign.launch import runtime
  lines, three = [], threading.Event()

  class Lines(logging.Handler):
    def emit(self, record):
      lines.append(record.getMessage())
      if len(lines) >= 3:
        three.set()
  logger, handler = logging.getLogger("superalign"), Lines()
  logger.addHandler(handler)
  try:
    with runtime.waiting_lines("localhost:1234", 2, process_id, every=0.01):
      assert three.wait(600), "no waiting line"   # a safety limit, never the expected path
    count = len(lines)
  finally:
    logger.removeHandler(handler)
  assert count >= 3
  assert all(expected in re.sub(r"waited \d+ s", "waited N s", line) for line in lines), lines
  assert len(lines) == count   # the reporter ended with the join


@pytest.mark.parametrize("workdir", ["FILE", "", "LOCKED"])
def test_a_notebooks_workdir_mistake_names_no_launcher_flag(tmp_path, monkeypatch, workdir):
  """Issue 32: ``runners.launch(config, workdir)`` from a notebook answered "--workdir=...", a
  flag its caller never used."""
  from experiments.supervised import digits
  from superalign.core.errors import ConfigError
  from superalign.launch import runners, workdir as workdir_lib
  monkeypatch.setenv("SUPERALIGN_XLA_CACHE", "")
  (tmp_path / "FILE").write_text("precious")
  path = str(tmp_path / workdir) if workdir else ""
  with pytest.raises(ConfigError) as e:
    if workdir == "LOCKED":
      with workdir_lib.claim(digits.get_config("smoke"), path):
        runners.launch(digits.get_config("smoke"), path)   # a second run on the same workdir
    else:
      runners.launch(digits.get_config("smoke"), path)
  assert str(e.value).startswith(f"workdir {path if workdir else repr('')}: ")
  assert "--" not in str(e.value), str(e.value)
