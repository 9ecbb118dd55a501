"""Hugging Face checkpoints that are damaged, saved over, stored in half precision, or share a
directory name: one line naming the file and what is wrong, or the right model; never a
traceback or a silently wrong model. Every checkpoint is a tiny one ``transformers`` saves here."""

import inspect
import json
import logging
import os
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import (_assert_one_line_error, launch, one_line, save_tiny_gpt2, save_tiny_neox,
                      write_gpt2_ladder)
from superalign import models
from superalign.core import mesh as mesh_lib, state as state_lib, steps
from superalign.core.errors import ConfigError
from superalign.core.specs import InputSpec
from superalign.models import hf_gpt2, hf_neox, safetensors_io
from superalign.models.transformer import Transformer
from superalign.parties.classifier import Model
from superalign.results import files
from superalign.results.files import DamagedFileError
from superalign.w2s import stages


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
  """One tiny valid GPT-2 checkpoint, whole and sharded, and a tiny GPT-NeoX one."""
  root = tmp_path_factory.mktemp("valid")
  save_tiny_gpt2(root / "whole", seed=0)
  save_tiny_gpt2(root / "sharded", seed=0, max_shard_size="30KB")
  save_tiny_neox(root / "neox", seed=0)
  return root


def _leaves_equal(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    assert x.dtype == y.dtype and np.asarray(x).tobytes() == np.asarray(y).tobytes()


# 1. Stage and cache names: a checkpoint's identity, never its directory name alone.


def test_checkpoints_sharing_a_directory_name_never_share_a_stage(tmp_path, monkeypatch):
  a, b = tmp_path / "a" / "final", tmp_path / "b" / "final"
  save_tiny_gpt2(a, seed=0)
  save_tiny_gpt2(b, seed=1)
  name_a, name_b = f"hf:{a}", f"hf:{b}"
  assert models.label(name_a) != models.label(name_b)
  assert models.label(name_a).startswith("final-")          # still readable
  assert models.label(f"{name_a}/") == models.label(name_a)  # however the path is written
  # The w2s stages (weak labels cached per model) take their names from it.
  cached = {}
  monkeypatch.setattr(stages, "cached", lambda workdir, name, compute, keys=(): cached.setdefault(
      name, len(cached)))
  splits = {k: () for k in stages.WEAK_LABEL_SPLITS}   # sizes only: nothing is computed
  ladder = stages.Ladder(None, Model("mlp_tiny"), None, None, splits, str(tmp_path), [0])
  assert ladder.supervise(name_a, None) != ladder.supervise(name_b, None)
  # A checkpoint saved again over the same directory is another model: its stages are new.
  before = models.label(name_a)
  save_tiny_gpt2(a, seed=2)
  assert models.label(name_a) != before


# 2. A save over an earlier checkpoint replaces it whole.


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two_renames"])
@pytest.mark.parametrize("family,save_tiny,reader", [
    (hf_gpt2, save_tiny_gpt2, "GPT2LMHeadModel"), (hf_neox, save_tiny_neox, "GPTNeoXForCausalLM")])
def test_a_save_over_a_sharded_checkpoint_replaces_it_whole(tmp_path, monkeypatch, family,
                                                            save_tiny, reader, exchange):
  import torch
  import transformers
  if not exchange:   # a system without an atomic exchange of two names
    monkeypatch.setattr(files, "_exchange", lambda a, b: False)
  save_tiny(tmp_path / "old", seed=0)
  reference = save_tiny(tmp_path / "new", seed=1)
  cfg = family.read_config(str(tmp_path / "new"))
  out = tmp_path / "out"
  family.save(str(out), family.load(str(tmp_path / "old")), cfg, max_shard_bytes=20_000)
  assert (out / hf_gpt2.INDEX).exists()
  (out / "tokenizer.json").write_text("{}")          # not the checkpoint's weights: kept
  new = family.load(str(tmp_path / "new"))
  family.save(str(out), new, cfg)                     # one file now, over the shards
  assert sorted(os.listdir(out)) == ["config.json", "model.safetensors", "tokenizer.json"]
  assert sorted(os.listdir(tmp_path)) == ["new", "old", "out"]   # no temporary left behind
  _leaves_equal(family.load(str(out)), new)
  ids = torch.tensor(np.random.RandomState(0).randint(0, 300, (2, 7)))
  with torch.no_grad():
    back = getattr(transformers, reader).from_pretrained(str(out)).eval()
    assert torch.equal(back(ids).logits, reference(ids).logits)


def test_a_failed_save_leaves_the_earlier_checkpoint_whole(tmp_path, valid, monkeypatch):
  out = tmp_path / "out"
  shutil.copytree(valid / "sharded", out)
  before = {p.name: p.read_bytes() for p in out.iterdir()}
  import safetensors.numpy
  write, calls = safetensors.numpy.save_file, []

  def full_disk(tensors, file, **kw):   # the disk fills up after the first shard
    calls.append(file)
    if len(calls) > 1:
      raise OSError(28, "No space left on device")
    write(tensors, file, **kw)

  monkeypatch.setattr(safetensors.numpy, "save_file", full_disk)
  with pytest.raises(OSError):
    hf_gpt2.save(str(out), hf_gpt2.load(str(valid / "whole")),
                 hf_gpt2.read_config(str(valid / "whole")), max_shard_bytes=20_000)
  assert {p.name: p.read_bytes() for p in out.iterdir()} == before
  assert os.listdir(tmp_path) == ["out"]


@pytest.mark.parametrize("files", [["notes.txt"], ["config.json", "metrics.jsonl"]],
                         ids=["other_files", "a_workdir"])
def test_a_save_into_a_folder_without_a_checkpoint_is_refused(tmp_path, valid, files):
  for name in files:
    (tmp_path / name).write_text("{}")
  params = hf_gpt2.load(str(valid / "whole"))
  with pytest.raises(ConfigError) as e:
    hf_gpt2.save(str(tmp_path), params, hf_gpt2.read_config(str(valid / "whole")))
  one_line(e, str(tmp_path), "already holds", "choose another folder")
  assert sorted(os.listdir(tmp_path)) == files
  assert all((tmp_path / name).read_text() == "{}" for name in files)


@pytest.mark.parametrize("family, name, key, size",
                         [(hf_gpt2, "whole", "n_layer", 3), (hf_neox, "neox", "hidden_size", 64)])
def test_a_save_whose_config_does_not_fit_the_parameters_is_refused(tmp_path, valid, family,
                                                                   name, key, size):
  # A config.json of another size beside these weights would be a checkpoint no loader reads.
  params = family.load(str(valid / name))
  hf = {**family.read_config(str(valid / name)), key: size}
  with pytest.raises(ConfigError) as e:
    family.save(str(tmp_path / "out"), params, hf)
  one_line(e, str(tmp_path / "out"), f"{key}={size}")
  assert not os.path.exists(tmp_path / "out")


# 3. Half-precision checkpoints: read in their stored dtype from the mapped file (no float32 copy),
# parameters in model.param_dtype (float32 by default), compute as configured.


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_a_half_precision_checkpoint_trains_with_float32_parameters(tmp_path, dtype, caplog):
  import torch
  reference = save_tiny_gpt2(tmp_path / "full", seed=0, n_layer=1, n_embd=16, n_head=2)
  # The recipe of the models guide:
  reference.to(getattr(torch, dtype)).save_pretrained(str(tmp_path / "half"))
  name = f"hf:{tmp_path / 'half'}"
  spec = InputSpec((8,), "tokens", 2, 300)
  mesh = mesh_lib.make_mesh({"data": 1}, devices=jax.devices()[:1])
  logging.getLogger("superalign").addHandler(caplog.handler)
  try:
    state, _ = state_lib.create(models.builder(name, spec, "bfloat16"), optax.adam(1e-3), 0,
                                mesh, warm=models.pretrained(name))
  finally:
    logging.getLogger("superalign").removeHandler(caplog.handler)
  assert f"{name}: 16 {dtype} tensors loaded as float32 parameters" in caplog.text
  assert {x.dtype for x in jax.tree.leaves(state.params)} == {jnp.dtype(jnp.float32)}
  stored = hf_gpt2.load(str(tmp_path / "half"), dtype=None)   # as stored: the same values
  np.testing.assert_array_equal(np.asarray(state.params["embed"]["embedding"][...]),
                                stored["embed"]["embedding"].astype(np.float32))
  rs = np.random.RandomState(0)
  batch = {"x": jnp.asarray(rs.randint(1, 300, (4, 8))), "y": jnp.asarray(rs.randint(0, 2, 4))}
  step = jax.jit(steps.train_step_fn(steps.cross_entropy_loss))
  for _ in range(4):
    state, metrics = step(state, batch)
    assert np.isfinite(float(metrics["loss"])), metrics
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))




