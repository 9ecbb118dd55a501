"""The Bazel BUILD files, checked by parsing them (Bazel itself cannot run on these machines).

Starlark is Python syntax, so each BUILD file is executed with stub functions that record the
targets it declares instead of building them. The checks, each also run on small synthetic trees
below so that every one of them is shown to fail when it should:

  (a) every file a target lists (``srcs``, ``main``, ``data``) exists in the target's package;
  (b) every source file is listed: each ``.py`` under ``superalign/``, ``experiments/``,
      ``benchmarks/`` and ``third_party/``; each ``tests/test_*.py`` in exactly one ``py_test``;
      ``tests/conftest.py``; and each script (a file with an ``if __name__ == "__main__":``
      block) is the ``main`` of a ``py_binary``;
  (c) every ``requirement("x")`` names a package pinned in ``third_party/requirements.txt``,
      and that lock pins every dependency ``setup.cfg`` declares, at a version it allows;
  (d) every label refers to a target (or an exported file) that exists;
  (e) every import in a listed file is reachable through its target's deps: first-party modules
      through the target that lists them, third-party ones through ``requirement(...)``.

``glob()`` is refused: explicit lists are what make (b) able to fail.
"""

from __future__ import annotations

import ast
import configparser
import dataclasses
import fnmatch
import importlib.metadata
import pathlib
import re
import sys
import textwrap
from typing import Any

import pytest
from packaging.requirements import Requirement

REPO = pathlib.Path(__file__).resolve().parents[1]

BUILD_NAMES = ("BUILD", "BUILD.bazel")
SKIP_DIRS = {".git", "__pycache__", "node_modules", "venv", ".venv", "build", "runs", "dist"}
PY_RULES = ("py_library", "py_binary", "py_test")
# .bzl files a BUILD file may load, and the symbols each provides.
KNOWN_BZL = {
    "@rules_python//python:defs.bzl": {"py_library", "py_binary", "py_test"},
    "@rules_python//python:py_library.bzl": {"py_library"},
    "@rules_python//python:py_binary.bzl": {"py_binary"},
    "@rules_python//python:py_test.bzl": {"py_test"},
    "@pypi//:requirements.bzl": {"requirement"},
}
PIP_HUB = "pypi"
# The few Python builtins that Starlark also has.
STARLARK_BUILTINS = {
    f.__name__: f
    for f in (len, list, dict, sorted, str, range, enumerate, zip, any, all, bool, int, min, max,
              reversed, tuple, hasattr, getattr, type, repr, print)
}
# Statements and expressions Python has and Starlark BUILD files do not.
NOT_STARLARK = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef,
                ast.While, ast.Try, ast.With, ast.Raise, ast.Global, ast.Nonlocal, ast.Lambda,
                ast.Yield, ast.YieldFrom, ast.Await, ast.Delete, ast.Assert)


@dataclasses.dataclass(frozen=True)
class Config:
  """What the checks demand of a tree."""
  # (directory, pattern): every file matching the pattern under the directory must be listed.
  coverage: tuple[tuple[str, str], ...] = (
      ("superalign", "**/*.py"),
      ("experiments", "**/*.py"),
      ("benchmarks", "**/*.py"),
      ("third_party", "**/*.py"),
      ("tests", "test_*.py"),
      ("tests", "conftest.py"),
  )
  # Files (a glob relative to the root) each of which must be in the srcs of exactly one py_test.
  one_test_per_file: str | None = "tests/test_*.py"
  lock: str = "third_party/requirements.txt"
  setup_cfg: str | None = "setup.cfg"


def bazel_name(name: str) -> str:
  """A PyPI name as rules_python spells it in ``@pypi//<name>`` (PEP 503, with underscores)."""
  return re.sub(r"[-_.]+", "_", name).lower()


# ---------------------------------------------------------------------------------------------
# Loading BUILD files.


@dataclasses.dataclass
class Rule:
  kind: str
  name: str
  package: str
  build_file: str
  line: int
  attrs: dict[str, Any]

  @property
  def label(self) -> str:
    return f"//{self.package}:{self.name}"

  def where(self) -> str:
    return f"{self.build_file}:{self.line} ({self.kind} {self.label})"


@dataclasses.dataclass
class Package:
  path: str  # relative to the root, posix, "" for the root package
  build_file: str  # relative to the root
  rules: dict[str, Rule] = dataclasses.field(default_factory=dict)
  exports: set[str] = dataclasses.field(default_factory=set)
  requirements: list[tuple[str, int]] = dataclasses.field(default_factory=list)
  default_visibility: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Workspace:
  root: pathlib.Path
  packages: dict[str, Package]
  errors: list[str]  # files that could not be loaded, and why

  def rules(self):
    for pkg in self.packages.values():
      yield from pkg.rules.values()


class StarlarkError(Exception):
  pass


