"""Issue 32: every file the framework reads goes through one guarded path. A cached artefact
holding the wrong arrays is recomputed (not a ``KeyError`` on every rerun); a damaged file a user
or an earlier run made is one line naming it and what to do."""

import os

import numpy as np
import pytest

from superalign.results import files


def _plant(path, **arrays):
  path.parent.mkdir(parents=True, exist_ok=True)
  np.savez(path, **arrays)


def test_a_cached_file_lacking_a_read_array_is_set_aside_and_recomputed(tmp_path):
  _plant(tmp_path / "games" / "g.npz", x=np.zeros(3))  # another code version's arrays
  calls = []
  compute = lambda: calls.append(1) or {"y": np.arange(4)}
  out = files.cached(str(tmp_path), "games/g", compute, keys=("y",))
  np.testing.assert_array_equal(out["y"], np.arange(4))
  assert calls == [1]
  kept = np.load(tmp_path / "games" / "g.npz.bad")
  assert list(kept) == ["x"]  # the wrong file is kept, not deleted
  again = files.cached(str(tmp_path), "games/g", compute, keys=("y",))  # now it is reused
  np.testing.assert_array_equal(again["y"], np.arange(4))
  assert calls == [1]


def test_a_cached_file_of_other_sizes_is_set_aside_and_recomputed(tmp_path):
  """Weak labels of 5 rows where the split has 7 were a ValueError traceback from np.stack."""
  _plant(tmp_path / "w.npz", test=np.zeros((2, 5, 10)))
  out = files.cached(str(tmp_path), "w", lambda: {"test": np.ones((2, 7, 10))},
                     keys={"test": (2, 7)})
  assert out["test"].shape == (2, 7, 10)
  assert np.load(tmp_path / "w.npz.bad")["test"].shape == (2, 5, 10)   # kept, not deleted
  assert files.cached(str(tmp_path), "w", lambda: 1 / 0, keys={"test": (2, 7)})["test"].all()


def test_a_pool_reads_a_cached_sample_file_with_the_wrong_arrays_as_a_recompute(tmp_path,
                                                                                  monkeypatch):
  """A real reader: the process room's pools index ``["tokens"]`` of their cached samples."""
  from superalign.process import chains, policy, pools
  drawn = []

  def sample(policy, problems, per, seed):
    drawn.append(1)
    return np.zeros((len(problems) * per, chains.solution_length(problems.k)), np.int32)

  monkeypatch.setattr(policy, "sample", sample)
  _plant(tmp_path / "samples" / "p_train_2.npz", y=np.zeros(3))
  draws = pools.Draws(seed=0, modulus=5, length=chains.sequence_length(2), workdir=str(tmp_path))
  pool = draws.pool(None, "p", "train", 2, n=4, per=2)
  assert drawn == [1] and pool.x.shape[0] == 8
  assert (tmp_path / "samples" / "p_train_2.npz.bad").exists()


def test_control_tasks_name_every_array_they_read_back():
  from superalign.control.setting import Tasks
  z = np.zeros((2, 3))
  tasks = Tasks(y=np.zeros(2, int), u_probs=z, u_attack_probs=z, t_probs=z, t_attack_probs=z,
                suspicion={"a": (z, z), "b": (z, z)}, target=0)
  assert sorted(Tasks.keys(["a", "b"])) == sorted(tasks.arrays())


@pytest.mark.parametrize("content,reason", [
    (b"", "unreadable"), (b"\xff\xfe garbage", "unreadable"), (None, "no such file")])
def test_read_guarded_is_one_line_naming_the_file_and_the_fix(tmp_path, content, reason):
  path = tmp_path / "f.npz"
  if content is not None:
    path.write_bytes(content)
  with pytest.raises(files.DamagedFileError) as e:
    files.read_guarded(str(path), np.load, fix="delete it to recompute")
  line = str(e.value)
  assert "\n" not in line and line.startswith(f"{path}: ") and reason in line
  assert line.endswith("; delete it to recompute")


@pytest.mark.parametrize("depth", [1, 2])
def test_atomic_folder_under_a_file_is_not_a_directory(tmp_path, depth):
  # A folder whose parent is a file (an export path under an index.json) is NotADirectoryError,
  # as for any write under a file, never "file exists" about the parent.
  (tmp_path / "index.json").write_text("{}")
  target = os.path.join(tmp_path, "index.json", *["sub"] * depth)
  with pytest.raises(NotADirectoryError):
    files.atomic_folder(target, lambda new: None)
  assert sorted(os.listdir(tmp_path)) == ["index.json"]
