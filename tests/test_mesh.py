"""Mesh sizes from the config, logical-axis rules, and parameter / batch shardings."""

from __future__ import annotations

import re

import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from conftest import spec_and_model
from superalign.core import mesh as mesh_lib
from superalign.core.spec import MeshSpec
from superalign.core.specs import InputSpec
from superalign.models import builder

needs_8 = pytest.mark.skipif(
    len(jax.devices()) < 8,
    reason="needs 8 devices (XLA_FLAGS=--xla_force_host_platform_device_count=8)")


# ----------------------------------------------------------------------------- axis sizes


@pytest.mark.parametrize("sizes,devices,expected", [
    ({}, 1, (1, 1, 1)),
    ({"data": -1}, 8, (8, 1, 1)),
    ({"fsdp": -1}, 8, (1, 8, 1)),
    ({"data": 2, "model": -1}, 8, (2, 1, 4)),
    ({"data": -1, "fsdp": 2, "model": 2}, 8, (2, 2, 2)),
    ({"data": 2, "fsdp": 2, "model": 2}, 8, (2, 2, 2)),
    ({"model": -1}, 1, (1, 1, 1)),
    ({"data": 3}, 3, (3, 1, 1)),
])
def test_resolve_axis_sizes(sizes, devices, expected):
  out = mesh_lib.resolve_axis_sizes(sizes, devices)
  assert list(out) == list(mesh_lib.MESH_AXES)
  assert tuple(out.values()) == expected


def test_resolve_axis_sizes_accepts_config_dicts():
  import ml_collections
  cfg = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "model": 2})
  assert mesh_lib.resolve_axis_sizes(cfg, 8) == {"data": 4, "fsdp": 1, "model": 2}


def test_resolve_axis_sizes_mismatch_mentions_counts():
  with pytest.raises(ValueError) as e:
    mesh_lib.resolve_axis_sizes({"data": 3, "model": 2}, 8)
  message = str(e.value)
  assert "6" in message and "8" in message and "-1" in message
  with pytest.raises(ValueError, match=r"multiply to 2 .* 4 devices"):
    mesh_lib.resolve_axis_sizes({"fsdp": 2}, 4)


def test_resolve_axis_sizes_fill_not_dividing_mentions_counts():
  with pytest.raises(ValueError) as e:
    mesh_lib.resolve_axis_sizes({"data": 3, "model": -1}, 8)
  message = str(e.value)
  assert "mesh.model=-1" in message and "3" in message and "8" in message


def test_resolve_axis_sizes_two_fills():
  with pytest.raises(ValueError, match="only one axis may be -1") as e:
    mesh_lib.resolve_axis_sizes({"data": -1, "model": -1}, 8)
  assert "data" in str(e.value) and "model" in str(e.value)


@pytest.mark.parametrize("name", ["tensor", "batch", "Data"])
def test_resolve_axis_sizes_unknown_axis(name):
  with pytest.raises(ValueError, match=f"mesh.{name}: unknown mesh axis") as e:
    mesh_lib.resolve_axis_sizes({"data": -1, name: 2}, 8)
  for axis in mesh_lib.MESH_AXES:
    assert axis in str(e.value)


@pytest.mark.parametrize("size", [0, -2])
def test_resolve_axis_sizes_non_positive(size):
  with pytest.raises(ValueError, match=f"mesh.fsdp={size}"):
    mesh_lib.resolve_axis_sizes({"data": -1, "fsdp": size}, 8)


# ----------------------------------------------------------------------------- meshes


def test_make_mesh_one_device():
  mesh = mesh_lib.make_mesh({"data": -1}, devices=jax.devices()[:1])
  assert dict(mesh.shape) == {"data": 1, "fsdp": 1, "model": 1}
  assert mesh.axis_names == mesh_lib.MESH_AXES
  assert mesh_lib.batch_size_per_shard(mesh) == 1


