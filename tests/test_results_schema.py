"""One schema for results.json: every kind's smoke run (the session's shared one, ``smoke``)
writes estimates as {mean, lo, hi, n}, its wall time as wall_time_s, and its plots; the checker
itself is shown to catch each departure."""

import pytest

from conftest import SMOKE
from superalign.results.estimates import schema_violations
from superalign.launch import runners


def test_every_kind_has_a_smoke_config():
  assert set(SMOKE) == set(runners.RUNNERS)


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
@pytest.mark.parametrize("kind", [pytest.param(k, marks=pytest.mark.xdist_group(f"smoke-{k}"))
                                  for k in sorted(SMOKE)])   # each beside its kind's other readers
def test_smoke_results_follow_the_schema(kind, smoke):
  results, workdir = smoke(kind)
  assert schema_violations(results) == []
  assert results["plots"] and all((workdir / p).is_file() for p in results["plots"])
  assert isinstance(results["summary"], str) and results["summary"]