def _walk(root: pathlib.Path):
  """Yields every file under root, skipping VCS, caches, build outputs and virtualenvs."""
  stack = [root]
  while stack:
    d = stack.pop()
    for p in sorted(d.iterdir()):
      if p.is_dir():
        if (p.name in SKIP_DIRS or p.name.startswith((".", "bazel-")) or
            p.name.endswith(".egg-info") or p.is_symlink()):
          continue
        stack.append(p)
      else:
        yield p


def find_build_files(root: pathlib.Path) -> list[pathlib.Path]:
  return sorted(p for p in _walk(root) if p.name in BUILD_NAMES)


def _caller_line(build_file: str) -> int:
  f = sys._getframe(1)
  while f is not None:
    if f.f_code.co_filename == build_file:
      return f.f_lineno
    f = f.f_back
  return 0


def load_build_file(root: pathlib.Path, path: pathlib.Path) -> Package:
  rel = path.relative_to(root).as_posix()
  pkg = Package(path=path.parent.relative_to(root).as_posix().strip("."), build_file=rel)
  source = path.read_text()
  try:
    tree = ast.parse(source, filename=rel)
  except SyntaxError as e:
    raise StarlarkError(f"{rel}:{e.lineno}: not valid Starlark: {e.msg}") from None
  for node in ast.walk(tree):
    if isinstance(node, NOT_STARLARK):
      raise StarlarkError(f"{rel}:{node.lineno}: {type(node).__name__} is not allowed in a "
                          f"BUILD file (Starlark)")
  for node in tree.body:
    if not isinstance(node, (ast.Expr, ast.Assign, ast.AugAssign)):
      raise StarlarkError(f"{rel}:{node.lineno}: only calls and assignments may appear at the top "
                          f"level of a BUILD file, not {type(node).__name__}")

  ns: dict[str, Any] = {"__builtins__": dict(STARLARK_BUILTINS)}

  def fail(msg="", *args):
    raise StarlarkError(f"{rel}:{_caller_line(rel)}: fail(): {msg} {' '.join(map(str, args))}")

  def load(bzl, *symbols, **aliases):
    line = _caller_line(rel)
    if bzl not in KNOWN_BZL:
      raise StarlarkError(f"{rel}:{line}: load() of unknown file {bzl!r}; known: "
                          f"{sorted(KNOWN_BZL)} (teach tests/test_build_files.py about it)")
    for local, symbol in [(s, s) for s in symbols] + list(aliases.items()):
      if symbol not in KNOWN_BZL[bzl]:
        raise StarlarkError(f"{rel}:{line}: {bzl!r} has no symbol {symbol!r}")
      ns[local] = LOADABLE[symbol]

  def glob(*args, **kwargs):
    raise StarlarkError(f"{rel}:{_caller_line(rel)}: glob() is not allowed: list every file "
                        f"explicitly, so that a file missing from the BUILD file is caught")

  def make_rule(kind):
    def rule(name=None, **attrs):
      line = _caller_line(rel)
      if not isinstance(name, str) or not name:
        raise StarlarkError(f"{rel}:{line}: {kind}() needs a name")
      if name in pkg.rules:
        raise StarlarkError(f"{rel}:{line}: target name {name!r} is already used on line "
                            f"{pkg.rules[name].line}")
      for key in ("srcs", "deps", "data", "args", "tags"):
        value = attrs.get(key, [])
        if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
          raise StarlarkError(f"{rel}:{line}: {kind} {name!r}: {key} must be a list of strings")
      if "main" in attrs and not isinstance(attrs["main"], str):
        raise StarlarkError(f"{rel}:{line}: {kind} {name!r}: main must be a string")
      pkg.rules[name] = Rule(kind, name, pkg.path, rel, line, attrs)
    rule.__name__ = kind
    return rule

  def requirement(name):
    pkg.requirements.append((name, _caller_line(rel)))
    return f"@{PIP_HUB}//{bazel_name(name)}"

  def exports_files(srcs, visibility=None, licenses=None):
    if not (isinstance(srcs, list) and all(isinstance(s, str) for s in srcs)):
      raise StarlarkError(f"{rel}:{_caller_line(rel)}: exports_files() takes a list of strings")
    pkg.exports.update(srcs)

  def package(default_visibility=(), **kwargs):
    pkg.default_visibility = list(default_visibility)

  LOADABLE = {"py_library": make_rule("py_library"), "py_binary": make_rule("py_binary"),
              "py_test": make_rule("py_test"), "requirement": requirement}
  ns.update(load=load, glob=glob, fail=fail, package=package, exports_files=exports_files,
            filegroup=make_rule("filegroup"))
  try:
    exec(compile(tree, str(rel), "exec"), ns)  # noqa: S102 - our own BUILD files
  except StarlarkError:
    raise
  except NameError as e:
    raise StarlarkError(f"{rel}:{_tb_line(e, rel)}: {e} (a rule used without its load()?)") from None
  except Exception as e:  # noqa: BLE001 - reported as a finding
    raise StarlarkError(f"{rel}:{_tb_line(e, rel)}: {type(e).__name__}: {e}") from None
  return pkg


