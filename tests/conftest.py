"""Test set-up: 8 fake CPU devices, set before JAX first touches a device."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import gzip  # noqa: E402
import pathlib  # noqa: E402

import numpy as np  # noqa: E402

import pytest  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def root() -> pathlib.Path:
  return ROOT

import tempfile  # noqa: E402

import jax  # noqa: E402

# Identical programs (the same model built in many tests) compile once per session.
jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp(prefix="superalign-jax-cache-"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
# As the launcher does on CPU: random initializers compile 2-3x faster.
jax.config.update("jax_threefry_partitionable", False)


def write_idx(directory, n_train=120, n_test=40, size=28):
  """A tiny MNIST-format directory: class = which quadrant is bright."""
  os.makedirs(directory, exist_ok=True)
  rng = np.random.default_rng(0)
  for prefix, n in (("train", n_train), ("t10k", n_test)):
    labels = rng.integers(0, 4, n).astype(np.uint8)
    images = rng.integers(0, 60, (n, size, size)).astype(np.uint8)
    half = size // 2
    for i, label in enumerate(labels):
      r, c = divmod(int(label), 2)
      images[i, r * half:(r + 1) * half, c * half:(c + 1) * half] += 150
    with gzip.open(os.path.join(directory, f"{prefix}-images-idx3-ubyte.gz"), "wb") as f:
      f.write(bytes([0, 0, 8, 3]) + np.array([n, size, size], ">u4").tobytes() + images.tobytes())
    with gzip.open(os.path.join(directory, f"{prefix}-labels-idx1-ubyte.gz"), "wb") as f:
      f.write(bytes([0, 0, 8, 1]) + np.array([n], ">u4").tobytes() + labels.tobytes())
  return directory
