"""Issue 14: a workdir never gets stuck, nothing written is lost, and every user mistake is one
line. Each test reproduces a case that failed before its fix."""

import errno
import gzip
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import write_idx
from conftest import ROOT, _assert_one_line_error, _config, _env, _params, _train, launch
from conftest import superalign

S = "--config=experiments/supervised/digits.py:smoke"


@pytest.mark.parametrize("args,message", [
    (["--config.train.batchsize=3"], "--config.train.batchsize: no such key 'batchsize' in train; "
                                     "did you mean 'batch_size'?"),
    (["--config.seeed=1"], "--config.seeed: no such key 'seeed' at the top level; did you mean "
                           "'seed'?"),
    (["--config.seed=-1"], "seed=-1: a seed is an integer in [0, 2147483647]"),
    (["--config.seed=99999999999999999999"], "seed=99999999999999999999: a seed is an integer"),
    (["--config.data.split_seed=-1"], "data.split_seed=-1: a seed is an integer"),
    (["--config.optim.learning_rate=inf"], "optim.learning_rate=inf: must be a finite number"),
    # Found by the fuzz test (test_config_fuzz.py):
    (["--config.train.num_steps.value=1"], "--config.train.num_steps.value: train.num_steps is a "
                                           "value (int), not a block with a key 'value'"),
    (["--config.optim.name=sgd", "--config.optim.momentum=3"], "optim.momentum=3.0: must be in"),
    (["--config.mesh.rules.mlp=(1, 'a')"], "--config.mesh.rules.mlp=(1, 'a'): expected a tuple "
                                           "of str"),
    (["--config.distributed=True"], "--distributed: jax.distributed.initialize() failed"),
])
def test_override_mistakes_are_one_line(tmp_path, monkeypatch, capsys, args, message):
  out = launch(monkeypatch, capsys, S, f"--workdir={tmp_path / 'w'}", *args)
  _assert_one_line_error(out, message)
  assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("body,message", [
    ("x = 1\n", "c.py: defines no get_config()"),
    ("def get_config():\n  return {'kind': 'supervised'}\n",
     "get_config() returned a dict; return an ml_collections.ConfigDict"),
])
def test_config_files_without_get_config_or_returning_a_dict(tmp_path, body, message):
  """A subprocess: in one process ml_collections reuses the module of an earlier config file."""
  (tmp_path / "c.py").write_text(body)
  out = superalign(f"--config={tmp_path / 'c.py'}", f"--workdir={tmp_path / 'w'}")
  _assert_one_line_error(out, message)


def test_help_lists_the_flags_and_exits_0(monkeypatch, capsys):
  out = launch(monkeypatch, capsys, "--help")
  assert not out.returncode, out.stderr  # SystemExit(None) and exit 0 alike
  for flag in ("--config", "--workdir", "--print_config"):
    assert flag in out.stdout


def test_print_config_lists_the_keys(monkeypatch, capsys):
  out = launch(monkeypatch, capsys, S, "--print_config", "--config.seed=3")
  assert not out.returncode and "batch_size" in out.stdout and "seed: 3" in out.stdout


@pytest.mark.parametrize("workdir,reason", [
    ("/proc/superalign-x", "cannot write there"),
    ("/sys/superalign-x", "cannot write there"),
    ("FILE/sub", "cannot write there: Not a directory"),
])
def test_unwritable_workdirs_are_one_line(tmp_path, monkeypatch, capsys, workdir, reason):
  (tmp_path / "FILE").write_text("precious")
  workdir = workdir.replace("FILE", str(tmp_path / "FILE"))
  out = launch(monkeypatch, capsys, S, f"--workdir={workdir}")
  _assert_one_line_error(out, f"workdir {workdir}: {reason}")
  assert (tmp_path / "FILE").read_text() == "precious"