def _tb_line(e: BaseException, rel: str) -> int:
  line, tb = 0, e.__traceback__
  while tb is not None:
    if tb.tb_frame.f_code.co_filename == rel:
      line = tb.tb_lineno
    tb = tb.tb_next
  return line


def load_workspace(root: pathlib.Path) -> Workspace:
  packages, errors = {}, []
  for path in find_build_files(root):
    try:
      pkg = load_build_file(root, path)
    except StarlarkError as e:
      errors.append(str(e))
      continue
    if pkg.path in packages:
      errors.append(f"{pkg.build_file}: package //{pkg.path} already has "
                    f"{packages[pkg.path].build_file}")
      continue
    packages[pkg.path] = pkg
  return Workspace(root, packages, errors)


# ---------------------------------------------------------------------------------------------
# Labels.


@dataclasses.dataclass(frozen=True)
class Resolved:
  rule: Rule | None = None  # a target
  file: str | None = None  # or a source file, relative to the root
  external: str | None = None  # or a label in another repository
  error: str | None = None


def split_label(label: str, current: str) -> tuple[str | None, str, str]:
  """(repo or None, package, name); raises ValueError on a malformed label."""
  repo = None
  if label.startswith("@"):
    repo, sep, rest = label.partition("//")
    if not sep:
      raise ValueError("an external label needs //")
    label = "//" + rest
  if label.startswith("//"):
    pkg, _, name = label[2:].partition(":")
    if not name:
      if not pkg:
        raise ValueError("//: needs a target name")
      name = pkg.rsplit("/", 1)[-1]
  else:
    pkg, name = current, label[1:] if label.startswith(":") else label
  if (not name or pkg.endswith("/") or pkg.startswith("/") or ".." in pkg.split("/") or
      ".." in name.split("/") or name.startswith("/")):
    raise ValueError("malformed")
  return repo, pkg, name


def resolve(ws: Workspace, rule: Rule, label: str, want: str) -> Resolved:
  """Resolves a label used by rule. want: "target" (deps) or "file" (srcs, main, data)."""
  try:
    repo, pkg_path, name = split_label(label, rule.package)
  except ValueError as e:
    return Resolved(error=f"{label!r} is not a valid label ({e})")
  if repo is not None:
    return Resolved(external=label)
  pkg = ws.packages.get(pkg_path)
  if pkg is None:
    return Resolved(error=f"{label!r}: there is no package //{pkg_path} (no BUILD file in "
                          f"{pkg_path or 'the root'}/)")
  if name in pkg.rules:
    return Resolved(rule=pkg.rules[name])
  if want == "target":
    return Resolved(error=f"{label!r}: //{pkg_path} has no target {name!r} "
                          f"(it has {sorted(pkg.rules)})")
  path = f"{pkg_path}/{name}" if pkg_path else name
  if not (ws.root / path).is_file():
    return Resolved(error=f"{label!r}: file {path} does not exist")
  parts = name.split("/")
  for i in range(1, len(parts)):  # a file must not sit inside a subpackage
    sub = "/".join(filter(None, [pkg_path] + parts[:i]))
    if sub in ws.packages:
      return Resolved(error=f"{label!r}: {path} belongs to package //{sub} "
                            f"({ws.packages[sub].build_file}), not //{pkg_path}")
  if pkg_path != rule.package and name not in pkg.exports:
    return Resolved(error=f"{label!r}: {path} is in another package and not in its "
                          f"exports_files() ({pkg.build_file})")
  return Resolved(file=path)


def listed_files(ws: Workspace, rule: Rule, attrs=("srcs", "main")) -> set[str]:
  out = set()
  for attr in attrs:
    values = rule.attrs.get(attr, [])
    for label in [values] if isinstance(values, str) else values:
      r = resolve(ws, rule, label, "file")
      if r.file:
        out.add(r.file)
  return out


def main_label(rule: Rule) -> str:
  return rule.attrs.get("main", rule.name + ".py")


# ---------------------------------------------------------------------------------------------
# The checks. Each returns a list of findings; an empty list means the check passed.