def _mapped(x) -> bool:
  """Whether ``x`` is a view of a memory-mapped file (not a copy in memory)."""
  import mmap
  while x is not None:
    if isinstance(x, mmap.mmap):
      return True
    x = getattr(x, "base", None)
  return False


def _bits(x) -> np.ndarray:
  return np.asarray(x).view(np.uint16)


@pytest.fixture(scope="module")
def half(tmp_path_factory):
  """A tiny GPT-2 saved by transformers in float16 and in bfloat16: {dtype: (dir, state dict)}."""
  import torch
  root = tmp_path_factory.mktemp("half")
  reference = save_tiny_gpt2(root / "full", seed=3, n_layer=1, n_embd=16, n_head=2)
  out = {}
  for dtype in ("float16", "bfloat16"):
    model = reference.to(getattr(torch, dtype))
    model.save_pretrained(str(root / dtype))
    out[dtype] = (str(root / dtype), {k: v.detach().clone() for k, v in
                                      model.state_dict().items()})
  return out


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_a_half_precision_checkpoint_reads_as_stored_without_a_copy(half, dtype, caplog):
  import torch
  path, torch_tensors = half[dtype]
  stored = hf_gpt2.read_tensors(path)
  assert stored and all(t.dtype == jnp.dtype(dtype) for t in stored.values())
  for name, tensor in stored.items():   # views of the file, in its dtype: no copy, no float32
    assert isinstance(tensor, np.memmap) and _mapped(tensor) and not tensor.flags.writeable, name
    np.testing.assert_array_equal(_bits(tensor),
                                  torch_tensors["transformer." + name].view(torch.int16).numpy()
                                  .view(np.uint16), err_msg=name)   # bitwise torch's
  # As stored (param_dtype its own dtype): every parameter is still a view of the file, no log.
  name = f"hf:{path}"
  logging.getLogger("superalign").addHandler(caplog.handler)
  try:
    params = models.pretrained(name, param_dtype=dtype)(None)
    assert "loaded as" not in caplog.text
    converted = models.pretrained(name)(None)     # float32, the default: converted, and said
  finally:
    logging.getLogger("superalign").removeHandler(caplog.handler)
  assert f"{name}: 16 {dtype} tensors loaded as float32 parameters" in caplog.text
  for leaf, wide in zip(jax.tree.leaves(params), jax.tree.leaves(converted), strict=True):
    assert leaf.dtype == jnp.dtype(dtype) and _mapped(leaf) and wide.dtype == np.float32
    np.testing.assert_array_equal(wide, np.asarray(leaf).astype(np.float32))
  np.testing.assert_array_equal(_bits(params["embed"]["embedding"]),
                                _bits(stored["wte.weight"]))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_placement_reads_and_converts_only_each_devices_slice(half, dtype):
  path, _ = half[dtype]
  host = hf_gpt2.load(path, dtype=None)
  mesh = mesh_lib.make_mesh({"data": 1, "model": 2}, devices=jax.devices()[:2])
  split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, "model"))
  whole = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  reads = []

  class Recorded(np.ndarray):   # a host array that records what is read of it
    def __getitem__(self, index):
      reads.append(np.asarray(super().__getitem__(index)).shape)
      return super().__getitem__(index)

  table = host["embed"]["embedding"]                       # [300, 16]
  params = {"embed": {"embedding": table.view(Recorded)}, "ln_f": host["ln_f"]}
  shardings = {"embed": {"embedding": split}, "ln_f": {"scale": whole, "bias": whole}}
  for target in (None, np.float32, jnp.bfloat16):
    reads.clear()
    placed = hf_gpt2.place(params, shardings, target)
    emb = placed["embed"]["embedding"]
    assert reads == [(300, 8), (300, 8)]                    # one half per device, never all
    assert emb.dtype == jnp.dtype(target or dtype)
    assert {s.data.shape for s in emb.addressable_shards} == {(300, 8)}
    np.testing.assert_array_equal(np.asarray(emb), np.asarray(table).astype(emb.dtype))
    for shard in emb.addressable_shards:   # a CPU device holds a copy, never the mapped file
      assert shard.data.unsafe_buffer_pointer() != np.asarray(table).ctypes.data


