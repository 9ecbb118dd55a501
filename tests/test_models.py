"""The model registry: every name builds, ladders grow, checks reject, the transformer reads right."""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from superalign.core.errors import ConfigError
from superalign.models import MODELS, InputSpec, builder, check, ladder, names

VECTOR = InputSpec((12,), "vector", 3)
IMAGE = InputSpec((8, 8, 1), "image", 10)
TOKENS = InputSpec((16,), "tokens", 2, vocab_size=32)
FAMILY_INPUTS = {"mlp": (VECTOR, IMAGE), "cnn": (IMAGE,), "gpt": (TOKENS,)}
BATCH = 3


def _example(spec: InputSpec, batch: int = BATCH, seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  if spec.kind == "tokens":
    return rng.integers(1, spec.vocab_size, (batch, *spec.shape)).astype(np.int32)
  return rng.normal(size=(batch, *spec.shape)).astype(np.float32)


def _build(name: str, spec: InputSpec, seed: int = 0, **kw) -> nnx.Module:
  """``builder(name, spec)(nnx.Rngs(seed))`` as the core calls it (eager sharding off: see
  ``test_builder_works_outside_the_core``)."""
  with nnx.use_eager_sharding(False):
    return builder(name, spec, **kw)(nnx.Rngs(seed))


@functools.lru_cache(maxsize=None)
def _built(name: str, spec: InputSpec) -> nnx.Module:
  """One shared instance per (name, spec): NNX initializes op by op, compiling each shape."""
  return _build(name, spec)


def _param_count(name: str, spec: InputSpec, max_len: int | None = None) -> int:
  model = nnx.eval_shape(lambda: _build(name, spec, max_len=max_len))
  return sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def _cases():
  for name in names():
    for spec in FAMILY_INPUTS[MODELS[name].family]:
      if name == "cnn_ibp_small" and spec.shape[0] < 16:   # 4x4 unpadded kernels need room
        spec = dataclasses.replace(spec, shape=(16, 16, spec.shape[-1]))
      yield pytest.param(name, spec, id=f"{name}-{spec.kind}")


def _jit(model: nnx.Module, method: str = "__call__"):
  """``model.<method>`` compiled once (NNX runs op by op otherwise, which is slow on CPU)."""
  graphdef, state = nnx.split(model)
  fn = jax.jit(lambda s, x: getattr(nnx.merge(graphdef, s), method)(x))
  return lambda x: np.asarray(fn(state, jnp.asarray(x)))


@pytest.mark.parametrize("name,spec", list(_cases()))
def test_every_name_builds_and_gives_logits(name, spec):
  # Traced abstractly (no parameters materialized, so gpt2's 124M cost nothing).
  x = _example(spec)
  out = jax.eval_shape(lambda t: _build(name, spec)(t), x)
  assert out.shape == (BATCH, spec.num_classes)
  assert out.dtype == jnp.float32


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_param_dtype(dtype):
  """``param_dtype`` is every parameter's dtype; the output is the compute dtype's."""
  for name, spec in [("mlp_tiny", VECTOR), ("cnn_tiny", IMAGE), ("gpt_tiny", TOKENS)]:
    model = nnx.eval_shape(lambda: _build(name, spec, param_dtype=dtype))
    params = jax.tree.leaves(nnx.state(model, nnx.Param))
    assert all(p.dtype == jnp.dtype(dtype) for p in params), name
    out = jax.eval_shape(lambda t: _build(name, spec, param_dtype=dtype)(t), _example(spec))
    assert out.dtype == jnp.float32, name


@pytest.mark.parametrize("name,spec", [("mlp_tiny", VECTOR), ("cnn_tiny", IMAGE),
                                       ("gpt_tiny", TOKENS)])
def test_small_models_compute_logits(name, spec):
  x = _example(spec)
  model = _built(name, spec)
  logits = _jit(model)(x)
  assert logits.shape == (BATCH, spec.num_classes)
  assert np.all(np.isfinite(logits))
  # the examples differ, so the logits should too (the model reads its input)
  assert not np.allclose(logits[0], logits[1])
  # features: the backbone output the head reads
  features = _jit(model, "features")(x)
  assert features.shape[0] == BATCH and features.ndim == 2
  np.testing.assert_allclose(np.asarray(model.head(jnp.asarray(features))), logits,
                             rtol=1e-5, atol=1e-5)


def test_builds_are_deterministic_in_rngs():
  x = _example(VECTOR)
  a, b, c = (_jit(m)(x) for m in (_built("mlp_tiny", VECTOR), _build("mlp_tiny", VECTOR, 0),
                                   _build("mlp_tiny", VECTOR, 1)))
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_compute_dtype(dtype):
  for name, spec in [("mlp_tiny", VECTOR), ("cnn_tiny", IMAGE), ("gpt_tiny", TOKENS)]:
    model = nnx.eval_shape(lambda: _build(name, spec, compute_dtype=dtype))
    params = jax.tree.leaves(nnx.state(model, nnx.Param))
    assert all(p.dtype == jnp.float32 for p in params), name  # parameters stay float32
    out = jax.eval_shape(lambda t: _build(name, spec, compute_dtype=dtype)(t), _example(spec))
    assert out.shape == (BATCH, spec.num_classes) and out.dtype == jnp.dtype(dtype), name


@pytest.mark.parametrize("name,spec", [("mlp_tiny", VECTOR), ("cnn_tiny", IMAGE),
                                       ("gpt_tiny", TOKENS)])
def test_builder_works_outside_the_core(name, spec):
  model = builder(name, spec)(nnx.Rngs(0))
  assert model(jnp.asarray(_example(spec))).shape == (BATCH, spec.num_classes)


def test_ladders_partition_the_registry():
  families = {spec.family for spec in MODELS.values()}
  assert families == {"mlp", "cnn", "gpt"}
  members = [name for family in sorted(families) for name in ladder(family)]
  assert sorted(members) == [n for n in names() if MODELS[n].ladder]
  assert ladder("mlp")[0] == "mlp_tiny" and ladder("gpt")[-1] == "gpt2"
  assert ladder("nope") == []


@pytest.mark.parametrize("family,spec", [
    ("mlp", VECTOR), ("mlp", IMAGE), ("mlp", InputSpec((28, 28, 1), "image", 10)),
    ("cnn", IMAGE), ("cnn", InputSpec((28, 28, 1), "image", 10)),
    ("cnn", InputSpec((32, 32, 3), "image", 10)),
    ("gpt", TOKENS), ("gpt", InputSpec((128,), "tokens", 2, vocab_size=8192)),
])
def test_ladder_ordered_by_parameter_count(family, spec):
  counts = [_param_count(name, spec) for name in ladder(family)]
  assert len(counts) >= 3
  assert all(a < b for a, b in zip(counts, counts[1:])), dict(zip(ladder(family), counts))


def test_gpt2_parameter_count():
  spec = InputSpec((1024,), "tokens", 2, vocab_size=50257)
  count = _param_count("gpt2", spec, max_len=1024)
  # GPT-2 small is 124M with its (tied) LM head; this one has a 2-way classifier head instead.
  assert 80e6 < count < 130e6, count
  # exactly: embeddings + positions + 12 blocks + final LayerNorm + head
  width, vocab, length = 768, 50257, 1024
  block = (width * 3 * width + 3 * width) + (width * width + width) + 2 * 2 * width + (
      width * 4 * width + 4 * width) + (4 * width * width + width)
  assert count == vocab * width + length * width + 12 * block + 2 * width + (width * 2 + 2)


def test_max_len_overrides_input_length():
  spec = InputSpec((8,), "tokens", 2, vocab_size=32)
  short, long = _param_count("gpt_tiny", spec), _param_count("gpt_tiny", spec, max_len=24)
  assert long - short == (24 - 8) * 64  # positions [max_len, width=64]


@pytest.mark.parametrize("name", ["nope", "GPT2", "mlp", ""])
def test_check_unknown_name(name):
  with pytest.raises(ConfigError, match="unknown model") as e:
    check(name, VECTOR)
  assert repr(name) in str(e.value)
  assert "mlp_tiny" in str(e.value) and "gpt2" in str(e.value)
  with pytest.raises(ConfigError):
    builder(name, VECTOR)


@pytest.mark.parametrize("name,spec", [
    ("cnn_small", VECTOR), ("cnn_tiny", TOKENS), ("gpt_tiny", VECTOR), ("gpt2", IMAGE),
    ("mlp_small", TOKENS),
])
def test_check_incompatible_input(name, spec):
  with pytest.raises(ConfigError, match=f"cannot read {spec.kind} inputs") as e:
    check(name, spec)
  message = str(e.value)
  valid = [n for n, s in MODELS.items() if spec.kind in s.inputs]
  assert valid and all(n in message for n in valid)
  assert name not in message.split(":", 1)[1]
  with pytest.raises(ConfigError):
    builder(name, spec)


# ----------------------------------------------------------------------------- transformer

LEN = 10  # inputs of 10 tokens; the model's max_len is TOKENS.shape[0] = 16
LAST = np.array([3, 9, 0, 6])  # index of the last real token in each row of _padded(...)


@pytest.fixture(scope="module")
def gpt():
  model = _built("gpt_tiny", TOKENS)
  return {"call": _jit(model), "hidden": _jit(model, "hidden_states"),
          "features": _jit(model, "features")}


def _padded(lengths, total=LEN, seed=0):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(1, 32, (len(lengths), total)).astype(np.int32)
  tokens[np.arange(total)[None, :] >= np.asarray(lengths)[:, None]] = 0
  return tokens


def test_classifier_ignores_trailing_pad(gpt):
  tokens = _padded(LAST + 1)
  logits = gpt["call"](tokens)
  longer = np.concatenate([tokens, np.zeros((4, 6), np.int32)], axis=1)  # length 16 = max_len
  np.testing.assert_allclose(gpt["call"](longer), logits, rtol=1e-5, atol=1e-5)
  # features are the hidden state at the last real token
  hidden = gpt["hidden"](tokens)
  np.testing.assert_allclose(gpt["features"](tokens), hidden[np.arange(4), LAST], rtol=1e-6)


def test_classifier_reads_last_real_token(gpt):
  tokens = _padded(LAST + 1)
  logits = gpt["call"](tokens)
  changed = tokens.copy()
  changed[np.arange(4), LAST] = tokens[np.arange(4), LAST] % 30 + 1
  assert np.all(changed[np.arange(4), LAST] != tokens[np.arange(4), LAST])
  new = gpt["call"](changed)
  for row in range(4):
    assert not np.allclose(new[row], logits[row], atol=1e-6), row


def test_classifier_rows_are_independent(gpt):
  tokens = _padded(LAST + 1)
  logits = gpt["call"](tokens)
  other = tokens.copy()
  other[1] = _padded([5], seed=9)[0]
  new = gpt["call"](other)
  np.testing.assert_allclose(new[[0, 2, 3]], logits[[0, 2, 3]], rtol=1e-5, atol=1e-6)
  assert not np.allclose(new[1], logits[1])


@pytest.mark.parametrize("t", [0, 3, 8])
def test_hidden_states_are_causal(gpt, t):
  rng = np.random.default_rng(t)
  a = rng.integers(1, 32, (2, LEN)).astype(np.int32)
  b = a.copy()
  b[:, t + 1:] = a[:, t + 1:] % 31 + 1  # every token after t changes
  assert np.all(b[:, t + 1:] != a[:, t + 1:])
  ha, hb = gpt["hidden"](a), gpt["hidden"](b)
  assert ha.shape == (2, LEN, 64)
  np.testing.assert_allclose(hb[:, :t + 1], ha[:, :t + 1], rtol=1e-5, atol=1e-5)
  assert not np.allclose(hb[:, t + 1:], ha[:, t + 1:], atol=1e-4)


def test_width_must_divide_heads():
  from superalign.models.transformer import Transformer
  with pytest.raises(ValueError, match="not divisible"):
    Transformer(32, 8, 2, num_layers=1, width=30, num_heads=4, rngs=nnx.Rngs(0))


def test_cnn_rejects_vector_shape():
  from superalign.models.cnn import CNN
  with pytest.raises(ValueError, match="image input"):
    CNN((12,), 3, channels=(4,), hidden=8, rngs=nnx.Rngs(0))
