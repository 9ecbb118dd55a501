"""Hugging Face Llama, Mistral, Qwen2, Qwen3, Gemma 2 and Gemma 3 checkpoints in and out of the
core ``Transformer``.

The six ``model_type``s share one tensor layout (``model.layers.<i>.self_attn.q_proj`` ...,
``model.norm``, ``lm_head`` when untied) and differ in options, which ``architecture`` reads from
``config.json`` into ``transformer.Options``:

* ``llama``: RMSNorm, SwiGLU, grouped-query attention, rotary (default, ``linear``, ``llama3``);
* ``mistral``: Llama with a sliding window on every layer (``sliding_window``, may be null);
* ``qwen2``: Llama with biases on q/k/v, sliding layers by ``layer_types``;
* ``qwen3``: Llama with QK-norm and an explicit ``head_dim``;
* ``gemma2``: (1 + w) RMSNorm, GeGLU, embeddings times sqrt(width), ``query_pre_attn_scalar``,
  attention and final logit soft-capping, norms after attention and MLP, local and global layers
  alternating (``layer_types``), a tied head;
* ``gemma3_text``: Gemma 2's block with QK-norm, no soft-capping by default, and a rotary base
  of their own on the local layers (``rope_parameters`` per layer type).

Torch ``Linear`` weights are ``[out, in]``: each becomes our ``[in, out]`` kernel, q/k/v split by
head (``[width, heads, head_dim]``), so load-save-load is bitwise. An option these families may
set that the transformer does not compute (another ``rope_type`` or activation, experts,
bidirectional attention) is refused in one line naming the key and value.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Mapping

import numpy as np

from superalign.core import mesh as mesh_lib
from superalign.core.errors import ConfigError
from superalign.models import hf_gpt2
from superalign.models.transformer import FULL, SLIDING, Options, Rope

CONFIG = hf_gpt2.CONFIG
MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text")
MODEL_TYPE = MODEL_TYPES[0]
_PREFIX = "model."
_GEMMA = ("gemma2", "gemma3_text")
_SIZES = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
          "intermediate_size", "max_position_embeddings")
_OPTIONAL_SIZES = ("num_key_value_heads", "head_dim", "sliding_window")
# Activations by transformers' names; ``gelu_pytorch_tanh`` and ``gelu_new`` are both the tanh
# approximation.
_ACTIVATIONS = {"silu": "silu", "swish": "silu", "gelu_pytorch_tanh": "gelu_tanh",
                "gelu_new": "gelu_tanh", "gelu": "gelu"}
_ROPE_TYPES = ("default", "linear", "llama3")
# Keys that mean a computation this transformer does not do, with the value that is harmless.
_REFUSED = {"num_local_experts": (None, 0, 1), "num_experts": (None, 0, 1),
            "moe_intermediate_size": (None,), "use_bidirectional_attention": (None, False)}


def read_config(path: str, key: str = "model.name") -> dict[str, Any]:
  """``config.json`` of a checkpoint of one of ``MODEL_TYPES``, checked: raises ConfigError
  (one line naming the file, the key and the value) for what cannot be computed exactly."""
  where = f"{key}=hf:{path}"
  hf = hf_gpt2.read_json(path, key)
  file = os.path.join(path, CONFIG)
  if hf["model_type"] not in MODEL_TYPES:
    raise ConfigError(f"{where}: {CONFIG} has model_type {hf['model_type']!r}; this loader reads "
                      f"{', '.join(map(repr, MODEL_TYPES))}")
  for name, harmless in _REFUSED.items():
    if hf.get(name) not in harmless:
      raise ConfigError(f"{where}: {file} sets {name}={hf[name]!r}; superalign's transformer "
                        "computes dense decoder layers with causal attention only")
  hf_gpt2.check_sizes(hf, path, where, _SIZES, _OPTIONAL_SIZES,
                      ("num_attention_heads", "num_attention_heads"), "rms_norm_eps")
  heads, kv = hf["num_attention_heads"], hf.get("num_key_value_heads") or hf["num_attention_heads"]
  if heads % kv:
    raise ConfigError(f"{where}: {file} sets num_attention_heads={heads} and "
                      f"num_key_value_heads={kv}; the query heads must be a multiple of the "
                      "key/value heads")
  if not hf.get("head_dim") and hf["hidden_size"] % heads:
    raise ConfigError(f"{where}: {file} sets hidden_size={hf['hidden_size']} and "
                      f"num_attention_heads={heads} without a head_dim; hidden_size must be a "
                      "multiple of num_attention_heads")
  act_key = "hidden_activation" if hf.get("hidden_activation") else "hidden_act"
  act = hf.get(act_key, "gelu_pytorch_tanh" if hf["model_type"] in _GEMMA else "silu")
  if act not in _ACTIVATIONS:
    raise ConfigError(f"{where}: {file} sets {act_key}={act!r}; supported: "
                      f"{', '.join(map(repr, _ACTIVATIONS))}")
  types = hf.get("layer_types")
  if types is not None and (not isinstance(types, list) or len(types) != hf["num_hidden_layers"]
                            or not set(types) <= {FULL, SLIDING}):
    raise ConfigError(f"{where}: {file} sets layer_types={types!r}; needs one of {FULL!r} or "
                      f"{SLIDING!r} per layer ({hf['num_hidden_layers']})")
  for layer_type, rope in _rope_parameters(hf, where, file).items():
    kind = rope.get("rope_type", rope.get("type", "default"))
    label = "rope_parameters" + (f".{layer_type}" if layer_type else "") + ".rope_type"
    if kind not in _ROPE_TYPES:
      raise ConfigError(f"{where}: {file} sets {label}={kind!r}; supported: "
                        f"{', '.join(map(repr, _ROPE_TYPES))}")
    _rope(rope, hf, where, file)   # its numbers are numbers
  return hf


def _rope_parameters(hf: Mapping[str, Any], where: str, file: str) -> dict[str, dict]:
  """Rotary parameters by layer type (``""``: every layer), from transformers 5's
  ``rope_parameters`` (flat, or nested by layer type as Gemma 3 writes it) or the older
  ``rope_theta`` / ``rope_scaling`` (and Gemma 3's ``rope_local_base_freq``)."""
  rope = hf.get("rope_parameters")
  if rope is None:
    rope = dict(hf.get("rope_scaling") or {})
    rope.setdefault("rope_theta", hf.get("rope_theta", 10000.0))
    if hf["model_type"] == "gemma3_text":
      local = {"rope_type": "default", "rope_theta": hf.get("rope_local_base_freq", 10000.0)}
      return {FULL: rope, SLIDING: local}
  if not isinstance(rope, dict):
    raise ConfigError(f"{where}: {file} sets rope_parameters={rope!r}; needs a mapping")
  if set(rope) & {FULL, SLIDING}:
    for name, value in rope.items():
      if not isinstance(value, dict):
        raise ConfigError(f"{where}: {file} sets rope_parameters.{name}={value!r}; needs a "
                          "mapping")
    return dict(rope)
  return {"": rope}


def _rope(rope: Mapping[str, Any], hf: Mapping[str, Any], where: str, file: str) -> Rope:
  kind = rope.get("rope_type", rope.get("type", "default"))
  try:
    if kind == "linear":
      return Rope(float(rope["rope_theta"]), kind, float(rope["factor"]))
    if kind == "llama3":
      return Rope(float(rope["rope_theta"]), kind, float(rope["factor"]),
                  float(rope["low_freq_factor"]), float(rope["high_freq_factor"]),
                  int(rope.get("original_max_position_embeddings",
                               hf["max_position_embeddings"])))
    return Rope(float(rope.get("rope_theta", 10000.0)))
  except (KeyError, TypeError, ValueError) as e:
    raise ConfigError(f"{where}: {file}'s rope_parameters ({kind}) lack or misstate "
                      f"{e.args[0] if isinstance(e, KeyError) else 'a number'}: {rope!r}") from None


def architecture(hf: Mapping[str, Any]) -> dict[str, Any]:
  """``Transformer`` keyword arguments for a config of one of ``MODEL_TYPES``."""
  family = hf["model_type"]
  gemma = family in _GEMMA
  width, heads, layers = hf["hidden_size"], hf["num_attention_heads"], hf["num_hidden_layers"]
  head_dim = hf.get("head_dim") or width // heads
  raw = _rope_parameters(hf, "", "")
  ropes = {k: _rope(v, hf, "", "") for k, v in raw.items()}
  partial = float(raw.get("", {}).get("partial_rotary_factor",
                                      hf.get("partial_rotary_factor", 1.0)))
  window = hf.get("sliding_window")
  types = hf.get("layer_types")
  if types is None:   # configs written before transformers named each layer's type
    if family == "qwen2":
      sliding = lambda i: hf.get("use_sliding_window") and i >= hf.get("max_window_layers", 0)
    elif family == "gemma2":
      sliding = lambda i: i % 2 == 0
    elif family == "gemma3_text":
      sliding = lambda i: (i + 1) % hf.get("sliding_window_pattern", 6) != 0
    else:
      sliding = lambda i: window is not None
    types = [SLIDING if sliding(i) else FULL for i in range(layers)]
  if window is None or (family == "qwen2" and not hf.get("use_sliding_window", True)):
    types, window = [FULL] * layers, None
  bias = bool(hf.get("attention_bias", False))
  act = hf.get("hidden_activation") or hf.get("hidden_act") or (
      "gelu_pytorch_tanh" if gemma else "silu")
  softcap = lambda name: float(hf[name]) if hf.get(name) else None
  options = Options(
      norm="rms", norm_offset=1.0 if gemma else 0.0, activation=_ACTIVATIONS[act],
      gated_mlp=True, mlp_bias=bool(hf.get("mlp_bias", False)), fused_qkv=False,
      num_kv_heads=hf.get("num_key_value_heads") or heads, head_dim=head_dim,
      qkv_bias=bias or family == "qwen2", out_bias=bias,
      qk_norm=family in ("qwen3", "gemma3_text"),
      rope=ropes.get(FULL) or ropes[""], local_rope=ropes.get(SLIDING),
      sliding_window=window, layer_types=tuple(types),
      query_scale=(float(hf.get("query_pre_attn_scalar") or head_dim) ** -0.5 if gemma
                   else None),
      attn_softcap=softcap("attn_logit_softcapping"),
      final_softcap=softcap("final_logit_softcapping"),
      embed_scale=gemma, sandwich_norms=gemma)
  return {"vocab_size": hf["vocab_size"], "max_len": hf["max_position_embeddings"],
          "num_layers": layers, "width": width, "num_heads": heads,
          "mlp_width": hf["intermediate_size"], "epsilon": float(hf.get("rms_norm_eps", 1e-6)),
          "rotary_dim": int(head_dim * partial) // 2 * 2,
          "tied_lm_head": bool(hf.get("tie_word_embeddings", gemma)), "options": options}


def _layer_names(options: Options) -> list[tuple[str, str]]:
  """``(our block-relative norm name, theirs)`` for a block's norms."""
  if options.sandwich_norms:
    return [("ln1", "input_layernorm"), ("post_attn_norm", "post_attention_layernorm"),
            ("ln2", "pre_feedforward_layernorm"), ("post_mlp_norm", "post_feedforward_layernorm")]
  return [("ln1", "input_layernorm"), ("ln2", "post_attention_layernorm")]


def _shapes(hf: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
  """Every tensor name (``lm_head.weight`` and names without ``model.``) and its shape."""
  a = architecture(hf)
  o: Options = a["options"]
  d, m, v = a["width"], a["mlp_width"], a["vocab_size"]
  q, kv = a["num_heads"] * o.head_dim, o.num_kv_heads * o.head_dim
  shapes = {"embed_tokens.weight": (v, d), "norm.weight": (d,)}
  if not a["tied_lm_head"]:
    shapes["lm_head.weight"] = (v, d)
  for i in range(a["num_layers"]):
    layer = {f"{theirs}.weight": (d,) for _, theirs in _layer_names(o)}
    layer.update({"self_attn.q_proj.weight": (q, d), "self_attn.k_proj.weight": (kv, d),
                  "self_attn.v_proj.weight": (kv, d), "self_attn.o_proj.weight": (d, q),
                  "mlp.gate_proj.weight": (m, d), "mlp.up_proj.weight": (m, d),
                  "mlp.down_proj.weight": (d, m)})
    if o.qkv_bias:
      layer.update({"self_attn.q_proj.bias": (q,), "self_attn.k_proj.bias": (kv,),
                    "self_attn.v_proj.bias": (kv,)})
    if o.out_bias:
      layer["self_attn.o_proj.bias"] = (d,)
    if o.mlp_bias:
      layer.update({"mlp.gate_proj.bias": (m,), "mlp.up_proj.bias": (m,),
                    "mlp.down_proj.bias": (d,)})
    if o.qk_norm:
      layer.update({"self_attn.q_norm.weight": (o.head_dim,),
                    "self_attn.k_norm.weight": (o.head_dim,)})
    shapes.update({f"layers.{i}.{k}": s for k, s in layer.items()})
  return shapes


def read_tensors(path: str, hf: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
  """The checkpoint's parameters by name (``lm_head.weight``, the rest without ``model.``),
  shape-checked against the config; a tied head's stored copy is dropped once it is checked to
  equal the embedding."""
  hf = read_config(path) if hf is None else hf
  tensors = hf_gpt2.read_safetensors(path, _PREFIX)
  where = f"model.name=hf:{path}"
  hf_gpt2.drop_tied_head(tensors, "lm_head.weight", "embed_tokens.weight",
                         "lm_head.weight" not in _shapes(hf), where)
  check(tensors, hf, where)
  return tensors


def check(tensors: Mapping[str, np.ndarray], hf: Mapping[str, Any], where: str) -> None:
  """``tensors`` are those ``hf`` describes: one line if not."""
  hf_gpt2.check_shapes(tensors, _shapes(hf), where, hf["model_type"],
                       f"hidden_size={hf['hidden_size']}, "
                       f"num_hidden_layers={hf['num_hidden_layers']}, "
                       f"num_key_value_heads={hf.get('num_key_value_heads')}, "
                       f"vocab_size={hf['vocab_size']}")


def _t(x) -> np.ndarray:
  return np.ascontiguousarray(np.asarray(x).T)


def to_params(tensors: Mapping[str, np.ndarray], hf: Mapping[str, Any]) -> dict:
  """The checkpoint's tensors as the ``Transformer``'s nested parameter dict (no class head)."""
  a = architecture(hf)
  o: Options = a["options"]
  d, heads, kv, hd = a["width"], a["num_heads"], o.num_kv_heads, o.head_dim
  blocks = {}
  for i in range(a["num_layers"]):
    get = lambda name: tensors[f"layers.{i}.{name}"]
    block = {ours: {"scale": get(f"{theirs}.weight")} for ours, theirs in _layer_names(o)}
    attn = {"q": _t(get("self_attn.q_proj.weight")).reshape(d, heads, hd),
            "k": _t(get("self_attn.k_proj.weight")).reshape(d, kv, hd),
            "v": _t(get("self_attn.v_proj.weight")).reshape(d, kv, hd),
            "out": _t(get("self_attn.o_proj.weight")).reshape(heads, hd, d)}
    if o.qkv_bias:
      for n, h in (("q", heads), ("k", kv), ("v", kv)):
        attn[f"{n}_bias"] = get(f"self_attn.{n}_proj.bias").reshape(h, hd)
    if o.out_bias:
      attn["out_bias"] = get("self_attn.o_proj.bias")
    if o.qk_norm:
      attn["q_norm"] = {"scale": get("self_attn.q_norm.weight")}
      attn["k_norm"] = {"scale": get("self_attn.k_norm.weight")}
    mlp = {n: _t(get(f"mlp.{n}_proj.weight")) for n in ("gate", "up", "down")}
    if o.mlp_bias:
      mlp.update({f"{n}_bias": get(f"mlp.{n}_proj.bias") for n in ("gate", "up", "down")})
    blocks[i] = {**block, "attn": attn, "mlp": mlp}
  params = {"embed": {"embedding": tensors["embed_tokens.weight"]}, "blocks": blocks,
            "ln_f": {"scale": tensors["norm.weight"]}}
  if not a["tied_lm_head"]:
    params["unembed"] = tensors["lm_head.weight"]
  return params


def from_params(params: Mapping, hf: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """The inverse of ``to_params``: tensor names (``lm_head.weight`` and names without
  ``model.``) from a parameter dict."""
  params = mesh_lib.to_host(params)   # one transfer (one gather when sharded over hosts)
  o: Options = architecture(hf)["options"]
  get = np.asarray
  out = {"embed_tokens.weight": get(params["embed"]["embedding"]),
         "norm.weight": get(params["ln_f"]["scale"])}
  if params.get("unembed") is not None:
    out["lm_head.weight"] = get(params["unembed"])
  for i, b in sorted(params["blocks"].items(), key=lambda kv: int(kv[0])):
    h = f"layers.{i}"
    attn, mlp = b["attn"], b["mlp"]
    for ours, theirs in _layer_names(o):
      out[f"{h}.{theirs}.weight"] = get(b[ours]["scale"])
    for n in ("q", "k", "v"):
      w = get(attn[n])
      out[f"{h}.self_attn.{n}_proj.weight"] = _t(w.reshape(w.shape[0], -1))
      if f"{n}_bias" in attn and attn[f"{n}_bias"] is not None:
        out[f"{h}.self_attn.{n}_proj.bias"] = get(attn[f"{n}_bias"]).reshape(-1)
    w = get(attn["out"])
    out[f"{h}.self_attn.o_proj.weight"] = _t(w.reshape(-1, w.shape[-1]))
    if attn.get("out_bias") is not None:
      out[f"{h}.self_attn.o_proj.bias"] = get(attn["out_bias"])
    if attn.get("q_norm") is not None:
      out[f"{h}.self_attn.q_norm.weight"] = get(attn["q_norm"]["scale"])
      out[f"{h}.self_attn.k_norm.weight"] = get(attn["k_norm"]["scale"])
    for n in ("gate", "up", "down"):
      out[f"{h}.mlp.{n}_proj.weight"] = _t(mlp[n])
      if mlp.get(f"{n}_bias") is not None:
        out[f"{h}.mlp.{n}_proj.bias"] = get(mlp[f"{n}_bias"])
  return out


def load(path: str, shardings: Mapping | None = None, dtype=np.float32) -> dict:
  """The checkpoint as a nested parameter dict: host arrays, or placed per ``shardings``;
  floating-point tensors as ``dtype`` (None: as stored; ``hf_gpt2.load_family``)."""
  return hf_gpt2.load_family(sys.modules[__name__], path, shardings, dtype)


def save(path: str, params: Mapping, hf: Mapping[str, Any], *,
         max_shard_bytes: int | None = None) -> None:
  """Writes ``config.json`` and the weights as ``save_pretrained`` does for the family's
  ``*ForCausalLM`` (``model.`` names, ``lm_head.weight`` at the top when untied), replacing a
  checkpoint already in ``path`` whole (``hf_gpt2.write_checkpoint``). Across processes every
  process calls it, process 0 writes, and all return once it is complete."""
  tensors = from_params(params, hf)
  check(tensors, hf, f"hf_llama.save({path})")   # never a checkpoint no loader reads back
  tensors = {(k if k.startswith("lm_head.") else _PREFIX + k): np.ascontiguousarray(v)
             for k, v in tensors.items()}
  mesh_lib.write_once(f"hf_llama.save {path}",
                      lambda: hf_gpt2.write_checkpoint(path, tensors, hf, max_shard_bytes))