@pytest.mark.skipif("param_dtype" not in inspect.signature(Transformer.__init__).parameters,
                    reason="the Transformer takes param_dtype from its rewrite on")
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_a_half_precision_checkpoint_trains_in_its_own_dtype(half, dtype):
  path, _ = half[dtype]
  name = f"hf:{path}"
  spec = InputSpec((8,), "tokens", 2, 300)
  mesh = mesh_lib.make_mesh({"data": 1}, devices=jax.devices()[:1])
  state, _ = state_lib.create(models.builder(name, spec, dtype, param_dtype=dtype),
                              optax.sgd(1e-3), 0, mesh, warm=models.pretrained(name, dtype))
  assert {x.dtype for x in jax.tree.leaves(state.params)} == {jnp.dtype(dtype)}
  stored = hf_gpt2.load(path, dtype=None)
  np.testing.assert_array_equal(_bits(state.params["embed"]["embedding"][...]),
                                _bits(stored["embed"]["embedding"]))
  rs = np.random.RandomState(0)
  batch = {"x": jnp.asarray(rs.randint(1, 300, (4, 8))), "y": jnp.asarray(rs.randint(0, 2, 4))}
  state, metrics = jax.jit(steps.train_step_fn(steps.cross_entropy_loss))(state, batch)
  assert np.isfinite(float(metrics["loss"])), metrics


