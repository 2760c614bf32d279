"""A Colab-like run: Colab's package versions, the course installed by the notebooks' first cell, three chapters
executed, and the playground clicked in classic Notebook 6.5.7 with ipywidgets 7.7.1 (Colab's widgets).

Usage (``bash scripts/colab_like_run.sh`` runs this with the repository's ``.venv/bin/python``)::

    python scripts/colab_like_run.py [--venv DIR] [--out DIR] [--python PYTHON]

The steps, each timed:

1. **A fresh environment** (``--venv``, deleted and made again every run) from ``--python`` (Python 3.11), with
   ``torch==2.13.0`` first (it stands in for Colab's CUDA torch 2.11), then Colab's exact versions of
   :data:`COLAB_PACKAGES`, read from the ``[pip freeze]`` section of ``tests/data/colab_runtime.txt``. The rest of
   that freeze is given to pip as constraints, so that their own dependencies (pyzmq, jupyter_core, nbclassic,
   prompt_toolkit, ...) are Colab's versions too. Nothing else is installed: Colab's nbclient, nbformat and
   jupyter_client drive the kernels, and the browser part uses this script's own Python (Playwright) and
   Debian's Chromium (``/usr/bin/chromium``).
2. **The course installed by the first cell.** The first code cell of ``notebooks/01_pipeline.ipynb``, with
   ``git+https://github.com/sdcourse/sdcourse`` replaced by ``file://`` and this checkout's path and nothing else
   changed, runs in a kernel of the new environment after a cell that plants a fake ``google.colab`` module
   (so the cell believes it is in Colab). Its printout and time are recorded; then the versions of
   :data:`HELD` must still be Colab's, or the run stops.
3. **Chapters 1, 4 and 11** run top to bottom with nbclient in that environment's kernel (working folder
   ``notebooks/``, ``HF_HUB_OFFLINE=1``, ``SDCOURSE_MODEL=mini``), each after the same fake-Colab cell and with its
   own first cell pointed at this checkout, as a learner in Colab runs them. The executed copies go to ``--out``;
   an error names the chapter's cell.
4. **The playground in a browser**: ``jupyter notebook`` (classic Notebook 6.5.7) of the new environment on
   127.0.0.1 with token auth and temporary config, data and runtime folders serves a copy of chapter 11.
   Headless Chromium runs all cells, waits for the panel (ipywidgets 7.7.1 drawn by widgetsnbextension 3.6.10),
   types a prompt and a seed, clicks Generate and waits for the picture, which must be a PNG that is new and not
   one flat colour. Screenshots of the panel before and after Generate go to ``--out``.

At the end it prints a summary and writes it to ``--out``/summary.json. Exit status 1 when a step fails.
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
FREEZE = ROOT / "tests" / "data" / "colab_runtime.txt"
CACHE = Path.home() / ".cache" / "sdcourse-runs" / "colab-like"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT_MS = 900_000  # generous: chapter 11's graded cells run in the page too, on 2 shared cores

TORCH = "torch==2.13.0"  # a CPU build on this disk stands in for Colab's torch 2.11.0+cu128
COLAB_PACKAGES = {  # Colab's versions (its pip freeze of 2026-08-19); the freeze file, when there, wins
    "ipython": "7.34.0", "ipykernel": "6.17.1", "notebook": "6.5.7", "ipywidgets": "7.7.1",
    "widgetsnbextension": "3.6.10", "jupyterlab-widgets": "3.0.16", "tornado": "6.5.7", "traitlets": "5.7.1",
    "jupyter-client": "7.4.9", "transformers": "5.15.0", "huggingface-hub": "1.27.0", "accelerate": "1.14.0",
    "tokenizers": "0.22.2", "diffusers": "0.39.0", "numpy": "2.1.3", "nbclient": "0.10.4", "nbconvert": "7.17.1",
    "nbformat": "5.11.1"}
HELD = ("ipython", "ipykernel", "notebook", "tornado", "ipywidgets")  # google-colab's pins and Colab's widgets
NOT_CONSTRAINED = re.compile(r"^(torch|torchvision|torchaudio|triton|nvidia-.*|sdcourse)$")  # Colab's CUDA stack
CHAPTERS = ("01_pipeline.ipynb", "04_klms_loop_by_hand.ipynb", "11_playground.ipynb")
REPO_URL = "git+https://github.com/sdcourse/sdcourse"

FAKE_COLAB = """\
# Colab-like run: make `import google.colab` work, as it does in Colab (a module with nothing in it).
import importlib.machinery, sys, types
try:
    import google
