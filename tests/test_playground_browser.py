"""The playground in a real browser: JupyterLab on 127.0.0.1 driven by headless Chromium through Playwright.

The test starts its own JupyterLab (token auth on; temporary settings, workspace, runtime and
config folders; a private kernelspec that runs this interpreter), opens chapter 11, runs all
cells, types a prompt, clicks Generate and checks that the picture in the page has the pixels
the headless path makes for the same settings. Then one bad input and one img2img run.

It needs Debian's ``chromium`` (``/usr/bin/chromium``; ``.ci/run`` installs it) and the
``playwright`` Python package; nothing downloads a browser. Screenshots go to
``$SDCOURSE_SCREENSHOTS`` (default: the test's temporary folder).
"""
import base64
import io
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdcourse.playground import Playground

from conftest import load_script

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "11_playground.ipynb"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT_MS = 300_000  # generous: the course's CI machine has 2 shared cores


# the Colab-like run's own helpers: a free port, and stopping a Jupyter server with its kernels
_colab_like_run = load_script("scripts/colab_like_run.py")
free_port, stop_jupyterlab = _colab_like_run.free_port, _colab_like_run.stop_server


def start_jupyterlab(tmp: Path):
    """JupyterLab serving a copy of chapter 11, with everything it writes kept under ``tmp``."""
    root = tmp / "root"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    spec = tmp / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ipykernel)", "language": "python"}))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               HF_HUB_OFFLINE="1", SDCOURSE_MODEL="mini",
               JUPYTER_PATH=os.pathsep.join(filter(None, [str(tmp / "jupyter"), os.environ.get("JUPYTER_PATH")])),
               JUPYTER_DATA_DIR=str(tmp / "data"), JUPYTER_CONFIG_DIR=str(tmp / "config"),
               JUPYTER_RUNTIME_DIR=str(tmp / "runtime"), JUPYTERLAB_SETTINGS_DIR=str(tmp / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"))
    news = tmp / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text(json.dumps({"fetchNews": "false"}))  # no "Jupyter news?" pop-up over the page
    port, token = free_port(), secrets.token_hex(16)
    log = open(tmp / "jupyterlab.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
         "--LabApp.news_url=None", "--allow-root", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if server.poll() is not None or time.time() > deadline:
                server.kill()
                pytest.fail(f"JupyterLab did not start; its log:\n{(tmp / 'jupyterlab.log').read_text()[-3000:]}")
            time.sleep(0.5)
    return server, url, token


def page_picture(page) -> np.ndarray:
    """The pixels of the playground's result picture as the page has them (the bytes behind the <img>)."""
    data = page.evaluate("""async () => {
        const img = document.querySelector('img.sdc-image');
        const bytes = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
        let s = ''; for (const b of bytes) s += String.fromCharCode(b);
        return btoa(s);
    }""")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))


def headless_picture(pipe, **knobs) -> np.ndarray:
    """The same settings through the headless path."""
    panel = Playground(pipe, threaded=False)
    for name, value in knobs.items():
        getattr(panel, name).value = value
    assert panel.generate(), panel.status.value
    return np.asarray(Image.open(io.BytesIO(panel.image.value)).convert("RGB"))


def wait_for_status(page, *words):
    condition = " && ".join(f"t.includes({json.dumps(w)})" for w in words)
    page.wait_for_function(f"() => {{ const e = document.querySelector('.sdc-status'); "
                           f"const t = e ? e.textContent : ''; return {condition}; }}", timeout=WAIT_MS)


ALL_CELLS_RAN = """() => {
    const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
    if (!panel || !panel.content || !panel.content.model) return false;
    const cells = panel.content.model.cells;
    for (let i = 0; i < cells.length; i++) {
        const c = cells.get(i);
        if (c.type !== 'code') continue;
        const outs = c.outputs.toJSON();
        if (outs.some(o => o.output_type === 'error')) return 'error in cell ' + i + ': ' + JSON.stringify(outs);
        if (!c.executionCount) return false;
    }
    return panel.sessionContext.session.kernel.status === 'idle';
}"""