def test_the_safetensors_reader_agrees_with_safetensors_on_every_dtype(tmp_path):
  from safetensors.numpy import load_file, save_file
  rs = np.random.RandomState(0)
  tensors = {code: (rs.standard_normal((3, 5)) * 50).astype(dtype)
             for code, dtype in safetensors_io.DTYPES.items()}
  tensors.update(scalar=np.array(2.5, np.float32), empty=np.zeros((0, 4), np.float16),
                 odd=rs.standard_normal(7).astype(jnp.bfloat16))   # 14 bytes: unaligned after
  save_file(tensors, str(tmp_path / "all.safetensors"), metadata={"format": "pt"})
  read, reference = safetensors_io.read(str(tmp_path / "all.safetensors")), load_file(
      str(tmp_path / "all.safetensors"))
  assert sorted(read) == sorted(reference) == sorted(tensors)
  for name, tensor in read.items():
    assert tensor.dtype == reference[name].dtype and tensor.shape == reference[name].shape, name
    assert tensor.tobytes() == reference[name].tobytes() == tensors[name].tobytes(), name
# 4. Damaged checkpoint folders: one line naming the file.


def _truncate(file):
  data = file.read_bytes()
  file.write_bytes(data[:len(data) // 2])


def _shard(folder, n=2):
  return next(folder.glob(f"model-{n:05d}-of-*.safetensors"))


def _edit_header(file, change):
  """Rewrites a safetensors file's JSON header by ``change(header)``, the data left as it is."""
  data = file.read_bytes()
  n = int.from_bytes(data[:8], "little")
  header = json.loads(data[8:8 + n])
  change({k: v for k, v in header.items() if k != "__metadata__"})
  text = json.dumps(header).encode()
  text += b" " * (-len(text) % 8)
  file.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + n:])


def _last(header):
  return max(header.values(), key=lambda t: t["data_offsets"])


def _config(folder, **changes):
  cfg = json.loads((folder / "config.json").read_text())
  for key, value in changes.items():
    if value is _config:
      del cfg[key]
    else:
      cfg[key] = value
  (folder / "config.json").write_text(json.dumps(cfg))


