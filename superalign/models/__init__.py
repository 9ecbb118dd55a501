"""Flax NNX models (MLP, CNN, GPT-2-shaped transformer) and their registry by name."""

from superalign.core.specs import InputSpec  # noqa: F401
from superalign.models.registry import MODELS, builder, check, ladder, names  # noqa: F401
