"""Google Colab setup: install the course package there, do nothing anywhere else.

A fresh Colab runtime has torch but not ``sdcourse``, so the first code cell of every
notebook cannot import this module. Instead that cell is the text of
:func:`setup_cell_source`: plain Python that checks whether ``google.colab`` can be
imported and, only then, runs ``pip install`` of the course from :data:`REPO_URL`
(pip also installs the pinned dependencies from ``pyproject.toml``, with its ``colab`` extra). On your own
machine the cell does nothing and prints nothing. ``tests/test_colab.py`` runs each
notebook's first cell with a fake ``google.colab`` module to check what it would run.

:func:`setup_colab` does the same from Python, for scripts and for checking::

    >>> from sdcourse.colab import setup_colab
    >>> setup_colab()          # outside Colab: runs nothing
    []
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys

__all__ = ["REPO_URL", "in_colab", "install_commands", "setup_cell_source", "setup_colab"]

REPO_URL = "https://github.com/sdcourse/sdcourse"
"""Where the course lives; Colab installs the package from here."""

PIP_REQUIREMENT = f"sdcourse[colab] @ git+{REPO_URL}"
"""The package with its ``colab`` extra: the dependencies, MP4 video and the playground's widgets."""


def in_colab() -> bool:
    """True inside Google Colab (the ``google.colab`` module can be imported)."""
    try:
        return importlib.util.find_spec("google.colab") is not None
    except ModuleNotFoundError:  # no `google` package at all
        return False


def install_commands(python: str | None = None) -> list[list[str]]:
    """The commands the Colab setup runs, as argument lists for ``subprocess.run``.

    >>> install_commands("python")
    [['python', '-m', 'pip', 'install', '--quiet', 'sdcourse[colab] @ git+https://github.com/sdcourse/sdcourse']]
    """
    python = sys.executable if python is None else python
    return [[python, "-m", "pip", "install", "--quiet", PIP_REQUIREMENT]]


def setup_colab(run=subprocess.run) -> list[list[str]]:
    """In Colab, pip-install the course package and return the commands run; elsewhere return ``[]``.

    ``run`` is the function that executes one command (``subprocess.run`` by default;
    tests pass a recorder).
    """
    if not in_colab():
        return []
    commands = install_commands()
    for command in commands:
        print("Colab setup:", " ".join(command[2:]))
        run(command, check=True)
    return commands


def setup_cell_source() -> str:
    """The text of every notebook's first code cell: self-contained, no ``sdcourse`` import.

    Keep it in step with :func:`install_commands` (``tests/test_colab.py`` checks both).
    """
    return f"""\
# Setup. In Google Colab: install the course package and its pinned dependencies
# (about a minute). Anywhere else this cell does nothing.
import subprocess, sys
try:
    import google.colab  # noqa: F401  (only importable inside Colab)
except ImportError:
    pass
else:
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "{PIP_REQUIREMENT}"]
    print("Colab setup:", " ".join(cmd[2:]))
    subprocess.run(cmd, check=True)"""
