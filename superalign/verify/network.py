"""A network as a sequence of operations that bounds can propagate through.

Every operation but ``ReLU`` and ``MaxPool`` is affine, ``forward(x) = linear(x) + bias``, on a
batch ``[N, ...]``: interval arithmetic needs ``abs_linear`` (the same map with absolute
weights), and a backward linear bound needs only ``linear`` (JAX transposes it). Images are NHWC.

Two ways in:

- ``from_model(model)``: the registry's ``MLP`` and ``CNN`` (NNX), traceably, so a loss can bound
  the model it trains.
- ``from_layers(layers, input_shape, layout)``: plain weight arrays, for a network trained
  elsewhere. Each layer is a dict with ``"type"`` one of ``LAYERS``:

  ====================  ===============================  ==================================
  type                  layout "flax" (JAX, Keras-like)  layout "torch" (PyTorch)
  ====================  ===============================  ==================================
  ``dense``             weight ``[in, out]``, bias       ``nn.Linear``: ``[out, in]``, bias
  ``conv``              weight ``[kh, kw, in, out]``     ``nn.Conv2d``: ``[out, in, kh, kw]``
  ``flatten``           row-major over ``H, W, C``       PyTorch's order, ``C, H, W``
  ``relu``              --                               --
  ``avg_pool``          ``window``, ``stride``           the same
  ``max_pool``          2x2, stride 2                    the same
  ====================  ===============================  ==================================

  ``conv`` takes ``stride`` (int or pair) and ``padding`` (int, pair, ``"SAME"`` or ``"VALID"``).
  Inputs stay NHWC in both layouts; torch's ``flatten`` reads channel-major so the dense weights
  after it mean what they meant in PyTorch.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from superalign.core.errors import ConfigError
from superalign.models.cnn import CNN
from superalign.models.mlp import MLP

LAYERS = ("dense", "conv", "flatten", "relu", "avg_pool", "max_pool")
LAYOUTS = ("flax", "torch")


def _ibp_affine(op, lo, hi):
  mid, rad = (hi + lo) / 2, (hi - lo) / 2
  out_mid, out_rad = op(mid), op.abs_linear(rad)
  return out_mid - out_rad, out_mid + out_rad


class _Affine:
  """``forward = linear + bias``; subclasses define ``linear``, ``abs_linear`` and ``bias``."""
  bias: Any = None

  def __call__(self, x):
    y = self.linear(x)
    return y if self.bias is None else y + self.bias

  def ibp(self, lo, hi):
    """Interval bounds ``(lo, hi)`` on the output over the input box ``[lo, hi]`` (each
    ``[N, ...]``): the image of the box's centre, minus and plus ``abs_linear`` of its radius."""
    return _ibp_affine(self, lo, hi)


@struct.dataclass
class Dense(_Affine):
  """A dense layer ``x @ kernel + bias`` on inputs ``[N, in]``: ``kernel`` ``[in, out]``,
  ``bias`` ``[out]``."""
  kernel: jax.Array          # [in, out]
  bias: jax.Array            # [out]

  def linear(self, x):
    """``x @ kernel``: ``[N, in]`` to ``[N, out]``."""
    return x @ self.kernel

  def abs_linear(self, x):
    """``x @ |kernel|``, for interval radii."""
    return x @ jnp.abs(self.kernel)


