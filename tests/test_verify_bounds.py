"""Bounds are sound, exact at zero width, contain the exact range, and order by tightness."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import optimize

from superalign import models
from superalign.core import mesh as mesh_lib
from superalign.core.errors import ConfigError
from superalign.core.specs import InputSpec
from superalign.verify import bounds as B
from superalign.verify import certify, network as N

IMAGE = InputSpec((8, 8, 1), "image", 3)


def random_mlp(dims, seed=0, bias=0.1):
  rng = np.random.default_rng(seed)
  layers = []
  for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
    layers.append({"type": "dense", "weight": rng.normal(size=(a, b)) / np.sqrt(a),
                   "bias": rng.normal(size=b) * bias})
    if i < len(dims) - 2:
      layers.append({"type": "relu"})
  return N.from_layers(layers, (dims[0],))


def random_cnn(seed=0):
  """Conv (stride 2, padding 1), ReLU, avg pool, conv, ReLU, max pool, flatten, dense: every
  layer type the verifier supports."""
  rng = np.random.default_rng(seed)
  w = lambda *s: rng.normal(size=s) / np.sqrt(np.prod(s[:-1]))
  layers = [{"type": "conv", "weight": w(3, 3, 1, 4), "bias": rng.normal(size=4) * 0.1,
             "stride": 2, "padding": 1},
            {"type": "relu"}, {"type": "avg_pool", "window": 2, "stride": 1},
            {"type": "conv", "weight": w(2, 2, 4, 4), "bias": rng.normal(size=4) * 0.1,
             "padding": "SAME"},
            {"type": "relu"}, {"type": "max_pool"}, {"type": "flatten"},
            {"type": "dense", "weight": w(4, 3), "bias": np.zeros(3)}]
  return N.from_layers(layers, (8, 8, 1))


def registry_net(name, seed=0):
  spec = InputSpec((16, 16, 1), "image", 3) if name == "cnn_ibp_small" else IMAGE
  model = models.builder(name, spec)(nnx.Rngs(seed))
  return model, N.from_model(model, spec.shape)


NETS = {
    "mlp": lambda: random_mlp([6, 16, 16, 3]),
    "cnn_layers": random_cnn,
    "cnn_small": lambda: registry_net("cnn_small")[1],
    "cnn_ibp_small": lambda: registry_net("cnn_ibp_small")[1],
}


def _inputs(net, n=3, seed=1):
  return jnp.asarray(np.random.default_rng(seed).uniform(size=(n, *net.input_shape)), jnp.float32)


@pytest.mark.parametrize("name", ["mlp_small", "cnn_small", "cnn_ibp_small"])
def test_network_from_a_registry_model_is_its_forward_pass(name):
  model, net = registry_net(name)
  with pytest.raises(ConfigError, match=r"model: input \(4, 4, 1\) is too small for 4x4"):
    models.builder("cnn_ibp_small", InputSpec((4, 4, 1), "image", 3))(nnx.Rngs(0))
  x = _inputs(net)
  np.testing.assert_allclose(net(x), model(x), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(N.lowered(net)(x), model(x), rtol=1e-5, atol=1e-5)


# The CNNs' optimised bounds take 12-35 s each: by default one CNN per method, the rest under -m slow.
SLOW_BOUNDS = {("cnn_small", "alpha_crown"), ("cnn_ibp_small", "alpha_crown"), ("cnn_small", "crown")}


@pytest.mark.parametrize("name,method", [
    pytest.param(n, m, marks=[pytest.mark.slow] if (n, m) in SLOW_BOUNDS else [])
    for n in sorted(NETS) for m in B.METHODS])
def test_sampled_points_never_leave_the_bounds(name, method):
  net = NETS[name]()
  x = _inputs(net)
  lo, hi = B.input_box(x, 0.05)
  lower, upper = B.bounds(method, net, lo, hi)
  u = np.random.default_rng(2).uniform(size=(2000, *x.shape)).astype(np.float32)
  out = jax.vmap(net)(lo[None] + (hi - lo)[None] * u)          # [samples, B, K]
  assert (out.min(0) >= lower - 1e-4).all() and (out.max(0) <= upper + 1e-4).all()
  assert (lower <= upper).all()


# cnn_small's alpha-CROWN (25-40 s) under -m slow: alpha-CROWN stays exact at zero width on mlp and
# cnn_layers (every layer type), and cnn_small on ibp, crown and crown_ibp.
@pytest.mark.parametrize("name,method", [
    pytest.param(n, m, marks=[pytest.mark.slow] if (n, m) == ("cnn_small", "alpha_crown") else [])
    for n in ("mlp", "cnn_layers", "cnn_small") for m in B.METHODS])
def test_a_zero_width_box_gives_the_forward_pass(name, method):
  net = NETS[name]()
  x = _inputs(net)
  lower, upper = B.bounds(method, net, x, x)
  np.testing.assert_allclose(lower, net(x), atol=1e-5)
  np.testing.assert_allclose(upper, net(x), atol=1e-5)


def exact_range(net, lo, hi, output):
  """Min and max of one output over the box by a mixed-integer program (HiGHS): a binary per
  ReLU, big-M constraints from interval bounds (sound, so the program is exact)."""
  (_, _), relu_bounds = B.relu_inputs(net, lo[None], hi[None])
  dense = [op for op in net.ops if isinstance(op, N.Dense)]
  sizes = [len(lo)] + [d.kernel.shape[1] for d in dense]
  # variables: x, then per hidden layer z (pre), y (post), d (binary); the output last
  names, offsets = [], {}
  def add(name, n):
    offsets[name] = sum(len(v) for v in names)
    names.append(range(n))
  add("y0", sizes[0])
  for k in range(1, len(dense)):
    add(f"z{k}", sizes[k]); add(f"y{k}", sizes[k]); add(f"d{k}", sizes[k])
  add("out", sizes[-1])
  nvar = sum(len(v) for v in names)
  rows, lb, ub = [], [], []
  def row(coeffs, lo_, hi_):
    r = np.zeros(nvar); 
    for i, c in coeffs: r[i] += c
    rows.append(r); lb.append(lo_); ub.append(hi_)
  relu_idx = sorted(relu_bounds)
  for k, d in enumerate(dense, start=1):
    w, b = np.asarray(d.kernel), np.asarray(d.bias)
    target = "out" if k == len(dense) else f"z{k}"
    for j in range(w.shape[1]):   # target_j - sum_i w_ij y_i = b_j
      row([(offsets[target] + j, 1.0)] + [(offsets[f"y{k-1}"] + i, -w[i, j])
                                          for i in range(w.shape[0])], b[j], b[j])
    if k < len(dense):
      l, u = (np.asarray(t[0]) for t in relu_bounds[relu_idx[k - 1]])
      for j in range(w.shape[1]):
        z, y, dd = offsets[f"z{k}"] + j, offsets[f"y{k}"] + j, offsets[f"d{k}"] + j
        row([(y, 1.0), (z, -1.0)], 0, np.inf)                      # y >= z
        row([(y, 1.0), (z, -1.0), (dd, -l[j])], -np.inf, -l[j])    # y <= z - l (1 - d)
        row([(y, 1.0), (dd, -u[j])], -np.inf, 0)                   # y <= u d
  bounds_lo, bounds_hi = np.full(nvar, -np.inf), np.full(nvar, np.inf)
  integrality = np.zeros(nvar)
  bounds_lo[:sizes[0]], bounds_hi[:sizes[0]] = lo, hi
  for k in range(1, len(dense)):
    bounds_lo[offsets[f"y{k}"]:offsets[f"y{k}"] + sizes[k]] = 0
    sl = slice(offsets[f"d{k}"], offsets[f"d{k}"] + sizes[k])
    bounds_lo[sl], bounds_hi[sl], integrality[sl] = 0, 1, 1
  constraint = optimize.LinearConstraint(np.array(rows), lb, ub)
  out = []
  for sign in (1.0, -1.0):
    c = np.zeros(nvar)
    c[offsets["out"] + output] = sign
    res = optimize.milp(c, integrality=integrality, constraints=constraint,
                        bounds=optimize.Bounds(bounds_lo, bounds_hi))
    assert res.status == 0, res.message
    out.append(sign * res.fun)
  return out


@pytest.mark.parametrize("seed", range(3))
def test_the_exact_range_of_a_tiny_network_lies_inside_every_method(seed):
  net = random_mlp([2, 8, 8, 2], seed=seed, bias=0.3)
  x = jnp.asarray(np.random.default_rng(seed).uniform(size=(1, 2)), jnp.float32)
  lo, hi = B.input_box(x, 0.2)
  for output in range(2):
    exact_min, exact_max = exact_range(net, np.asarray(lo[0]), np.asarray(hi[0]), output)
    # the MIP is exact: dense sampling gets close to its optimum from inside
    grid = jnp.stack(jnp.meshgrid(*[jnp.linspace(lo[0, i], hi[0, i], 300) for i in range(2)]),
                     -1).reshape(-1, 2)
    sampled = net(grid)[:, output]
    assert exact_min <= float(sampled.min()) + 1e-4 and float(sampled.max()) <= exact_max + 1e-4
    assert float(sampled.min()) - exact_min < 0.02 and exact_max - float(sampled.max()) < 0.02
    for method in B.METHODS:
      lower, upper = B.bounds(method, net, lo, hi)
      assert float(lower[0, output]) <= exact_min + 1e-4, method
      assert float(upper[0, output]) >= exact_max - 1e-4, method


@pytest.mark.parametrize("seed", range(4))
def test_tightness_order_alpha_crown_crown_ibp(seed):
  net = random_mlp([10, 32, 32, 32, 4], seed=seed)
  x = _inputs(net, n=8, seed=seed)
  lo, hi = B.input_box(x, 0.1, None)
  spec = B.margin_spec(jnp.arange(8) % 4, 4)
  width = {}
  for method in ("ibp", "crown", "alpha_crown"):
    lower, upper = B.bounds(method, net, lo, hi, spec)
    width[method] = upper - lower
    if method == "alpha_crown":
      crown_lower = B.crown(net, lo, hi, spec)[0]
      assert (lower >= crown_lower - 1e-5).all()
  assert (width["alpha_crown"] <= width["crown"] + 1e-5).all()
  assert (width["crown"] <= width["ibp"] + 1e-5).all()
  assert width["crown"].mean() < 0.7 * width["ibp"].mean()     # and strictly, on average


def test_intermediate_bounds_in_chunks_equal_one_pass():
  # cnn_layers (ReLU layers of 36, 36 and 12 neurons: chunks of 7 and a remainder), in a quarter
  # of cnn_small's time
  net = N.lowered(NETS["cnn_layers"]())
  lo, hi = B.input_box(_inputs(net), 0.02)
  whole = B.crown_relu_bounds(net, lo, hi, chunk=10_000)
  chunked = B.crown_relu_bounds(net, lo, hi, chunk=7)
  for i in whole:
    np.testing.assert_allclose(whole[i][0], chunked[i][0], atol=1e-5)
    np.testing.assert_allclose(whole[i][1], chunked[i][1], atol=1e-5)


def test_the_input_domain_clips_the_box():
  x = jnp.asarray([[0.0, 0.5, 1.0]])
  lo, hi = B.input_box(x, 0.1)
  np.testing.assert_allclose(lo, [[0.0, 0.4, 0.9]], atol=1e-6)
  np.testing.assert_allclose(hi, [[0.1, 0.6, 1.0]], atol=1e-6)
  lo, hi = B.input_box(x, jnp.asarray([0.2]), None)
  np.testing.assert_allclose(lo, [[-0.2, 0.3, 0.8]], atol=1e-6)


def test_margins_certify_the_label():
  spec = B.margin_spec(jnp.asarray([0, 2]), 3)
  np.testing.assert_array_equal(spec[1], [[-1, 0, 1], [0, -1, 1]])
  logits = jnp.asarray([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
  margins = jnp.einsum("bsk,bk->bs", spec, logits)
  np.testing.assert_array_equal(B.verified(margins), [True, False])


def test_bounds_shard_over_the_data_axis():
  net = NETS["mlp"]()
  mesh = mesh_lib.make_mesh({"data": -1, "fsdp": 1, "model": 1})
  x = _inputs(net, n=8)
  sharding = mesh_lib.batch_sharding(mesh)
  f = jax.jit(lambda n, lo, hi: B.crown(n, lo, hi), in_shardings=(None, sharding, sharding),
              out_shardings=sharding)
  lo, hi = B.input_box(x, 0.02)
  lower, upper = f(net, jax.device_put(lo, sharding), jax.device_put(hi, sharding))
  assert len(lower.sharding.device_set) == len(jax.devices())
  ref = B.crown(net, lo, hi)
  np.testing.assert_allclose(lower, ref[0], atol=1e-5)


def test_pytorch_layout_matches_pytorch():
  torch = pytest.importorskip("torch")
  torch.manual_seed(0)
  seq = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, stride=2, padding=1), torch.nn.ReLU(),
                            torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 5))
  layers = [{"type": "conv", "weight": seq[0].weight.detach().numpy(),
             "bias": seq[0].bias.detach().numpy(), "stride": 2, "padding": 1},
            {"type": "relu"}, {"type": "flatten"},
            {"type": "dense", "weight": seq[3].weight.detach().numpy(),
             "bias": seq[3].bias.detach().numpy()}]
  net = N.from_layers(layers, (8, 8, 2), layout="torch")
  x = np.random.default_rng(0).uniform(size=(4, 8, 8, 2)).astype(np.float32)
  want = seq(torch.from_numpy(x.transpose(0, 3, 1, 2))).detach().numpy()
  np.testing.assert_allclose(net(jnp.asarray(x)), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layers,shape,message", [
    ([{"type": "softmax"}], (4,), "unsupported layer type 'softmax'; supported: dense, conv"),
    ([{"type": "dense", "weight": np.zeros((5, 3)), "bias": np.zeros(3)}], (4,),
     "layers[0] (dense): weight (5, 3) and bias (3,) do not fit layout 'flax'"),
    ([{"type": "conv", "weight": np.zeros((3, 3, 2, 4)), "bias": np.zeros(4)}], (8, 8, 1),
     "layers[0] (conv): weight (3, 3, 2, 4)"),
    ([{"type": "dense", "weight": np.zeros((4, 3)), "bias": np.zeros(3)}], (2, 2, 1),
     "flatten first"),
])
def test_bad_layers_are_one_line(layers, shape, message):
  with pytest.raises(ConfigError, match=None) as e:
    N.from_layers(layers, shape)
  assert message in str(e.value) and "\n" not in str(e.value)


def test_torch_layout_checks_torch_shapes():
  with pytest.raises(ConfigError, match=r"layout 'torch' \(weight \[out, in\] with in = 4"):
    N.from_layers([{"type": "dense", "weight": np.zeros((4, 3)), "bias": np.zeros(3)}], (4,),
                  layout="torch")


def test_bad_boxes_and_radii_are_one_line():
  with pytest.raises(ConfigError, match=r"eps=-0.1: must be a finite number >= 0"):
    B.check_eps([0.1, -0.1])
  with pytest.raises(ConfigError, match=r"lower bound exceeds upper bound at 1 entries, first at "
                                        r"index \(0, 1\)"):
    B.check_box(np.zeros((1, 3)), np.array([[1.0, -1.0, 1.0]]))


def test_an_unknown_bound_method_is_one_line_listing_the_registered_ones():
  assert set(B.METHODS.names) == {"ibp", "crown", "crown_ibp", "alpha_crown"}
  with pytest.raises(ConfigError) as e:
    B.bounds("lp", NETS["mlp"](), jnp.zeros((1, 6)), jnp.zeros((1, 6)))
  assert str(e.value) == f"'lp': unknown bound method; valid: {', '.join(B.METHODS.names)}"
  with pytest.raises(ConfigError, match="'lp': unknown bound method; valid: ibp"):
    certify.lower_bound_fn("lp", (6,))


def test_methods_are_dispatched_by_name_with_the_options_they_take():
  net, lo, hi = NETS["mlp"](), jnp.zeros((2, 6)), jnp.full((2, 6), 0.1)
  for name in B.METHODS:
    method = B.METHODS[name]
    np.testing.assert_array_equal(B.bounds(name, net, lo, hi)[0], method.fn(net, lo, hi)[0])
  options = dict(chunk=4, max_unstable=None, steps=3, lr=0.1)
  assert B.METHODS["ibp"].options(**options) == {}
  assert B.METHODS["crown"].options(**options) == {"chunk": 4, "max_unstable": None}
  assert B.METHODS["alpha_crown"].options(**options) == options
  assert [n for n in B.METHODS if B.METHODS[n].per_neuron] == ["crown", "alpha_crown"]


def test_an_unsupported_model_is_named():
  model = models.builder("gpt_nano", InputSpec((8,), "tokens", 2, vocab_size=16))(nnx.Rngs(0))
  with pytest.raises(ConfigError, match="model Transformer: not supported by the verifier; "
                                        "supported: the registry's MLP and CNN"):
    N.from_model(model, (8,))


def test_sparse_intermediate_bounds_are_crown_when_they_cover_the_unstable_neurons():
  net = NETS["cnn_layers"]()
  lo, hi = B.input_box(_inputs(net), 0.1)
  full = B.crown(net, lo, hi)
  covering = B.crown(net, lo, hi, max_unstable=100_000)
  np.testing.assert_allclose(covering[0], full[0], atol=1e-4)
  few = B.crown(net, lo, hi, max_unstable=4)       # sound, and never tighter than CROWN
  assert (few[0] <= full[0] + 1e-4).all() and (few[1] >= full[1] - 1e-4).all()
  u = np.random.default_rng(3).uniform(size=(500, *lo.shape)).astype(np.float32)
  out = jax.vmap(net)(lo[None] + (hi - lo)[None] * u)
  assert (out.min(0) >= few[0] - 1e-4).all() and (out.max(0) <= few[1] + 1e-4).all()


def test_one_entry_point_takes_a_model_a_network_or_layers():
  model, net = registry_net("mlp_small")
  x = _inputs(net)
  layers = [{"type": "flatten"},
            {"type": "dense", "weight": np.asarray(model.layers[0].kernel[...]),
             "bias": np.asarray(model.layers[0].bias[...])}, {"type": "relu"},
            {"type": "dense", "weight": np.asarray(model.head.kernel[...]),
             "bias": np.asarray(model.head.bias[...])}]
  for source in (model, net, layers):
    np.testing.assert_allclose(N.build(source, IMAGE.shape)(x), model(x), rtol=1e-5, atol=1e-5)
  with pytest.raises(ConfigError, match="str: not a network"):
    N.build("weights.bin", IMAGE.shape)


def test_ibp_folds_the_specification_into_the_last_layer():
  net = NETS["mlp"]()
  lo, hi = B.input_box(_inputs(net, n=6), 0.1)
  spec = B.margin_spec(jnp.arange(6) % 3, 3)
  folded = B.ibp(net, lo, hi, spec)
  out_lo, out_hi = B.ibp(net, lo, hi)
  mid, rad = (out_hi + out_lo) / 2, (out_hi - out_lo) / 2
  naive_lower = jnp.einsum("bsk,bk->bs", spec, mid) - jnp.einsum("bsk,bk->bs", jnp.abs(spec), rad)
  assert (folded[0] >= naive_lower - 1e-5).all() and (folded[0] > naive_lower + 1e-4).any()
