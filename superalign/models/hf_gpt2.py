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

import json
import os
from typing import Any, Mapping

import jax
import numpy as np

from superalign.core import mesh as mesh_lib
from superalign.core.errors import ConfigError
from superalign.results.files import atomic

CONFIG, WEIGHTS, INDEX = "config.json", "model.safetensors", "model.safetensors.index.json"
_PREFIX = "transformer."
_BUFFERS = (".attn.bias", ".attn.masked_bias")
# GPT-2 options this transformer computes exactly; any other value is refused by name.
_REQUIRED = {"activation_function": ("gelu_new", "gelu_pytorch_tanh"),
             "scale_attn_weights": (True,), "scale_attn_by_inverse_layer_idx": (False,),
             "add_cross_attention": (False,), "tie_word_embeddings": (True,)}


MODEL_TYPE = "gpt2"
# The checkpoint families superalign reads, by config.json's model_type (models.registry.LOADERS
# maps each to its loader).
MODEL_TYPES = (MODEL_TYPE, "gpt_neox")


def read_json(path: str, key: str = "model.name") -> dict[str, Any]:
  """``config.json`` of a checkpoint directory of any family (``MODEL_TYPES``); raises ConfigError
  (one line) naming what is wrong."""
  where = f"{key}=hf:{path}"
  if not os.path.isdir(path):
    raise ConfigError(f"{where}: no such checkpoint directory (a directory written by "
                      "transformers' save_pretrained, holding config.json and model.safetensors)")
  file = os.path.join(path, CONFIG)
  try:
    with open(file) as f:
      hf = json.load(f)
  except FileNotFoundError:
    raise ConfigError(f"{where}: no {CONFIG} in the checkpoint directory") from None
  except (OSError, ValueError) as e:
    raise ConfigError(f"{where}: cannot read {file}: {e}") from None
  if not isinstance(hf, dict) or hf.get("model_type") not in MODEL_TYPES:
    got = hf.get("model_type") if isinstance(hf, dict) else None
    raise ConfigError(f"{where}: {CONFIG} has model_type {got!r}; superalign reads "
                      f"{' and '.join(map(repr, MODEL_TYPES))} checkpoints (GPT-2, GPT-NeoX)")
  return hf


def read_config(path: str, key: str = "model.name") -> dict[str, Any]:
  """``config.json`` of a GPT-2 checkpoint; raises ConfigError (one line) naming what is wrong."""
  where = f"{key}=hf:{path}"
  hf = read_json(path, key)
  if hf["model_type"] != MODEL_TYPE:
    raise ConfigError(f"{where}: {CONFIG} has model_type {hf['model_type']!r}; this loader reads "
                      "GPT-2 (model_type 'gpt2')")
  for name, valid in _REQUIRED.items():
    if name in hf and hf[name] not in valid:
      raise ConfigError(f"{where}: {CONFIG} sets {name}={hf[name]!r}; supported: "
                        f"{', '.join(map(repr, valid))}")
  return hf


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


def weight_files(path: str) -> list[str]:
  index = os.path.join(path, INDEX)
  if os.path.exists(index):
    with open(index) as f:
      return sorted(set(json.load(f)["weight_map"].values()))
  if os.path.exists(os.path.join(path, WEIGHTS)):
    return [WEIGHTS]
  raise ConfigError(f"model.name=hf:{path}: no {WEIGHTS} or {INDEX} in the checkpoint directory "
                    "(save it with save_pretrained(..., safe_serialization=True))")


def read_safetensors(path: str, prefix: str = "", buffers: tuple[str, ...] = ()
                     ) -> dict[str, np.ndarray]:
  """Every tensor of the checkpoint directory's safetensors file(s), by name with ``prefix``
  stripped, but for the non-parameter ``buffers`` (name endings such as ``.attn.bias``)."""
  from safetensors import safe_open
  tensors = {}
  for file in weight_files(path):
    with safe_open(os.path.join(path, file), framework="numpy") as f:
      for name in f.keys():
        short = name[len(prefix):] if prefix and name.startswith(prefix) else name
        if not ("." + short).endswith(buffers):
          tensors[short] = f.get_tensor(name)
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


def read_tensors(path: str, hf: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
  """The checkpoint's parameters by GPT-2 name (no prefix), shape-checked against the config."""
  hf = read_config(path) if hf is None else hf
  tensors = read_safetensors(path, _PREFIX, _BUFFERS)
  head = tensors.pop("lm_head.weight", None)
  if head is not None and "wte.weight" in tensors and not np.array_equal(head, tensors["wte.weight"]):
    raise ConfigError(f"model.name=hf:{path}: lm_head.weight differs from wte.weight; superalign's "
                      "GPT-2 ties its LM head to the token embedding")
  check_shapes(tensors, _shapes(hf), f"model.name=hf:{path}", "GPT-2",
               f"n_embd={hf['n_embd']}, n_layer={hf['n_layer']}, "
               f"vocab_size={hf['vocab_size']}")
  return tensors


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


def place(params: Mapping, shardings: Mapping) -> dict:
  """Host arrays onto the mesh: each device gets only its slice of each parameter."""
  def one(host, sharding):
    host = np.asarray(host)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])
  return jax.tree.map(one, dict(params), {k: shardings[k] for k in params})


def load(path: str, shardings: Mapping | None = None) -> dict:
  """The checkpoint as a nested parameter dict: host arrays, or placed per ``shardings`` (a
  nested dict of ``NamedSharding`` covering at least the checkpoint's parameters)."""
  hf = read_config(path)
  params = to_params(read_tensors(path, hf), hf)
  return params if shardings is None else place(params, shardings)


def save(path: str, params: Mapping, hf: Mapping[str, Any], *,
         max_shard_bytes: int | None = None) -> None:
  """Writes ``config.json`` and the weights as ``save_pretrained`` does for ``GPT2LMHeadModel``:
  prefixed names, tied head omitted, one file or shards of at most ``max_shard_bytes`` with an
  index. Files go to a temporary name first, so a failed save leaves no partial checkpoint.

  Across processes every process calls it (the parameters are gathered collectively), process 0
  writes, and all return once the checkpoint is complete."""
  tensors = {_PREFIX + k: np.ascontiguousarray(v) for k, v in from_params(params).items()}
  mesh_lib.write_once(f"hf_gpt2.save {path}",
                      lambda: write_checkpoint(path, tensors, hf, max_shard_bytes))


def write_checkpoint(path: str, tensors: Mapping[str, np.ndarray], hf: Mapping[str, Any],
                     max_shard_bytes: int | None = None) -> None:
  """``tensors`` (full names) and ``hf`` as ``save_pretrained`` lays them out, each file
  atomically."""
  from safetensors.numpy import save_file
  os.makedirs(path, exist_ok=True)
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
    atomic(os.path.join(path, name), lambda tmp: save_file(shard, tmp, metadata={"format": "pt"}))
  if len(shards) > 1:
    index = {"metadata": {"total_size": sum(t.nbytes for t in tensors.values())},
             "weight_map": {k: n for n, s in zip(names, shards) for k in s}}
    write_json(os.path.join(path, INDEX), index)
  write_json(os.path.join(path, CONFIG), dict(hf))


def write_json(path: str, obj) -> None:
  def write(tmp):
    with open(tmp, "w") as f:
      json.dump(obj, f, indent=2)
  atomic(path, write)