@struct.dataclass
class Conv(_Affine):
  """A 2-D convolution of NHWC images: ``kernel`` ``[kh, kw, in, out]``, ``bias`` ``[out]``, and
  ``strides`` and ``padding`` as ``jax.lax.conv_general_dilated`` takes them."""
  kernel: jax.Array          # [kh, kw, in, out]
  bias: jax.Array            # [out]
  strides: tuple = struct.field(pytree_node=False, default=(1, 1))
  padding: Any = struct.field(pytree_node=False, default="VALID")

  def _conv(self, x, kernel):
    return jax.lax.conv_general_dilated(x, kernel, self.strides, self.padding,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

  def linear(self, x):
    """The convolution without its bias: ``[N, H, W, in]`` to ``[N, H', W', out]``."""
    return self._conv(x, self.kernel)

  def abs_linear(self, x):
    """The convolution by ``|kernel|``, for interval radii."""
    return self._conv(x, jnp.abs(self.kernel))


@struct.dataclass
class Flatten(_Affine):
  """Each example flattened to ``[N, features]``: row-major over ``H, W, C``, or over PyTorch's
  ``C, H, W`` with ``channels_first``."""
  channels_first: bool = struct.field(pytree_node=False, default=False)  # PyTorch's C, H, W

  def linear(self, x):
    """``[N, ...]`` to ``[N, features]`` (also its ``abs_linear``: it only moves values)."""
    if self.channels_first and x.ndim == 4:
      x = x.transpose(0, 3, 1, 2)
    return x.reshape(x.shape[0], -1)

  abs_linear = linear


@struct.dataclass
class AvgPool(_Affine):
  """Average pooling of NHWC images over ``window`` with ``strides``, no padding."""
  window: tuple = struct.field(pytree_node=False, default=(2, 2))
  strides: tuple = struct.field(pytree_node=False, default=(2, 2))

  def linear(self, x):
    """The window means: ``[N, H, W, C]`` to ``[N, H', W', C]`` (also its ``abs_linear``: the
    weights are positive)."""
    total = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, *self.window, 1),
                                  (1, *self.strides, 1), "VALID")
    return total / math.prod(self.window)

  abs_linear = linear


@struct.dataclass
class ReLU:
  """The elementwise ReLU, the nonlinearity that bounds relax."""
  def __call__(self, x):
    return jax.nn.relu(x)

  def ibp(self, lo, hi):
    """Interval bounds through the ReLU: ``(relu(lo), relu(hi))`` (it is monotone)."""
    return jax.nn.relu(lo), jax.nn.relu(hi)


@struct.dataclass
class MaxPool:
  """2x2 windows, stride 2 (odd edges dropped, as ``nnx.max_pool`` does). Interval bounds go
  through it directly (max is monotone); linear bounds go through its exact rewrite into affine
  maps and ReLUs (``lowered``)."""

  def __call__(self, x):
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")

  def ibp(self, lo, hi):
    """Interval bounds through the pooling: ``(pool(lo), pool(hi))`` (max is monotone)."""
    return self(lo), self(hi)


def _pairs(x, axis):
  n = x.shape[axis] // 2 * 2
  a = jax.lax.slice_in_dim(x, 0, n, 2, axis)
  b = jax.lax.slice_in_dim(x, 1, n, 2, axis)
  return a, b


@struct.dataclass
class PairLift(_Affine):
  """Neighbours ``a, b`` along ``axis`` -> channels ``[a, -a, b - a]``; after a ReLU,
  ``PairSum`` gives ``relu(a) - relu(-a) + relu(b - a) = max(a, b)``."""
  axis: int = struct.field(pytree_node=False, default=2)

  def linear(self, x):
    """Channels ``[a, -a, b - a]`` of each neighbour pair ``(a, b)`` along ``axis``: ``[..., C]``
    to ``[..., 3 * C]``, with ``axis`` halved (an odd last one dropped)."""
    a, b = _pairs(x, self.axis)
    return jnp.concatenate([a, -a, b - a], axis=-1)

  def abs_linear(self, x):
    """The same map with absolute weights: ``[a, a, a + b]``."""
    a, b = _pairs(x, self.axis)
    return jnp.concatenate([a, a, a + b], axis=-1)


@struct.dataclass
class PairSum(_Affine):
  """Channel thirds ``[r0, r1, r2]`` summed as ``r0 - r1 + r2``: after ``PairLift`` and a
  ``ReLU``, each pair's max."""
  def linear(self, x):
    """``r0 - r1 + r2`` of the channel thirds: ``[..., 3 * C]`` to ``[..., C]``."""
    r0, r1, r2 = jnp.split(x, 3, axis=-1)
    return r0 - r1 + r2

  def abs_linear(self, x):
    """The same map with absolute weights: ``r0 + r1 + r2``."""
    r0, r1, r2 = jnp.split(x, 3, axis=-1)
    return r0 + r1 + r2


