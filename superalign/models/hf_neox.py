"""Hugging Face GPT-NeoX checkpoints (Pythia) in and out of the core ``Transformer``.

The directory layout is GPT-2's (``hf_gpt2``: ``config.json``, ``model.safetensors`` or shards
with an index); the architecture differs: rotary positions on a share of each head
(``partial_rotary_factor``, 0.25 in Pythia), the parallel residual ``x + attn(ln1(x)) +
mlp(ln2(x))`` (``use_parallel_residual``), the exact GELU, and an LM head of its own
(``embed_out``). Each tensor maps to ours by a lossless transpose or reshape, so a load-save-load
round trip is bitwise:

* ``torch.nn.Linear`` weights are ``[out, in]``: our kernels are their transposes;
* the fused ``query_key_value`` rows are per head ``[heads, 3, head_dim]`` (q, k, v of head 0,
  then head 1, ...): our ``qkv`` is ``[d, 3, heads, head_dim]``;
* ``embed_out`` is ``[vocab, d]``, as our ``unembed``.

The classification head is not in the checkpoint; it keeps its fresh initialization.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Mapping

import numpy as np

from superalign.core import mesh as mesh_lib
from superalign.core.errors import ConfigError
from superalign.models import hf_gpt2
from superalign.models.hf_gpt2 import CONFIG

MODEL_TYPE = "gpt_neox"
_PREFIX = "gpt_neox."
_BUFFERS = (".attention.bias", ".attention.masked_bias", ".rotary_emb.inv_freq")
# GPT-NeoX options this transformer computes exactly; any other value is refused by name.
_REQUIRED = {"hidden_act": ("gelu",), "attention_bias": (True,), "rope_scaling": (None,),
             "add_cross_attention": (False,)}
# As hf_gpt2's: the sizes the architecture is built from.
_SIZES = ("vocab_size", "max_position_embeddings", "hidden_size", "num_attention_heads",
          "num_hidden_layers")
_OPTIONAL_SIZES = ("intermediate_size",)
_WIDTH_HEADS = ("hidden_size", "num_attention_heads")
_EPSILON = "layer_norm_eps"


def read_config(path: str, key: str = "model.name") -> dict[str, Any]:
  """``config.json`` of a GPT-NeoX checkpoint; raises ConfigError (one line) naming what is
  wrong."""
  where = f"{key}=hf:{path}"
  hf = hf_gpt2.read_json(path, key)
  if hf["model_type"] != MODEL_TYPE:
    raise ConfigError(f"{where}: {CONFIG} has model_type {hf['model_type']!r}; this loader reads "
                      "GPT-NeoX (model_type 'gpt_neox')")
  hf_gpt2.check_options(hf, path, where, _REQUIRED)
  file = os.path.join(path, CONFIG)
  if not isinstance(hf.get("rope_parameters") or {}, dict):
    raise ConfigError(f"{where}: {file} sets rope_parameters={hf['rope_parameters']!r}; "
                      "needs a mapping")
  rope_type = (hf.get("rope_parameters") or {}).get("rope_type", "default")
  if rope_type != "default":
    raise ConfigError(f"{where}: {file} sets rope_parameters.rope_type={rope_type!r}; "
                      "supported: 'default'")
  hf_gpt2.check_sizes(hf, path, where, _SIZES, _OPTIONAL_SIZES, _WIDTH_HEADS, _EPSILON)
  head_dim = hf["hidden_size"] // hf["num_attention_heads"]
  try:
    share = _rotary(hf)[0]
  except (TypeError, ValueError):
    raise ConfigError(f"{where}: {file}'s partial_rotary_factor or rope_theta is not a "
                      "number") from None
  rotary_dim = int(head_dim * share)
  if rotary_dim < 2 or rotary_dim % 2:
    raise ConfigError(f"{where}: {file}'s partial_rotary_factor={share} turns {rotary_dim} of "
                      f"{head_dim} head dimensions; superalign needs an even number, at least 2")
  return hf


def _rotary(hf: Mapping[str, Any]) -> tuple[float, float]:
  """``(partial_rotary_factor, rope_theta)``: transformers 5 nests them in ``rope_parameters``;
  older configs (Pythia's on the Hub) name them ``rotary_pct`` and ``rotary_emb_base``."""
  rope = hf.get("rope_parameters") or {}
  return (float(rope.get("partial_rotary_factor", hf.get("rotary_pct", 0.25))),
          float(rope.get("rope_theta", hf.get("rotary_emb_base", 10000.0))))


def architecture(hf: Mapping[str, Any]) -> dict[str, Any]:
  """``Transformer`` keyword arguments for a GPT-NeoX config."""
  width, heads = hf["hidden_size"], hf["num_attention_heads"]
  share, theta = _rotary(hf)
  return {"vocab_size": hf["vocab_size"], "max_len": hf["max_position_embeddings"],
          "num_layers": hf["num_hidden_layers"], "width": width, "num_heads": heads,
          "mlp_width": hf.get("intermediate_size") or 4 * width,
          "epsilon": hf.get("layer_norm_eps", 1e-5),
          "rotary_dim": int(width // heads * share), "rotary_base": theta,
          "parallel_residual": bool(hf.get("use_parallel_residual", True)),
          "gelu_approximate": False,
          "tied_lm_head": bool(hf.get("tie_word_embeddings", False))}


def _shapes(hf: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
  """Every GPT-NeoX tensor name (``embed_out.weight`` and names without ``gpt_neox.``) and its
  shape."""
  a = architecture(hf)
  d, m, v = a["width"], a["mlp_width"], a["vocab_size"]
  shapes = {"embed_in.weight": (v, d), "final_layer_norm.weight": (d,),
            "final_layer_norm.bias": (d,)}
  if not a["tied_lm_head"]:
    shapes["embed_out.weight"] = (v, d)
  for i in range(a["num_layers"]):
    shapes.update({f"layers.{i}.{k}": s for k, s in {
        "input_layernorm.weight": (d,), "input_layernorm.bias": (d,),
        "post_attention_layernorm.weight": (d,), "post_attention_layernorm.bias": (d,),
        "attention.query_key_value.weight": (3 * d, d), "attention.query_key_value.bias": (3 * d,),
        "attention.dense.weight": (d, d), "attention.dense.bias": (d,),
        "mlp.dense_h_to_4h.weight": (m, d), "mlp.dense_h_to_4h.bias": (m,),
        "mlp.dense_4h_to_h.weight": (d, m), "mlp.dense_4h_to_h.bias": (d,)}.items()})
  return shapes


def read_tensors(path: str, hf: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
  """The checkpoint's parameters by GPT-NeoX name (no prefix), shape-checked against the
  config."""
  hf = read_config(path) if hf is None else hf
  tensors = hf_gpt2.read_safetensors(path, _PREFIX, _BUFFERS)
  where = f"model.name=hf:{path}"
  hf_gpt2.drop_tied_head(tensors, "embed_out.weight", "embed_in.weight",
                         "embed_out.weight" not in _shapes(hf), where)
  check(tensors, hf, where)
  return tensors


def check(tensors: Mapping[str, np.ndarray], hf: Mapping[str, Any], where: str) -> None:
  """``tensors`` (GPT-NeoX names, ``embed_out.weight`` only if untied) are those ``hf``
  describes: one line if not."""
  hf_gpt2.check_shapes(tensors, _shapes(hf), where, "GPT-NeoX",
                       f"hidden_size={hf['hidden_size']}, "
                       f"num_hidden_layers={hf['num_hidden_layers']}, "
                       f"vocab_size={hf['vocab_size']}")


def to_params(tensors: Mapping[str, np.ndarray], hf: Mapping[str, Any]) -> dict:
  """GPT-NeoX tensors as the ``Transformer``'s nested parameter dict (without the class head)."""
  a = architecture(hf)
  d, heads = a["width"], a["num_heads"]
  hd = d // heads
  ln = lambda p: {"scale": tensors[f"{p}.weight"], "bias": tensors[f"{p}.bias"]}
  dense = lambda p: {"kernel": np.ascontiguousarray(tensors[f"{p}.weight"].T),
                     "bias": tensors[f"{p}.bias"]}
  blocks = {}
  for i in range(a["num_layers"]):
    h = f"layers.{i}"
    qkv = tensors[f"{h}.attention.query_key_value.weight"].T.reshape(d, heads, 3, hd)
    qkv_bias = tensors[f"{h}.attention.query_key_value.bias"].reshape(heads, 3, hd)
    blocks[i] = {
        "ln1": ln(f"{h}.input_layernorm"), "ln2": ln(f"{h}.post_attention_layernorm"),
        "attn": {"qkv": np.ascontiguousarray(qkv.transpose(0, 2, 1, 3)),
                 "qkv_bias": np.ascontiguousarray(qkv_bias.transpose(1, 0, 2)),
                 "out": np.ascontiguousarray(
                     tensors[f"{h}.attention.dense.weight"].T.reshape(heads, hd, d)),
                 "out_bias": tensors[f"{h}.attention.dense.bias"]},
        "fc": dense(f"{h}.mlp.dense_h_to_4h"), "proj": dense(f"{h}.mlp.dense_4h_to_h")}
  params = {"embed": {"embedding": tensors["embed_in.weight"]}, "blocks": blocks,
            "ln_f": ln("final_layer_norm")}
  if not a["tied_lm_head"]:
    params["unembed"] = tensors["embed_out.weight"]
  return params


def from_params(params: Mapping) -> dict[str, np.ndarray]:
  """The inverse of ``to_params``: GPT-NeoX tensor names (``embed_out.weight`` and names
  without ``gpt_neox.``) from a parameter dict."""
  params = mesh_lib.to_host(params)   # one transfer (one gather when sharded over hosts)
  get = np.asarray
  t = lambda x: np.ascontiguousarray(get(x).T)
  out = {"embed_in.weight": get(params["embed"]["embedding"]),
         "final_layer_norm.weight": get(params["ln_f"]["scale"]),
         "final_layer_norm.bias": get(params["ln_f"]["bias"])}
  if params.get("unembed") is not None:
    out["embed_out.weight"] = get(params["unembed"])
  for i, b in sorted(params["blocks"].items(), key=lambda kv: int(kv[0])):
    h = f"layers.{i}"
    qkv = get(b["attn"]["qkv"])                                 # [d, 3, heads, head_dim]
    d = qkv.shape[0]
    out.update({
        f"{h}.input_layernorm.weight": get(b["ln1"]["scale"]),
        f"{h}.input_layernorm.bias": get(b["ln1"]["bias"]),
        f"{h}.post_attention_layernorm.weight": get(b["ln2"]["scale"]),
        f"{h}.post_attention_layernorm.bias": get(b["ln2"]["bias"]),
        f"{h}.attention.query_key_value.weight": t(qkv.transpose(0, 2, 1, 3).reshape(d, -1)),
        f"{h}.attention.query_key_value.bias":
            np.ascontiguousarray(get(b["attn"]["qkv_bias"]).transpose(1, 0, 2).reshape(-1)),
        f"{h}.attention.dense.weight": t(get(b["attn"]["out"]).reshape(-1, d)),
        f"{h}.attention.dense.bias": get(b["attn"]["out_bias"]),
        f"{h}.mlp.dense_h_to_4h.weight": t(b["fc"]["kernel"]),
        f"{h}.mlp.dense_h_to_4h.bias": get(b["fc"]["bias"]),
        f"{h}.mlp.dense_4h_to_h.weight": t(b["proj"]["kernel"]),
        f"{h}.mlp.dense_4h_to_h.bias": get(b["proj"]["bias"])})
  return out


def load(path: str, shardings: Mapping | None = None, dtype=np.float32) -> dict:
  """The checkpoint as a nested parameter dict: host arrays, or placed per ``shardings`` (a
  nested dict of ``NamedSharding`` covering at least the checkpoint's parameters); floating-point
  tensors as ``dtype`` (``hf_gpt2.load_family``)."""
  return hf_gpt2.load_family(sys.modules[__name__], path, shardings, dtype)


def save(path: str, params: Mapping, hf: Mapping[str, Any], *,
         max_shard_bytes: int | None = None) -> None:
  """Writes ``config.json`` and the weights as ``save_pretrained`` does for
  ``GPTNeoXForCausalLM`` (``gpt_neox.`` names, ``embed_out.weight`` at the top), replacing a
  checkpoint already in ``path`` whole (``hf_gpt2.write_checkpoint``). Across
  processes every process calls it, process 0 writes, and all return once it is complete."""
  tensors = from_params(params)
  check(tensors, hf, f"hf_neox.save({path})")   # never a checkpoint no loader reads back
  tensors = {(k if k.startswith("embed_out.") else _PREFIX + k): np.ascontiguousarray(v)
             for k, v in tensors.items()}
  mesh_lib.write_once(f"hf_neox.save {path}",
                      lambda: hf_gpt2.write_checkpoint(path, tensors, hf, max_shard_bytes))
