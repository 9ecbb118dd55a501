"""Every experiment config file loads, and validates, in its default and its smoke variant; reading
a config imports no JAX; the defaults that configs keep as plain data agree with the code."""

import importlib.util
import pathlib
import re
import subprocess
import sys

import pytest

from conftest import SAFETY_S, launch, write_gpt2_ladder, write_idx
from superalign import config as config_lib
from superalign.core.spec import MeshSpec
from superalign.launch import runners, validation

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "experiments").rglob("*.py")
                 if p.name != "__init__.py")


def load(rel: str):
  spec = importlib.util.spec_from_file_location(rel.replace("/", ".")[:-3], ROOT / rel)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory):
  return write_idx(str(tmp_path_factory.mktemp("idx")))


@pytest.fixture(scope="module")
def gpt2_ladder(tmp_path_factory):
  return write_gpt2_ladder(tmp_path_factory.mktemp("gpt2"))


@pytest.mark.parametrize("variant", ["", "smoke"])
@pytest.mark.parametrize("rel", CONFIGS)
def test_config_loads_and_validates(rel, variant, idx_dir, gpt2_ladder):
  module = load(rel)
  takes_dir = re.search(r"parse_arg\([^)]*\bdir=", (ROOT / rel).read_text())
  takes_dirs = re.search(r"parse_arg\([^)]*\bdirs=", (ROOT / rel).read_text(), re.S)
  arg = ",".join(filter(None, [variant, f"dir={idx_dir}" if takes_dir else "",
                               "dirs={},data={}".format(*gpt2_ladder) if takes_dirs else ""]))
  config = module.get_config(arg or None)
  runners.validate(config, num_devices=1)
  assert config.lock() is config   # a whole ConfigDict, as the launcher locks it


@pytest.mark.parametrize("task", ["all", "permutation", "assignments", "wildcard",
                                  "shortest_path", "union_find"])
def test_amplification_picks_a_task_by_argument(task):
  config = load("experiments/amplification/tasks.py").get_config(f"smoke,task={task}")
  runners.validate(config, num_devices=1)
  assert len(config.amplification.tasks) == (5 if task == "all" else 1)
  with pytest.raises(config_lib.ConfigError, match="task='nope': valid: all, permutation"):
    load("experiments/amplification/tasks.py").get_config("task=nope")


def test_reading_every_config_imports_no_jax():
  code = ("import importlib.util, sys\n"
          f"for rel in {CONFIGS!r}:\n"
          "  spec = importlib.util.spec_from_file_location('c', rel)\n"
          "  m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
          "  m.get_config(); m.get_config('smoke')\n"
          "  heavy = sorted(k for k in sys.modules if k.split('.')[0] in ('jax', 'flax', 'optax'))\n"
          "  assert not heavy, (rel, heavy[:3])\n"
          "print('ok')\n")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=SAFETY_S)
  assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_defaults_kept_as_data_agree_with_the_code():
  from superalign.amplification import config as amplification_config, tasks
  from superalign.core import mesh
  from superalign.w2s import config as w2s_config, losses
  assert dict(MeshSpec.from_config(config_lib.base().mesh).rules) == dict(mesh.LOGICAL_RULES)
  assert tuple(w2s_config.ALL_LOSSES) == tuple(losses.LOSSES)
  assert tuple(amplification_config.TASK_DEFAULTS) == tuple(tasks.TASKS)
  from superalign.parties import organisms
  assert config_lib.TRIGGER_CORNERS == organisms.CORNERS


@pytest.mark.parametrize("value, expected", [("true", True), ("1", True), ("yes", True),
                                             ("false", False), ("0", False), ("no", False)])
def test_boolean_arguments_take_only_booleans(value, expected):
  """Issue 14.14: ``:smoke=maybe`` used to mean False and run the full job."""
  assert config_lib.parse_arg(f"smoke={value}", smoke=False).smoke is expected
  with pytest.raises(config_lib.ConfigError, match="smoke='maybe': expected a boolean, one of"):
    config_lib.parse_arg("smoke=maybe", smoke=False)


def test_a_config_setting_model_dtype_is_told_it_is_now_model_compute_dtype(tmp_path, monkeypatch,
                                                                            capsys):
  """Issue 34: ``model.dtype`` became ``model.compute_dtype`` (beside ``model.param_dtype``); a
  config file or an override still setting it gets one line saying so."""
  config = load("experiments/supervised/digits.py").get_config("smoke")
  config.model.dtype = "bfloat16"
  with pytest.raises(config_lib.ConfigError,
                     match=r"^model\.dtype: no such key; it is now model\.compute_dtype \("):
    runners.validate(config, num_devices=1)
  old = tmp_path / "old.py"
  old.write_text("import importlib\n\ndef get_config(arg=None):\n"
                 "  c = importlib.import_module('experiments.supervised.digits').get_config('smoke')\n"
                 "  c.model.dtype = 'bfloat16'\n  return c\n")
  for args in ([f"--config={old}"],
               ["--config=experiments/supervised/digits.py:smoke", "--config.model.dtype=bfloat16"]):
    out = launch(monkeypatch, capsys, *args, "--dry_run")
    lines = [l for l in out.stderr.splitlines() if l.startswith("superalign: error:")]
    assert out.returncode == 2 and len(lines) == 1, out.stderr[-2000:]
    assert "model.dtype: no such key; it is now model.compute_dtype" in lines[0], lines


def test_a_dtype_the_backend_cannot_compute_is_one_line_naming_key_dtype_and_backend(monkeypatch):
  import types
  import jax
  import jax.numpy as jnp
  backend = jax.default_backend()
  assert all(validation._probe(name, backend) is None for name in ("float32", "bfloat16",
                                                                   "float16"))

  def matmul(a, b):   # a backend without bfloat16 arithmetic
    if a.dtype == jnp.bfloat16:
      raise NotImplementedError("UNIMPLEMENTED: no bfloat16 dot here\nthe rest of its report")
    return jnp.matmul(a, b)

  monkeypatch.setattr(validation, "jnp", types.SimpleNamespace(ones=jnp.ones, matmul=matmul))
  validation._probe.cache_clear()
  try:
    for key in ("compute_dtype", "param_dtype"):
      config = load("experiments/supervised/digits.py").get_config("smoke")
      runners.validate(config, num_devices=1)
      config.model[key] = "bfloat16"
      with pytest.raises(config_lib.ConfigError) as e:
        runners.validate(config, num_devices=1)
      assert str(e.value) == (
          f"model.{key}='bfloat16': the {backend} backend cannot compute bfloat16 (UNIMPLEMENTED: "
          "no bfloat16 dot here); choose another of float32, bfloat16, float16")
  finally:
    validation._probe.cache_clear()