def test_a_read_only_workdir_is_one_line(tmp_path, monkeypatch, capsys):
  """Tests run as root here, where chmod does not stop writes: the mount's error is simulated."""
  def read_only(path, *a, **kw):
    raise OSError(errno.EROFS, "Read-only file system", path)
  monkeypatch.setattr(os, "makedirs", read_only)
  out = launch(monkeypatch, capsys, S, f"--workdir={tmp_path / 'ro'}")
  _assert_one_line_error(out, "cannot write there: Read-only file system")


def test_a_locked_workdir_refuses_a_second_run(tmp_path, monkeypatch, capsys):
  """A second run on a workdir in use gets one line; the lock dies with its holder (kill -9)."""
  holder = subprocess.Popen(
      [sys.executable, "-c", "import sys\nfrom superalign.launch import workdir\n"
       f"with workdir.lock({str(tmp_path)!r}):\n  print('locked', flush=True)\n  sys.stdin.read()"],
      cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # holds it until killed
  try:
    assert holder.stdout.readline().strip() == "locked"
    out = launch(monkeypatch, capsys, S, f"--workdir={tmp_path}")
    _assert_one_line_error(out, f"in use by another superalign run (pid {holder.pid})")
    assert not (tmp_path / "config.json").exists()
  finally:
    holder.kill()
    holder.wait()
  from superalign.launch import workdir as workdir_lib
  with workdir_lib.lock(str(tmp_path)):  # stale after kill -9: free again
    pass


def test_a_workdir_without_work_takes_a_new_config(tmp_path):
  """A run that failed before training (bad data, NaN at step 1) wrote only config.json and
  perhaps metric rows: the corrected command takes it over, keeping the old files."""
  from superalign.launch import workdir as workdir_lib
  from experiments.supervised import digits
  first, second = digits.get_config("smoke"), digits.get_config("smoke")
  second.optim.learning_rate = 1e-4
  with workdir_lib.claim(first, str(tmp_path)):
    (tmp_path / "metrics.jsonl").write_text('{"run": "supervised", "step": 1}\n')
  with workdir_lib.claim(second, str(tmp_path)):
    pass
  assert json.loads((tmp_path / "config.json").read_text())["optim"]["learning_rate"] == 1e-4
  assert (tmp_path / "config.json.old").exists() and (tmp_path / "metrics.jsonl.old").exists()
  os.makedirs(tmp_path / "checkpoints" / "supervised" / "10")  # now it holds work: refused
  from superalign.core.errors import ConfigError
  with pytest.raises(ConfigError, match="holds a run with a different config"):
    with workdir_lib.claim(first, str(tmp_path)):
      pass


@pytest.mark.parametrize("damage", ["truncate", "random"])
def test_a_corrupt_cached_artefact_is_recomputed_and_kept(tmp_path, damage):
  from superalign.results import files as workdir_lib
  calls = []
  compute = lambda: calls.append(1) or {"labels": np.arange(1000)}
  workdir_lib.cached(str(tmp_path), "weak_labels/m", compute)
  path = tmp_path / "weak_labels" / "m.npz"
  if damage == "truncate":
    os.truncate(path, 100)
  else:
    path.write_bytes(np.random.default_rng(0).bytes(500))
  out = workdir_lib.cached(str(tmp_path), "weak_labels/m", compute)
  np.testing.assert_array_equal(out["labels"], np.arange(1000))
  assert len(calls) == 2 and (tmp_path / "weak_labels" / "m.npz.bad").exists()


def test_results_json_is_strict_json(tmp_path):
  from superalign.results import files as workdir_lib
  path = str(tmp_path / "results.json")
  workdir_lib.write_json(path, {"auroc": float("nan"), "n": [1.0, float("inf")]})
  text = open(path).read()
  assert json.loads(text, parse_constant=lambda c: pytest.fail(c)) == {"auroc": None,
                                                                        "n": [1.0, None]}


def test_a_failed_rewrite_leaves_no_temporary(tmp_path, monkeypatch):
  """A full disk while metrics.jsonl is rewritten on resume: the old file stands, no .tmp."""
  from superalign.results import metrics
  (tmp_path / "metrics.jsonl").write_text('{"run": "a", "step": 1}\n')
  def full(*a):
    raise OSError(errno.ENOSPC, "No space left on device")
  monkeypatch.setattr(os, "replace", full)
  with pytest.raises(OSError):
    metrics.MetricWriter(str(tmp_path), tag="a", resume_step=0)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]


