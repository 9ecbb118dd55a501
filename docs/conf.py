"""Sphinx configuration of the superalign documentation site (``sphinx-build -W docs docs/_build/html``).

The site's own machinery (the API pages, the notebooks, the published-figures page and the
docstring check) is the local extension ``_ext/superalign_docs.py``.
"""

import os
import pathlib
import sys

DOCS = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(DOCS.parent))          # the package, also when it is not installed
os.environ.setdefault("JAX_PLATFORMS", "cpu")  # notebooks executed here run as on a Colab CPU
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")

project = "superalign"
author = "the superalign authors"
copyright = "2026, the superalign authors"
release = version = "0.1.0"

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.linkcode",
    "superalign_docs",
]

# Sources: MyST markdown pages, notebooks, and the reStructuredText pages the extension writes.
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "results/*", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]
myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3

# Notebooks: staged by the extension from notebooks/; an executed copy that the tests wrote is
# used when it is current, every other notebook runs here, and a failing cell fails the build.
nb_execution_mode = "force"
nb_execution_raise_on_error = True
nb_execution_timeout = 1800
nb_execution_in_temp = True   # runs and checkpoints a notebook writes stay out of docs/
nb_execution_show_tb = True
nb_merge_streams = True

# API reference: the extension writes one automodule per public module, with every member.
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_class_signature = "separated"
autodoc_preserve_defaults = True
add_module_names = False

REPOSITORY = "https://github.com/superalign/superalign"


def linkcode_resolve(domain, info):
  """Each API entry's "[source]" link: its lines in the repository on GitHub."""
  import importlib
  import inspect
  if domain != "py" or not info.get("module"):
    return None
  try:
    obj = importlib.import_module(info["module"])
    for part in info["fullname"].split("."):
      obj = getattr(obj, part)
    obj = inspect.unwrap(obj.fget if isinstance(obj, property) else obj)
    path = pathlib.Path(inspect.getsourcefile(obj)).resolve().relative_to(DOCS.parent)
    lines, start = inspect.getsourcelines(obj)
  except (AttributeError, TypeError, OSError, ValueError, ImportError):
    return None
  return f"{REPOSITORY}/blob/main/{path}#L{start}-L{start + len(lines) - 1}"


html_theme = "sphinx_book_theme"
html_title = "superalign"
html_static_path = ["_static"]
html_favicon = "_static/favicon.svg"
html_theme_options = {
    "repository_url": REPOSITORY,
    "path_to_docs": "docs",
    "use_repository_button": True,
    "use_source_button": True,
    "show_toc_level": 2,
    "home_page_in_toc": True,
}
# The theme's script reads the page's colour mode from here; left unset it logs a console error.
html_context = {"default_mode": "light"}
