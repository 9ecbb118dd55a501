"""Hugging Face GPT-2 checkpoints in and out of the core ``Transformer``.

A checkpoint directory holds ``config.json`` and ``model.safetensors`` (or shards listed in
``model.safetensors.index.json``), as ``save_pretrained`` writes them. GPT-2's layout differs from
ours in three ways, each a lossless reshape, so a load-save-load round trip is bitwise:

* ``Conv1D`` weights are ``[in, out]`` (already our kernel layout, no transpose);
* the fused ``c_attn`` columns are ``[q | k | v]``, each ``[heads, head_dim]``: our ``qkv`` is
  ``[d, 3, heads, head_dim]``, so heads stay a tensor-parallel axis;
* the LM head is tied to ``wte`` and not stored (older checkpoints also store causal-mask buffers
  ``attn.bias`` / ``attn.masked_bias``, which are not parameters).

Parameters are placed on the mesh as they load: each device receives only its own slice
(``jax.make_array_from_callback``), so no device ever holds a whole sharded tensor. The
classification head is not part of a GPT-2 checkpoint; it keeps its fresh initialization.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import shutil
import sys
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from superalign.core import mesh as mesh_lib
from superalign.core.errors import ConfigError
from superalign.models import safetensors_io
from superalign.results.files import DamagedFileError, atomic_folder, load_json, read_guarded

log = logging.getLogger("superalign")

CONFIG, WEIGHTS, INDEX = "config.json", "model.safetensors", "model.safetensors.index.json"
_PREFIX = "transformer."
_BUFFERS = (".attn.bias", ".attn.masked_bias")
# GPT-2 options this transformer computes exactly; any other value is refused by name.
_REQUIRED = {"activation_function": ("gelu_new", "gelu_pytorch_tanh"),
             "scale_attn_weights": (True,), "scale_attn_by_inverse_layer_idx": (False,),
             "add_cross_attention": (False,), "tie_word_embeddings": (True,)}
# Sizes the architecture is built from: positive integers (the optional ones may be null, then
# derived), the width a multiple of the heads.
_SIZES = ("vocab_size", "n_positions", "n_embd", "n_head", "n_layer")
_OPTIONAL_SIZES = ("n_inner",)
_WIDTH_HEADS = ("n_embd", "n_head")
_EPSILON = "layer_norm_epsilon"
# What to do about a damaged file of a checkpoint.
FIX = "save the checkpoint again (transformers' save_pretrained) or copy it again"


MODEL_TYPE = "gpt2"
# The checkpoint families superalign reads, by config.json's model_type (models.registry.LOADERS
# maps each to its loader).
MODEL_TYPES = (MODEL_TYPE, "gpt_neox", "llama", "mistral", "qwen2", "qwen3", "gemma2",
               "gemma3_text")


def read_json(path: str, key: str = "model.name") -> dict[str, Any]:
  """``config.json`` of a checkpoint directory of any family (``MODEL_TYPES``); raises ConfigError
  (one line) naming what is wrong."""
  where = f"{key}=hf:{path}"
  if not os.path.isdir(path):
    raise ConfigError(f"{where}: no such checkpoint directory (a directory written by "
                      "transformers' save_pretrained, holding config.json and model.safetensors)")
  file = os.path.join(path, CONFIG)
  if not os.path.exists(file):
    raise ConfigError(f"{where}: no {CONFIG} in the checkpoint directory")
  hf = read_guarded(file, load_json, FIX)
  if not isinstance(hf, dict) or hf.get("model_type") not in MODEL_TYPES:
    got = hf.get("model_type") if isinstance(hf, dict) else None
    raise ConfigError(f"{where}: {CONFIG} has model_type {got!r}; superalign reads "
                      f"{', '.join(map(repr, MODEL_TYPES))} checkpoints")
  return hf


def read_config(path: str, key: str = "model.name") -> dict[str, Any]:
  """``config.json`` of a GPT-2 checkpoint; raises ConfigError (one line) naming what is wrong."""
  where = f"{key}=hf:{path}"
  hf = read_json(path, key)
  if hf["model_type"] != MODEL_TYPE:
    raise ConfigError(f"{where}: {CONFIG} has model_type {hf['model_type']!r}; this loader reads "
                      "GPT-2 (model_type 'gpt2')")
  check_options(hf, path, where, _REQUIRED)
  check_sizes(hf, path, where, _SIZES, _OPTIONAL_SIZES, _WIDTH_HEADS, _EPSILON)
  return hf


def check_options(hf: Mapping[str, Any], path: str, where: str,
                  required: Mapping[str, tuple]) -> None:
  """One line for an option set to a value the transformer does not compute."""
  for name, valid in required.items():
    if name in hf and hf[name] not in valid:
      raise ConfigError(f"{where}: {os.path.join(path, CONFIG)} sets {name}={hf[name]!r}; "
                        f"supported: {', '.join(map(repr, valid))}")


def check_sizes(hf: Mapping[str, Any], path: str, where: str, sizes: tuple[str, ...],
                optional: tuple[str, ...], width_heads: tuple[str, str], epsilon: str) -> None:
  """One line naming the config file and key whose size cannot build a model: missing, not a
  positive integer (``optional`` ones may be null), a width the heads do not divide, or a layer
  norm epsilon that is not a positive number."""
  file = os.path.join(path, CONFIG)
  for key in sizes + optional:
    value = hf.get(key)
    if key in optional and value is None:
      continue
    if key not in hf:
      raise ConfigError(f"{where}: {file} has no {key}")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ConfigError(f"{where}: {file} sets {key}={value!r}; needs a positive integer")
  width, heads = width_heads
  if hf[width] % hf[heads]:
    raise ConfigError(f"{where}: {file} sets {width}={hf[width]} and {heads}={hf[heads]}; "
                      f"{width} must be a multiple of {heads}")
  value = hf.get(epsilon, 1e-5)
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
    raise ConfigError(f"{where}: {file} sets {epsilon}={value!r}; needs a positive number")


def architecture(hf: Mapping[str, Any]) -> dict[str, Any]:
  """``Transformer`` keyword arguments for a GPT-2 config."""
  width = hf["n_embd"]
  return {"vocab_size": hf["vocab_size"], "max_len": hf["n_positions"],
          "num_layers": hf["n_layer"], "width": width, "num_heads": hf["n_head"],
          "mlp_width": hf.get("n_inner") or 4 * width,
          "epsilon": hf.get("layer_norm_epsilon", 1e-5)}


def _shapes(hf: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
  """Every GPT-2 tensor name (without the ``transformer.`` prefix) and its shape."""
  a = architecture(hf)
  d, m = a["width"], a["mlp_width"]
  shapes = {"wte.weight": (a["vocab_size"], d), "wpe.weight": (a["max_len"], d),
            "ln_f.weight": (d,), "ln_f.bias": (d,)}
  for i in range(a["num_layers"]):
    shapes.update({f"h.{i}.{k}": v for k, v in {
        "ln_1.weight": (d,), "ln_1.bias": (d,), "ln_2.weight": (d,), "ln_2.bias": (d,),
        "attn.c_attn.weight": (d, 3 * d), "attn.c_attn.bias": (3 * d,),
        "attn.c_proj.weight": (d, d), "attn.c_proj.bias": (d,),
        "mlp.c_fc.weight": (d, m), "mlp.c_fc.bias": (m,),
        "mlp.c_proj.weight": (m, d), "mlp.c_proj.bias": (d,)}.items()})
  return shapes


def weight_files(path: str, key: str = "model.name") -> list[str]:
  """The checkpoint's safetensors files: the shards its index names, else ``model.safetensors``
  (none: one line naming the config ``key`` that gave the checkpoint)."""
  index = os.path.join(path, INDEX)
  if os.path.exists(index):
    return read_guarded(index, _shard_names, FIX)
  if os.path.exists(os.path.join(path, WEIGHTS)):
    return [WEIGHTS]
  raise ConfigError(f"{key}=hf:{path}: no {WEIGHTS} or {INDEX} in the checkpoint directory "
                    "(save it with save_pretrained(..., safe_serialization=True))")


def _shard_names(index: str) -> list[str]:
  weight_map = load_json(index)["weight_map"]
  files = list(weight_map.values()) if isinstance(weight_map, dict) else []
  if not files or not all(isinstance(f, str) and f and os.path.basename(f) == f for f in files):
    raise DamagedFileError(f"{index}: its weight_map is not a map from tensor names to shard "
                           f"files of the checkpoint directory; {FIX}")
  return sorted(set(files))


def read_safetensors(path: str, prefix: str = "", buffers: tuple[str, ...] = ()
                     ) -> dict[str, np.ndarray]:
  """Every tensor of the checkpoint directory's safetensors file(s), by name with ``prefix``
  stripped, but for the non-parameter ``buffers`` (name endings such as ``.attn.bias``): read-only
  views of the memory-mapped files in their stored dtype (``safetensors_io.read``: nothing is
  copied or converted here); a damaged or missing file is one DamagedFileError line naming it."""
  tensors = {}

  def read(file: str) -> None:
    for name, tensor in safetensors_io.read(file, FIX).items():
      short = name[len(prefix):] if prefix and name.startswith(prefix) else name
      if not ("." + short).endswith(buffers):
        tensors[short] = tensor

  for file in weight_files(path):
    read_guarded(os.path.join(path, file), read, FIX)
  return tensors


def check_shapes(tensors: Mapping[str, np.ndarray], expected: Mapping[str, tuple[int, ...]],
                 where: str, family: str, sizes: str) -> None:
  """One line for a tensor the config needs and the checkpoint lacks, one of another shape, or
  one the config has no place for; ``sizes`` names the config's sizes (``n_embd=768, ...``)."""
  for name, shape in expected.items():
    if name not in tensors:
      raise ConfigError(f"{where}: the checkpoint has no tensor {name!r}, which {CONFIG} "
                        f"({sizes}) needs")
    if tuple(tensors[name].shape) != shape:
      raise ConfigError(f"{where}: {name} has shape {tuple(tensors[name].shape)} but {CONFIG} "
                        f"({sizes}) needs {shape}")
  extra = sorted(set(tensors) - set(expected))
  if extra:
    raise ConfigError(f"{where}: unexpected tensor {extra[0]!r} for a {family} with {sizes}")


