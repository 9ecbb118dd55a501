"""The site's own machinery, as a Sphinx extension.

Before Sphinx reads the sources it writes three generated parts into the source tree (each
git-ignored, rewritten only when its text changes so incremental builds stay incremental):

- ``api/<room>.rst``: the API reference, one page per room of ``superalign/``, one ``automodule``
  per public module (every ``.py`` file whose dotted name has no part starting with ``_``);
- ``tutorials/<name>.ipynb``: the notebooks of ``notebooks/``. Where ``pytest -m notebook`` left
  an executed copy (``_build/executed/``) whose cells are the notebook's current cells, that copy
  is used and not executed again; every other notebook runs during the build;
- ``published_figures.md``: every reproduced published figure beside ours, from the
  ``results.json`` files of the documented commands gathered in ``results/``.

While autodoc runs, a public module, class, function, method or property without a docstring is
a warning naming its file and line, so ``sphinx-build -W`` fails on it.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import pathlib

from sphinx.util import logging

log = logging.getLogger(__name__)

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "superalign"
NOTEBOOKS = ROOT / "notebooks"
# Where ``tests/test_notebooks.py`` writes each notebook after executing it.
EXECUTED = ROOT / "docs" / "_build" / "executed"
CHECKED = ("module", "class", "exception", "function", "method", "property")


# ---------------------------------------------------------------------------------------------
# The API reference.

def public_modules(package: pathlib.Path = PACKAGE) -> list[str]:
  """Every public module of the package, as dotted names in file order: each ``.py`` file (a
  package's ``__init__.py`` names the package) whose dotted name has no ``_``-prefixed part."""
  names = []
  for path in sorted(package.rglob("*.py")):
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
      parts.pop()
    if not any(p.startswith("_") for p in parts):
      names.append(".".join(parts))
  return names


def room_of(module: str) -> str:
  """The room a module belongs to: its top-level package under ``superalign`` (``superalign``
  itself for the package and ``superalign.main``)."""
  parts = module.split(".")
  return parts[1] if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()) \
      else "superalign"


def api_pages(modules: list[str]) -> dict[str, str]:
  """``{file name: reStructuredText}`` of the API reference: an index and one page per room."""
  rooms: dict[str, list[str]] = {}
  for module in modules:
    rooms.setdefault(room_of(module), []).append(module)
  pages = {}
  for room, names in rooms.items():
    title = "superalign" if room == "superalign" else f"superalign.{room}"
    lines = [title, "=" * len(title), ""]
    for name in names:
      lines += [f"``{name}``", "-" * (len(name) + 4), "", f".. automodule:: {name}", ""]
    pages[f"{room}.rst"] = "\n".join(lines)
  order = ["superalign"] + sorted(r for r in rooms if r != "superalign")
  index = ["API reference", "=============", "",
           "Generated from the docstrings of every public module, one page per room "
           "(``docs/_ext/superalign_docs.py``).", "", ".. toctree::", "   :maxdepth: 1", ""]
  index += [f"   {room}" for room in order]
  pages["index.rst"] = "\n".join(index) + "\n"
  return pages


# ---------------------------------------------------------------------------------------------
# The notebooks.

def cells_digest(nb: dict) -> str:
  """A digest of a notebook's cells (type and source): equal for a stripped notebook and any
  executed copy of it, different as soon as one cell changes."""
  cells = [(c["cell_type"], "".join(c["source"]) if isinstance(c["source"], list) else c["source"])
           for c in nb["cells"]]
  return hashlib.sha256(json.dumps(cells).encode()).hexdigest()


def mark_executed(nb: dict, digest: str) -> dict:
  """Marks an executed notebook as the executed copy of the cells with ``digest``; the build
  then renders it as it is (myst-nb's file-level ``execution_mode = "off"``)."""
  nb["metadata"]["superalign"] = {"cells_sha256": digest}
  nb["metadata"]["mystnb"] = {"execution_mode": "off"}
  return nb


def stage_notebook(source: pathlib.Path, executed_dir: pathlib.Path) -> tuple[dict, bool]:
  """The notebook to render for ``source``, and whether it is an executed copy that is current
  (its ``cells_sha256`` is the digest of the source's cells and every code cell ran)."""
  nb = json.loads(source.read_text())
  copy = executed_dir / source.name
  if copy.exists():
    executed = json.loads(copy.read_text())
    current = executed["metadata"].get("superalign", {}).get("cells_sha256") == cells_digest(nb)
    ran = all(c.get("execution_count") for c in executed["cells"] if c["cell_type"] == "code")
    if current and ran:
      return executed, True
    log.info(f"[superalign] {copy} is stale (its cells differ from {source.name}'s): executing")
  return nb, False


# ---------------------------------------------------------------------------------------------
# The published-figures page.