FULL_DISK = """
import errno, sys
from tensorboardX import record_writer
from superalign.core import checkpoint
from superalign import main

def full(*args):
  raise OSError(errno.ENOSPC, "No space left on device")
record_writer.RecordWriter.flush = full   # the TensorBoard thread's flushes, and at exit
checkpoint.Checkpointer.save = full       # the run's own failure: its one line
sys.argv = ["superalign", *sys.argv[1:]]
main.run()
"""


@pytest.mark.e2e
def test_a_full_disk_under_tensorboard_prints_one_line_and_no_traceback(tmp_path):
  """Issue 32: after the one-line error, tensorboardX's writer thread and its exit hook printed
  their tracebacks of the same full disk. A subprocess: the exit hooks run at its end."""
  out = subprocess.run([sys.executable, "-c", FULL_DISK, S, "--config.train.num_steps=2",
                        "--config.train.eval_every=0", f"--workdir={tmp_path / 'w'}"],
                       cwd=ROOT, capture_output=True, text=True, env=_env())
  assert out.returncode == 1, out.stderr[-3000:]
  assert "Traceback" not in out.stderr and "Exception ignored" not in out.stderr, out.stderr
  lines = [l for l in out.stderr.splitlines() if l.startswith("superalign: error:")]
  assert len(lines) == 1 and "No space left on device" in lines[0], out.stderr[-3000:]
  assert out.stderr.rstrip().endswith(lines[0])   # nothing after the line


@pytest.fixture
def small_disk(tmp_path):
  """A real 3 MB file system (tmpfs), for a real full disk; needs root, else the test skips."""
  mount = tmp_path / "disk"
  mount.mkdir()
  if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3M", "tmpfs", str(mount)],
                    capture_output=True).returncode:
    pytest.skip("cannot mount a tmpfs here (needs root)")
  yield mount
  subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.e2e
def test_a_real_full_disk_is_one_line_and_resumes_once_space_is_back(tmp_path, small_disk):
  """Issue 14.10 on a real file system: Orbax reports a full disk from its save threads as a
  ValueError; the launcher still ends with one line naming the workdir (exit 1), and after the
  disk grows the same command resumes, drops the unfinished save and writes the metrics an
  uninterrupted run writes."""
  args = [S, "--config.train.checkpoint_every=2", "--config.train.keep_checkpoints=10"]
  out = superalign(*args, f"--workdir={small_disk / 'w'}")
  assert out.returncode == 1, out.stderr[-3000:]
  last = out.stderr.strip().splitlines()[-1]
  assert last.startswith(f"superalign: error: workdir {small_disk / 'w'}: cannot write there: "
                         "No space left on device"), last
  subprocess.run(["mount", "-o", "remount,size=64M", str(small_disk)], check=True)
  out = superalign(*args, f"--workdir={small_disk / 'w'}")
  assert out.returncode == 0 and "resumed from checkpoint" in out.stderr, out.stderr[-3000:]
  assert not list((small_disk / "w" / "checkpoints").glob("*/*tmp*"))
  assert superalign(*args, f"--workdir={tmp_path / 'ref'}").returncode == 0
  assert ((small_disk / "w" / "metrics.jsonl").read_text() ==
          (tmp_path / "ref" / "metrics.jsonl").read_text())


def _gz(path, data: bytes):
  with gzip.open(path, "wb") as f:
    f.write(data)


