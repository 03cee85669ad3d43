"""Sphinx configuration of the API reference (``make docs``).

Built from the docstrings with autodoc and napoleon (Google style), offline: intersphinx links
to Python, NumPy, JAX and NumPyro are added only when ``MTBKD_DOCS_INTERSPHINX=1`` is set (they
fetch the projects' inventories over the network).
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))  # the checkout, even if another copy is installed

import mtbkd_jax  # noqa: E402

project = "mtbkd_jax"
author = "mtbkd_jax developers"
copyright = "mtbkd_jax developers"  # noqa: A001
version = release = mtbkd_jax.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
if os.environ.get("MTBKD_DOCS_INTERSPHINX") == "1":
    extensions.append("sphinx.ext.intersphinx")
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "numpy": ("https://numpy.org/doc/stable", None),
        "jax": ("https://docs.jax.dev/en/latest", None),
        "numpyro": ("https://num.pyro.ai/en/stable", None),
    }

root_doc = "index"
exclude_patterns = ["_build"]
templates_path: list[str] = []

# autodoc: members in source order, as each module's __all__ lists them
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True  # show `print`, not <built-in function print>
# keep the array aliases short in signatures instead of expanding their unions
autodoc_type_aliases = {"ArrayLike": "ArrayLike"}
autodoc_mock_imports: list[str] = []
autosummary_generate = False  # the top-level table links to the module pages, no stub pages

# napoleon: Google style only
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True
napoleon_use_rtype = False

html_theme = "alabaster"
html_title = f"mtbkd_jax {release} API reference"
html_static_path: list[str] = []


# ---------------------------------------------------------------------------------------------
# Each object is documented once, on the page of the public module that defines it (or of the
# package that re-exports it: mtbkd_jax.infer, mtbkd_jax.datasets, ...). The top-level page is a
# table of mtbkd_jax.__all__, generated here so that it cannot drift from the package, and
# references to re-exported names (:class:`~mtbkd_jax.MTBKDModel`, as the docstrings write them)
# are resolved to where the object is documented.

TOP_LEVEL_DOC = "mtbkd_jax"


def _top_level_table(app, docname, source):
    if docname != TOP_LEVEL_DOC:
        return
    lines = ["", ".. autosummary::", ""]
    lines += [f"   {name}" for name in mtbkd_jax.__all__]
    source[0] += "\n".join(lines) + "\n"


def _lookup(dotted):
    """The object at ``dotted`` (a module, then attributes), or None."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # names that left the top level warn
                for part in parts[split:]:
                    obj = getattr(obj, part)
        except AttributeError:
            return None
        return obj
    return None


def _defining_name(target):
    """Where ``target`` (``mtbkd_jax.Name[.attr]``) is defined, or None if it is defined there."""
    parts = target.split(".")
    for split in range(len(parts), 1, -1):
        obj = _lookup(".".join(parts[:split]))
        module = getattr(obj, "__module__", None)
        qualname = getattr(obj, "__qualname__", None)
        if isinstance(module, str) and isinstance(qualname, str):
            name = ".".join([module, qualname, *parts[split:]])
            return None if name == target else name
    return None


def _resolve_reexports(app, env, node, contnode):
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    if not target.startswith("mtbkd_jax."):
        return None
    name = _defining_name(target)
    if name is None:
        return None
    domain = env.get_domain("py")
    return domain.resolve_xref(
        env, node["refdoc"], app.builder, node["reftype"], name, node, contnode
    )


_UNPRINTABLE_DEFAULT = re.compile(r"<factory>|<[\w.]+ object(?: at 0x[0-9a-f]+)?>")


def _tidy_signature(app, what, name, obj, options, signature, return_annotation):
    """Defaults that print as ``<factory>`` (dataclass fields) or ``<... object>`` (sentinels)
    make a signature unparsable, so Sphinx would show it as raw text; show them as ``...``."""
    if signature:
        signature = _UNPRINTABLE_DEFAULT.sub("...", signature)
    return signature, return_annotation


def setup(app):
    app.connect("source-read", _top_level_table)
    app.connect("autodoc-process-signature", _tidy_signature)
    app.connect("missing-reference", _resolve_reexports)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

# NamedTuple fields of the same name in two modules (ScalePosterior.concentration,
# TrustValues.concentration) make napoleon's unqualified attribute references ambiguous;
# "ref.python" is only that ambiguity warning (a missing target is still an error)
suppress_warnings = ["ref.python"]
