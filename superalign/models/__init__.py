"""Flax NNX models (MLP, CNN, GPT-2-shaped transformer), their registry by name, Hugging Face
checkpoints (``hf_gpt2``, ``hf_neox``, ``hf_llama``), KV-cached generation (``generate``), and a
language model for analysis in one line (``load("hf:<dir>")``, ``lm``; folded weights: ``fold``)."""

from superalign.core.specs import InputSpec  # noqa: F401
from superalign.models.registry import (  # noqa: F401
    MODELS, builder, check, check_lora, checkpoint_dir, label, ladder, names, pretrained,
    save_merged, valid_names, validate_name)
from superalign.models.lm import LanguageModel, load  # noqa: F401
