"""Test set-up: 8 fake CPU devices, set before JAX first touches a device."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pathlib  # noqa: E402

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
