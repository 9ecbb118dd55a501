"""Models by name, and a size ladder per family (weakest first) for weak/strong pairs.

``hf:<dir>`` names a Hugging Face checkpoint directory, GPT-2 (``hf_gpt2.py``), GPT-NeoX /
Pythia (``hf_neox.py``), or Llama, Mistral, Qwen2, Qwen3, Gemma 2 or Gemma 3 (``hf_llama.py``) by
its ``config.json``: its config fixes the architecture, and its weights
are the start of every run that trains it (the classification head is fresh). A weak-to-strong
ladder can thus be a list of checkpoint directories.

A transformer may carry low-rank adapters (``lora``, a ``models.lora.LoRA``): the core then trains
only them and the head, and ``save_merged`` writes the adapted model as a plain checkpoint of its
family that transformers reads.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import jax.numpy as jnp
from flax import nnx

from superalign.core.errors import ConfigError
from superalign.core.specs import InputSpec
from superalign.models import hf_gpt2, hf_llama, hf_neox, lora as lora_lib
from superalign.models.cnn import CNN
from superalign.models.mlp import MLP
from superalign.models.transformer import Options, Transformer, weight_names


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """A named model: its ``family`` (``mlp``, ``cnn`` or ``gpt``), the constructor ``kwargs`` that
  size it, the input kinds it accepts, and whether it is a rung of its family's weak-to-strong
  ladder."""
  family: str
  kwargs: dict[str, Any]
  inputs: tuple[str, ...]    # input kinds this model accepts
  ladder: bool = True        # a rung of its family's size ladder (weak-to-strong pairs)


_MLP = ("vector", "image")
_GPT = ("tokens", "records")
MODELS: dict[str, ModelSpec] = {
    "mlp_tiny": ModelSpec("mlp", {"hidden": (16,)}, _MLP),
    "mlp_small": ModelSpec("mlp", {"hidden": (32,)}, _MLP),
    "mlp_medium": ModelSpec("mlp", {"hidden": (128, 128)}, _MLP),
    "mlp_base": ModelSpec("mlp", {"hidden": (256, 256)}, _MLP),
    "mlp_large": ModelSpec("mlp", {"hidden": (1024, 1024)}, _MLP),
    "cnn_tiny": ModelSpec("cnn", {"channels": (4,), "hidden": 16}, ("image",)),
    "cnn_small": ModelSpec("cnn", {"channels": (16, 32), "hidden": 64}, ("image",)),
    "cnn_base": ModelSpec("cnn", {"channels": (32, 64), "hidden": 128}, ("image",)),
    "cnn_large": ModelSpec("cnn", {"channels": (64, 128, 128), "hidden": 256}, ("image",)),
    # Gowal et al. 2018's "small" certified-training net (verify room)
    "cnn_ibp_small": ModelSpec("cnn", {"channels": (16, 32), "hidden": 100, "kernel": 4,
                                       "strides": (2, 1), "padding": "VALID", "pool": False},
                               ("image",), ladder=False),
    "gpt_nano": ModelSpec("gpt", {"num_layers": 1, "width": 32, "num_heads": 2}, _GPT),
    "gpt_tiny": ModelSpec("gpt", {"num_layers": 2, "width": 64, "num_heads": 2}, _GPT),
    "gpt_small": ModelSpec("gpt", {"num_layers": 4, "width": 128, "num_heads": 4}, _GPT),
    "gpt_medium": ModelSpec("gpt", {"num_layers": 6, "width": 384, "num_heads": 6}, _GPT),
    "gpt2": ModelSpec("gpt", {"num_layers": 12, "width": 768, "num_heads": 12}, _GPT),
}

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


HF = "hf:"


def names() -> list[str]:
  """The registered model names, sorted."""
  return sorted(MODELS)


def valid_names() -> str:
  """The names ``model.name`` accepts, comma-separated (for error lines)."""
  return ", ".join([*names(), f"{HF}<checkpoint dir>"])


def checkpoint_dir(name: str) -> str | None:
  """The directory of an ``hf:<dir>`` name, else None."""
  return os.path.expanduser(name[len(HF):]) if name.startswith(HF) else None


LOADERS = {hf_gpt2.MODEL_TYPE: hf_gpt2, hf_neox.MODEL_TYPE: hf_neox,
           **{t: hf_llama for t in hf_llama.MODEL_TYPES}}   # by model_type
assert tuple(LOADERS) == hf_gpt2.MODEL_TYPES, "a loader for every model_type read_json accepts"


def loader(path: str, key: str = "model.name"):
  """The loader module (``hf_gpt2``, ``hf_neox`` or ``hf_llama``) of the checkpoint at ``path``; raises
  ConfigError (one line naming ``key``) when it cannot be read."""
  return LOADERS[hf_gpt2.read_json(path, key)["model_type"]]


def _architecture(path: str, key: str = "model.name") -> dict[str, Any]:
  family = loader(path, key)
  return family.architecture(family.read_config(path, key))


def architecture(name: str, key: str = "model.name") -> dict[str, Any]:
  """The ``Transformer`` keyword arguments of the checkpoint ``name`` (``hf:<dir>``); raises
  ConfigError (one line naming ``key``) for a name that is no readable checkpoint."""
  validate_name(name, key)
  path = checkpoint_dir(name)
  if path is None:
    raise ConfigError(f"{key}={name!r}: not a checkpoint; name one as {HF}<checkpoint dir>")
  return _architecture(path, key)


def label(name: str) -> str:
  """A name fit for a path or a table, naming every stage and cache of a model: a checkpoint's
  directory name and its identity's short hash (``hf_gpt2.fingerprint``: ``.../a/final`` and
  ``.../b/final`` never share a stage), else ``name`` itself."""
  path = checkpoint_dir(name)
  if path is None:
    return name
  return f"{os.path.basename(os.path.normpath(path))}-{hf_gpt2.fingerprint(path)}"


def validate_name(name: str, key: str = "model.name") -> None:
  """Raises ConfigError (one line naming ``key``) for an unknown name or an unreadable
  checkpoint; cheap (reads a checkpoint's config.json and index, and looks for its weights)."""
  path = checkpoint_dir(name)
  if path is not None:
    _architecture(path, key)
    hf_gpt2.weight_files(path, key)   # a torch-only (.bin) folder fails here, not mid-run
  elif name not in MODELS:
    raise ConfigError(f"{key}={name!r}: unknown model; valid: {valid_names()}")


def ladder(family: str) -> list[str]:
  """Model names of one family, weakest first."""
  return [name for name, spec in MODELS.items() if spec.family == family and spec.ladder]


def check(name: str, inputs: InputSpec) -> None:
  """Raises ConfigError when ``name`` is unknown or cannot read this kind of input."""
  validate_name(name)
  path = checkpoint_dir(name)
  if path is not None:
    arch = _architecture(path)
    if inputs.kind != "tokens":
      raise ConfigError(f"model.name={name!r}: a language-model checkpoint reads tokens, not "
                        f"{inputs.kind} inputs")
    if (inputs.vocab_size or 0) > arch["vocab_size"] or inputs.shape[0] > arch["max_len"]:
      raise ConfigError(
          f"model.name={name!r}: the data has vocabulary {inputs.vocab_size} and length "
          f"{inputs.shape[0]}, beyond the checkpoint's vocab_size {arch['vocab_size']} and "
          f"{arch['max_len']} positions; tokenize with the checkpoint's tokenizer "
          "(data.tokenizer) and a data.max_len that fits")
    return
  spec = MODELS[name]
  if inputs.kind not in spec.inputs:
    valid = [n for n, s in MODELS.items() if inputs.kind in s.inputs]
    raise ConfigError(f"model.name={name!r} cannot read {inputs.kind} inputs; "
                     f"models for {inputs.kind} data: {', '.join(valid)}")


def check_lora(name: str, lora: lora_lib.LoRA | None, key: str = "model.name") -> None:
  """Raises ConfigError (one line) when ``lora`` cannot adapt the model ``name``: not a
  transformer, or a target pattern that matches none of its weights; cheap (no model built)."""
  if lora is None:
    return
  path = checkpoint_dir(name)
  if path is None and MODELS[name].family != "gpt":
    raise ConfigError(f"model.lora.rank={lora.rank}: LoRA adapts transformer weights; {key}="
                      f"{name!r} is a {MODELS[name].family} model (set model.lora.rank=0)")
  kwargs = _architecture(path, key) if path is not None else MODELS[name].kwargs
  names = weight_names(kwargs.get("options", Options()))
  missing = lora_lib.unmatched(lora, names)
  if missing:
    raise ConfigError(f"model.lora.targets: {missing[0]!r} matches no weight of {key}={name!r}; "
                      f"its weights: {', '.join(names)}")


def builder(name: str, inputs: InputSpec, compute_dtype: str = "float32",
            max_len: int | None = None, param_dtype: str = "float32",
            lora: lora_lib.LoRA | None = None) -> Callable[[nnx.Rngs], nnx.Module]:
  """A function ``rngs -> module`` (so the core can build it abstractly, then sharded), computing
  in ``compute_dtype`` with ``param_dtype`` parameters (``DTYPES`` names both); a transformer
  with ``lora``'s adapters, if given (``check_lora``)."""
  check(name, inputs)
  check_lora(name, lora)
  compute, param = DTYPES[compute_dtype], DTYPES[param_dtype]
  path = checkpoint_dir(name)
  spec = MODELS.get(name)
  if path is not None:
    arch = _architecture(path)
    make = lambda rngs: Transformer(num_classes=inputs.num_classes, pad_id=inputs.pad_id,
                                    dtype=compute, param_dtype=param, lora=lora, rngs=rngs,
                                    **arch)
  elif spec.family == "mlp":
    make = lambda rngs: MLP(inputs.shape, inputs.num_classes, dtype=compute, param_dtype=param,
                            rngs=rngs, **spec.kwargs)
  elif spec.family == "cnn":
    make = lambda rngs: CNN(inputs.shape, inputs.num_classes, dtype=compute, param_dtype=param,
                            rngs=rngs, **spec.kwargs)
  else:
    length = max_len or inputs.shape[0]
    causal = inputs.kind == "tokens"   # records are a set: bidirectional attention
    make = lambda rngs: Transformer(inputs.vocab_size, length, inputs.num_classes, causal=causal,
                                    pad_id=inputs.pad_id, dtype=compute, param_dtype=param,
                                    lora=lora, rngs=rngs, **spec.kwargs)

  def build(rngs: nnx.Rngs) -> nnx.Module:
    # Parameters carry logical axis names; the core places them on a mesh (core/state.py), so
    # building needs no mesh in scope.
    with nnx.use_eager_sharding(False):
      return make(rngs)

  return build


def pretrained(name: str, param_dtype: str = "float32") -> Callable[[dict], dict] | None:
  """For a checkpoint name, ``shardings -> parameters`` read onto the mesh as ``param_dtype``
  (``DTYPES``; each device's slice read from the stored dtype and converted alone), or host
  arrays for ``shardings=None`` (a ``warm`` start for ``core.state.create``); None for a registry
  model, which starts from its initialization."""
  path = checkpoint_dir(name)
  dtype = DTYPES[param_dtype]
  return None if path is None else (lambda shardings: loader(path).load(path, shardings, dtype))


def save_merged(name: str, model: nnx.Module, path: str, *,
                max_shard_bytes: int | None = None) -> None:
  """Writes ``model`` (one run of the checkpoint ``name``'s architecture, e.g. a LoRA-trained
  ``Trained.state.model()``) to ``path`` as a plain checkpoint of ``name``'s family and config,
  each adapter folded into its weight (``lora.merged``) and the classifier head left out:
  transformers' ``from_pretrained`` reads it and computes what ``model``'s LM head computes."""
  source = checkpoint_dir(name)
  if source is None:
    raise ConfigError(f"save_merged: {name!r} is no checkpoint; a merged save writes the family "
                      f"and config of an {HF}<dir> model")
  family = loader(source)
  family.save(path, lora_lib.merged(model), family.read_config(source),
              max_shard_bytes=max_shard_bytes)
