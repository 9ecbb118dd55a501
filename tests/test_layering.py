"""The arrows of the house plan (DESIGN.md in the project's shared folder), read from the imports
of every module.

core imports nothing first-party but core; models and data import core; a protocol room imports
core, models, data, the base protocol (supervised) and the library modules of the rooms it builds
on, never another room's runner nor the launcher; no framework module, config or benchmark
imports the launcher (the tests drive it). The last test
plants each kind of bad import in a small tree and shows the check names the arrow it breaks.
"""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
ENGINE = ("core", "models", "data")
MAY_IMPORT = {"core": {"core"}, "models": {"core", "models"}, "data": {"core", "data"}}
BASE = "supervised"                          # the base protocol every protocol may train through
# Sandwiching builds on debate, and on interp's model organisms (its trained liar).
BUILDS_ON = {"sandwich": {"oversight", "interp"}, "verify": {"oversight", "interp"},
             "control": {"interp", "process", "verify"}}
LAUNCHER = ("superalign.main", "superalign.runners", "superalign.flag_errors")


def imports(path: pathlib.Path, module: str) -> list[tuple[int, str]]:
  """``(line, module)`` for every first-party module a file imports (relative ones resolved;
  ``from pkg import name`` counts ``pkg.name``, which is a module or an attribute of ``pkg``)."""
  package = module.split(".")[:-1] if path.name != "__init__.py" else module.split(".")
  out = []
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      out += [(node.lineno, a.name) for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
      out += [(node.lineno, f"{base}.{a.name}") for a in node.names]
  return [(line, name) for line, name in out if name.split(".")[0] in ("superalign", "experiments")]


def room(module: str) -> str | None:
  """``superalign.<room>.…`` -> room; top-level modules (config, runners, main) have none."""
  parts = module.split(".")
  return parts[1] if parts[0] == "superalign" and len(parts) > 2 else None


def violations(root: pathlib.Path) -> list[str]:
  out = []
  for path in sorted(root.rglob("*.py")):
    rel = path.relative_to(root)
    if rel.parts[0] not in ("superalign", "experiments", "benchmarks", "tests"):
      continue
    module = ".".join(rel.with_suffix("").parts)
    here = room(module)
    for line, target in imports(path, module):
      where = f"{rel}:{line} imports {target}"
      if rel.parts[0] == "tests":
        continue  # tests may drive anything, the launcher included
      if target.startswith("superalign.main"):
        out.append(f"{where}: nothing imports the launcher (run it as `superalign` or -m)")
        continue
      if rel.parts[0] != "superalign" or here is None:
        continue  # configs and benchmarks may use any library module
      there = room(target)
      if here in ENGINE:
        if target.startswith("superalign.") and there not in MAY_IMPORT[here]:
          out.append(f"{where}: {here} -> {there or target} (the {here} room imports only "
                     f"{', '.join(sorted(MAY_IMPORT[here]))})")
      elif target.startswith(LAUNCHER):
        out.append(f"{where}: {here} -> launcher (protocols do not import the launcher)")
      elif there not in (None, here, *ENGINE):
        if target.endswith(".run") or ".run." in target:
          out.append(f"{where}: {here} -> {there}'s runner (share a library module instead)")
        elif there != BASE and there not in BUILDS_ON.get(here, ()):
          out.append(f"{where}: {here} -> {there} ({here} builds on "
                     f"{', '.join(sorted({BASE, *BUILDS_ON.get(here, ())}))})")
  return out


def test_the_tree_respects_the_arrows():
  assert violations(ROOT) == []


def test_each_arrow_fails_on_a_planted_import(tmp_path):
  planted = {
      "superalign/core/loop.py": "from superalign.w2s import losses\n",
      "superalign/models/mlp.py": "import superalign.data.splits\n",
      "superalign/w2s/run.py": "from superalign.oversight.run import cached\n",
      "superalign/amplification/run.py": "from superalign.w2s.misfit.run import plot\n",
      "superalign/w2s/report.py": "from ..sandwich import metrics\n",
      "superalign/oversight/game.py": "from superalign import runners\n",
      "experiments/w2s/digits.py": "from superalign import main\n",
      "superalign/sandwich/run.py": "from superalign.oversight import judge\n",  # allowed
  }
  for rel, source in planted.items():
    (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / rel).write_text(source)
  found = violations(tmp_path)
  for arrow in ("core -> w2s", "models -> data", "w2s -> oversight's runner", "w2s -> sandwich",
                "amplification -> w2s's runner", "oversight -> launcher",
                "nothing imports the launcher"):
    assert sum(arrow in v for v in found) == 1, (arrow, found)
  assert len(found) == 7 and not any("sandwich/run.py" in v for v in found)