def figures_page(results_dir: pathlib.Path) -> str:
  """The MyST page of every reproduced published figure: one table per gathered run (a JSON file
  ``{"command", "kind", "results"}`` written by ``docs/gather_results.py``)."""
  lines = ["# Published figures, ours beside theirs", "",
           "Generated at build time from the `results.json` that each command below wrote "
           "(gathered into `docs/results/` by `python docs/gather_results.py WORKDIR...`); "
           "the published figure comes from the same file, where the run stores it beside its "
           "own. Nothing on this page is typed by hand: rerun a command and gather its "
           "workdir to refresh it. The room guides discuss each comparison.", ""]
  runs = sorted(results_dir.glob("*.json"))
  if not runs:
    log.warning(f"no gathered results in {results_dir}", location=str(results_dir))
    return "\n".join(lines)
  from superalign.launch.runners import published_comparisons
  from superalign.results.published import markdown_table
  for path in runs:
    run = json.loads(path.read_text())
    rows = published_comparisons(run["kind"], run["results"])
    lines += [f"## `{path.stem}`", "", "```bash", run["command"], "```", ""]
    lines += [markdown_table(rows) if rows else "This run reproduces no published figure.", ""]
  return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Writing the generated parts, and the docstring check.

def _write(path: pathlib.Path, text: str) -> None:
  """Writes ``text`` unless the file already holds it (an unchanged file keeps its time)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  if not path.exists() or path.read_text() != text:
    path.write_text(text)


def generate(app) -> None:
  """``builder-inited``: writes the API pages, the staged notebooks and the figures page."""
  src = pathlib.Path(app.srcdir)
  for name, text in api_pages(public_modules()).items():
    _write(src / "api" / name, text)
  executed = []
  for source in sorted(NOTEBOOKS.glob("*.ipynb")):
    nb, current = stage_notebook(source, EXECUTED)
    executed += [source.stem] if current else []
    _write(src / "tutorials" / source.name, json.dumps(nb, indent=1) + "\n")
  log.info(f"[superalign] notebooks rendered from executed copies: {executed or 'none'}")
  _write(src / "published_figures.md", figures_page(src / "results"))


def _undocumented(obj, doc: str) -> bool:
  """Whether ``doc`` (an object's docstring, as autodoc will show it) says nothing: empty, or
  the signature that a dataclass or named tuple without a docstring gets as one."""
  doc = doc.strip()
  return not doc or (inspect.isclass(obj) and doc.startswith(obj.__name__ + "("))


def _defined_as(name: str, what: str, obj) -> bool:
  """Whether ``name`` is where ``obj`` is defined (autodoc also shows the docstrings of imported
  names while it filters a module's members; only the defining module's entry counts)."""
  if what == "module":
    return True
  target = obj.fget if isinstance(obj, property) else obj
  module, qualname = getattr(target, "__module__", None), getattr(target, "__qualname__", None)
  return bool(module and qualname) and name == f"{module}.{qualname}"


def _where(obj) -> str:
  target = obj.fget if isinstance(obj, property) else obj
  try:
    path = inspect.getsourcefile(target)
    line = inspect.getsourcelines(target)[1] if not inspect.ismodule(target) else 1
  except (TypeError, OSError):
    return ""
  return f"{os.path.relpath(path, ROOT)}:{line}"


def _message(name: str, what: str) -> str:
  return (f"{name}: public {what} without a docstring (say what it takes, its shapes in named "
          "axes, and what it returns)")


def undocumented(module_names: list[str]) -> list[str]:
  """``"file:line: message"`` for each public object of these modules that the API reference
  would show without a docstring: the check the build makes, without Sphinx (for tests and for
  fixing docstrings quickly)."""
  import importlib
  found = []

  def check(name, what, obj):
    if not name.split(".")[-1].startswith("_") and _defined_as(name, what, obj) and \
        _undocumented(obj, inspect.getdoc(obj) or ""):
      found.append(f"{_where(obj)}: {_message(name, what)}")

  for module_name in module_names:
    module = importlib.import_module(module_name)
    check(module_name, "module", module)
    for key, obj in vars(module).items():
      if inspect.isclass(obj):
        check(f"{module_name}.{key}", "class", obj)
        for attr, member in vars(obj).items():
          kind = "property" if isinstance(member, property) else \
              "method" if inspect.isfunction(member) else None
          if kind:
            check(f"{module_name}.{key}.{attr}", kind,
                  member if kind == "property" else getattr(obj, attr))
      elif inspect.isfunction(obj):
        check(f"{module_name}.{key}", "function", obj)
  return found


def check_docstring(app, what, name, obj, options, lines) -> None:
  """``autodoc-process-docstring``: a public object without a docstring is a warning."""
  if what in CHECKED and not name.split(".")[-1].startswith("_") and \
      _defined_as(name, what, obj) and _undocumented(obj, "\n".join(lines)):
    log.warning(_message(name, what), location=_where(obj) or None, type="superalign",
                subtype="docstring")


def setup(app):
  app.connect("builder-inited", generate)
  app.connect("autodoc-process-docstring", check_docstring)
  return {"parallel_read_safe": True, "parallel_write_safe": True}
