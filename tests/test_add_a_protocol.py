"""The "Add a protocol" guide's example (docs/contributing/add_a_protocol.md), run as written: a
folder with a run.py, a config, and one registry line make a protocol that validates, trains through the core and writes results."""

import importlib
import json
import pathlib
import re
import sys

import pytest

from superalign.launch import runners
from superalign.core.errors import ConfigError
from superalign.results.estimates import schema_violations

ROOT = pathlib.Path(__file__).resolve().parents[1]


def readme_block(name: str) -> str:
  text = (ROOT / "docs" / "contributing" / "add_a_protocol.md").read_text()
  match = re.search(rf"<!-- add-a-protocol: {re.escape(name)} -->\n```python\n(.*?)```", text,
                    re.S)
  assert match, f"docs/contributing/add_a_protocol.md has no add-a-protocol block {name!r}"
  return match.group(1)


@pytest.mark.e2e
def test_the_readme_example_protocol_runs(tmp_path, monkeypatch):
  package = tmp_path / "label_noise"
  package.mkdir()
  (package / "__init__.py").write_text("")
  (package / "run.py").write_text(readme_block("run.py"))
  (tmp_path / "label_noise_config.py").write_text(readme_block("config"))
  monkeypatch.syspath_prepend(str(tmp_path))
  monkeypatch.setitem(runners.RUNNERS, "label_noise", "label_noise.run")  # the one line
  config = importlib.import_module("label_noise_config").get_config("smoke")
  config.mesh.num_devices = 1
  runners.validate(config)
  results = runners.execute(config, str(tmp_path / "run"))
  saved = json.loads((tmp_path / "run" / "results.json").read_text())
  assert saved["summary"].startswith("test accuracy: clean labels")
  assert 0.1 < saved["lie_rate"] < 0.5 and saved["clean"]["n"] == saved["noisy"]["n"] == 359
  assert saved["clean"]["mean"] > 0.5          # 30 steps on digits; chance is 0.1
  assert schema_violations(saved) == [] and results["wall_time_s"] == saved["wall_time_s"]
  assert (tmp_path / "run" / "checkpoints" / "noisy" / "30").is_dir()

  config.noise.fraction = 1.5
  with pytest.raises(ConfigError, match=r"noise.fraction=1.5: must be in \[0, 1\)"):
    runners.validate(config)
  sys.modules.pop("label_noise_config", None)