def check_listed_files_exist(ws: Workspace, cfg: Config) -> list[str]:
  """(a) and the file half of (d): srcs, main and data name files or targets that exist."""
  errors = []
  for rule in ws.rules():
    for attr in ("srcs", "data", "main"):
      values = rule.attrs.get(attr, [])
      for label in [values] if isinstance(values, str) else values:
        r = resolve(ws, rule, label, "file")
        if r.error:
          errors.append(f"{rule.where()}: {attr}: {r.error}")
        elif attr == "srcs" and rule.kind in PY_RULES and r.file and not r.file.endswith(".py"):
          errors.append(f"{rule.where()}: srcs: {r.file} is not a .py file (use data)")
    if rule.kind in ("py_binary", "py_test"):
      main = resolve(ws, rule, main_label(rule), "file")
      srcs = {resolve(ws, rule, s, "file").file for s in rule.attrs.get("srcs", [])}
      if main.file and main.file not in srcs:
        errors.append(f"{rule.where()}: main {main.file} is not in its srcs")
      elif not main.file and "main" not in rule.attrs:
        errors.append(f"{rule.where()}: no main given and {rule.name}.py is not in its package; "
                      f"set main = ...")
    for arg in rule.attrs.get("args", []):
      for m in re.finditer(r"\$\((?:rootpath|location|execpath) ([^)]+)\)", arg):
        target = resolve(ws, rule, m.group(1), "file")
        inputs = listed_files(ws, rule, ("srcs", "data"))
        if target.error or (target.file and target.file not in inputs):
          errors.append(f"{rule.where()}: args: {m.group(0)} names nothing in its srcs or data")
  return errors


def check_every_file_listed(ws: Workspace, cfg: Config) -> list[str]:
  """(b): every source file is in some target, tests one per py_test, scripts in py_binary."""
  listed: dict[str, list[Rule]] = {}
  for rule in ws.rules():
    if rule.kind in PY_RULES:
      for f in listed_files(ws, rule):
        listed.setdefault(f, []).append(rule)
  errors = []
  required = set()
  for directory, pattern in cfg.coverage:
    base = ws.root / directory
    if base.is_dir():
      required |= {p.relative_to(ws.root).as_posix() for p in base.glob(pattern)
                   if p.is_file() and "__pycache__" not in p.parts}
  for f in sorted(required - set(listed)):
    errors.append(f"{f} is not in the srcs of any py_library/py_binary/py_test: add it to the "
                  f"BUILD file of its directory ({_build_for(ws, f)})")
  if cfg.one_test_per_file:
    for p in sorted(ws.root.glob(cfg.one_test_per_file)):
      f = p.relative_to(ws.root).as_posix()
      tests = [r for r in listed.get(f, []) if r.kind == "py_test"]
      others = [r for r in listed.get(f, []) if r.kind != "py_test"]
      if f in listed and len(tests) != 1:
        errors.append(f"{f} must be in the srcs of exactly one py_test, is in "
                      f"{[r.label for r in tests]}")
      if others:
        errors.append(f"{f} is a test file but is listed by {[r.label for r in others]}; "
                      f"give it its own py_test")
  mains = {resolve(ws, r, main_label(r), "file").file for r in ws.rules()
           if r.kind in ("py_binary", "py_test")}
  for f in sorted(required):
    if not f.endswith(".py") or fnmatch.fnmatch(f, cfg.one_test_per_file or "\0"):
      continue
    if _is_script(ws.root / f) and f not in mains:
      errors.append(f"{f} is a script (it has an `if __name__ == \"__main__\":` block) but no "
                    f"py_binary (or py_test) has it as main: add one to {_build_for(ws, f)}")
  return errors


def _build_for(ws: Workspace, f: str) -> str:
  parts = f.split("/")[:-1]
  while parts:
    if "/".join(parts) in ws.packages:
      return ws.packages["/".join(parts)].build_file
    parts.pop()
  return ws.packages[""].build_file if "" in ws.packages else "a new BUILD file"