except ImportError:
    google = sys.modules["google"] = types.ModuleType("google")
    google.__path__, google.__spec__ = [], importlib.machinery.ModuleSpec("google", None, is_package=True)
google.colab = sys.modules["google.colab"] = types.ModuleType("google.colab")
google.colab.__path__ = []
google.colab.__spec__ = importlib.machinery.ModuleSpec("google.colab", None, is_package=True)"""


class RunFailed(Exception):
    """A step of the run went wrong; the message says which and why."""


def name_of(text: str) -> str:
    """A package name as pip compares them: lower case, runs of ``-_.`` as one ``-``."""
    return re.sub(r"[-_.]+", "-", text).lower()


def colab_freeze() -> dict[str, str]:
    """``{name: version}`` of Colab's pip freeze (the ``[pip freeze]`` section of tests/data/colab_runtime.txt);
    only :data:`COLAB_PACKAGES` when that file is not there."""
    if not FREEZE.exists():
        return dict(COLAB_PACKAGES)
    section, found = "pip freeze", {}  # a file without sections is all freeze
    for line in FREEZE.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "pip freeze" and "==" in line:
            name, version = line.split("==", 1)
            found[name_of(name.split("[")[0])] = version.strip()
    missing = set(COLAB_PACKAGES) - set(found)
    if missing:
        raise RunFailed(f"{FREEZE.name} names no version of {sorted(missing)}")
    return found


def first_cell(requirement: str) -> str:
    """The first code cell of chapter 1 with the course's GitHub URL replaced by ``requirement``."""
    cells = json.loads((NOTEBOOKS / CHAPTERS[0]).read_text())["cells"]
    source = "".join(next(c for c in cells if c["cell_type"] == "code")["source"])
    if source.count(REPO_URL) != 1:
        raise RunFailed(f"the first code cell of {CHAPTERS[0]} names {REPO_URL} {source.count(REPO_URL)} times, "
                        "not once: is it still the Colab setup cell?")
    return source.replace(REPO_URL, requirement)


def run(cmd: list, what: str, **kwargs) -> subprocess.CompletedProcess:
    """Run ``cmd``; raise :class:`RunFailed` naming ``what`` (with the end of its output) if it fails."""
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)
    if done.returncode:
        raise RunFailed(f"{what} failed (exit {done.returncode}):\n{(done.stdout + done.stderr)[-4000:]}")
    return done


