"""Issue 32: what a non-editable install holds. Notebook 08 could not run after its own install
cell: ``experiments/control/`` had no ``__init__.py``, so the wheel left it out, and the notebook
test hid that (its ``PYTHONPATH`` is the checkout). Here the wheel is built from the packages
``setup.cfg`` names, installed with ``pip install --target`` (this environment's dependencies,
not a fresh copy of them), and notebook 08 runs from that folder alone, outside the checkout."""

import configparser
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, SAFETY_S

# In the notebook run (`pytest -m notebook`, as .ci/run does): it builds a wheel and runs notebook 08.
pytestmark = [pytest.mark.notebook, pytest.mark.xdist_group("packaging")]  # one wheel build
NOT_PACKAGED = ("BUILD", "*.bzl", "__pycache__", "*.pyc")  # Bazel's files and Python's caches


def _packages() -> list[str]:
  """The top-level packages of ``[options.packages.find] include`` (``superalign*`` ...)."""
  cfg = configparser.ConfigParser()
  cfg.read(ROOT / "setup.cfg")
  return sorted({p.strip().rstrip("*").split(".")[0]
                 for p in cfg["options.packages.find"]["include"].split() if p.strip()})


def _files(root, packages) -> set[str]:
  ignore = shutil.ignore_patterns(*NOT_PACKAGED)
  out = set()
  for package in packages:
    for folder, dirs, names in os.walk(root / package):
      dirs[:] = sorted(set(dirs) - ignore(folder, dirs))
      kept = set(names) - ignore(folder, names)
      out |= {os.path.relpath(os.path.join(folder, n), root) for n in kept}
  return out


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
  """``(folder, packages)``: the wheel of a copy of the checkout (a build in place would leave
  ``build/`` and ``*.egg-info`` in it), installed into ``folder``."""
  tmp = tmp_path_factory.mktemp("packaging")
  src, site = tmp / "src", tmp / "site"
  packages = _packages()
  src.mkdir()
  for name in ("setup.cfg", "pyproject.toml", "README.md", "MANIFEST.in"):
    if (ROOT / name).exists():
      shutil.copy(ROOT / name, src / name)
  for package in packages:
    shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns(*NOT_PACKAGED))
  pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
  # No build isolation and no dependencies: nothing is downloaded.
  subprocess.run([*pip[:3], "wheel", *pip[3:], "--no-deps", "--no-build-isolation", "-w",
                  str(tmp / "dist"), str(src)], check=True, timeout=SAFETY_S)
  wheel, = (tmp / "dist").glob("superalign-*.whl")
  subprocess.run([*pip[:3], "install", *pip[3:], "--no-deps", "--target", str(site), str(wheel)],
                 check=True, timeout=SAFETY_S)
  return site, packages


def test_the_wheel_holds_every_file_of_its_packages(installed):
  """Every module and data file under the packages (a folder without ``__init__.py`` is left out
  whole; a data file needs package data)."""
  site, packages = installed
  assert "experiments" in packages and "superalign" in packages
  missing = sorted(_files(ROOT, packages) - _files(site, packages))
  assert not missing, f"left out of the wheel: {missing[:20]}"


# The checkout's editable install is a meta-path finder after the path finder: a module the wheel
# left out under experiments.* or superalign.* would come from the checkout instead, hiding the
# gap. Without it, and with no checkout on the path, the install is all there is.
PRELUDE = """\
import os, sys
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != {root!r}]
"""
CHECK = """
import superalign, experiments.control.digits
for module in (superalign, experiments.control.digits):
  assert module.__file__.startswith({site!r}), module.__file__
"""


def test_notebook_08_runs_from_a_non_editable_install(installed, tmp_path):
  """Its code cells, top to bottom, at the smoke config's size (its lines that grow the config
  are dropped: the whole notebook is a minute of training)."""
  nbformat = pytest.importorskip("nbformat")
  site, _ = installed
  nb = nbformat.read(str(ROOT / "notebooks" / "08_control.ipynb"), as_version=4)
  code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
  assert 'find_spec("superalign") is None' in code  # its install cell is then a no-op
  smoke = re.sub(r"(?m)^config\.[\w.]+ = .*$", "pass", code)
  script = tmp_path / "notebook.py"
  script.write_text(PRELUDE.format(root=str(ROOT)) + smoke + CHECK.format(site=str(site)))
  env = {**os.environ, "PYTHONPATH": str(site), "JAX_PLATFORMS": "cpu", "MPLBACKEND": "Agg",
         "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
  out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=SAFETY_S)
  assert out.returncode == 0, out.stderr[-3000:]
  assert (tmp_path / "runs" / "control" / "plots" / "safety_vs_budget.png").exists()