def _is_script(path: pathlib.Path) -> bool:
  try:
    tree = ast.parse(path.read_text())
  except SyntaxError:
    return False
  for node in tree.body:
    if (isinstance(node, ast.If) and isinstance(node.test, ast.Compare) and
        isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__"):
      return True
  return False


def read_lock(path: pathlib.Path) -> tuple[dict[str, str], list[str]]:
  """Parses a pip requirements lock: {bazel_name: pinned version}, findings."""
  pins, errors = {}, []
  text = path.read_text().replace("\\\n", " ")
  for n, raw in enumerate(text.splitlines(), 1):
    line = raw.split(" #", 1)[0].strip()
    if not line or line.startswith(("#", "-", "--")):
      continue
    line = re.sub(r"\s--hash=\S+", "", line).strip()
    try:
      req = Requirement(line)
    except Exception as e:  # noqa: BLE001
      errors.append(f"{path.name}:{n}: cannot parse {raw.strip()!r}: {e}")
      continue
    specs = list(req.specifier)
    if len(specs) != 1 or specs[0].operator != "==":
      errors.append(f"{path.name}:{n}: {req.name} is not pinned with == (a lock pins everything)")
      continue
    key = bazel_name(req.name)
    if key in pins:
      errors.append(f"{path.name}:{n}: {req.name} is pinned twice")
    pins[key] = specs[0].version
  return pins, errors


def setup_cfg_requirements(path: pathlib.Path) -> list[tuple[str, Requirement]]:
  cfg = configparser.ConfigParser()
  cfg.read(path)
  out = []
  groups = {"install_requires": cfg.get("options", "install_requires", fallback="")}
  if cfg.has_section("options.extras_require"):
    groups.update({f"extras_require.{k}": v for k, v in cfg["options.extras_require"].items()})
  for group, text in groups.items():
    for line in text.splitlines():
      line = line.split("#", 1)[0].strip()
      if line:
        out.append((group, Requirement(line)))
  return out


def check_requirements(ws: Workspace, cfg: Config) -> list[str]:
  """(c): requirement() names are in the lock; the lock covers setup.cfg's dependencies."""
  lock_path = ws.root / cfg.lock
  if not lock_path.is_file():
    return [f"{cfg.lock} does not exist"]
  pins, errors = read_lock(lock_path)
  errors = [f"{cfg.lock}: {e}" for e in errors]
  for pkg in ws.packages.values():
    for name, line in pkg.requirements:
      if bazel_name(name) not in pins:
        errors.append(f"{pkg.build_file}:{line}: requirement({name!r}) is not pinned in "
                      f"{cfg.lock}")
  if cfg.setup_cfg and (ws.root / cfg.setup_cfg).is_file():
    for group, req in setup_cfg_requirements(ws.root / cfg.setup_cfg):
      version = pins.get(bazel_name(req.name))
      if version is None:
        errors.append(f"{cfg.setup_cfg} [{group}] needs {req.name}, which {cfg.lock} does "
                      f"not pin")
      elif not req.specifier.contains(version, prereleases=True):
        errors.append(f"{cfg.setup_cfg} [{group}] needs {req}, but {cfg.lock} pins "
                      f"{req.name}=={version}")
  return errors


def check_dep_labels(ws: Workspace, cfg: Config) -> list[str]:
  """(d): every deps label names a py_library that exists (or a pinned PyPI package)."""
  errors = []
  for rule in ws.rules():
    for label in rule.attrs.get("deps", []):
      r = resolve(ws, rule, label, "target")
      if r.error:
        errors.append(f"{rule.where()}: deps: {r.error}")
      elif r.rule and r.rule.kind != "py_library":
        errors.append(f"{rule.where()}: deps: {label!r} is a {r.rule.kind}; depend on a "
                      f"py_library")
      elif r.rule is rule:
        errors.append(f"{rule.where()}: deps: {label!r} is the target itself")
      elif r.rule and not visible(ws, r.rule, rule.package):
        errors.append(f"{rule.where()}: deps: {label!r} is not visible to //{rule.package}; "
                      f"give it visibility (or its package default_visibility) "
                      f"in {r.rule.build_file}")
    seen, path = set(), []
    cycle = _find_cycle(ws, rule, seen, path)
    if cycle:
      errors.append(f"{rule.where()}: dependency cycle {' -> '.join(cycle)}")
  return sorted(set(errors))


def visible(ws: Workspace, target: Rule, from_package: str) -> bool:
  """Bazel's visibility: same package, public, //p:__pkg__ or //p:__subpackages__."""
  if target.package == from_package:
    return True
  rules = target.attrs.get("visibility") or ws.packages[target.package].default_visibility
  for v in rules:
    pkg, _, kind = v.removeprefix("//").partition(":")
    if v == "//visibility:public":
      return True
    if kind == "__pkg__" and pkg == from_package:
      return True
    if kind == "__subpackages__" and (from_package == pkg or
                                      from_package.startswith(pkg + "/") or not pkg):
      return True
  return False


def _find_cycle(ws, rule, seen, path):
  if rule.label in path:
    return path[path.index(rule.label):] + [rule.label]
  if rule.label in seen:
    return None
  seen.add(rule.label)
  path.append(rule.label)
  for label in rule.attrs.get("deps", []):
    r = resolve(ws, rule, label, "target")
    if r.rule:
      cycle = _find_cycle(ws, r.rule, seen, path)
      if cycle:
        return cycle
  path.pop()
  return None


def closure(ws: Workspace, rule: Rule) -> tuple[set[str], set[str]]:
  """(rule labels, PyPI bazel names) reachable from rule, rule included."""
  labels, pypi, stack = set(), set(), [rule]
  while stack:
    r = stack.pop()
    if r.label in labels:
      continue
    labels.add(r.label)
    for label in r.attrs.get("deps", []):
      res = resolve(ws, r, label, "target")
      if res.rule:
        stack.append(res.rule)
      elif res.external and label.startswith(f"@{PIP_HUB}//"):
        pypi.add(label[len(PIP_HUB) + 3:].split(":")[0])
  return labels, pypi


def _optional_import_nodes(tree: ast.AST) -> set[int]:
  """ids of import nodes guarded by try/except ImportError or `if TYPE_CHECKING:`."""
  skip = set()
  for node in ast.walk(tree):
    guarded = []
    if isinstance(node, ast.Try):
      names = set()
      for h in node.handlers:
        for t in (h.type.elts if isinstance(h.type, ast.Tuple) else [h.type]):
          names.add(getattr(t, "id", getattr(t, "attr", None)) if t is not None else "Exception")
      if names & {"ImportError", "ModuleNotFoundError", "Exception"}:
        guarded = node.body
    elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
      guarded = node.body
    for stmt in guarded:
      skip |= {id(n) for n in ast.walk(stmt) if isinstance(n, (ast.Import, ast.ImportFrom))}
  return skip


def imports_of(path: pathlib.Path, module: str) -> list[tuple[int, str, list[str]]]:
  """(line, module, names imported from it) for each non-optional import in a file."""
  tree = ast.parse(path.read_text(), filename=str(path))
  skip = _optional_import_nodes(tree)
  out = []
  for node in ast.walk(tree):
    if id(node) in skip:
      continue
    if isinstance(node, ast.Import):
      out += [(node.lineno, a.name, []) for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        parts = module.split(".")
        is_pkg = path.name == "__init__.py"
        anchor = parts[:len(parts) - node.level + (1 if is_pkg else 0)]
        base = ".".join(anchor + ([base] if base else []))
      out.append((node.lineno, base, [a.name for a in node.names]))
  return out


def _module_files(roots: list[pathlib.Path], module: str, root: pathlib.Path) -> list[str] | None:
  """The files importing module loads (parent __init__.py files included), or None if not ours."""
  parts = module.split(".")
  for base in roots:
    files, d = [], base
    for i, part in enumerate(parts):
      if (d / part / "__init__.py").is_file():
        d = d / part
        files.append(d / "__init__.py")
      elif (d / part).is_dir() and i < len(parts) - 1:
        d = d / part  # namespace package
      elif (d / f"{part}.py").is_file() and i == len(parts) - 1:
        files.append(d / f"{part}.py")
        d = None
        break
      else:
        files = None
        break
    if files:
      return [f.relative_to(root).as_posix() for f in files]
  return None


def check_imports_declared(ws: Workspace, cfg: Config) -> list[str]:
  """(e): each import in a listed .py file is reachable through the target's deps."""
  owners: dict[str, list[Rule]] = {}
  for rule in ws.rules():
    if rule.kind in PY_RULES:
      for f in listed_files(ws, rule):
        owners.setdefault(f, []).append(rule)
  dists = importlib.metadata.packages_distributions()
  stdlib = set(sys.stdlib_module_names) | {"__future__"}
  errors = []
  for rule in ws.rules():
    if rule.kind not in PY_RULES:
      continue
    labels, pypi = closure(ws, rule)
    for f in sorted(listed_files(ws, rule)):
      path = ws.root / f
      if not (f.endswith(".py") and path.is_file()):
        continue
      module = f[:-3].replace("/", ".").removesuffix(".__init__")
      try:
        found = imports_of(path, module)
      except SyntaxError as e:
        errors.append(f"{f}:{e.lineno}: does not parse: {e.msg}")
        continue
      # A test file's own directory is on sys.path (pytest's rootdir-less "prepend" mode).
      in_package = (path.parent / "__init__.py").is_file()
      roots = [ws.root] if in_package else [ws.root, path.parent]
      for line, mod, names in found:
        top = mod.split(".")[0]
        if top in stdlib:
          continue
        files = _module_files(roots, mod, ws.root)
        if files is not None:
          needs = [(mod, needed) for needed in files]
          if files[-1].endswith("/__init__.py"):  # `from pkg import submodule` loads it too
            base = ws.root / files[-1][:-len("/__init__.py")]
            for n in names:
              for sub in (base / f"{n}.py", base / n / "__init__.py"):
                if sub.is_file():
                  needs.append((f"{mod}.{n}", sub.relative_to(ws.root).as_posix()))
          for name, needed in needs:
            if needed == f:
              continue
            holders = owners.get(needed, [])
            if not holders:
              errors.append(f"{f}:{line} ({rule.label}): imports {name}, but {needed} is in no "
                            f"BUILD target")
            elif not any(h.label in labels for h in holders):
              errors.append(f"{f}:{line} ({rule.label}): imports {name}; add one of "
                            f"{sorted({h.label for h in holders})} to the deps of {rule.label} "
                            f"in {rule.build_file}")
          continue
        candidates = dists.get(top)
        if not candidates and bazel_name(top) in pypi:
          continue  # an optional extra (e.g. the benchmark's torch) declared but not installed here
        if not candidates:
          errors.append(f"{f}:{line} ({rule.label}): imports {mod}, which is not the standard "
                        f"library, not a file in this repository and not an installed package")
        elif not {bazel_name(c) for c in candidates} & pypi:
          errors.append(f"{f}:{line} ({rule.label}): imports {mod} (PyPI: {candidates[0]}); add "
                        f"requirement(\"{candidates[0]}\") to the deps of {rule.label} in "
                        f"{rule.build_file}")
  return sorted(set(errors))


CHECKS = {
    "listed_files_exist": check_listed_files_exist,
    "every_file_listed": check_every_file_listed,
    "requirements": check_requirements,
    "dep_labels": check_dep_labels,
    "imports_declared": check_imports_declared,
}


def _report(errors: list[str]) -> str:
  return f"{len(errors)} problem(s):\n  " + "\n  ".join(errors)


# ---------------------------------------------------------------------------------------------
# The checks on this repository.


@pytest.fixture(scope="module")
def ws() -> Workspace:
  return load_workspace(REPO)


def test_build_files_load(ws):
  assert not ws.errors, _report(ws.errors)
  for expected in ("superalign", "superalign/core", "superalign/models", "superalign/data",
                   "superalign/supervised", "experiments", "tests", "benchmarks", "third_party"):
    assert expected in ws.packages, f"{expected}/BUILD is missing"


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_repository(ws, name):
  errors = CHECKS[name](ws, Config())
  assert not errors, _report(errors)


def test_launcher_binary(ws):
  binary = ws.packages["superalign"].rules.get("superalign")
  assert binary is not None and binary.kind == "py_binary", "superalign/BUILD needs py_binary superalign"
  assert resolve(ws, binary, main_label(binary), "file").file == "superalign/main.py"


def test_module_bazel_wires_the_lock():
  """MODULE.bazel creates the @pypi hub from the lock that check_requirements reads."""
  calls: dict[str, list] = {}

  class Extension:
    def __init__(self, bzl, name):
      self.id = (bzl, name)

    def __getattr__(self, tag):
      return lambda **kw: calls.setdefault(f"{self.id[1]}.{tag}", []).append(kw)

  def record(name):
    return lambda *a, **kw: calls.setdefault(name, []).append((a, kw))

  ns = {"__builtins__": dict(STARLARK_BUILTINS), "module": record("module"),
        "bazel_dep": lambda **kw: calls.setdefault("bazel_dep", []).append(kw),
        "use_extension": Extension, "use_repo": record("use_repo")}
  exec(compile((REPO / "MODULE.bazel").read_text(), "MODULE.bazel", "exec"), ns)  # noqa: S102
  assert "rules_python" in {d["name"] for d in calls.get("bazel_dep", [])}, \
      "MODULE.bazel: bazel_dep(name = \"rules_python\", ...) is missing"
  hubs = {p["hub_name"]: p for p in calls.get("pip.parse", [])}
  assert PIP_HUB in hubs, f"MODULE.bazel: no pip.parse(hub_name = {PIP_HUB!r})"
  _, pkg, name = split_label(hubs[PIP_HUB]["requirements_lock"], "")
  assert f"{pkg}/{name}" == Config().lock, f"MODULE.bazel: pip.parse reads {pkg}/{name}"
  used = [a for a, _ in calls.get("use_repo", [])]
  assert any(PIP_HUB in a[1:] for a in used), f"MODULE.bazel: use_repo(pip, {PIP_HUB!r}) missing"


# ---------------------------------------------------------------------------------------------
# The checker itself, on small synthetic trees: each check fails when it should.

GOOD_TREE = {
    "setup.cfg": "[options]\ninstall_requires =\n    numpy>=1.0\n",
    "third_party/BUILD": 'exports_files(["requirements.txt", "runner.py"])\n',
    "third_party/requirements.txt": "numpy==2.0.0\n    # via setup.cfg\npytest==8.0.0\n",
    "third_party/runner.py": "import sys\n",
    "pkg/__init__.py": "",
    "pkg/core.py": "import numpy as np\n",
    "pkg/cli.py": "from pkg import core\n\nif __name__ == '__main__':\n  core\n",
    "pkg/BUILD": textwrap.dedent("""\
        load("@rules_python//python:defs.bzl", "py_binary", "py_library")
        load("@pypi//:requirements.bzl", "requirement")

        py_library(
            name = "pkg",
            srcs = ["__init__.py", "core.py"],
            deps = [requirement("numpy")],
            visibility = ["//visibility:public"],
        )

        py_binary(
            name = "cli",
            srcs = ["cli.py"],
            deps = [":pkg"],
        )
        """),
    "tests/test_core.py": "import pytest\n\nfrom pkg import core\n",
    "tests/BUILD": textwrap.dedent("""\
        load("@rules_python//python:defs.bzl", "py_test")
        load("@pypi//:requirements.bzl", "requirement")

        DEPS = ["//pkg", requirement("pytest")]

        py_test(
            name = "test_core",
            srcs = ["test_core.py", "//third_party:runner.py"],
            main = "//third_party:runner.py",
            args = ["$(rootpath test_core.py)"],
            deps = DEPS,
        )
        """),
}
SYNTHETIC = Config(coverage=(("pkg", "**/*.py"), ("third_party", "**/*.py"),
                             ("tests", "test_*.py")))


def make_tree(root: pathlib.Path, files: dict[str, str | None]) -> Workspace:
  for rel, text in files.items():
    if text is not None:
      (root / rel).parent.mkdir(parents=True, exist_ok=True)
      (root / rel).write_text(text)
  return load_workspace(root)


def run_all(ws: Workspace) -> list[str]:
  errors = list(ws.errors)
  for check in CHECKS.values():
    errors += check(ws, SYNTHETIC)
  return errors


def test_checker_passes_a_good_tree(tmp_path):
  ws = make_tree(tmp_path, GOOD_TREE)
  assert set(ws.packages) == {"pkg", "tests", "third_party"}
  assert {r.label for r in ws.rules()} == {"//pkg:pkg", "//pkg:cli", "//tests:test_core"}
  assert run_all(ws) == []


def _edit(rel: str, old: str, new: str) -> dict[str, str]:
  assert old in GOOD_TREE[rel], (rel, old)
  return {rel: GOOD_TREE[rel].replace(old, new)}


BROKEN = {
    # (a) a listed file that does not exist
    "missing_src": (_edit("pkg/BUILD", '"core.py"]', '"core.py", "gone.py"]'),
                    "file pkg/gone.py does not exist"),
    "missing_main": (_edit("tests/BUILD", 'main = "//third_party:runner.py"',
                           'main = "//third_party:nope.py"'), "file third_party/nope.py"),
    "unexported_file": (_edit("third_party/BUILD", '"runner.py"', '"other.py"'),
                        "not in its exports_files()"),
    # (b) a source file or a test that no BUILD file lists
    "unlisted_source": ({"pkg/extra.py": "x = 1\n"}, "pkg/extra.py is not in the srcs"),
    "unlisted_test": ({"tests/test_more.py": "def test_x():\n  assert True\n"},
                      "tests/test_more.py is not in the srcs"),
    "script_without_binary": ({"pkg/BUILD": GOOD_TREE["pkg/BUILD"].split("py_binary(")[0]
                               .replace('"core.py"]', '"core.py", "cli.py"]')
                               .replace('"py_binary", ', "")},
                              "pkg/cli.py is a script"),
    "glob": (_edit("pkg/BUILD", '["__init__.py", "core.py"]', 'glob(["*.py"])'),
             "glob() is not allowed"),
    "missing_load": (_edit("tests/BUILD", 'load("@rules_python//python:defs.bzl", "py_test")\n',
                           ""), "name 'py_test' is not defined"),
    # (c) requirement() of a package the lock does not pin, and setup.cfg drifting from the lock
    "unknown_requirement": (_edit("pkg/BUILD", 'requirement("numpy")',
                                  'requirement("numpy"), requirement("pandas")'),
                            "requirement('pandas') is not pinned"),
    "setup_cfg_not_locked": ({"setup.cfg": GOOD_TREE["setup.cfg"] + "    scipy\n"},
                             "needs scipy, which third_party/requirements.txt does not pin"),
    "setup_cfg_version": ({"setup.cfg": GOOD_TREE["setup.cfg"].replace(">=1.0", ">=3")},
                          "pins numpy==2.0.0"),
    "unpinned_lock": ({"third_party/requirements.txt": "numpy>=1\npytest==8.0.0\n"},
                      "numpy is not pinned"),
    # (d) deps naming targets that do not exist
    "missing_package": (_edit("tests/BUILD", '"//pkg"', '"//pkg/sub"'),
                        "there is no package //pkg/sub"),
    "not_visible": (_edit("pkg/BUILD", '    visibility = ["//visibility:public"],\n', ""),
                    "'//pkg' is not visible to //tests"),
    "missing_target": (_edit("pkg/BUILD", 'deps = [":pkg"]', 'deps = [":pkg", ":nope"]'),
                       "//pkg has no target 'nope'"),
    # (e) imports that the deps do not provide
    "undeclared_first_party": (_edit("tests/BUILD", '"//pkg", ', ""),
                               "add one of ['//pkg:pkg'] to the deps of //tests:test_core"),
    "undeclared_pypi": (_edit("pkg/BUILD", "deps = [requirement(\"numpy\")]", "deps = []"),
                        'add requirement("numpy") to the deps of //pkg:pkg'),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_checker_catches(tmp_path, case):
  changes, expected = BROKEN[case]
  ws = make_tree(tmp_path, GOOD_TREE | changes)
  errors = run_all(ws)
  assert any(expected in e for e in errors), (
      f"{case}: expected a finding containing {expected!r}, got:\n" + "\n".join(errors))
