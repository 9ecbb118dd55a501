"""The Bazel BUILD files, checked without Bazel (which cannot run on these machines).

Starlark is Python syntax: each BUILD file, and the .bzl files it loads, runs with stubs that
record its targets, ``glob()`` evaluated on the file tree as Bazel does (not descending into a
subfolder with a BUILD file of its own). Checks, each shown to fail on a synthetic tree below:
  lock     third_party/requirements.txt pins every setup.cfg dependency at a version setup.cfg
           allows, and every ``requirement("x")`` names a locked package;
  imports  every import in a target's srcs is declared: a first-party module by the target
           covering its file (the same one, or one in deps), a third-party one by requirement()
           in deps; and every deps label is a target;
  covered  every .py under superalign/, experiments/ and benchmarks/ is in some target's srcs.
"""

from __future__ import annotations

import ast
import collections
import functools
import importlib.metadata
import importlib.util
import os
import pathlib
import re
import shutil
import sys
import types

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = pathlib.Path(__file__).resolve().parents[1]
LOCK = "third_party/requirements.txt"
FIRST_PARTY = ("superalign", "experiments", "benchmarks")  # every .py in them must be covered
SKIP_DIRS = {"venv", ".venv", "build", "runs", "__pycache__"}
# Import names that importlib.metadata.packages_distributions() cannot map here (the package is
# not installed, or the name is ambiguous); any other unmapped name is taken as its own PyPI name.
IMPORT_NAMES = {"sklearn": "scikit-learn", "yaml": "PyYAML"}
BUILTINS = {f.__name__: f for f in (len, list, dict, sorted, str, range, enumerate, zip, any, all)}

# setup.cfg is read as third_party/lock_from_env.py reads it to write the lock.
_spec = importlib.util.spec_from_file_location("lock", REPO / "third_party" / "lock_from_env.py")
lock_from_env = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lock_from_env)


# A target: its BUILD file, srcs (paths from the root) and deps (labels as //pkg:name, @repo//x).
Rule = collections.namedtuple("Rule", "label build srcs deps")
# What the BUILD files declare: root, rules {label: Rule}, requirements [(name, BUILD file)].
Tree = types.SimpleNamespace


def _label(label: str, pkg: str) -> str:
  if label.startswith(("@", "//")):
    return label if label.startswith("@") or ":" in label else f"{label}:{label.rsplit('/')[-1]}"
  return f"//{pkg}:{label.lstrip(':')}"


def _file(label: str, pkg: str) -> str:
  p, name = label[2:].partition(":")[::2] if label.startswith("//") else (pkg, label)
  return f"{p}/{name}".lstrip("/")


def _glob(base: pathlib.Path, packages: set, include, exclude=(), **_) -> list[str]:
  """Bazel's glob(): files under base matching a pattern, not descending into other packages."""
  def matches(patterns, path):
    return any(re.fullmatch("".join("(?:[^/]+/)*" if s == "**" else re.escape(s).replace(
        r"\*", "[^/]*") + "/" for s in p.split("/")), path + "/") for p in patterns)

  out = []
  for d, dirs, files in os.walk(base):
    dirs[:] = [x for x in dirs if pathlib.Path(d) / x not in packages]
    out += [f for f in ((pathlib.Path(d) / f).relative_to(base).as_posix() for f in files)
            if matches(include, f) and not matches(exclude, f)]
  return sorted(out)


def _starlark(tree: Tree, pkg: str, build: str, packages: set) -> dict:
  """The names a BUILD file of pkg (or a .bzl file it loads) sees."""
  glob = functools.partial(_glob, tree.root / pkg, packages)

  def rule(name, srcs=(), deps=(), **_):
    label = f"//{pkg}:{name}"
    tree.rules[label] = Rule(label, build, [_file(s, pkg) for s in srcs],
                             [_label(d, pkg) for d in deps])

  def requirement(name):
    tree.requirements.append((name, build))
    return f"@pypi//{canonicalize_name(name)}"

  def load(bzl, *symbols):
    if bzl == "@pypi//:requirements.bzl":
      lib = {"requirement": requirement}
    elif bzl.startswith("@rules_python//"):
      lib = dict.fromkeys(("py_library", "py_binary", "py_test"), rule)
    else:
      lib = _starlark(tree, pkg, build, packages)
      exec(compile((tree.root / _file(bzl, "")).read_text(), bzl, "exec"), lib)  # noqa: S102
    ns.update({s: lib[s] for s in symbols})

  ns = {"__builtins__": BUILTINS, "load": load, "glob": glob, "package": lambda **_: None,
        "exports_files": lambda *a, **k: None, "filegroup": lambda **_: None,
        "native": types.SimpleNamespace(glob=glob, package_name=lambda: pkg)}
  return ns