@needs_8
@pytest.mark.parametrize("sizes,expected", [
    ({"data": 2, "fsdp": 2, "model": 2}, (2, 2, 2)),
    ({"data": -1}, (8, 1, 1)),
    ({"fsdp": -1, "model": 2}, (1, 4, 2)),
    ({"model": 8}, (1, 1, 8)),
])
def test_make_mesh_shapes(sizes, expected):
  mesh = mesh_lib.make_mesh(sizes)
  assert mesh.axis_names == ("data", "fsdp", "model")
  assert tuple(mesh.shape[a] for a in mesh.axis_names) == expected
  assert mesh.devices.shape == expected
  assert sorted(d.id for d in mesh.devices.flat) == sorted(d.id for d in jax.devices())
  assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
  assert mesh_lib.batch_size_per_shard(mesh) == expected[0] * expected[1]


@needs_8
def test_make_mesh_on_a_subset_of_devices():
  mesh = mesh_lib.make_mesh({"data": 2, "model": -1}, devices=jax.devices()[:4])
  assert dict(mesh.shape) == {"data": 2, "fsdp": 1, "model": 2}
  with pytest.raises(ValueError, match="4 devices"):
    mesh_lib.make_mesh({"data": 8}, devices=jax.devices()[:4])


@pytest.fixture(scope="module")
def mesh222():
  if len(jax.devices()) < 8:
    pytest.skip("needs 8 devices (XLA_FLAGS=--xla_force_host_platform_device_count=8)")
  return mesh_lib.make_mesh({"data": 2, "fsdp": 2, "model": 2})


def test_shard_batch_splits_over_data_and_fsdp(mesh222):
  batch = {"x": np.arange(8 * 3, dtype=np.float32).reshape(8, 3), "y": np.arange(8)}
  out = mesh_lib.shard_batch(batch, mesh222)
  for k, v in out.items():
    assert v.sharding == NamedSharding(mesh222, P(("data", "fsdp")))
    np.testing.assert_array_equal(np.asarray(v), batch[k])
    assert {s.data.shape[0] for s in v.addressable_shards} == {2}  # 8 rows over 2 x 2 shards
  assert mesh_lib.replicated(mesh222).spec == P()


# ----------------------------------------------------------------------------- logical rules


def test_logical_to_mesh_basic(mesh222):
  f = lambda logical, shape: mesh_lib.logical_to_mesh(logical, shape, mesh222)
  assert f(("embed", "mlp"), (8, 32)) == P("fsdp", "model")
  assert f(("mlp", "embed"), (32, 8)) == P("model", "fsdp")
  assert f((None, "embed"), (5, 8)) == P(None, "fsdp")
  assert f(("vocab", "embed"), (64, 8)) == P("model", "fsdp")
  assert f(("conv_out",), (4,)) == P("model")
  assert f((None, None), (4, 4)) == P(None, None)
  assert f(("unknown_axis", "embed"), (4, 4)) == P(None, "fsdp")


def test_logical_to_mesh_skips_axes_that_do_not_divide(mesh222):
  f = lambda logical, shape: mesh_lib.logical_to_mesh(logical, shape, mesh222)
  assert f(("embed", "mlp"), (7, 32)) == P(None, "model")
  assert f(("embed", "mlp"), (8, 3)) == P("fsdp", None)
  assert f(("vocab", "embed"), (33, 9)) == P(None, None)


def test_logical_to_mesh_never_reuses_a_mesh_axis(mesh222):
  f = lambda logical, shape: mesh_lib.logical_to_mesh(logical, shape, mesh222)
  assert f(("mlp", "heads"), (4, 4)) == P("model", None)
  assert f(("heads", "mlp", "vocab"), (4, 4, 4)) == P("model", None, None)
  assert f(("embed", "embed"), (4, 4)) == P("fsdp", None)
  # the first one that divides takes the axis; a later one may then use it
  assert f(("mlp", "heads"), (3, 4)) == P(None, "model")