@pytest.mark.parametrize("damage,message", [
    ("truncated_gzip", "train-images-idx3-ubyte.gz: unreadable"),
    ("garbage_gzip", "train-labels-idx1-ubyte.gz: unreadable"),
    ("rank1_images", "images of shape (120,); expected rank 3"),
    ("no_training_examples", "holds no training examples"),
    ("unknown_test_label", "t10k-labels-idx1-ubyte.gz: label 9 is not a training class"),
])
def test_bad_idx_data_is_one_line_naming_the_file(tmp_path, monkeypatch, capsys, damage, message):
  d = write_idx(str(tmp_path / "idx"))
  images, labels = os.path.join(d, "train-images-idx3-ubyte.gz"), os.path.join(
      d, "train-labels-idx1-ubyte.gz")
  if damage == "truncated_gzip":
    os.truncate(images, 200)
  elif damage == "garbage_gzip":
    open(labels, "wb").write(b"\x1f\x8b" + bytes(range(200)))
  elif damage == "rank1_images":
    _gz(images, bytes([0, 0, 8, 1]) + np.array([120], ">u4").tobytes() + bytes(120))
  elif damage == "no_training_examples":
    _gz(images, bytes([0, 0, 8, 3]) + np.array([0, 28, 28], ">u4").tobytes())
    _gz(labels, bytes([0, 0, 8, 1]) + np.array([0], ">u4").tobytes())
  else:
    test_labels = os.path.join(d, "t10k-labels-idx1-ubyte.gz")
    _gz(test_labels, bytes([0, 0, 8, 1]) + np.array([40], ">u4").tobytes() + bytes([9] * 40))
  out = launch(monkeypatch, capsys, "--config=experiments/supervised/fashion_mnist.py:smoke",
               f"--config.data.name=idx:{d}", f"--workdir={tmp_path / 'w'}")
  _assert_one_line_error(out, message)


def _largest_file(directory):
  files = [os.path.join(d, f) for d, _, fs in os.walk(directory) for f in fs]
  return max(files, key=os.path.getsize)


@pytest.mark.e2e
@pytest.mark.parametrize("damage", ["truncate_data", "_METADATA", "manifest.ocdbt",
                                    "ocdbt.process_0", "state", "empty_meta"])
def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous(tmp_path, caplog, damage):
  import shutil
  config = _config(steps=16)
  first, _, _ = _train(config, tmp_path, {"data": 1})
  step = tmp_path / "checkpoints" / "t" / "16"
  if damage == "truncate_data":
    os.truncate(_largest_file(step / "state"), 100)
  elif damage == "empty_meta":
    (step / "meta" / "metadata").write_text("")
  elif damage == "state":
    shutil.rmtree(step / "state")
  else:
    target = step / "state" / damage
    shutil.rmtree(target) if target.is_dir() else target.unlink()
  again, _, _ = _train(config, tmp_path, {"data": 1})
  assert again.fit.resumed_from == 8
  assert (tmp_path / "checkpoints" / "t" / "16.bad").is_dir()   # kept aside, not deleted
  assert "step 16 unreadable" in caplog.text
  for a, b in zip(_params(first), _params(again)):   # retrained from step 8: the same model
    np.testing.assert_array_equal(a, b)


@pytest.mark.e2e
def test_no_intact_checkpoint_is_one_line_and_moves_nothing(tmp_path):
  from superalign.core.errors import ConfigError
  config = _config(steps=16)
  _train(config, tmp_path, {"data": 1})
  for step in ("8", "16"):
    (tmp_path / "checkpoints" / "t" / step / "meta" / "metadata").write_text("")
  with pytest.raises(ConfigError, match="no checkpoint step restores"):
    _train(config, tmp_path, {"data": 1})
  assert sorted(p.name for p in (tmp_path / "checkpoints" / "t").iterdir()) == ["16", "8"]


def test_a_file_in_place_of_a_workdir_folder_is_one_line(tmp_path, monkeypatch, capsys):
  """A file named ``checkpoints`` in the workdir was a NotADirectoryError traceback."""
  (tmp_path / "checkpoints").write_text("notes")
  out = launch(monkeypatch, capsys, "--config=experiments/supervised/digits.py:smoke",
               f"--workdir={tmp_path}")
  _assert_one_line_error(out, f"{tmp_path / 'checkpoints'}: a file in the way of what this run "
                         f"writes there; move it aside to resume workdir {tmp_path}")
  assert (tmp_path / "checkpoints").read_text() == "notes"


