"""Hugging Face GPT-2 checkpoints: parity with ``transformers`` (logits, every layer's hidden
states, greedy tokens), left padding, the bitwise round trip, placement on a mesh, sampling, and
one-line errors. Every checkpoint is a random tiny model that ``transformers`` saves here."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from conftest import (assert_greedy_generation_matches, assert_hidden_states_and_logits_match,
                      assert_round_trip, left_padded, one_line, save_tiny_gpt2)
from superalign import models
from superalign.core import mesh as mesh_lib, state as state_lib
from superalign.core.errors import ConfigError
from superalign.core.specs import InputSpec
from superalign.models import generate as gen, hf_gpt2

# n_inner and the epsilon differ from GPT-2's defaults, so that both are read from the config.
ODD = dict(n_embd=48, n_head=6, n_layer=3, n_inner=80, layer_norm_epsilon=1e-3, n_positions=40)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
  path = tmp_path_factory.mktemp("gpt2")
  return str(path), save_tiny_gpt2(path, seed=0)


def _load(path, mesh_axes=None, num_classes=2, seeds=0):
  """The checkpoint through the framework's own path: registry builder, then ``state.create``
  with the checkpoint as the warm start."""
  cfg = hf_gpt2.read_config(path)
  spec = InputSpec((8,), "tokens", num_classes, cfg["vocab_size"])
  name = f"hf:{path}"
  axes = mesh_axes or {"data": 1}
  mesh = mesh_lib.make_mesh(axes, devices=jax.devices()[:int(np.prod(list(axes.values())))])
  state, _ = state_lib.create(models.builder(name, spec), optax.sgd(0.0), seeds, mesh,
                              warm=models.pretrained(name))
  return state


def _torch(model, ids, mask=None):
  with torch.no_grad():
    kw = {} if mask is None else {"attention_mask": torch.tensor(mask)}
    return model(torch.tensor(ids), output_hidden_states=True, **kw)


@pytest.mark.parametrize("config", [{}, ODD], ids=["gpt2", "n_inner_eps"])
def test_logits_and_every_hidden_state_match_transformers(tmp_path, config):
  reference = save_tiny_gpt2(tmp_path, seed=1, **config)
  ids = np.random.RandomState(0).randint(0, 300, (3, 17))
  assert_hidden_states_and_logits_match(_load(str(tmp_path)).model(), reference, ids,
                                        reference.config.n_layer)


def test_left_padding_gives_the_unpadded_logits_and_matches_transformers(ckpt):
  path, reference = ckpt
  model = _load(path).model()
  rs = np.random.RandomState(1)
  rows = [rs.randint(0, 300, n) for n in (9, 5, 2)]
  ids, mask = left_padded(rows, 9)
  ids[mask == 0] = 7    # any token under the mask
  padded = np.asarray(model.lm_logits(model.hidden_states(jnp.asarray(ids), jnp.asarray(mask))))
  for r, row in enumerate(rows):
    alone = np.asarray(model.lm_logits(model.hidden_states(jnp.asarray(row[None]))))[0]
    np.testing.assert_allclose(padded[r, 9 - len(row):], alone, atol=1e-5, rtol=0)
  # transformers takes left padding's positions from the mask only when given position ids.
  with torch.no_grad():
    positions = torch.tensor(np.maximum(np.cumsum(mask, 1) - 1, 0))
    theirs = reference(torch.tensor(ids), attention_mask=torch.tensor(mask),
                       position_ids=positions).logits.numpy()
  real = mask.astype(bool)
  np.testing.assert_allclose(padded[real], theirs[real], atol=1e-4, rtol=0)


def test_greedy_generation_matches_transformers_padded_or_not(ckpt):
  path, reference = ckpt
  rs = np.random.RandomState(2)
  assert_greedy_generation_matches(_load(path).model(), reference,
                                   [rs.randint(1, 300, n) for n in (6, 3, 6, 1)])


def test_eos_stops_a_row_and_pads_it(ckpt):
  path, _ = ckpt
  model = _load(path).model()
  ids = np.random.RandomState(3).randint(1, 300, (3, 4))
  free = np.asarray(gen.generate(model, ids, np.ones_like(ids), max_new_tokens=8))
  eos = int(free[0, 2])          # row 0 emits this token third: make it the EOS
  stopped = np.asarray(gen.generate(model, ids, np.ones_like(ids), max_new_tokens=8,
                                    eos_id=eos, pad_id=-1))
  first = list(free[0]).index(eos)
  np.testing.assert_array_equal(stopped[0, :first + 1], free[0, :first + 1])
  assert (stopped[0, first + 1:] == -1).all()
  for r in (1, 2):   # other rows run on until their own EOS, if any
    n = list(free[r]).index(eos) + 1 if eos in free[r] else 8
    np.testing.assert_array_equal(stopped[r, :n], free[r, :n])


def test_sampling_filters(ckpt):
  path, _ = ckpt
  model = _load(path).model()
  ids = np.random.RandomState(4).randint(1, 300, (4, 5))
  mask = np.ones_like(ids)
  greedy = np.asarray(gen.generate(model, ids, mask, max_new_tokens=6))
  for sampler in (gen.Sampler(temperature=1.0, top_k=1), gen.Sampler(temperature=1.0, top_p=1e-6)):
    np.testing.assert_array_equal(
        np.asarray(gen.generate(model, ids, mask, max_new_tokens=6, sampler=sampler)), greedy)
  hot = gen.Sampler(temperature=2.0, top_k=5)
  a, b, c = (np.asarray(gen.generate(model, ids, mask, max_new_tokens=6, sampler=hot,
                                     rng=jax.random.key(k))) for k in (0, 0, 1))
  np.testing.assert_array_equal(a, b)      # a key fixes the draw
  assert not np.array_equal(a, c)
  # top-k: the first sampled token is among the prompt's 5 most likely next tokens.
  top5 = np.argsort(-np.asarray(model.lm_logits(model.hidden_states(jnp.asarray(ids))))[:, -1],
                    axis=-1)[:, :5]
  assert all(a[r, 0] in top5[r] for r in range(4))
  # top-p on a known distribution: keep the fewest most likely tokens whose mass reaches p.
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
  draws = {int(gen.Sampler(1.0, top_p=0.7)(logits, jax.random.key(k))[0]) for k in range(200)}
  assert draws == {0, 1}
  with pytest.raises(ValueError, match="top_p"):
    gen.Sampler(top_p=0.0)


def test_load_save_load_is_bitwise_and_transformers_reads_the_save(ckpt, tmp_path):
  import transformers
  path, reference = ckpt
  assert_round_trip(hf_gpt2, path, reference,
                    {tmp_path / "one": {}, tmp_path / "sharded": {"max_shard_bytes": 20_000}},
                    transformers.GPT2LMHeadModel.from_pretrained)
  assert (tmp_path / "sharded" / hf_gpt2.INDEX).exists()
  assert len(list((tmp_path / "sharded").glob("model-*.safetensors"))) > 2


def test_a_checkpoint_sharded_by_transformers_loads(tmp_path):
  reference = save_tiny_gpt2(tmp_path, seed=2, max_shard_size="30KB")
  assert (tmp_path / hf_gpt2.INDEX).exists()
  model = _load(str(tmp_path)).model()
  ids = np.random.RandomState(6).randint(0, 300, (2, 9))
  np.testing.assert_allclose(np.asarray(model.lm_logits(model.hidden_states(jnp.asarray(ids)))),
                             _torch(reference, ids).logits.numpy(), atol=1e-4, rtol=0)


@pytest.mark.skipif(jax.device_count() < 4, reason="needs 4 (fake) devices")
def test_parameters_land_sharded_and_each_device_gets_only_its_slice(ckpt):
  path, _ = ckpt
  host = hf_gpt2.load(path)
  state = _load(path, {"fsdp": 2, "model": 2}, seeds=[0, 1])
  params = state.params.to_pure_dict()
  qkv = params["blocks"][0]["attn"]["qkv"]         # [runs, embed, 3, heads, head_dim]
  assert qkv.shape == (2, 32, 3, 4, 8)
  assert {tuple(s.data.shape) for s in qkv.addressable_shards} == {(2, 16, 3, 2, 8)}
  fc = params["blocks"][1]["fc"]["kernel"]          # embed over fsdp, mlp over model
  assert {tuple(s.data.shape) for s in fc.addressable_shards} == {(2, 16, 64)}
  for run in (0, 1):   # every stacked run starts from the checkpoint
    np.testing.assert_array_equal(np.asarray(qkv)[run], host["blocks"][0]["attn"]["qkv"])
  # The loader itself hands each device its slice, never the whole tensor.
  shardings = jax.tree.map(lambda x: x.sharding, params)
  shardings = {k: v for k, v in shardings.items() if k != "head"}
  unstacked = jax.tree.map(
      lambda s: jax.sharding.NamedSharding(s.mesh, jax.sharding.PartitionSpec(*s.spec[1:])),
      shardings)
  placed = hf_gpt2.place(host, unstacked)
  emb = placed["embed"]["embedding"]
  assert all(s.data.shape[1] == 16 for s in emb.addressable_shards)


def test_a_trained_model_saves_as_a_checkpoint_transformers_reads(ckpt, tmp_path):
  path, _ = ckpt
  state = _load(path)
  params = jax.tree.map(lambda x: x + 0.01, state.params.to_pure_dict())  # "fine-tuned"
  hf_gpt2.save(str(tmp_path), params, hf_gpt2.read_config(path))
  import transformers
  back = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path)).eval()
  model = state.model()
  import flax.nnx as nnx
  nnx.update(model, nnx.State(params))
  ids = np.random.RandomState(7).randint(0, 300, (2, 6))
  np.testing.assert_allclose(np.asarray(model.lm_logits(model.hidden_states(jnp.asarray(ids)))),
                             _torch(back, ids).logits.numpy(), atol=1e-4, rtol=0)


def test_bad_checkpoints_areone_line(tmp_path, ckpt):
  path, _ = ckpt
  with pytest.raises(ConfigError) as e:
    models.validate_name(f"hf:{tmp_path}/missing", "w2s.ladder")
  one_line(e, "w2s.ladder=hf:", "no such checkpoint directory")

  other = tmp_path / "mixtral"
  other.mkdir()
  (other / "config.json").write_text(json.dumps({"model_type": "mixtral"}))
  with pytest.raises(ConfigError) as e:
    models.validate_name(f"hf:{other}")
  one_line(e, "model_type 'mixtral'", "'gpt2', 'gpt_neox', 'llama'")

  odd = tmp_path / "odd"
  save_tiny_gpt2(odd, activation_function="relu")
  with pytest.raises(ConfigError) as e:
    models.validate_name(f"hf:{odd}")
  one_line(e, "activation_function='relu'")

  wrong = tmp_path / "wrong"
  save_tiny_gpt2(wrong)
  cfg = json.loads((wrong / "config.json").read_text())
  (wrong / "config.json").write_text(json.dumps({**cfg, "n_embd": 64}))
  with pytest.raises(ConfigError) as e:
    hf_gpt2.load(str(wrong))
  one_line(e, "has shape", "needs", "n_embd=64")

  empty = tmp_path / "noweights"
  empty.mkdir()
  (empty / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(ConfigError) as e:
    hf_gpt2.load(str(empty))
  one_line(e, "no model.safetensors")

  spec = InputSpec((100,), "tokens", 2, 300)   # longer than n_positions=64
  with pytest.raises(ConfigError) as e:
    models.check(f"hf:{path}", spec)
  one_line(e, "64 positions")
  with pytest.raises(ConfigError) as e:
    models.check(f"hf:{path}", InputSpec((8, 8, 1), "image", 10))
  one_line(e, "reads tokens")
  assert models.label(f"hf:{path}/") == models.label(f"hf:{path}")
  assert models.label(f"hf:{path}").startswith(os.path.basename(path) + "-")