# case: (source checkpoint, damage, the file the line names (a shard's name starts so), what
# else it says, the error)
DAMAGED = {
    "truncated": ("whole", lambda f: _truncate(f / "model.safetensors"), "model.safetensors",
                  "unreadable", DamagedFileError),
    "empty": ("whole", lambda f: (f / "model.safetensors").write_bytes(b""), "model.safetensors",
              "unreadable", DamagedFileError),
    "garbage": ("whole", lambda f: (f / "model.safetensors").write_bytes(os.urandom(4096)),
                "model.safetensors", "unreadable", DamagedFileError),
    "missing_shard": ("sharded", lambda f: _shard(f).unlink(), "model-00002-of-",
                      "no such file", DamagedFileError),
    "truncated_shard": ("sharded", lambda f: _truncate(_shard(f)), "model-00002-of-",
                        "unreadable", DamagedFileError),
    "header_length_past_the_end": ("whole", lambda f: (f / "model.safetensors").write_bytes(
        (10**9).to_bytes(8, "little") + (f / "model.safetensors").read_bytes()[8:]),
        "model.safetensors", "a header of 1000000000 bytes", DamagedFileError),
    "header_not_json": ("whole", lambda f: (f / "model.safetensors").write_bytes(
        (f / "model.safetensors").read_bytes()[:8] + b"\xff" +
        (f / "model.safetensors").read_bytes()[9:]), "model.safetensors", "header is not JSON",
        DamagedFileError),
    "offsets_overlapping": ("whole", lambda f: _edit_header(
        f / "model.safetensors", lambda h: _last(h).update(data_offsets=[
            o - 4 for o in _last(h)["data_offsets"]])), "model.safetensors", "starts at byte",
        DamagedFileError),
    "offsets_past_the_end": ("sharded", lambda f: _edit_header(
        _shard(f), lambda h: _last(h)["data_offsets"].__setitem__(1, 10**9)),
        "model-00002-of-", "data_offsets", DamagedFileError),
    "dtype_unknown": ("whole", lambda f: _edit_header(
        f / "model.safetensors", lambda h: _last(h).update(dtype="F8_E4M3")),
        "model.safetensors", "dtype 'F8_E4M3'", DamagedFileError),
    "index_without_weight_map": ("sharded", lambda f: (f / hf_gpt2.INDEX).write_text(
        '{"metadata": {}}'), hf_gpt2.INDEX, "no entry 'weight_map'", DamagedFileError),
    "index_garbage": ("sharded", lambda f: (f / hf_gpt2.INDEX).write_text("{not json"),
                      hf_gpt2.INDEX, "unreadable", DamagedFileError),
    "index_names_a_path": ("sharded", lambda f: (f / hf_gpt2.INDEX).write_text(
        '{"weight_map": {"wte.weight": "../x.safetensors"}}'), hf_gpt2.INDEX, "shard files",
        DamagedFileError),
    "config_garbage": ("whole", lambda f: (f / "config.json").write_text("{\n"), "config.json",
                       "unreadable", DamagedFileError),
    "n_head_not_dividing": ("whole", lambda f: _config(f, n_head=5), "config.json",
                            "n_embd=32 and n_head=5", ConfigError),
    "n_layer_zero": ("whole", lambda f: _config(f, n_layer=0), "config.json", "n_layer=0",
                     ConfigError),
    "n_embd_text": ("whole", lambda f: _config(f, n_embd="32"), "config.json", "n_embd='32'",
                    ConfigError),
    "n_embd_missing": ("whole", lambda f: _config(f, n_embd=_config), "config.json",
                       "has no n_embd", ConfigError),
    "epsilon_negative": ("whole", lambda f: _config(f, layer_norm_epsilon=-1), "config.json",
                         "layer_norm_epsilon=-1", ConfigError),
    "neox_heads_not_dividing": ("neox", lambda f: _config(f, num_attention_heads=3),
                                "config.json", "num_attention_heads=3", ConfigError),
    "neox_rope_text": ("neox", lambda f: _config(f, rope_parameters="x"), "config.json",
                       "rope_parameters='x'", ConfigError),
}


@pytest.mark.parametrize("case", list(DAMAGED))
def test_a_damaged_checkpoint_is_one_line_naming_the_file(tmp_path, valid, case):
  source, damage, file, detail, error = DAMAGED[case]
  folder = tmp_path / "ckpt"
  shutil.copytree(valid / source, folder)
  damage(folder)
  name = f"hf:{folder}"
  with pytest.raises((DamagedFileError, ConfigError)) as e:
    models.validate_name(name)            # what a config's validation reads: config.json
    models.label(name)                    # what names a run's stages
    models.pretrained(name)(None)         # what a run that trains it reads (host arrays)
  assert type(e.value) is error, e.value
  one_line(e, str(folder / file), detail)


def test_a_damaged_checkpoint_stops_the_launcher_with_one_line(tmp_path, monkeypatch, capsys):
  dirs, data = write_gpt2_ladder(tmp_path)
  weak = dirs.split(":")[0]
  _truncate(pathlib.Path(weak) / "model.safetensors")
  out = launch(monkeypatch, capsys, f"--config=experiments/w2s/gpt2.py:smoke,dirs={dirs},"
               f"data={data},seeds=1", f"--workdir={tmp_path}/run")
  _assert_one_line_error(out, f"{weak}/model.safetensors")


def test_a_checkpoint_without_safetensors_weights_is_refused_at_validation(tmp_path, valid):
  """A torch-only folder (pytorch_model.bin) passed validation and failed mid-run, after the
  earlier stages had trained, naming model.name instead of the key that gave it."""
  folder = tmp_path / "torch_only"
  folder.mkdir()
  shutil.copy(valid / "whole" / "config.json", folder / "config.json")
  (folder / "pytorch_model.bin").write_bytes(b"\0" * 16)
  with pytest.raises(ConfigError, match=r"^w2s\.ladder=hf:.*no model\.safetensors") as e:
    models.validate_name(f"hf:{folder}", "w2s.ladder")
  assert "\n" not in str(e.value)