@pytest.mark.parametrize("make, error, blocked", [
    ("results.json/", IsADirectoryError(21, "Is a directory", "W/results.json.tmp", None,
                                        "W/results.json"), "results.json: a folder"),
    ("plots", FileExistsError(17, "File exists", "W/plots"), "plots: a file"),
    ("tb", NotADirectoryError(20, "Not a directory", "W/tb/stage/run"), "tb: a file"),
])
def test_a_path_in_the_way_inside_the_workdir_is_named(tmp_path, make, error, blocked):
  from superalign.launch import flags as launch_flags
  (tmp_path / make).mkdir() if make.endswith("/") else (tmp_path / make).write_text("x")
  error.filename = error.filename.replace("W", str(tmp_path), 1)
  if error.filename2:
    error.filename2 = error.filename2.replace("W", str(tmp_path), 1)
  line, code = launch_flags.exit_line(error, None, str(tmp_path))
  assert line.startswith(f"{tmp_path}/{blocked} in the way") and code == 2, line
  elsewhere = FileExistsError(17, "File exists", str(tmp_path.parent / "x"))
  assert launch_flags.exit_line(elsewhere, None, str(tmp_path)) is None   # a bug elsewhere


def test_a_truncated_checkpoint_array_is_named_by_what_is_wrong(tmp_path):
  """TensorStore's error printed an array index and a bound method's repr cut at 200 characters;
  the line now says which file holds too few bytes."""
  import jax.numpy as jnp
  from superalign.core.checkpoint import Checkpointer
  from superalign.core.errors import ConfigError
  tree = {"w": jnp.arange(20000.0)}
  saver = Checkpointer(str(tmp_path), every=1, keep=1)
  saver.save(1, tree, {"step": 1})
  saver.close()
  os.truncate(_largest_file(tmp_path / "1" / "state"), 100)
  with pytest.raises(ConfigError) as e:
    Checkpointer(str(tmp_path), every=1, keep=1).restore_latest(tree)
  message = str(e.value)
  assert "\n" not in message and "bound method" not in message, message
  assert "step 1: OUT_OF_RANGE" in message and "is not valid for value of size 100" in message