# --------------------------------------------------------------------------- inside the new environment
def execute(notebook: Path, out: Path, timeout: int) -> None:
    """Run ``notebook`` with nbclient in a fresh kernel (this Python's ``python3``); write it to ``out``.

    Called as ``python colab_like_run.py --execute NOTEBOOK OUT`` by the new environment's Python, so Colab's
    nbclient and jupyter_client drive the kernel. Prints one JSON line: seconds, cell timings, error.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(notebook, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=True,
                            resources={"metadata": {"path": os.getcwd()}})
    start, error = time.perf_counter(), None
    try:
        client.execute()
    except CellExecutionError as exc:
        index = next((i for i, c in enumerate(nb.cells) if any(o.get("output_type") == "error"
                                                                for o in c.get("outputs", []))), None)
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()  # without the terminal colours
        error = {"cell": index, "message": text.splitlines()[-1][:400] if text else ""}
    seconds = time.perf_counter() - start
    nbformat.write(nb, out)
    print("RESULT " + json.dumps({"seconds": seconds, "error": error, "cells": [
        {"index": i, "seconds": cell_seconds(c), "stdout": stream(c, "stdout"), "stderr": stream(c, "stderr")}
        for i, c in enumerate(nb.cells) if c.cell_type == "code"]}))


def stream(cell, name: str) -> str:
    """What a cell wrote to ``name`` (stdout or stderr)."""
    return "".join(o.get("text", "") for o in cell.get("outputs", [])
                   if o.get("output_type") == "stream" and o.get("name") == name)


def cell_seconds(cell) -> float | None:
    """How long the kernel took for a cell, from nbclient's timing metadata."""
    from datetime import datetime

    timing = cell.get("metadata", {}).get("execution", {})
    try:
        start, end = (datetime.fromisoformat(timing[k].replace("Z", "+00:00"))
                      for k in ("iopub.execute_input", "shell.execute_reply"))
    except (KeyError, ValueError):
        return None
    return (end - start).total_seconds()


