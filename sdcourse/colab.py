"""Google Colab setup: install the course package there without touching Colab's own packages.

A fresh Colab runtime has torch but not ``sdcourse``, so the first code cell of every
notebook cannot import this module. Instead that cell is the text of
:func:`setup_cell_source`: plain Python that checks whether ``google.colab`` can be
imported and, only then, runs ``pip install`` of the course from :data:`REPO_URL`
with its ``colab`` extra. On your own machine the cell does nothing and prints nothing.

Colab's runtime is not ours to change. Its ``google-colab`` package pins IPython,
ipykernel, notebook and tornado, its front end is built for ipywidgets 7, and upgrading
those can make the runtime crash again and again. So the cell gives pip a constraints
file that holds, at the versions the runtime has:

* the packages named in :data:`ALWAYS_HELD` (those, plus Colab's CUDA build of torch);
* every package that ``google-colab`` itself pins (read from its metadata);
* every package whose modules this kernel has already imported (a new version of those
  would need a restart to take effect).

If the course cannot be installed that way, pip stops before changing anything and says
which requirement clashes. Afterwards the cell prints what it installed or upgraded.
``tests/test_colab.py`` runs the cell with a fake ``google.colab`` module, and resolves
the install against Colab's published runtime (``tests/data/colab_runtime.txt``).

:func:`setup_colab` runs the same cell from Python, for scripts::

    >>> from sdcourse.colab import setup_colab
    >>> setup_colab()          # outside Colab: runs nothing
    False
"""
from __future__ import annotations

import importlib.util
import subprocess

__all__ = ["ALWAYS_HELD", "PIP_REQUIREMENT", "REPO_URL", "in_colab", "setup_cell_source", "setup_colab"]

REPO_URL = "https://github.com/sdcourse/sdcourse"
"""Where the course lives; Colab installs the package from here."""

PIP_REQUIREMENT = f"sdcourse[colab] @ git+{REPO_URL}"
"""The package with its ``colab`` extra: the dependencies, MP4 video and the playground's widgets."""

ALWAYS_HELD = ("ipython", "ipykernel", "notebook", "tornado", "ipywidgets", "torch")
"""Packages the Colab install never changes: google-colab's pins, Colab's widgets, Colab's torch build."""


def in_colab() -> bool:
    """True inside Google Colab (the ``google.colab`` module can be imported)."""
    try:
        return importlib.util.find_spec("google.colab") is not None
    except ModuleNotFoundError:  # no `google` package at all
        return False


def setup_cell_source(requirement: str = PIP_REQUIREMENT) -> str:
    """The text of every notebook's first code cell: self-contained, no ``sdcourse`` import.

    ``requirement`` is what pip installs (the course from GitHub; a ``file://`` URL of a
    checkout for a Colab-like test run). The cell defines ``held(versions, colab_pins,
    imported)``, the list of ``name==version`` lines pip must keep, so tests can call it
    with Colab's published versions.
    """
    held = ", ".join(f'"{name}"' for name in ALWAYS_HELD)
    return f"""\
# Setup. In Google Colab: install the course (about a minute), keeping every package that Colab
# pins, and every package this kernel has already imported, at the version Colab has (so no
# restart is needed). Anywhere else this cell does nothing.
import importlib.metadata as md, re, subprocess, sys, tempfile
try:
    import google.colab  # noqa: F401  (only importable inside Colab)
except ImportError:
    pass
else:
    def name_of(text):
        return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.-]+", text)[0]).lower()

    def held(versions, colab_pins, imported):
        \"\"\"The lines `name==version` that pip must keep as they are.\"\"\"
        names = {{{held}}}  # Colab's own, its CUDA torch
        names |= {{name_of(r) for r in colab_pins if "==" in r}} | {{name_of(d) for d in imported}}
        return sorted(f"{{n}}=={{versions[n]}}" for n in names - {{"sdcourse"}} if n in versions)

    def installed():
        return {{name_of(d.metadata["Name"]): d for d in md.distributions() if d.metadata["Name"]}}

    before = {{n: d.version for n, d in installed().items()}}
    colab_pins = installed()["google-colab"].requires if "google-colab" in before else []
    loaded = {{m.split(".")[0] for m in sys.modules}}
    imported = {{d for m, ds in md.packages_distributions().items() if m in loaded for d in ds}}
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as pins:
        pins.write("\\n".join(held(before, colab_pins or [], imported)))
    print("Colab setup: installing the course; Colab's own packages stay as they are")
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "-c", pins.name,
           "{requirement}"]
    if subprocess.run(cmd).returncode:
        raise SystemExit("Colab setup: pip could not install the course without changing Colab's own packages "
                         "(its message is above). Runtime > Disconnect and delete runtime, then run this cell first.")
    after = {{n: d.version for n, d in installed().items()}}
    print("Colab setup: installed", ", ".join(f"{{n}} {{v}}" + (f" (was {{before[n]}})" if n in before else "")
                                          for n, v in sorted(after.items()) if before.get(n) != v) or "nothing new")"""


def setup_colab(run=subprocess.run) -> bool:
    """In Colab, run the setup cell (install the course) and return True; elsewhere return False.

    ``run`` is the function that executes pip (``subprocess.run`` by default; tests pass a recorder).
    """
    if not in_colab():
        return False
    real, subprocess.run = subprocess.run, run
    try:
        exec(compile(setup_cell_source(), "<Colab setup cell>", "exec"), {"__name__": "__colab_setup__"})
    finally:
        subprocess.run = real
    return True