def is_affine(op) -> bool:
  """Whether ``op`` is affine (``linear`` plus ``bias``): every operation but ``ReLU`` and
  ``MaxPool``."""
  return isinstance(op, _Affine)


@struct.dataclass
class Network:
  """A network as its operations ``ops``, applied in turn to a batch ``[N, *input_shape]``;
  ``input_shape`` is one example's shape."""
  ops: tuple
  input_shape: tuple = struct.field(pytree_node=False)   # one example's shape

  def __call__(self, x):
    for op in self.ops:
      x = op(x)
    return x

  @property
  def num_outputs(self) -> int:
    """The number of outputs (logits) per example."""
    return self.shapes()[-1][0]

  def shapes(self) -> list[tuple[int, ...]]:
    """The shape of one example before each op, and the output's last."""
    out, shape = [], tuple(self.input_shape)
    for op in self.ops:
      out.append(shape)
      shape = jax.eval_shape(op, jax.ShapeDtypeStruct((1, *shape), jnp.float32)).shape[1:]
    return out + [shape]


def lowered(net: Network) -> Network:
  """``net`` with every ``MaxPool`` rewritten exactly into affine maps and ReLUs (width pairs,
  then height pairs), so linear relaxations cover it."""
  ops = []
  for op in net.ops:
    if isinstance(op, MaxPool):
      ops += [PairLift(axis=2), ReLU(), PairSum(), PairLift(axis=1), ReLU(), PairSum()]
    else:
      ops.append(op)
  return Network(tuple(ops), net.input_shape)


def build(source, input_shape: Sequence[int], layout: str = "flax") -> Network:
  """The one entry point: a registry ``MLP``/``CNN`` (an NNX module), a ``Network`` as is, or a
  list of layer dicts in ``layout`` (see the module's table)."""
  if isinstance(source, Network):
    return source
  if isinstance(source, nnx.Module):
    return from_model(source, input_shape)
  if isinstance(source, (list, tuple)) and all(isinstance(l, Mapping) for l in source):
    return from_layers(source, input_shape, layout)
  raise ConfigError(f"{type(source).__name__}: not a network; valid: a registry MLP or CNN, or "
                    f"a list of layer dicts with types {', '.join(LAYERS)}")


# --- from the registry's models ------------------------------------------------------------


def _dense(layer: nnx.Linear, scale: float = 1.0) -> Dense:
  return Dense(layer.kernel[...] / scale, layer.bias[...])


def from_model(model: nnx.Module, input_shape: Sequence[int]) -> Network:
  """The registry's ``MLP`` or ``CNN`` as a ``Network`` (its parameters, traceable)."""
  if isinstance(model, MLP):
    ops: list = [Flatten()]
    scale = model.input_scale   # folded into the first weights: h / s @ W = h @ (W / s)
    for layer in model.layers:
      ops += [_dense(layer, scale), ReLU()]
      scale = 1.0
    return Network(tuple(ops) + (_dense(model.head, scale),), tuple(input_shape))
  if isinstance(model, CNN):
    ops = []
    for conv, pool in zip(model.convs, model.pool):
      ops += [Conv(conv.kernel[...], conv.bias[...], _pair(conv.strides, "strides", "conv"),
                   conv.padding), ReLU()]
      if pool:
        ops.append(MaxPool())
    ops += [Flatten(), _dense(model.dense), ReLU()]
    return Network(tuple(ops) + (_dense(model.head),), tuple(input_shape))
  raise ConfigError(
      f"model {type(model).__name__}: not supported by the verifier; supported: the registry's "
      f"MLP and CNN, or plain layers of types {', '.join(LAYERS)} (verify.network.from_layers)")


# --- from plain weight arrays ---------------------------------------------------------------


def _pair(value, key: str, where: str) -> tuple[int, int]:
  if isinstance(value, (int, np.integer)):
    return int(value), int(value)
  if isinstance(value, (tuple, list)) and len(value) == 2:
    return int(value[0]), int(value[1])
  raise ConfigError(f"{where}: {key}={value!r}: must be an int or a pair of ints")