# --------------------------------------------------------------------------- the steps
class ColabLikeRun:
    """The four steps, in order; each fills its part of ``summary`` (what :meth:`report` prints)."""

    def __init__(self, venv: Path, out: Path, python: str):
        self.venv, self.out, self.python = venv, out, python
        self.py = venv / "bin" / "python"
        self.summary = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "steps": {}}
        self.jupyter = out / "jupyter"  # kernelspec, data, runtime and config folders of this run

    def environment(self, **extra) -> dict:
        """The environment of the new venv's processes: its bin first, private Jupyter folders."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "JUPYTER_PATH")}
        env.update(PATH=f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(self.venv),
                   JUPYTER_PATH=str(self.jupyter / "path"), JUPYTER_DATA_DIR=str(self.jupyter / "data"),
                   JUPYTER_CONFIG_DIR=str(self.jupyter / "config"), JUPYTER_RUNTIME_DIR=str(self.jupyter / "runtime"),
                   PYDEVD_DISABLE_FILE_VALIDATION="1", **extra)  # no debugger warning from each kernel
        return env

    def timed(self, name: str, step):
        print(f"colab-like run: {name} ...", flush=True)
        start = time.perf_counter()
        result = step()
        self.summary["steps"][name] = round(time.perf_counter() - start, 1)
        print(f"colab-like run: {name}: {self.summary['steps'][name]:.0f} s", flush=True)
        return result

    # 1 ------------------------------------------------------------------------------------------------
    def make_venv(self) -> None:
        if self.venv.exists():
            shutil.rmtree(self.venv)
        self.venv.parent.mkdir(parents=True, exist_ok=True)
        run([self.python, "-m", "venv", self.venv], "creating the virtual environment")
        version = run([self.py, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"], "python").stdout
        self.summary["python"] = version.strip()
        if not version.startswith("3.11."):
            raise RunFailed(f"{self.python} is Python {version.strip()}, not 3.11; pass --python")
        run([self.py, "-m", "pip", "install", "--quiet", TORCH], f"pip install {TORCH}")

    def install_colab_packages(self) -> None:
        freeze = colab_freeze()
        wanted = [f"{name}=={freeze[name]}" for name in COLAB_PACKAGES]
        # the rest of Colab's freeze, for their dependencies; not what torch brought (torch 2.13 needs a newer
        # setuptools than Colab's, for one)
        there = self.installed()
        constraints = self.out / "colab_constraints.txt"
        constraints.write_text("\n".join(f"{n}=={v}" for n, v in sorted(freeze.items()) if n not in COLAB_PACKAGES
                                         and n not in there and not NOT_CONSTRAINED.match(n)) + "\n")
        torch_now = self.versions(["torch"])["torch"]
        pin = self.out / "torch_pin.txt"
        pin.write_text(f"torch=={torch_now}\n")
        run([self.py, "-m", "pip", "install", "--quiet", "-c", constraints, "-c", pin, *wanted],
            "pip install of Colab's versions")
        self.summary["colab_versions"] = dict(zip(COLAB_PACKAGES, (w.split("==")[1] for w in wanted)))
        self.summary["torch"] = torch_now
        self.check_versions(self.summary["colab_versions"], list(COLAB_PACKAGES), "after installing Colab's versions")
        self.kernelspec()

    def kernelspec(self) -> None:
        """The only ``python3`` kernel the run's Jupyter processes see: the new environment's Python."""
        spec = self.jupyter / "path" / "kernels" / "python3"
        spec.mkdir(parents=True, exist_ok=True)
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [str(self.py), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (Colab-like)", "language": "python"}))

    def installed(self) -> set[str]:
        code = "import importlib.metadata as md; print(*(d.metadata['Name'] for d in md.distributions()))"
        return {name_of(n) for n in run([self.py, "-c", code], "listing the environment").stdout.split()}

    def versions(self, names: list[str]) -> dict[str, str | None]:
        code = ("import importlib.metadata as md, json, sys\n"
                "def v(n):\n    try:\n        return md.version(n)\n    except md.PackageNotFoundError:\n"
                "        return None\nprint(json.dumps({n: v(n) for n in sys.argv[1:]}))")
        return json.loads(run([self.py, "-c", code, *names], "reading versions").stdout)

    def check_versions(self, expected: dict, names: list[str], when: str) -> dict:
        now = self.versions(names)
        wrong = {n: (expected[n], now[n]) for n in names if now[n] != expected[n]}
        if wrong:
            raise RunFailed(f"{when}: not Colab's versions: " +
                            ", ".join(f"{n} is {got} (Colab: {want})" for n, (want, got) in wrong.items()))
        return now

    # 2 ------------------------------------------------------------------------------------------------
    def notebook_of(self, *sources: str) -> dict:
        cells = [{"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "source": s}
                 for s in sources]
        return {"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                            "language": "python"}},
                "nbformat": 4, "nbformat_minor": 5}

    def execute(self, notebook: Path, out: Path, cwd: Path, timeout: int = 1800, **env) -> dict:
        """Run a notebook in the new environment's kernel (see :func:`execute`); return its JSON line."""
        done = subprocess.run([self.py, Path(__file__).resolve(), "--execute", notebook, out, str(timeout)],
                              capture_output=True, text=True, cwd=cwd, env=self.environment(**env))
        line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            raise RunFailed(f"running {notebook.name} failed before any result:\n{(done.stdout + done.stderr)[-4000:]}")
        return json.loads(line[len("RESULT "):])

    def install_course(self) -> None:
        cell = first_cell(f"file://{ROOT}")
        notebook = self.out / "colab_setup.ipynb"
        notebook.write_text(json.dumps(self.notebook_of(FAKE_COLAB, cell)))
        result = self.execute(notebook, notebook, cwd=self.out)
        if result["error"]:
            raise RunFailed(f"the setup cell failed: {result['error']['message']}")
        setup = result["cells"][1]
        self.summary["setup_cell"] = {"printed": setup["stdout"].strip(), "seconds": round(setup["seconds"], 1),
                                      "stderr": setup["stderr"].strip()}  # pip's warnings, if any
        if "Colab setup: installed" not in setup["stdout"]:
            raise RunFailed(f"the setup cell did not report an install; it printed:\n{setup['stdout']}")
        colab = self.summary["colab_versions"]
        self.summary["held_after_setup"] = self.check_versions(colab, list(HELD), "after the setup cell")
        after = self.versions(list(COLAB_PACKAGES) + ["torch", "sdcourse", "open-clip-torch"])
        self.summary["changed_by_setup"] = {n: f"{colab[n]} -> {after[n]}" for n in COLAB_PACKAGES
                                            if after[n] != colab[n]}
        if after["torch"] != self.summary["torch"]:
            raise RunFailed(f"the setup cell changed torch: {self.summary['torch']} -> {after['torch']}")
        self.summary["sdcourse"] = after["sdcourse"]
        self.summary["open_clip_torch"] = after["open-clip-torch"] or "not installed"

    # 3 ------------------------------------------------------------------------------------------------
    def chapters(self) -> None:
        done = self.out / "chapters"
        done.mkdir(exist_ok=True)
        self.summary["chapters"] = {}
        for name in CHAPTERS:
            nb = json.loads((NOTEBOOKS / name).read_text())
            first = next(c for c in nb["cells"] if c["cell_type"] == "code")
            first["source"] = "".join(first["source"])
            if first["source"].count(REPO_URL) != 1:
                raise RunFailed(f"{name}: its first code cell does not name {REPO_URL} once")
            first["source"] = first["source"].replace(REPO_URL, f"file://{ROOT}")
            nb["cells"].insert(0, self.notebook_of(FAKE_COLAB)["cells"][0])
            copy = done / name
            copy.write_text(json.dumps(nb))
            print(f"colab-like run:   {name} ...", flush=True)
            result = self.execute(copy, copy, cwd=NOTEBOOKS, HF_HUB_OFFLINE="1", SDCOURSE_MODEL="mini")
            setup = result["cells"][1]
            self.summary["chapters"][name] = {"seconds": round(result["seconds"], 1),
                                              "setup_cell_seconds": round(setup["seconds"] or 0, 1),
                                              "setup_cell_printed": setup["stdout"].strip()}
            if result["error"]:
                cell = result["error"]["cell"]
                where = f"cell {cell - 1} (0-based, in the committed notebook)" if cell else "a cell"
                raise RunFailed(f"{name}: {where} raised: {result['error']['message']} (executed copy: {copy})")
            print(f"colab-like run:   {name}: {result['seconds']:.0f} s", flush=True)
        self.check_versions(self.summary["colab_versions"], list(HELD), "after the chapters")

    # 4 ------------------------------------------------------------------------------------------------
    def browser(self) -> None:
        if not CHROMIUM.exists():
            raise RunFailed(f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium)")
        from playwright.sync_api import sync_playwright

        shots = self.out / "screenshots"
        shots.mkdir(exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix="notebook-root-", dir=self.out))
        shutil.copy(NOTEBOOKS / CHAPTERS[2], root / CHAPTERS[2])
        server, url, token = self.start_notebook_server(root)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch_persistent_context(
                    str(self.out / "chromium-profile"), executable_path=str(CHROMIUM), headless=True,
                    args=CHROMIUM_ARGS, viewport={"width": 1100, "height": 1800})
                page = browser.new_page()
                console, log = [], open(self.out / "browser_console.log", "w")
                page.on("console", lambda m: (console.append(m.text), log.write(f"{m.type}: {m.text}\n")))
                page.on("pageerror", lambda err: log.write(f"page error: {err}\n"))
                try:
                    page.goto(f"{url}/notebooks/{CHAPTERS[2]}?token={token}")
                    wait_for_widget_manager(page, console)
                    self.click_generate(page, shots)
                except Exception:
                    try:  # what the page showed when it went wrong
                        page.screenshot(path=str(shots / "failure.png"), full_page=True, timeout=60_000)
                    except Exception:  # noqa: BLE001  (the first error is the one to report)
                        pass
                    raise
                finally:
                    browser.close()
                    log.close()
        finally:
            stop_server(server, url, token)

    def click_generate(self, page, shots: Path) -> None:
        """Run all cells of the open chapter 11, then type a prompt and a seed, click Generate, check the picture."""
        start = time.perf_counter()
        page.evaluate("() => { Jupyter.notebook.clear_all_output(); Jupyter.notebook.execute_all_cells(); }")
        ran = page.wait_for_function(ALL_CELLS_RAN, timeout=WAIT_MS, polling=1000).json_value()
        if ran is not True:
            raise RunFailed(f"chapter 11 in the browser: {ran}")
        self.summary["browser_run_all_seconds"] = round(time.perf_counter() - start, 1)
        panel = page.locator(".sdc-panel")
        try:
            panel.wait_for(timeout=60_000)
        except Exception:
            shown = page.evaluate(PANEL_CELL)
            raise RunFailed(f"no playground panel in the page; the panel's cell shows: {shown!r}") from None
        self.summary["widgets_front_end"] = page.evaluate(FRONT_END)
        before = picture_bytes(page)
        panel.screenshot(path=str(shots / "notebook6_playground_before.png"))

        page.locator(".sdc-prompt input").fill("a green square in the center on a black background")
        page.locator(".sdc-seed input").fill("5")
        page.locator(".sdc-seed input").press("Enter")
        page.wait_for_timeout(500)
        start = time.perf_counter()
        page.locator("button.sdc-generate-button").click()
        page.wait_for_function("() => { const e = document.querySelector('.sdc-status');"
                               " const t = e ? e.textContent : ''; return t.includes('Done')"
                               " && t.includes('seed 5'); }", timeout=WAIT_MS)
        page.wait_for_timeout(1000)  # the picture's new bytes arrive with the status
        self.summary["browser_generate_seconds"] = round(time.perf_counter() - start, 1)
        after = picture_bytes(page)
        panel.screenshot(path=str(shots / "notebook6_playground_after.png"))
        self.summary["picture"] = check_picture(after, before)
        box = page.locator("img.sdc-image").bounding_box()
        if not box or box["width"] < 64 or box["height"] < 64:
            raise RunFailed(f"the playground's picture is drawn {box} in the page")
        self.summary["picture"] += f", drawn {box['width']:.0f} x {box['height']:.0f} px"
        self.summary["status_line"] = page.locator(".sdc-status").inner_text()
        self.summary["screenshots"] = [str(shots / "notebook6_playground_before.png"),
                                       str(shots / "notebook6_playground_after.png")]

        # a picture uploaded through ipywidgets 7's FileUpload (whose value is a dict there), then img2img from it
        page.locator(".sdc-mode button", has_text="img2img").click()
        page.locator(".sdc-picture select").select_option("upload")
        with page.expect_file_chooser() as chooser:  # ipywidgets 7 keeps its <input type=file> out of the page
            page.locator(".sdc-panel .widget-upload").first.click()
        chooser.value.set_files(files=[{"name": "drawn.png", "mimeType": "image/png", "buffer": drawn_png()}])
        page.wait_for_function("() => document.querySelector('.sdc-picture-error').textContent === ''",
                               timeout=60_000)
        page.locator("button.sdc-generate-button").click()
        page.wait_for_function("() => { const t = document.querySelector('.sdc-status').textContent;"
                               " return t.includes('Done') && t.includes('img2img'); }", timeout=WAIT_MS)
        if "Image.open('drawn.png')" not in page.locator(".sdc-panel").inner_text():
            raise RunFailed("img2img from the uploaded picture: the shown code does not open drawn.png")
        panel.screenshot(path=str(shots / "notebook6_playground_upload.png"))
        self.summary["upload"] = "img2img from drawn.png, uploaded in the page: " + \
            page.locator(".sdc-status").inner_text()

    def start_notebook_server(self, root: Path):
        port, token = free_port(), secrets.token_hex(16)
        log = open(self.out / "notebook_server.log", "w")
        env = self.environment(HF_HUB_OFFLINE="1", SDCOURSE_MODEL="mini")
        server = subprocess.Popen(
            [self.venv / "bin" / "jupyter", "notebook", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
             f"--NotebookApp.token={token}", f"--notebook-dir={root}", "--allow-root"],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
        url, deadline = f"http://127.0.0.1:{port}", time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                return server, url, token
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    server.kill()
                    raise RunFailed("Notebook 6 did not start; its log:\n"
                                    + (self.out / "notebook_server.log").read_text()[-3000:]) from None
                time.sleep(0.5)

    # ---------------------------------------------------------------------------------------------------
    def report(self) -> None:
        s = self.summary
        (self.out / "summary.json").write_text(json.dumps(s, indent=2) + "\n")
        print("\n=== Colab-like run:", s["date"], "===")
        print("python", s.get("python"), "| torch", s.get("torch"), "(stands in for Colab's 2.11.0+cu128)")
        if "held_after_setup" in s:
            print("held at Colab's versions:", ", ".join(f"{n} {v}" for n, v in s["held_after_setup"].items()))
        if "changed_by_setup" in s:
            print("changed by the setup cell:", ", ".join(f"{n} {v}" for n, v in s["changed_by_setup"].items())
                  or "none of Colab's")
        if "setup_cell" in s:
            print(f"setup cell ({s['setup_cell']['seconds']:.0f} s) printed:")
            print("    " + s["setup_cell"]["printed"].replace("\n", "\n    "))
            if s["setup_cell"]["stderr"]:
                print(f"    (and {len(s['setup_cell']['stderr'].splitlines())} lines on stderr: see summary.json)")
            print("open-clip-torch:", s.get("open_clip_torch"), "(the chapters below ran without it)"
                  if s.get("open_clip_torch") == "not installed" and "screenshots" in s else "")
        for name, c in s.get("chapters", {}).items():
            print(f"{name}: {c['seconds']:.0f} s (its setup cell {c['setup_cell_seconds']:.0f} s: "
                  f"{c['setup_cell_printed'].splitlines()[-1] if c['setup_cell_printed'] else 'nothing printed'})")
        if "screenshots" in s:
            print(f"browser (Notebook 6.5.7, {s['widgets_front_end']}): run all {s['browser_run_all_seconds']:.0f} s, "
                  f"Generate {s['browser_generate_seconds']:.0f} s, picture {s['picture']}")
            print("status line:", s["status_line"])
            print("upload:", s.get("upload"))
            print("screenshots:", *s["screenshots"], sep="\n    ")
        print("steps (s):", ", ".join(f"{k} {v:.0f}" for k, v in s["steps"].items()))
        print("result:", s.get("result"))


ALL_CELLS_RAN = """() => {
    const cells = Jupyter.notebook.get_cells();
    for (let i = 0; i < cells.length; i++) {
        const c = cells[i];
        if (c.cell_type !== 'code') continue;
        const outs = c.output_area.outputs;
        const err = outs.find(o => o.output_type === 'error');
        if (err) return 'error in cell ' + i + ': ' + err.ename + ': ' + err.evalue;
        if (typeof c.input_prompt_number !== 'number') return false;
    }
    return true;
}"""

FRONT_END = """() => {
    const panel = document.querySelector('.sdc-panel');
    const loaded = window.require && require.defined('nbextensions/jupyter-js-widgets/extension');
    const size = panel ? panel.offsetWidth + 'x' + panel.offsetHeight + ' px' : 'missing';
    return 'widgetsnbextension ' + (loaded ? 'loaded' : 'not loaded') + ', panel ' + size;
}"""


def wait_for_widget_manager(page, console: list[str]) -> None:
    """Wait until widgetsnbextension's widget manager has made its first contact with the kernel.

    When the manager starts, it asks the kernel for the widgets that exist (ipywidgets 7.7.1 in the kernel
    has no "jupyter.widget.control" channel, so it falls back to a comm_info request), then draws every widget
    output in the page again. If "Run all" comes first, that request waits behind all the cells, and the
    redraw at the end hides the playground panel (the notebook keeps an empty output). So: wait for the
    manager, for its fallback (or 30 s), then for one kernel_info round trip behind its request.
    """
    page.wait_for_function("() => window.Jupyter && Jupyter.notebook && Jupyter.notebook._fully_loaded"
                           " && Jupyter.notebook.kernel && Jupyter.notebook.kernel.is_connected()"
                           " && Jupyter.notebook.kernel.widget_manager !== undefined", timeout=WAIT_MS)
    deadline = time.time() + 30
    while not any("jupyter.widget.control" in text for text in console) and time.time() < deadline:
        page.wait_for_timeout(200)
    page.evaluate("() => new Promise(done => Jupyter.notebook.kernel.kernel_info(done))")
    page.wait_for_timeout(1000)


PANEL_CELL = """() => {
    const cell = Jupyter.notebook.get_cells().find(c => c.cell_type === 'code' && /^pg$/m.test(c.get_text()));
    return cell ? cell.output_area.element[0].innerText.slice(0, 500) : 'no cell ends with pg';
}"""


def picture_bytes(page) -> bytes:
    """The bytes behind the playground's result picture (its <img> holds a blob: URL)."""
    data = page.evaluate("""async () => {
        const img = document.querySelector('img.sdc-image');
        if (!img || !img.src) return '';
        const bytes = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
        let s = ''; for (const b of bytes) s += String.fromCharCode(b);
        return btoa(s);
    }""")
    return base64.b64decode(data)


def drawn_png() -> bytes:
    """A 64 x 64 PNG to upload: a yellow square on black."""
    from PIL import Image, ImageDraw

    picture = Image.new("RGB", (64, 64))
    ImageDraw.Draw(picture).rectangle((16, 16, 47, 47), fill=(240, 220, 0))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def check_picture(data: bytes, before: bytes) -> str:
    """Check the page's new picture: a PNG, not the one shown before, not one flat colour; describe it."""
    from PIL import Image

    if not data:
        raise RunFailed("the playground's picture is empty after Generate")
    if data == before:
        raise RunFailed("the playground's picture did not change after Generate")
    picture = Image.open(io.BytesIO(data)).convert("RGB")
    low, high = zip(*picture.getextrema())
    if low == high:
        raise RunFailed(f"the playground's picture is one flat colour {low}")
    colours = len(picture.getcolors(maxcolors=1 << 20) or [])
    return f"{picture.width}x{picture.height} PNG, {len(data)} bytes, {colours} colours"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_server(server, url, token):
    try:  # the kernels first, then the server
        with urllib.request.urlopen(f"{url}/api/kernels?token={token}", timeout=5) as answer:
            for kernel in json.load(answer):
                request = urllib.request.Request(f"{url}/api/kernels/{kernel['id']}?token={token}", method="DELETE")
                urllib.request.urlopen(request, timeout=10)
    except OSError:
        pass
    server.terminate()
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        server.kill()


def main(argv=None) -> int:
    if argv is None and len(sys.argv) == 5 and sys.argv[1] == "--execute":
        execute(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--venv", type=Path, default=Path(os.environ.get("SDCOURSE_COLAB_VENV", CACHE / "venv")),
                    help="the virtual environment, deleted and made again (default %(default)s)")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("SDCOURSE_COLAB_OUT", CACHE / "out")),
                    help="executed notebooks, screenshots, summary.json (default %(default)s)")
    ap.add_argument("--python", default=os.environ.get("SDCOURSE_COLAB_PYTHON", "python3.11"),
                    help="the Python 3.11 that makes the environment (default %(default)s)")
    args = ap.parse_args(argv)
    out = args.out.resolve()
    if out == NOTEBOOKS or NOTEBOOKS in out.parents:
        ap.error("--out must not be the notebooks folder: the executed copies would replace the course's")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    job = ColabLikeRun(args.venv.resolve(), out, args.python)
    try:
        job.timed("environment", job.make_venv)
        job.timed("colab_packages", job.install_colab_packages)
        job.timed("setup_cell", job.install_course)
        job.timed("chapters", job.chapters)
        job.timed("browser", job.browser)
    except Exception as err:  # noqa: BLE001  (the summary so far, then the reason)
        job.summary["result"] = f"FAILED: {type(err).__name__}: {err}"
        job.report()
        return 1
    job.summary["result"] = "passed"
    job.report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
