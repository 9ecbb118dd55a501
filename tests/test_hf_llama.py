"""Llama, Mistral, Qwen2, Qwen3, Gemma 2 and Gemma 3 checkpoints: parity with ``transformers``
(logits and every layer's hidden states in float32 with eager attention; greedy tokens, padded and
unpadded, past the sliding window), the bitwise load-save-load that transformers reads back, and
one-line errors. Every checkpoint is a random tiny model that ``transformers`` saves here."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import (TINY_FAMILIES, assert_greedy_generation_matches,
                      assert_hidden_states_and_logits_match, assert_round_trip, one_line,
                      save_tiny_decoder)
from superalign import models
from superalign.core import mesh as mesh_lib, state as state_lib
from superalign.core.errors import ConfigError
from superalign.core.specs import InputSpec
from superalign.models import hf_llama

FAMILIES = sorted(TINY_FAMILIES)


@pytest.fixture(scope="module", params=FAMILIES)
def ckpt(request, tmp_path_factory):
  path = tmp_path_factory.mktemp(request.param)
  return str(path), save_tiny_decoder(request.param, path, seed=0)


def _model(path, num_classes=2):
  """The checkpoint through the framework's own path: registry builder, then ``state.create``
  with the checkpoint as the warm start."""
  name = f"hf:{path}"
  spec = InputSpec((8,), "tokens", num_classes, 300)
  mesh = mesh_lib.make_mesh({"data": 1}, devices=jax.devices()[:1])
  state, _ = state_lib.create(models.builder(name, spec), optax.sgd(0.0), 0, mesh,
                              warm=models.pretrained(name))
  return state.model()


def test_logits_and_every_hidden_state_match_transformers(ckpt):
  path, reference = ckpt
  ids = np.random.RandomState(0).randint(0, 300, (3, 17))
  assert_hidden_states_and_logits_match(_model(path), reference, ids,
                                        reference.config.num_hidden_layers)


def test_greedy_generation_matches_transformers_padded_and_past_the_window(ckpt):
  path, reference = ckpt
  rs = np.random.RandomState(2)
  rows = [rs.randint(3, 300, n) for n in (9, 6, 9, 3)]
  assert_greedy_generation_matches(_model(path), reference, rows)


def test_load_save_load_is_bitwise_and_transformers_reads_the_save(ckpt, tmp_path):
  import transformers
  path, reference = ckpt
  read = lambda d: transformers.AutoModelForCausalLM.from_pretrained(d, attn_implementation="eager")
  assert_round_trip(hf_llama, path, reference,
                    {tmp_path / "one": {}, tmp_path / "sharded": {"max_shard_bytes": 60_000}}, read)