def drop_tied_head(tensors: dict[str, np.ndarray], head: str, embedding: str, tied: bool,
                   where: str) -> None:
  """Removes ``tensors[head]`` when the config ties the head (``tied``): a stored copy, which must
  equal ``tensors[embedding]`` (one line if not), since the model reads the embedding."""
  if not tied or head not in tensors:
    return
  if embedding in tensors and not np.array_equal(tensors[head], tensors[embedding]):
    raise ConfigError(f"{where}: tie_word_embeddings is true but {head} differs from {embedding}")
  del tensors[head]


def read_tensors(path: str, hf: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
  """The checkpoint's parameters by GPT-2 name (no prefix), shape-checked against the config."""
  hf = read_config(path) if hf is None else hf
  tensors = read_safetensors(path, _PREFIX, _BUFFERS)
  head = tensors.pop("lm_head.weight", None)
  if head is not None and "wte.weight" in tensors and not np.array_equal(head, tensors["wte.weight"]):
    raise ConfigError(f"model.name=hf:{path}: lm_head.weight differs from wte.weight; superalign's "
                      "GPT-2 ties its LM head to the token embedding")
  check(tensors, hf, f"model.name=hf:{path}")
  return tensors


def check(tensors: Mapping[str, np.ndarray], hf: Mapping[str, Any], where: str) -> None:
  """``tensors`` (GPT-2 names, no prefix) are those ``hf`` describes: one line if not."""
  check_shapes(tensors, _shapes(hf), where, "GPT-2",
               f"n_embd={hf['n_embd']}, n_layer={hf['n_layer']}, vocab_size={hf['vocab_size']}")


def to_params(tensors: Mapping[str, np.ndarray], hf: Mapping[str, Any]) -> dict:
  """GPT-2 tensors as the ``Transformer``'s nested parameter dict (without the class head)."""
  a = architecture(hf)
  d, heads = a["width"], a["num_heads"]
  hd = d // heads
  ln = lambda p: {"scale": tensors[f"{p}.weight"], "bias": tensors[f"{p}.bias"]}
  dense = lambda p: {"kernel": tensors[f"{p}.weight"], "bias": tensors[f"{p}.bias"]}
  blocks = {}
  for i in range(a["num_layers"]):
    h = f"h.{i}"
    blocks[i] = {
        "ln1": ln(f"{h}.ln_1"), "ln2": ln(f"{h}.ln_2"),
        "attn": {"qkv": tensors[f"{h}.attn.c_attn.weight"].reshape(d, 3, heads, hd),
                 "qkv_bias": tensors[f"{h}.attn.c_attn.bias"].reshape(3, heads, hd),
                 "out": tensors[f"{h}.attn.c_proj.weight"].reshape(heads, hd, d),
                 "out_bias": tensors[f"{h}.attn.c_proj.bias"]},
        "fc": dense(f"{h}.mlp.c_fc"), "proj": dense(f"{h}.mlp.c_proj")}
  return {"embed": {"embedding": tensors["wte.weight"]}, "pos": tensors["wpe.weight"],
          "blocks": blocks, "ln_f": ln("ln_f")}


def from_params(params: Mapping) -> dict[str, np.ndarray]:
  """The inverse of ``to_params``: GPT-2 tensor names (no prefix) from a parameter dict."""
  params = mesh_lib.to_host(params)   # one transfer (one gather when sharded over hosts)
  get = np.asarray
  out = {"wte.weight": get(params["embed"]["embedding"]), "wpe.weight": get(params["pos"]),
         "ln_f.weight": get(params["ln_f"]["scale"]), "ln_f.bias": get(params["ln_f"]["bias"])}
  for i, b in sorted(params["blocks"].items(), key=lambda kv: int(kv[0])):
    h = f"h.{i}"
    qkv = get(b["attn"]["qkv"])
    d = qkv.shape[0]
    out.update({
        f"{h}.ln_1.weight": get(b["ln1"]["scale"]), f"{h}.ln_1.bias": get(b["ln1"]["bias"]),
        f"{h}.ln_2.weight": get(b["ln2"]["scale"]), f"{h}.ln_2.bias": get(b["ln2"]["bias"]),
        f"{h}.attn.c_attn.weight": qkv.reshape(d, -1),
        f"{h}.attn.c_attn.bias": get(b["attn"]["qkv_bias"]).reshape(-1),
        f"{h}.attn.c_proj.weight": get(b["attn"]["out"]).reshape(-1, d),
        f"{h}.attn.c_proj.bias": get(b["attn"]["out_bias"]),
        f"{h}.mlp.c_fc.weight": get(b["fc"]["kernel"]), f"{h}.mlp.c_fc.bias": get(b["fc"]["bias"]),
        f"{h}.mlp.c_proj.weight": get(b["proj"]["kernel"]),
        f"{h}.mlp.c_proj.bias": get(b["proj"]["bias"])})
  return out


def place(params: Mapping, shardings: Mapping, dtype=None) -> dict:
  """Host arrays onto the mesh: each device gets only its slice of each parameter, and only that
  slice is read from the host array (a memory-mapped checkpoint is read slice by slice) and, for a
  floating-point array, converted to ``dtype`` (None: as it is). A CPU device gets a copy of its
  slice, never a view of the file (it would keep a checkpoint's pages mapped for the run's life,
  and a file rewritten in place under it would change or fault the parameters)."""
  def one(host, sharding):
    host = np.asanyarray(host)
    target = host.dtype if dtype is None or not _floating(host.dtype) else np.dtype(dtype)
    copy = target != host.dtype or any(d.platform == "cpu" for d in sharding.device_set)
    return jax.make_array_from_callback(host.shape, sharding,
                                        lambda index: host[index].astype(target, copy=copy))
  return jax.tree.map(one, dict(params), {k: shardings[k] for k in params})


def load(path: str, shardings: Mapping | None = None, dtype=np.float32) -> dict:
  """The checkpoint as a nested parameter dict: host arrays, or placed per ``shardings`` (a
  nested dict of ``NamedSharding`` covering at least the checkpoint's parameters); floating-point
  tensors as ``dtype`` (None: as stored; ``load_family``)."""
  return load_family(sys.modules[__name__], path, shardings, dtype)


def load_family(family, path: str, shardings: Mapping | None = None, dtype=np.float32) -> dict:
  """``family``'s (``hf_gpt2``, ``hf_neox``) ``load``. The tensors are read in their stored dtype,
  as views of the memory-mapped files (``read_safetensors``); floating-point ones become ``dtype``
  parameters (None: as stored, the host arrays then being those views), with a warning naming
  what was converted. Placed on the mesh, each device's slice is read and converted alone, so a
  bfloat16 checkpoint never has a float32 copy on the host. The default, float32, is what mixed
  precision needs whatever the compute dtype: Adam's update of float16 parameters is NaN within
  steps (its epsilon underflows), and bfloat16 parameters round small updates away."""
  hf = family.read_config(path)
  params = family.to_params(family.read_tensors(path, hf), hf)
  if dtype is not None:
    dtype = np.dtype(dtype)
    if not _floating(dtype):
      raise ValueError(f"load dtype {dtype.name}: a floating-point dtype, or None (as stored)")
    if shardings is None:
      return as_dtype(params, dtype, f"hf:{path}")
    _log_conversions(params, dtype, f"hf:{path}")
  return params if shardings is None else place(params, shardings, dtype)


def _floating(dtype) -> bool:
  """Whether ``dtype`` is floating point (bfloat16 included, which numpy's own test misses)."""
  return jnp.issubdtype(dtype, jnp.floating)


def _log_conversions(params: Mapping, dtype: np.dtype, where: str) -> None:
  """Logs how many floating-point arrays of ``params`` of which dtype are not ``dtype``."""
  converted: dict[str, int] = {}
  for x in jax.tree.leaves(dict(params)):
    if _floating(x.dtype) and x.dtype != dtype:
      converted[x.dtype.name] = converted.get(x.dtype.name, 0) + 1
  if converted:
    log.warning("%s: %s tensors loaded as %s parameters", where,
                " and ".join(f"{n} {name}" for name, n in sorted(converted.items())), dtype.name)


def as_dtype(params: Mapping, dtype: np.dtype, where: str) -> dict:
  """Every floating-point array of ``params`` as ``dtype`` (host arrays: a converted one is a new
  array, the others are left as they are); logs how many of which dtype were converted."""
  _log_conversions(params, dtype, where)
  return jax.tree.map(lambda x: x.astype(dtype) if _floating(x.dtype) and x.dtype != dtype
                      else x, dict(params))


def fingerprint(path: str, sample_bytes: int = 1 << 20) -> str:
  """A short hash of a checkpoint's identity, cheap on any size: its resolved path, its
  ``config.json`` and index, and each weight file's size and first and last ``sample_bytes``
  (the safetensors header, and values any fine-tuning changes). Two checkpoints that share a
  directory name, or a checkpoint saved again over the same directory, get different ones. An
  unreadable file counts as absent (its loader reports it). Every stage and cache name asks for
  it: the hash is computed once per state of the directory (its entries' sizes and times)."""
  real = os.path.realpath(path)
  try:
    state = tuple((e.name, e.stat().st_size, e.stat().st_mtime_ns)
                  for e in sorted(os.scandir(real), key=lambda e: e.name))
  except OSError:
    state = ()
  return _fingerprint(real, state, sample_bytes)


@functools.lru_cache(maxsize=64)
def _fingerprint(path: str, state: tuple, sample_bytes: int) -> str:
  del state   # the cache key: a save in place changes it
  digest = hashlib.sha256(path.encode())
  names = [CONFIG, INDEX]
  try:
    names += weight_files(path)
  except (ConfigError, DamagedFileError):
    pass

  def sample(file: str) -> bytes:
    with open(file, "rb") as f:
      size = f.seek(0, os.SEEK_END)
      f.seek(0)
      head = f.read(sample_bytes)
      f.seek(max(size - sample_bytes, 0))
      return str(size).encode() + head + f.read(sample_bytes)

  for name in names:
    digest.update(b"\0" + name.encode())
    try:
      digest.update(read_guarded(os.path.join(path, name), sample))
    except DamagedFileError:
      digest.update(b"absent")
  return digest.hexdigest()[:8]


def save(path: str, params: Mapping, hf: Mapping[str, Any], *,
         max_shard_bytes: int | None = None) -> None:
  """Writes ``config.json`` and the weights as ``save_pretrained`` does for ``GPT2LMHeadModel``:
  prefixed names, tied head omitted, one file or shards of at most ``max_shard_bytes`` with an
  index. A checkpoint already in ``path`` is replaced whole (``write_checkpoint``).

  Across processes every process calls it (the parameters are gathered collectively), process 0
  writes, and all return once the checkpoint is complete."""
  tensors = from_params(params)
  check(tensors, hf, f"hf_gpt2.save({path})")   # never a checkpoint no loader reads back
  tensors = {_PREFIX + k: np.ascontiguousarray(v) for k, v in tensors.items()}
  mesh_lib.write_once(f"hf_gpt2.save {path}",
                      lambda: write_checkpoint(path, tensors, hf, max_shard_bytes))


# The files of a checkpoint's weights and config in any format transformers reads: a save
# replaces all of them, since transformers or our loader would read a stale shard, index or
# other-format weights left beside the new ones. Other files (a tokenizer) are kept.
_CHECKPOINT_FILE = re.compile(r"config\.json|.*\.safetensors(\.index\.json)?|"
                              r"pytorch_model.*\.bin(\.index\.json)?|tf_model.*\.h5|"
                              r"flax_model.*\.msgpack(\.index\.json)?")


def write_checkpoint(path: str, tensors: Mapping[str, np.ndarray], hf: Mapping[str, Any],
                     max_shard_bytes: int | None = None) -> None:
  """``tensors`` (full names) and ``hf`` as ``save_pretrained`` lays them out, in a new
  directory that then takes ``path``'s place: a reader sees the old checkpoint or the new one,
  never a mix, and a failed save leaves the old one. A directory that holds files but no
  checkpoint's weights (a run's workdir also holds a config.json) is refused (one line)."""
  path = os.path.realpath(path)   # a link to a checkpoint: replace what it points to
  old = os.listdir(path) if os.path.isdir(path) else None
  weights = [n for n in old or () if n != CONFIG and _CHECKPOINT_FILE.fullmatch(n)]
  if os.path.exists(path) and (old is None or (old and not weights)):
    raise ConfigError(f"{path} already holds files that are not a Hugging Face checkpoint; "
                      "choose another folder or delete it")
  def write(new):
    _write_files(new, tensors, hf, max_shard_bytes)
    for name in old or ():
      if not _CHECKPOINT_FILE.fullmatch(name):
        (shutil.copytree if os.path.isdir(os.path.join(path, name)) else shutil.copy2)(
            os.path.join(path, name), os.path.join(new, name))
  atomic_folder(path, write)


def _write_files(path: str, tensors: Mapping[str, np.ndarray], hf: Mapping[str, Any],
                 max_shard_bytes: int | None) -> None:
  from safetensors.numpy import save_file
  shards = [dict(tensors)]
  if max_shard_bytes:
    shards, size = [{}], 0
    for name, t in tensors.items():
      if shards[-1] and size + t.nbytes > max_shard_bytes:
        shards, size = shards + [{}], 0
      shards[-1][name], size = t, size + t.nbytes
  names = ([WEIGHTS] if len(shards) == 1 else
           [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
  for name, shard in zip(names, shards):
    save_file(shard, os.path.join(path, name), metadata={"format": "pt"})
  if len(shards) > 1:
    index = {"metadata": {"total_size": sum(t.nbytes for t in tensors.values())},
             "weight_map": {k: n for n, s in zip(names, shards) for k in s}}
    _write_json(os.path.join(path, INDEX), index)
  _write_json(os.path.join(path, CONFIG), dict(hf))


def _write_json(path: str, obj) -> None:
  with open(path, "w") as f:
    json.dump(obj, f, indent=2)