def test_logical_to_mesh_rule_order_and_size_one_axes(mesh222):
  rules = (("a", ("model", "fsdp")), ("b", ("data",)))
  f = lambda logical, shape: mesh_lib.logical_to_mesh(logical, shape, mesh222, rules)
  assert f(("a", "a", "a"), (4, 4, 4)) == P("model", "fsdp", None)
  assert f(("a",), (6,)) == P("model")
  assert f(("b", "a"), (2, 2)) == P("data", "model")
  assert f(("embed",), (4,)) == P(None)  # not in these rules
  flat = mesh_lib.make_mesh({"data": -1, "fsdp": 1, "model": 1})
  # axes of size 1 are never chosen (no point sharding over one device)
  assert mesh_lib.logical_to_mesh(("embed", "mlp"), (4, 4), flat) == P(None, None)


# ----------------------------------------------------------------------------- parameters


def _abstract_params(name: str, spec: InputSpec):
  def build():
    with nnx.use_eager_sharding(False):
      model = builder(name, spec)(nnx.Rngs(0))
    return nnx.split(model, nnx.Param)

  return nnx.eval_shape(build)[1]


def _flat(tree, is_leaf=None):
  return {jax.tree_util.keystr(path): leaf
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree, is_leaf=is_leaf)}


_RULE_AXIS = {"embed": "fsdp", "mlp": "model", "heads": "model", "vocab": "model",
              "conv_out": "model"}


def _check_against_logical(params, shardings, mesh):
  """Each dim of each parameter lands where the rules say, given divisibility and reuse."""
  logical = _flat(nnx.get_partition_spec(params), is_leaf=lambda x: isinstance(x, P) or x is None)
  values = _flat(params)
  specs = _flat(shardings)
  assert set(values) == set(specs) == set(logical)
  for key, value in values.items():
    sharding = specs[key]
    assert isinstance(sharding, NamedSharding) and sharding.mesh == mesh
    names = tuple(logical[key] or ()) + (None,) * value.ndim
    spec = tuple(sharding.spec) + (None,) * value.ndim
    used = set()
    for dim, (name, axis) in enumerate(zip(names[:value.ndim], spec[:value.ndim])):
      want = _RULE_AXIS.get(name)
      if want is None or want in used or value.shape[dim] % mesh.shape[want]:
        assert axis is None, (key, dim, name, axis)
      else:
        assert axis == want, (key, dim, name, axis)
        used.add(want)
    assert "data" not in spec, key  # parameters never split over pure data parallelism


def test_transformer_param_shardings(mesh222):
  spec = InputSpec((16,), "tokens", 2, vocab_size=64)
  params = _abstract_params("gpt_tiny", spec)
  shardings = mesh_lib.param_shardings(params, mesh222)
  _check_against_logical(params, shardings, mesh222)
  specs = {k: s.spec for k, s in _flat(shardings).items()}
  block = "['blocks'][0]"
  assert specs[f"{block}['attn']['qkv'].value"] == P("fsdp", None, "model", None)
  assert specs[f"{block}['attn']['out'].value"] == P("model", None, "fsdp")
  assert specs[f"{block}['fc']['kernel'].value"] == P("fsdp", "model")
  assert specs[f"{block}['fc']['bias'].value"] == P("model")
  assert specs[f"{block}['proj']['kernel'].value"] == P("model", "fsdp")
  assert specs[f"{block}['ln1']['scale'].value"] == P("fsdp")
  assert specs["['embed']['embedding'].value"] == P("model", "fsdp")
  assert specs["['pos'].value"] == P(None, "fsdp")
  assert specs["['head']['kernel'].value"] == P("fsdp", None)
  # every 'mlp' and 'heads' dim is on 'model', every 'embed' dim on 'fsdp' (all divide by 2)
  model_dims = sum(1 for s in specs.values() for a in s if a == "model")
  fsdp_dims = sum(1 for s in specs.values() for a in s if a == "fsdp")
  assert model_dims >= 2 * 3 + 1 and fsdp_dims >= 2 * 8 + 4


