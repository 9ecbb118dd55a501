"""Every experiment config file loads, and validates, in its default and its smoke variant; reading
a config imports no JAX; the defaults that configs keep as plain data agree with the code."""

import importlib.util
import pathlib
import re
import subprocess
import sys

import pytest

from conftest import SAFETY_S, write_gpt2_ladder, write_idx
from superalign import config as config_lib
from superalign.core.spec import MeshSpec
from superalign.launch import runners

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
