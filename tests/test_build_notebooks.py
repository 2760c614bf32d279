"""scripts/build_notebooks.py: strips volatile metadata, turns progress widgets into text, refuses leaks."""
import json
import sys

import nbformat
import numpy as np
import pytest

from conftest import load_script

build = load_script("scripts/build_notebooks.py")

BAR_STATES = {
    "box": {"state": {"children": ["IPY_MODEL_left", "IPY_MODEL_bar", "IPY_MODEL_right"]}},
    "left": {"state": {"value": "denoising: 100%"}},
    "bar": {"state": {"value": 20, "max": 20}},
    "right": {"state": {"value": "\u200720/20 [00:01&lt;00:00, 15.2it/s]"}},
}


def notebook_with(outputs, cell_metadata=None):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("pass", outputs=outputs)
    cell.metadata.update(cell_metadata or {})
    nb.cells = [cell]
    nb.metadata.update({"widgets": {build.WIDGET_STATE: {"state": BAR_STATES}},
                        "language_info": {"name": "python", "version": "3.11.7"}})
    return nb


def test_widget_becomes_its_final_text():
    assert build.widget_text("box", BAR_STATES) == "denoising: 100%|██████████| 20/20 [00:01<00:00, 15.2it/s]"
    assert build.widget_text("unknown", BAR_STATES) is None


def test_clean_strips_volatile_metadata():
    widget = nbformat.v4.new_output("display_data", data={build.WIDGET_VIEW: {"model_id": "box"}, "text/plain": "0%"})
    picture = nbformat.v4.new_output("display_data", data={"image/png": "iVBO", "image/jpeg": "/9j/", "text/plain": "<PIL>"})
    nb = notebook_with([widget, picture], {"execution": {"iopub.execute_input": "2026-01-01T00:00:00"}})
    build.clean(nb, BAR_STATES)
    cell = nb.cells[0]
    assert "widgets" not in nb.metadata and "version" not in nb.metadata["language_info"]
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert "execution" not in cell.metadata
    assert cell.outputs[0].output_type == "stream" and cell.outputs[0].text.startswith("denoising: 100%|")
    assert set(cell.outputs[1].data) == {"image/png", "text/plain"}  # the JPEG copy is dropped


@pytest.mark.parametrize("text, what", [
    ("saved to /home/alice/pictures\n", "a path of this machine"),
    ("cwd /work/main\n", "a path of this machine"),
    ("token = hf_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5\n", "Hugging Face token"),
])
def test_check_refuses_leaks(text, what):
    nb = notebook_with([nbformat.v4.new_output("stream", name="stdout", text=text)])
    problems = build.check(nb, "99_example.ipynb")
    assert len(problems) == 1 and what in problems[0] and "99_example.ipynb: cell 0" in problems[0]


def test_check_passes_clean_outputs():
    nb = notebook_with([nbformat.v4.new_output("stream", name="stdout", text="latents: (1, 4, 8, 8)\n")])
    assert build.check(nb, "x.ipynb") == []


def test_failing_cell_is_named(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("JUPYTER_PATH", "")  # the script puts its own kernelspec first; undone afterwards
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Broken"), nbformat.v4.new_code_cell("x = 1"),
                nbformat.v4.new_code_cell("x / 0")]
    path = tmp_path / "98_broken.ipynb"
    nbformat.write(nb, path)
    status = build.main(["--out", str(tmp_path / "build"), str(path)])
    err = capsys.readouterr().err
    assert status == 1
    assert "98_broken.ipynb: code cell 2" in err and "ZeroDivisionError" in err
    assert (tmp_path / "build" / "index.html").is_file()
    assert nbformat.read(path, as_version=4).cells[2].outputs == []  # the original is untouched


def test_missing_notebook_is_an_error(tmp_path, capsys):
    assert build.main(["--out", str(tmp_path), str(tmp_path / "nope.ipynb")]) == 2
    assert "not found" in capsys.readouterr().err