def load_tree(root: pathlib.Path) -> Tree:
  builds = []
  for d, dirs, files in os.walk(root):
    dirs[:] = [x for x in dirs if x not in SKIP_DIRS and not x.startswith(".") and
               not x.endswith(".egg-info")]
    builds += [pathlib.Path(d) / "BUILD"] if "BUILD" in files else []
  tree, packages = Tree(root=root, rules={}, requirements=[]), {b.parent for b in builds}
  for build in sorted(builds):
    rel, pkg = build.relative_to(root).as_posix(), build.parent.relative_to(root).as_posix()
    ns = _starlark(tree, "" if pkg == "." else pkg, rel, packages)
    exec(compile(build.read_text(), rel, "exec"), ns)  # noqa: S102 - our own BUILD files
  return tree


def check_lock(tree: Tree) -> list[str]:
  pins, errors = {}, []
  for n, line in enumerate((tree.root / LOCK).read_text().splitlines(), 1):
    line = line.split("#")[0].strip()
    if line:
      name, sep, version = line.partition("==")
      pins[canonicalize_name(name)] = version.strip()
      errors += [] if sep else [f"{LOCK}:{n}: {line!r} is not pinned with =="]
  for group, lines in lock_from_env.direct_requirements(tree.root / "setup.cfg").items():
    for req in map(Requirement, lines):
      version = pins.get(canonicalize_name(req.name))
      if version is None:
        errors.append(f"setup.cfg ({group}) needs {req.name}, which {LOCK} does not pin")
      elif not req.specifier.contains(version, prereleases=True):
        errors.append(f"setup.cfg ({group}) needs {req}, but {LOCK} pins {req.name}=={version}")
  errors += [f"{build}: requirement({name!r}) is not pinned in {LOCK}"
             for name, build in tree.requirements if canonicalize_name(name) not in pins]
  return errors


def imports_of(path: pathlib.Path, rel: str) -> list[tuple[int, str, list[str]]]:
  """(line, absolute module, names) per import, less those under TYPE_CHECKING or ImportError."""
  tree = ast.parse(path.read_text(), filename=rel)
  skip = set()
  for node in ast.walk(tree):
    if ((isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)) or
        (isinstance(node, ast.Try) and any(h.type is None or re.search(
            r"ImportError|ModuleNotFoundError", ast.unparse(h.type)) for h in node.handlers))):
      skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
  out, package = [], rel.split("/")[:-1]
  for node in ast.walk(tree):
    if isinstance(node, ast.Import) and id(node) not in skip:
      out += [(node.lineno, a.name, []) for a in node.names]
    elif isinstance(node, ast.ImportFrom) and id(node) not in skip:
      base = package[:len(package) - node.level + 1] if node.level else []
      module = ".".join(base + ([node.module] if node.module else []))
      out.append((node.lineno, module, [a.name for a in node.names]))
  return out


def _module_file(bases: list[pathlib.Path], module: str, root: pathlib.Path) -> str | None:
  for base in bases:
    p = base.joinpath(*module.split("."))
    for f in (p.parent / f"{p.name}.py", p / "__init__.py"):
      if f.is_file():
        return f.relative_to(root).as_posix()
  return None


def check_imports(tree: Tree) -> list[str]:
  owners = collections.defaultdict(set)
  for rule in tree.rules.values():
    for f in rule.srcs:
      owners[f].add(rule.label)
  dists = importlib.metadata.packages_distributions()
  errors = []
  for rule in tree.rules.values():
    errors += [f"{rule.build} ({rule.label}): deps: {d} is not a target" for d in rule.deps
               if not d.startswith("@") and d not in tree.rules]
    pypi = {canonicalize_name(d.split("//")[1]) for d in rule.deps if d.startswith("@pypi//")}
    mine = set(rule.deps) | {rule.label}
    for f in rule.srcs:
      if not (path := tree.root / f).is_file():
        errors.append(f"{rule.build} ({rule.label}): srcs: {f} does not exist")
        continue
      # A file outside any package (a test) has its own folder on sys.path.
      bases = [tree.root] + ([] if (path.parent / "__init__.py").is_file() else [path.parent])
      for line, module, names in imports_of(path, f):
        top, where = module.split(".")[0], f"{f}:{line} ({rule.label})"
        if top in sys.stdlib_module_names or top == "__future__":
          continue
        needed = _module_file(bases, module, tree.root)
        if needed is None and top in FIRST_PARTY:
          errors.append(f"{where}: imports {module}, which is no file in this repository")
        elif needed is not None:
          # `from pkg import sub` needs pkg/sub.py; pkg/__init__.py only for a name defined there.
          subs = {f"{module}.{n}": _module_file(bases, f"{module}.{n}", tree.root) for n in names}
          if not subs or not all(subs.values()):
            subs[module] = needed
          for n, target in subs.items():
            if target and not owners[target] & mine:
              errors.append(f"{where}: imports {n}; add one of {sorted(owners[target])} "
                            f"to the deps of {rule.label} in {rule.build}")
        else:
          names_ = [IMPORT_NAMES[top]] if top in IMPORT_NAMES else dists.get(top, [top])
          if not {canonicalize_name(d) for d in names_} & pypi:
            errors.append(f"{where}: imports {module}; add requirement(\"{names_[0]}\") to the "
                          f"deps of {rule.label} in {rule.build}")
  return sorted(set(errors))


