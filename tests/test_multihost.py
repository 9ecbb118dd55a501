"""Multi-host, run for real: two local processes (``jax.distributed`` on localhost, gloo CPU
collectives, one CPU device each) join one run through the launcher's ``--distributed``.

They must give what one process on two devices gives, only process 0 may write the workdir
(process 1 runs under ``write_audit.py``), and a run stopped by SIGTERM in both processes resumes
in both to the same end state.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import ROOT, SAFETY_S, _env

pytestmark = pytest.mark.e2e

AUDIT = os.path.join(ROOT, "tests", "write_audit.py")
SUPERVISED = ["--config=experiments/supervised/digits.py:smoke", "--config.train.num_steps=400",
              "--config.train.checkpoint_every=40", "--config.train.log_every=10",
              "--config.train.eval_every=100"]
# Stacked w2s stages: two seeds (and students: x two losses) trained as one stack of runs each,
# on a two-model ladder without pretraining, every parameter sharded over the two hosts (fsdp).
W2S = ["--config=experiments/w2s/digits.py:smoke,pretrain=none",
       "--config.w2s.ladder=('mlp_tiny','mlp_small')", "--config.train.num_epochs=1",
       "--config.mesh.data=1", "--config.mesh.fsdp=2"]   # parameters sharded across the hosts
SUPERVISED_KEYS = ("final_train_loss", "test_accuracy", "test_loss", "val")
# Only to fail a hung run, never a slow one: the tests wait for their processes to finish, and
# for files they write, not for a time.


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _start(args, workdir, audit_dir, mode="--distributed"):
  """Both processes of one run; process 1 logs what it writes to ``audit_dir``. ``mode``: the
  launcher flag or the config key that starts distributed mode."""
  port, procs = _free_port(), []
  for i in range(2):
    flags = [mode, f"--coordinator_address=localhost:{port}", "--num_processes=2",
             f"--process_id={i}", f"--workdir={workdir}"]
    cmd = ([sys.executable, AUDIT, str(audit_dir / f"writes-{i}.tsv")] if i else
           [sys.executable, "-m", "superalign.main"])
    procs.append(subprocess.Popen(cmd + args + flags, cwd=ROOT, env=_env(1), text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE))
  return procs


def _wait(procs):
  outs = []
  for p in procs:
    try:
      outs.append(p.communicate(timeout=SAFETY_S))
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
  return [(p.returncode, out, err) for p, (out, err) in zip(procs, outs)]


def _await_checkpoint(procs, directory):
  """Returns once ``directory`` holds a finished checkpoint step, however long the processes
  take to write it; fails if one of them ends first (or at the safety limit)."""
  start = time.monotonic()
  while not (directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())):
    ended = [p.returncode for p in procs if p.poll() is not None]
    if ended or time.monotonic() - start > SAFETY_S:
      for p in procs:
        p.kill()
      pytest.fail(f"no checkpoint in {directory} (processes ended: {ended})")
    time.sleep(0.05)   # polling the file system, not a deadline


def _run_pair(args, workdir, audit_dir, mode="--distributed"):
  done = _wait(_start(args, workdir, audit_dir, mode))
  for code, _, err in done:
    assert code == 0, err[-3000:]
  return done


def _results(workdir):
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)


def _single(args, workdir):
  """The same run in one process on two CPU devices: the same mesh, one host."""
  out = subprocess.run([sys.executable, "-m", "superalign.main", *args, f"--workdir={workdir}"],
                       cwd=ROOT, env=_env(2), capture_output=True, text=True, timeout=SAFETY_S)
  assert out.returncode == 0, out.stderr[-3000:]
  return _results(workdir)


def _workdir_writes(audit_dir, workdir):
  """Paths in ``workdir`` that process 1 wrote, but for its own part of each Orbax checkpoint
  (``.../process_1``: every process saves the shards it holds, by design)."""
  path, root = audit_dir / "writes-1.tsv", os.path.realpath(workdir)
  rows = [line.rstrip("\n").split("\t") for line in path.read_text().splitlines()]
  assert rows, "the audit hook logged nothing; is it installed?"
  inside = [p for _, p in rows if os.path.realpath(p).startswith(root + os.sep)]
  return [p for p in inside if not (os.path.relpath(p, root).startswith("checkpoints" + os.sep)
                                    and "process_1" in p)]


def test_two_processes_train_as_one_and_resume_together(tmp_path):
  one = _single(SUPERVISED, tmp_path / "one")
  done = _run_pair(SUPERVISED, tmp_path / "two", tmp_path)
  two = _results(tmp_path / "two")
  assert {k: two[k] for k in SUPERVISED_KEYS} == {k: one[k] for k in SUPERVISED_KEYS}
  assert "process 1 of 2: 1 local device(s) of 2" in done[1][2]
  # Process 0 printed the summary; process 1 wrote nothing of the workdir's own files.
  assert "results in" in done[0][1] and "results in" not in done[1][1]
  assert _workdir_writes(tmp_path, tmp_path / "two") == []
  assert (tmp_path / "two" / "metrics.jsonl").exists()

  # SIGTERM to both processes once a checkpoint exists; both stop at one agreed step.
  workdir, audit = tmp_path / "stopped", tmp_path / "audit"
  audit.mkdir()
  procs = _start(SUPERVISED, workdir, audit)
  _await_checkpoint(procs, workdir / "checkpoints" / "supervised")
  for p in procs:
    p.send_signal(signal.SIGTERM)
  stopped = _wait(procs)
  for code, _, err in stopped:
    assert code == 143, err[-3000:]
    assert "Traceback" not in err
  steps = {err.split("stopped by SIGTERM at step ")[1].split(";")[0] for _, _, err in stopped}
  assert len(steps) == 1, steps
  assert not (workdir / "results.json").exists()

  _run_pair(SUPERVISED, workdir, audit)
  resumed = _results(workdir)
  assert 0 < resumed["resumed_from_step"] < 400
  assert {k: resumed[k] for k in SUPERVISED_KEYS} == {k: two[k] for k in SUPERVISED_KEYS}
  assert _workdir_writes(audit, workdir) == []


@pytest.mark.slow   # 55 s; two-process training and resume stay in the default run
def test_a_stacked_w2s_run_in_two_processes(tmp_path):
  one = _single(W2S, tmp_path / "one")
  _run_pair(W2S, tmp_path / "two", tmp_path, mode="--config.distributed=True")
  two = _results(tmp_path / "two")
  assert len(two["ladder"]) == 2 and two["pairs"]
  del one["wall_time_s"], two["wall_time_s"]
  assert two == one
  assert _workdir_writes(tmp_path, tmp_path / "two") == []


def test_exports_from_two_processes_are_written_once(tmp_path):
  from conftest import save_tiny_gpt2

  save_tiny_gpt2(tmp_path / "ckpt")
  out, port, procs = tmp_path / "out", _free_port(), []
  script = os.path.join(ROOT, "tests", "multihost_exports.py")
  for i in range(2):
    cmd = [sys.executable] + ([AUDIT, str(tmp_path / f"writes-{i}.tsv")] if i else [])
    procs.append(subprocess.Popen(
        cmd + [script, f"localhost:{port}", str(i), str(tmp_path / "ckpt"), str(out)], cwd=ROOT,
        env=_env(1), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
  for i, (code, stdout, err) in enumerate(_wait(procs)):
    assert code == 0, err[-3000:]
    assert f"exports OK in process {i}" in stdout
  assert (tmp_path / "done-1").exists()     # process 1's audit log has this write ...
  assert _workdir_writes(tmp_path, out) == []   # ... and none in OUT
  assert sorted(p.name for p in out.iterdir()) == ["acts", "gpt2", "sae", "sae_sharded"]