def test_transformer_param_shardings_odd_vocab(mesh222):
  params = _abstract_params("gpt_tiny", InputSpec((16,), "tokens", 2, vocab_size=33))
  shardings = mesh_lib.param_shardings(params, mesh222)
  _check_against_logical(params, shardings, mesh222)
  assert _flat(shardings)["['embed']['embedding'].value"].spec == P(None, "fsdp")


@pytest.mark.parametrize("name,spec", [
    ("mlp_small", InputSpec((12,), "vector", 3)),
    ("cnn_small", InputSpec((8, 8, 1), "image", 10)),
])
def test_other_model_param_shardings(mesh222, name, spec):
  params = _abstract_params(name, spec)
  shardings = mesh_lib.param_shardings(params, mesh222)
  _check_against_logical(params, shardings, mesh222)
  assert any("model" in tuple(s.spec) for s in _flat(shardings).values())


def test_rules_come_from_the_config_and_shard_the_trainers_state(mesh222):
  """config.mesh.rules is data: moving 'mlp' off the model axis replicates the MLP kernels' mlp
  dimension in the state the trainer builds, and nothing else changes."""
  from experiments.supervised import digits
  from superalign.parties.classifier import trainer
  config = digits.get_config("smoke")
  config.model.name = "gpt_nano"
  spec = InputSpec((16,), "tokens", 2, vocab_size=64)
  specs = {}
  for rule in (("model",), ()):
    config.mesh.rules.mlp = rule
    state = trainer(*spec_and_model(config), spec, "", tag="t", mesh=mesh222).init().state
    specs[rule] = {k: s.sharding.spec for k, s in _flat(state.params).items()}
  fc = "['blocks'][0]['fc']['kernel'].value"
  assert specs[("model",)][fc] == P("fsdp", "model") and specs[()][fc] == P("fsdp", None)
  qkv = "['blocks'][0]['attn']['qkv'].value"
  assert specs[("model",)][qkv] == specs[()][qkv] == P("fsdp", None, "model", None)


@pytest.mark.parametrize("rules, message", [
    ({"banana": ("fsdp",)}, "mesh.rules.banana: unknown logical axis; valid: embed, mlp"),
    ({"embed": ("fsdp", "tensor")}, "mesh.rules.embed=('fsdp', 'tensor'): 'tensor' is not a mesh axis"),
    ({"mlp": "model"}, None),   # one axis may be given bare
])
def test_rules_name_a_bad_logical_or_mesh_axis(rules, message):
  from experiments.supervised import digits
  from superalign.launch import runners
  from superalign.core.errors import ConfigError
  config = digits.get_config("smoke")
  config.mesh.rules = rules
  if message is None:
    runners.validate(config, num_devices=1)
    assert dict(MeshSpec.from_config(config.mesh).rules) == {"mlp": ("model",)}
    return
  with pytest.raises(ConfigError, match=re.escape(message)):
    runners.validate(config, num_devices=1)


def test_named_random_streams_are_fixed_and_independent():
  from superalign.core import rng
  a = rng.numpy_rng(0, "debate/games").integers(0, 1 << 30, 3)
  np.testing.assert_array_equal(a, rng.numpy_rng(0, "debate/games").integers(0, 1 << 30, 3))
  assert not np.array_equal(a, rng.numpy_rng(0, "debate/consultancy").integers(0, 1 << 30, 3))
  assert not np.array_equal(a, rng.numpy_rng(1, "debate/games").integers(0, 1 << 30, 3))
  assert rng.stream_id("debate/games") == 0xD1677D2F   # the CRC-32 of the name, whatever else exists
  assert rng.stream_seed(0, "x") != rng.stream_seed(0, "y") != rng.stream_seed(1, "y")
