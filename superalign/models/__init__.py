"""Flax NNX models (MLP, CNN, GPT-2-shaped transformer), their registry by name, Hugging Face
GPT-2 and GPT-NeoX checkpoints (``hf_gpt2``, ``hf_neox``) and KV-cached generation (``generate``)."""

from superalign.core.specs import InputSpec  # noqa: F401
from superalign.models.registry import (  # noqa: F401
    MODELS, builder, check, check_lora, checkpoint_dir, label, ladder, names, pretrained,
    save_merged, valid_names, validate_name)