def test_a_cell_that_times_out_or_kills_the_kernel_is_named_and_the_rest_still_build(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("JUPYTER_PATH", "")
    slow = small_chapter(tmp_path / "01_slow.ipynb", "1. Slow", "It sleeps.", ["x = 1", "import time; time.sleep(60)"])
    dies = small_chapter(tmp_path / "02_dies.ipynb", "2. Dies", "It ends its kernel.", ["import os; os._exit(3)"])
    junk = tmp_path / "03_junk.ipynb"
    junk.write_text("this is not JSON {")
    fine = small_chapter(tmp_path / "04_fine.ipynb", "4. Fine", "It works.", ["print('hello')"])
    status = build.main(["--out", str(tmp_path / "build"), "--timeout", "5", str(slow), str(dies), str(junk), str(fine)])
    err = capsys.readouterr().err
    assert status == 1
    assert "01_slow.ipynb: code cell 2 (cell 2 of the file, starting 'import time; time.sleep(60)') did not finish " \
           "within 5 s" in err
    assert "02_dies.ipynb: the kernel died while running code cell 1" in err
    assert "03_junk.ipynb: not a readable notebook file" in err and "git checkout -- 03_junk.ipynb" in err
    assert "3 of 4 notebooks failed: 01_slow.ipynb, 02_dies.ipynb, 03_junk.ipynb" in err
    assert "Traceback" not in err
    index = (tmp_path / "build" / "index.html").read_text()
    assert index.count('class="card failed"') == 3 and "1 of 4 notebooks ran" in index
    assert "did not finish within 5 s" in index
    assert "hello" in (tmp_path / "build" / "04_fine.ipynb").read_text()


def test_an_inplace_write_that_fails_leaves_the_notebook_as_it_was(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("JUPYTER_PATH", "")
    path = small_chapter(tmp_path / "05_keep.ipynb", "5. Keep", "Kept whole.", ["print('new output')"])
    before = path.read_bytes()
    real_write = nbformat.write

    def disk_full(nb, target, *args, **kwargs):  # writes the first bytes, then fails as a full disk does
        with open(target, "w") as f:
            f.write(nbformat.writes(nb)[:100])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(build.nbformat, "write", disk_full)
    assert build.main(["--inplace", str(path)]) == 1
    err = capsys.readouterr().err
    assert "05_keep.ipynb: ran, but could not be written" in err and "No space left on device" in err
    assert "Traceback" not in err
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["05_keep.ipynb"]  # no temporary file left behind
    monkeypatch.setattr(build.nbformat, "write", real_write)
    assert build.main(["--inplace", str(path)]) == 0
    assert "new output" in path.read_text() and nbformat.read(path, as_version=4).cells[1].outputs


# ---------------------------------------------------------------- the index page a learner opens first

def small_chapter(path, title, intro, code):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(f"[badge](https://example.org)\n\n# {title}\n\n{intro}\n\nMore."),
                *[nbformat.v4.new_code_cell(c) for c in code]]
    nbformat.write(nb, path)
    return path


@pytest.fixture(scope="module")
def built_index(tmp_path_factory):
    """Two small chapters built as run_course.sh builds the course: one draws a picture, one fails."""
    tmp = tmp_path_factory.mktemp("course")
    good = small_chapter(tmp / "01_red.ipynb", "1. A red square", "A **red** square, drawn by [PIL](x). Then more.",
                         ["from PIL import Image", "Image.new('RGB', (64, 64), (200, 30, 30))"])
    bad = small_chapter(tmp / "02_broken.ipynb", "2. Broken", "This one divides by zero.", ["x = 1", "x / 0"])
    mp = pytest.MonkeyPatch()
    mp.setenv("JUPYTER_PATH", "")
    mp.setenv("SDCOURSE_MODEL", "mini")
    try:
        status = build.main(["--out", str(tmp / "build"), str(good), str(bad)])
    finally:
        mp.undo()
    return status, tmp / "build"


def test_index_names_the_model_each_chapter_its_summary_picture_time_and_failure(built_index):
    status, out = built_index
    assert status == 1  # one chapter failed
    page = (out / "index.html").read_text()
    assert "the course&#x27;s mini model, because SDCOURSE_MODEL=mini asks for it" in page
    assert "A red square, drawn by PIL." in page  # the first sentence, without markdown
    assert '<img src="pictures/01_red.png"' in page and (out / "pictures" / "01_red.png").is_file()
    assert "ran in " in page and "1 of 2 notebooks ran" in page
    assert "Failed: 02_broken.ipynb: code cell 2" in page and "ZeroDivisionError" in page


def test_index_in_chromium(built_index, tmp_path):
    """The page as a learner sees it: every card shows, its picture loads, and the failure stands out."""
    from pathlib import Path

    from PIL import Image

    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        pytest.fail(f"{chromium} is missing: install Debian's chromium package (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    _, out = built_index
    shot = tmp_path / "index.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        page = browser.new_page(viewport={"width": 1000, "height": 700})
        page.goto((out / "index.html").as_uri())
        assert page.locator(".card").count() == 2
        assert page.evaluate("() => [...document.images].map(i => i.complete && i.naturalWidth)") == [64]
        red = page.locator("p.failed")
        assert red.is_visible() and "ZeroDivisionError" in red.inner_text()
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[1] == 1000 and pixels.std() > 10  # not a blank page
    assert ((pixels[..., 0] > 150) & (pixels[..., 1] < 80) & (pixels[..., 2] < 80)).sum() > 64 * 64  # the picture
