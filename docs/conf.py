"""Sphinx configuration of the core4 documentation.

Build with ``.venv/bin/python -m sphinx -W -b html docs docs/_build/html``.
"""

import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__),
                                                "..")))

import core4  # noqa: E402

project = "core4"
version = core4.__version__
release = core4.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    # the REST API reference (docs/api.rst), rendered from the OpenAPI
    # document of the routes
    "core4.api.v1.apidoc",
]

master_doc = "index"
exclude_patterns = ["_build", "figures.txt"]
templates_path = []

html_theme = "alabaster"
html_static_path = []

autodoc_member_order = "bysource"
nitpicky = False