def test_playground_in_jupyterlab_in_chromium(tmp_path, pipe):
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium); "
                    ".ci/run does this when it can.")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright Python package is missing: pip install playwright (it drives the system "
                    "Chromium; no browser download is needed).")
    shots = Path(os.environ.get("SDCOURSE_SCREENSHOTS", tmp_path / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    server, url, token = start_jupyterlab(tmp_path)
    page = None
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True,
                args=CHROMIUM_ARGS, viewport={"width": 1200, "height": 1800})
            page = browser.new_page()
            page.goto(f"{url}/lab/tree/{NOTEBOOK.name}?token={token}")
            page.wait_for_function("() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
                                   " const k = w && w.sessionContext && w.sessionContext.session &&"
                                   " w.sessionContext.session.kernel; return k && k.status === 'idle'; }",
                                   timeout=WAIT_MS)
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            ran = page.wait_for_function(ALL_CELLS_RAN, timeout=WAIT_MS).json_value()
            assert ran is True, ran
            side = pipe.unet.config.sample_size * pipe.vae_scale_factor

            # txt2img from the page: type a prompt and a seed, click Generate, wait for the picture
            prompt = "a green square in the center on a black background"
            page.locator(".sdc-prompt input").fill(prompt)
            page.locator(".sdc-seed input").fill("5")
            page.locator(".sdc-seed input").press("Enter")
            page.locator("button.sdc-generate-button").click()
            wait_for_status(page, "Done", "txt2img", "seed 5")
            shown = page_picture(page)
            box = page.locator("img.sdc-image").bounding_box()  # the page draws it, at least at its own size
            assert box and box["width"] >= shown.shape[1] and box["height"] >= shown.shape[0], box
            # the notebook's own cells left 2 pictures, DDIM, 20 steps: the same settings headless
            expected = headless_picture(pipe, prompt=prompt, seed=5, n_images=2, scheduler="ddim")
            assert shown.shape == expected.shape and shown.shape[1] >= 2 * side
            np.testing.assert_array_equal(shown, expected, err_msg="the page's picture differs from the headless one")
            page.locator(".sdc-panel").screenshot(path=str(shots / "playground_txt2img.png"))

            # a bad input: one sentence next to the width knob, the picture kept
            page.locator(".sdc-width input").fill("500")
            page.locator(".sdc-width input").press("Enter")
            page.locator("button.sdc-generate-button").click()
            page.wait_for_function("() => document.querySelector('.sdc-width-error').textContent.includes('500')",
                                   timeout=WAIT_MS)
            assert "Traceback" not in page.locator(".sdc-panel").inner_text()
            np.testing.assert_array_equal(page_picture(page), expected)
            page.locator(".sdc-panel").screenshot(path=str(shots / "playground_bad_width.png"))
            page.locator(".sdc-width input").fill(str(side))
            page.locator(".sdc-width input").press("Enter")

            # img2img from the course's scene picture
            page.locator(".sdc-mode button", has_text="img2img").click()
            page.locator("button.sdc-generate-button").click()
            wait_for_status(page, "Done", "img2img", "seed 5")
            assert page.locator(".sdc-width-error").inner_text() == ""
            expected = headless_picture(pipe, mode="img2img", prompt=prompt, seed=5, n_images=2, scheduler="ddim")
            np.testing.assert_array_equal(page_picture(page), expected)
            page.locator(".sdc-panel").screenshot(path=str(shots / "playground_img2img.png"))
            browser.close()
    except Exception:
        if page is not None:  # what the page showed when it went wrong
            page.screenshot(path=str(shots / "failure.png"))
        raise
    finally:
        stop_jupyterlab(server, url, token)
    print(f"browser test: {time.perf_counter() - started:.0f} s; screenshots in {shots.name}/")


def test_a_missing_chromium_is_a_failure_not_a_skip(monkeypatch, tmp_path):
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", tmp_path / "no-chromium")
    with pytest.raises(pytest.fail.Exception, match="install Debian's chromium package"):
        test_playground_in_jupyterlab_in_chromium(tmp_path, pipe=None)