def _padding(value, where: str):
  if isinstance(value, str):
    if value.upper() not in ("SAME", "VALID"):
      raise ConfigError(f"{where}: padding={value!r}: valid: SAME, VALID, an int or a pair")
    return value.upper()
  ph, pw = _pair(value, "padding", where)
  return ((ph, ph), (pw, pw))


def _array(layer: Mapping, key: str, where: str) -> np.ndarray:
  if key not in layer:
    raise ConfigError(f"{where}: missing {key!r}")
  return np.asarray(layer[key], np.float32)


def from_layers(layers: Sequence[Mapping], input_shape: Sequence[int],
                layout: str = "flax") -> Network:
  """A ``Network`` from plain arrays (see the module's table); a shape that does not fit the
  layout, or an unknown layer type, is a one-line ``ConfigError``."""
  if layout not in LAYOUTS:
    raise ConfigError(f"layout={layout!r}: unknown; valid: {', '.join(LAYOUTS)}")
  torch = layout == "torch"
  ops, shape = [], tuple(int(d) for d in input_shape)
  for i, layer in enumerate(layers):
    kind = layer.get("type")
    where = f"layers[{i}] ({kind})"
    if kind == "dense":
      w, b = _array(layer, "weight", where), _array(layer, "bias", where)
      size = math.prod(shape)
      expect = "[out, in]" if torch else "[in, out]"
      fits = w.ndim == 2 and w.shape[1 if torch else 0] == size and len(shape) == 1
      if not fits or b.shape != (w.shape[0 if torch else 1],):
        raise ConfigError(
            f"{where}: weight {w.shape} and bias {b.shape} do not fit layout {layout!r} "
            f"(weight {expect} with in = {size} for input {shape}{', flatten first' if len(shape) > 1 else ''})")
      op = Dense(jnp.asarray(w.T if torch else w), jnp.asarray(b))
    elif kind == "conv":
      w, b = _array(layer, "weight", where), _array(layer, "bias", where)
      if torch and w.ndim == 4:
        w = w.transpose(2, 3, 1, 0)
      expect = "[out, in, kh, kw]" if torch else "[kh, kw, in, out]"
      if len(shape) != 3 or w.ndim != 4 or w.shape[2] != shape[2] or b.shape != (w.shape[3],):
        raise ConfigError(f"{where}: weight {np.shape(layer['weight'])} and bias {b.shape} do "
                          f"not fit layout {layout!r} (weight {expect} for input [H, W, C] = "
                          f"{list(shape)})")
      op = Conv(jnp.asarray(w), jnp.asarray(b), _pair(layer.get("stride", 1), "stride", where),
                _padding(layer.get("padding", 0), where))
    elif kind == "flatten":
      op = Flatten(channels_first=torch)
    elif kind == "relu":
      op = ReLU()
    elif kind == "avg_pool":
      window = _pair(layer.get("window", 2), "window", where)
      op = AvgPool(window, _pair(layer.get("stride", window), "stride", where))
    elif kind == "max_pool":
      if _pair(layer.get("window", 2), "window", where) != (2, 2) or \
          _pair(layer.get("stride", 2), "stride", where) != (2, 2):
        raise ConfigError(f"{where}: only 2x2 windows with stride 2 are supported")
      op = MaxPool()
    else:
      raise ConfigError(f"{where}: unsupported layer type {kind!r}; supported: {', '.join(LAYERS)}")
    if kind in ("conv", "avg_pool", "max_pool") and len(shape) != 3:
      raise ConfigError(f"{where}: needs an image [H, W, C] input, got {list(shape)}")
    ops.append(op)
    try:
      shape = jax.eval_shape(op, jax.ShapeDtypeStruct((1, *shape), jnp.float32)).shape[1:]
    except (TypeError, ValueError) as e:
      raise ConfigError(f"{where}: does not apply to input {list(shape)}: {e}") from None
  return Network(tuple(ops), tuple(int(d) for d in input_shape))
