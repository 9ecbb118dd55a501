"""The Colab tutorials in ``notebooks/``: kept reviewable (outputs stripped, checked here on every
run) and executed top to bottom by ``pytest -m notebook`` (``.ci/run`` does), each on one CPU
device as on a Colab CPU runtime, its time printed at the end of the session."""

import os
import re
import time

import pytest

from conftest import ROOT, SAFETY_S, docs_module

docsite = docs_module("_ext/docsite.py")

NOTEBOOKS = ROOT / "notebooks"
EXECUTED = docsite.EXECUTED
# One tutorial per room (DESIGN.md), and the language-model analyses of the interp room: a later
# room adds its notebook here with itself.
ROOMS = ("00_tour", "01_weak_to_strong", "02_debate", "03_amplification", "04_sandwiching",
         "05_interpretability", "06_process_supervision", "07_verification", "08_control",
         "09_hugging_face_gpt2", "10_language_model_interpretability")
COLAB = "https://colab.research.google.com/github/superalign/superalign/blob/main/notebooks/"


def _read(name):
  import nbformat
  return nbformat.read(str(NOTEBOOKS / f"{name}.ipynb"), as_version=4)


def test_every_room_has_a_notebook_and_nothing_else_is_there():
  assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(ROOMS)


@pytest.mark.parametrize("name", ROOMS)
def test_notebook_is_stripped_and_opens_in_colab(name):
  import nbformat
  nb = _read(name)
  nbformat.validate(nb)
  for cell in nb.cells:
    if cell.cell_type == "code":
      assert cell.outputs == [] and cell.execution_count is None, f"{name}: strip the outputs"
    assert not cell.metadata, f"{name}: cell metadata (widgets, collapsed state) is noise"
  first, install = nb.cells[0], nb.cells[1]
  assert first.cell_type == "markdown" and f"({COLAB}{name}.ipynb)" in first.source
  assert install.cell_type == "code" and "pip" in install.source
  assert 'find_spec("superalign") is None' in install.source  # a no-op where it is installed
  # Every config a notebook names exists, so a renamed experiment cannot orphan a tutorial.
  source = "\n".join(c.source for c in nb.cells)
  for module in re.findall(r"from experiments\.(\w+) import (\w+)", source):
    assert (ROOT / "experiments" / module[0] / f"{module[1]}.py").exists(), module


@pytest.mark.notebook
@pytest.mark.e2e
@pytest.mark.parametrize("name", ROOMS)
def test_notebook_runs_top_to_bottom(name, tmp_path, monkeypatch, record_property):
  import nbformat
  from nbclient import NotebookClient
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")  # as on Colab
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.delenv("MPLBACKEND", raising=False)   # the kernel's inline backend shows plots
  monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
  nb = _read(name)
  t0 = time.time()
  NotebookClient(nb, timeout=SAFETY_S, kernel_name="python3",
                 resources={"metadata": {"path": str(tmp_path)}}).execute()
  record_property("notebook_seconds", round(time.time() - t0, 1))
  images = sum(1 for c in nb.cells if c.cell_type == "code" for o in c.outputs
               if "image/png" in o.get("data", {}))
  assert images, f"{name}: shows no plot"
  # The docs render this executed copy instead of executing the notebook again
  # (docs/_ext/docsite.py checks that its cells are still the notebook's).
  EXECUTED.mkdir(parents=True, exist_ok=True)
  partial = EXECUTED / f".{name}.ipynb.partial"
  nbformat.write(nbformat.from_dict(docsite.mark_executed(nb)), str(partial))
  os.replace(partial, EXECUTED / f"{name}.ipynb")