def check_covered(tree: Tree) -> list[str]:
  covered = {f for rule in tree.rules.values() for f in rule.srcs}
  return [f"{f} is in no target's srcs (a subfolder with a BUILD file needs a target of its own)"
          for d in FIRST_PARTY for p in sorted((tree.root / d).rglob("*.py"))
          if (f := p.relative_to(tree.root).as_posix()) not in covered]


CHECKS = {"lock": check_lock, "imports": check_imports, "covered": check_covered}


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_repository(name):
  errors = CHECKS[name](load_tree(REPO))
  assert not errors, f"{len(errors)} problem(s):\n  " + "\n  ".join(errors)


# The checks on a small synthetic tree (with the real room.bzl): each fails when it should.
LOAD = 'load("//third_party:room.bzl", "pypi", "room")\n'
GOOD = {
    "setup.cfg": "[options]\ninstall_requires =\n    numpy>=1.0\n",
    LOCK: "numpy==2.0.0\n    # via setup.cfg\n",
    "third_party/BUILD": "",
    "superalign/core/BUILD": LOAD + 'room(deps = pypi("numpy"))\n',
    "superalign/core/__init__.py": "",
    "superalign/core/a.py": "import os\n\nimport numpy as np\n\nfrom . import b\n",
    "superalign/core/b.py": "try:\n  import pandas\nexcept ImportError:\n  pandas = None\n",
    "superalign/core/sub/c.py": "from superalign.core import a\n",  # no BUILD: the glob takes it
    "superalign/models/BUILD": LOAD + 'room(deps = ["//superalign/core"])\n',
    "superalign/models/m.py": "from superalign.core.a import np\n",
}
# (file, text in it, replaced by, what the finding must say): one planted fault each.
CORE, MODELS = "superalign/core/BUILD", "superalign/models/BUILD"
FAULTS = {
    "setup.cfg dependency not locked": ("setup.cfg", ">=1.0", ">=1.0\n    scipy", "needs scipy,"),
    "setup.cfg refuses the locked version": ("setup.cfg", ">=1.0", ">=3", "pins numpy==2.0.0"),
    "requirement() not locked": (CORE, '"numpy"', '"numpy", "pandas"', "'pandas') is not pinned"),
    "first-party import, no dep": (MODELS, '"//superalign/core"', "", "add one of ['//superal"),
    "third-party import, no requirement()": (CORE, 'pypi("numpy")', "[]", 'add requirement("num'),
    "dep on no target": (MODELS, "core", "cor", "deps: //superalign/cor:cor is not a target"),
    "uncovered file": ("superalign/core/sub/BUILD", "", "", "core/sub/c.py is in no target's srcs"),
}


def run_checks(root: pathlib.Path, files: dict[str, str]) -> list[str]:
  for rel, text in files.items():
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text(text)
  shutil.copy(REPO / "third_party" / "room.bzl", root / "third_party" / "room.bzl")
  tree = load_tree(root)
  return [e for check in CHECKS.values() for e in check(tree)]


def test_checks_pass_a_good_tree(tmp_path):
  assert run_checks(tmp_path, GOOD) == []


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_checks_catch(tmp_path, fault):
  rel, old, new, expected = FAULTS[fault]
  assert old in GOOD.get(rel, "")
  errors = run_checks(tmp_path, GOOD | {rel: GOOD.get(rel, "").replace(old, new)})
  assert any(expected in e for e in errors), f"wanted {expected!r} in:\n" + "\n".join(errors)