@pytest.mark.e2e
@pytest.mark.parametrize("signum", ["SIGTERM", "SIGINT"])
def test_a_signal_then_resume_writes_the_same_metrics_file(tmp_path, signum):
  """Ctrl-C saves and stops as SIGTERM does; with a logging window that the stop cuts, the
  resumed run's metrics.jsonl equals the uninterrupted run's, row for row."""
  import signal
  from superalign.core import loop
  from superalign.results.metrics import read_metrics
  config = _config(steps=24, log_every=5, checkpoint_every=8)
  full, _, _ = _train(config, tmp_path / "full", {"data": 1})

  def hook(step):
    if step == 11:
      os.kill(os.getpid(), getattr(signal, signum))
  with pytest.raises(loop.Preempted, match=f"stopped by {signum} at step 12"):
    _train(config, tmp_path / "cut", {"data": 1}, on_batch=hook)
  resumed, _, _ = _train(config, tmp_path / "cut", {"data": 1})
  assert resumed.fit.resumed_from == 12
  assert read_metrics(str(tmp_path / "cut")) == read_metrics(str(tmp_path / "full"))
  for a, b in zip(_params(full), _params(resumed)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("signum", ["SIGTERM", "SIGINT"])
def test_a_signal_during_the_last_step_stops_after_the_final_save(tmp_path, signum):
  """Issue 32: the last step never read the stop flag, so a stop there was swallowed (and the
  next stage trained). Now the loop stops after the stage's final save, and a rerun has nothing
  left to train."""
  import signal
  from superalign.core import loop
  config = _config(steps=4)

  def hook(step):
    if step == 3:  # the batch of the last step
      os.kill(os.getpid(), getattr(signal, signum))
  with pytest.raises(loop.Preempted) as stopped:
    _train(config, tmp_path, {"data": 1}, on_batch=hook)
  saved = tmp_path / "checkpoints" / "t" / "4"
  assert str(stopped.value) == f"stopped by {signum} at step 4; checkpoint saved in {saved}"
  again, _, _ = _train(config, tmp_path, {"data": 1})
  assert again.fit.resumed_from == 4


def test_a_signal_between_stages_stops_the_run_at_once(tmp_path):
  """Issue 32: the handler was removed after each fit, so a stop between two stages was lost.
  Within one ``stop_signals`` block (the launcher holds one for the whole run) a stop outside
  training raises at once, naming the last checkpoint saved."""
  import signal
  from superalign.core import loop
  config = _config(steps=2, checkpoint_every=0)
  with pytest.raises(loop.Preempted) as stopped:
    with loop.stop_signals():
      handler = signal.getsignal(signal.SIGTERM)
      _train(config, tmp_path / "a", {"data": 1})
      assert signal.getsignal(signal.SIGTERM) is handler   # still the run's after the fit
      os.kill(os.getpid(), signal.SIGTERM)
      pytest.fail("the stop between stages was not raised")
  assert str(stopped.value) == ("stopped by SIGTERM; nothing saved since "
                                f"{tmp_path / 'a' / 'checkpoints' / 't' / '2'}")
  assert signal.getsignal(signal.SIGTERM) is not handler   # the block restores the old one


@pytest.mark.parametrize("signum,where", [("SIGTERM", "loading data"), ("SIGINT", "final save")])
def test_a_stop_anywhere_in_a_launch_is_its_exit_code_and_one_line(tmp_path, monkeypatch, capsys,
                                                                    signum, where):
  """Issue 32: SIGTERM outside training killed the launcher without a line (exit 143 from the
  shell only); a stop during a stage's final save was swallowed and the run went on (exit 0).
  Now either ends the run with the signal's exit code and one line saying where it resumes; the
  same command then finishes the run."""
  import signal
  from superalign import data as data_lib
  from superalign.core import checkpoint
  args = [S, "--config.train.num_steps=4", "--config.train.eval_every=0",
          f"--workdir={tmp_path / 'w'}"]
  code = 128 + getattr(signal, signum)
  kill = lambda: os.kill(os.getpid(), getattr(signal, signum))
  if where == "loading data":
    load = data_lib.load_splits
    monkeypatch.setattr(data_lib, "load_splits", lambda *a: (kill(), load(*a))[1])
    message = f"stopped by {signum}; nothing saved since this command started"
  else:
    save = checkpoint.Checkpointer.save
    def final_save(self, step, items, meta):
      save(self, step, items, meta)
      if meta["finished"]:
        kill()
    monkeypatch.setattr(checkpoint.Checkpointer, "save", final_save)
    message = (f"stopped by {signum} at step 4; checkpoint saved in "
               f"{tmp_path / 'w' / 'checkpoints' / 'supervised' / '4'}")
  out = launch(monkeypatch, capsys, *args)
  assert out.returncode == code and "Traceback" not in out.stderr, out.stderr[-2000:]
  line, = [l for l in out.stderr.splitlines() if l.startswith("superalign: error:")]
  assert line == f"superalign: error: {message}; run the same command again to resume", line
  assert not (tmp_path / "w" / "results.json").exists()
  monkeypatch.undo()
  out = launch(monkeypatch, capsys, *args)
  assert not out.returncode and (tmp_path / "w" / "results.json").exists(), out.stderr[-2000:]


def test_a_batch_larger_than_its_split_warns_and_far_larger_is_refused(tmp_path, monkeypatch,
                                                                        capsys, caplog):
  """Issue 14.22: 20 examples give a 14-example training split."""
  small = [S, "--config.data.limit=20", "--config.train.num_steps=2", "--config.train.eval_every=0"]
  out = launch(monkeypatch, capsys, *small, f"--workdir={tmp_path / 'far'}",
               "--config.train.batch_size=120")
  _assert_one_line_error(out, "train.batch_size=120: more than 8x the 14 training examples")
  out = launch(monkeypatch, capsys, *small, f"--workdir={tmp_path / 'over'}",
               "--config.train.batch_size=32")
  assert not out.returncode, out.stderr[-2000:]
  assert "batch_size=32 exceeds the 14 training examples" in caplog.text + out.stderr


@pytest.mark.e2e
def test_divergence_in_a_later_stage_names_the_stage(tmp_path, monkeypatch, capsys):
  """Issue 14.16: a w2s run diverging in pretraining says so, and with clipping on (the
  default) does not advise turning it on."""
  out = launch(monkeypatch, capsys, "--config=experiments/w2s/digits.py:smoke",
               f"--workdir={tmp_path / 'w'}", "--config.optim.learning_rate=1e9")
  assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
  line, = [l for l in out.stderr.splitlines() if l.startswith("superalign: error:")]
  assert "pretrain" in line and "lower optim.learning_rate" in line, line
  assert "clip_norm" not in line, line


def test_a_non_finite_checkpoint_is_named_not_blamed_on_the_learning_rate(tmp_path,
                                                                          monkeypatch):
  """Issue 32: resuming from a checkpoint holding NaN parameters said "lower
  optim.learning_rate" (the first step's loss was NaN). Now the line names the checkpoint."""
  import signal
  import jax.numpy as jnp
  from superalign.core import checkpoint, loop
  from superalign.launch.flags import exit_line
  config = _config(steps=4, checkpoint_every=2)
  stop = lambda step: step == 1 and os.kill(os.getpid(), signal.SIGTERM)
  with pytest.raises(loop.Preempted):
    _train(config, tmp_path, {"data": 1}, on_batch=stop)
  restore = checkpoint.Checkpointer.restore
  def damaged(self, step, like):  # the checkpoint as a bad disk or a bad run may have left it
    state, meta = restore(self, step, like)
    nan = lambda x: x * jnp.nan if jnp.issubdtype(x.dtype, jnp.floating) else x
    return jax.tree.map(nan, state), meta
  monkeypatch.setattr(checkpoint.Checkpointer, "restore", damaged)
  with pytest.raises(loop.NonFiniteError) as failed:
    _train(config, tmp_path, {"data": 1})
  saved = tmp_path / "checkpoints" / "t" / "2"
  assert str(failed.value).startswith(f"t: the checkpoint {saved} holds non-finite parameters")
  line, code = exit_line(failed.value, config, str(tmp_path))
  assert f"move {saved} aside" in line and "learning_rate" not in line and code == 1, line


def test_a_non_finite_warm_start_is_named(tmp_path):
  from superalign.core import loop
  config = _config(steps=1, checkpoint_every=0)
  first, _, _ = _train(config, tmp_path / "a", {"data": 1})
  warm = jax.tree.map(lambda x: np.full(x.shape, np.nan, x.dtype),
                      jax.device_get(first.state.params.to_pure_dict()))
  with pytest.raises(loop.NonFiniteError, match="t: the warm start holds non-finite parameters"):
    _train(config, tmp_path / "b", {"data": 1}, warm=warm)


def test_a_failing_plot_costs_the_figures_not_the_results(tmp_path):
  from superalign.launch import workdir as workdir_lib

  def plot(results, out_dir):
    raise ValueError("'yerr' must not contain negative values")

  with pytest.raises(ValueError, match="yerr"):
    workdir_lib.finish(str(tmp_path), {"safety": {"mean": 0.5}}, 0.0, plot)
  saved = json.loads((tmp_path / "results.json").read_text())
  assert saved["safety"] == {"mean": 0.5} and "wall_time_s" in saved
