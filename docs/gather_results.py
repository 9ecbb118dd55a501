"""Gathers the results of documented commands for the published-figures page.

    python docs/gather_results.py experiments/w2s/digits.py=runs/w2s-digits [CONFIG=WORKDIR ...]

For each pair, checks that the workdir's ``config.json`` is the config file's default (so the
page's command, ``superalign --config=CONFIG``, is what made the results), then writes
``docs/results/<kind folder>-<config name>.json``: ``{"command", "kind", "results"}``. The docs
build turns these into the published-figures page; nothing there is typed by hand. What the
page does not read is left out (long lists such as curves, then each top-level key whose removal
leaves the published comparisons unchanged), so the gathered files stay small.
"""

from __future__ import annotations

import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results"


def default_config(config_path: pathlib.Path) -> dict:
  """The config file's ``get_config()`` as plain JSON values."""
  from superalign.launch.flags import config_from_file
  return json.loads(json.dumps(config_from_file(config_path).to_dict(), default=str))


LONG = 32   # a list with more items is a curve or a per-example array, not a reported figure


def pruned(value):
  """``value`` without its long lists, at any depth."""
  if isinstance(value, dict):
    return {k: pruned(v) for k, v in value.items()
            if not (isinstance(v, list) and len(v) > LONG)}
  if isinstance(value, list):
    return [pruned(v) for v in value]
  return value


def smallest(kind: str, results: dict) -> dict:
  """The results with what the published comparisons do not read left out: long lists, then
  each top-level key in turn, each kept out only if the comparisons stay the same."""
  from superalign.launch.runners import published_comparisons

  def same(candidate):
    try:
      return published_comparisons(kind, candidate) == rows
    except (KeyError, IndexError, TypeError, ValueError):
      return False

  rows = published_comparisons(kind, results)
  small = pruned(results)
  small = small if same(small) else dict(results)
  for key in list(small):
    candidate = {k: v for k, v in small.items() if k != key}
    if same(candidate):
      small = candidate
  return small


def gather(config: str, workdir: str) -> pathlib.Path:
  """Writes one gathered run; raises SystemExit with one line for a mismatch or missing file."""
  config_path, work = ROOT / config, pathlib.Path(workdir)
  for path in (config_path, work / "config.json", work / "results.json"):
    if not path.is_file():
      raise SystemExit(f"gather_results: {path} does not exist")
  from superalign.results.files import load_json
  written = load_json(work / "config.json")
  expected = default_config(config_path)
  differ = sorted(k for k in set(written) | set(expected) if written.get(k) != expected.get(k))
  if differ:
    raise SystemExit(f"gather_results: {work} was not run with {config}'s defaults "
                     f"(keys {', '.join(differ)} differ); rerun it without overrides")
  rel = pathlib.Path(config).relative_to("experiments").with_suffix("")
  out = OUT / f"{'-'.join(rel.parts)}.json"
  OUT.mkdir(exist_ok=True)
  results = smallest(written["kind"], load_json(work / "results.json"))
  out.write_text(json.dumps({"command": f"superalign --config={config}", "kind": written["kind"],
                             "results": results}, separators=(",", ":")) + "\n")
  return out


def main(argv: list[str]) -> None:
  if not argv or any("=" not in a for a in argv):
    raise SystemExit("usage: python docs/gather_results.py CONFIG=WORKDIR [CONFIG=WORKDIR ...]")
  for pair in argv:
    print(gather(*pair.split("=", 1)))


if __name__ == "__main__":
  main(sys.argv[1:])
