"""Execute the course's notebooks headless, check their outputs, and write them (and HTML pages) out.

    python scripts/build_notebooks.py --out build notebooks/*.ipynb      # executed copies + HTML in build/
    python scripts/build_notebooks.py --inplace notebooks/03_*.ipynb     # refresh the committed outputs

With --inplace on the course's notebooks/ (the instructor sources) it then writes each one's learner's copy
into chapters/ and its worked solutions into solutions/ (sdcourse.grading.make_learner_copies).

Each notebook runs top to bottom in a Python kernel of *this* interpreter (the course's .venv),
from the notebooks folder. Then:

* volatile metadata is stripped so that re-running gives reviewable diffs: execution timestamps,
  the kernel's and Python's versions, and widget state; progress-bar widgets (tqdm) become one
  plain text line with their final state, since their widget state is not kept;
* the outputs are checked for this machine's paths (/work/, /root/, /home/) and for anything that
  looks like a Hugging Face token (hf_...); either fails the build.

A cell that raises fails the build with the notebook's name, the cell's number and the error.
The exit status is 0 only when every notebook ran and passed the checks.
"""
from __future__ import annotations

import argparse
import html
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

ROOT = Path(__file__).resolve().parents[1]
KERNEL = "python3"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
FORBIDDEN = [
    (re.compile(r"/(?:work|root|home)/"), "a path of this machine"),
    (re.compile(r"\bhf_[A-Za-z0-9]{20,}"), "something that looks like a Hugging Face token"),
]
TEXT_MIME = re.compile(r"^(text/|application/(json|javascript)|image/svg)")


class BuildError(Exception):
    pass


def private_kernelspec() -> str:
    """Write a kernelspec named python3 that starts this interpreter, and put it first on JUPYTER_PATH.

    A user's own ``python3`` kernel (in ~/.local/share/jupyter) would otherwise win and could run
    another Python without the course's packages.
    """
    folder = Path(tempfile.mkdtemp(prefix="sdcourse-kernel-"))
    spec = folder / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}", "--log-level=ERROR"],
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }))
    os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(folder), os.environ.get("JUPYTER_PATH")]))
    return str(folder)


def cell_name(nb, index: int) -> str:
    """'code cell 3 (cell 7 of the file, starting 'x = 1')': how a failure names its cell."""
    cell = nb.cells[index]
    number = sum(c.cell_type == "code" for c in nb.cells[: index + 1])
    first_line = (cell.source.strip().splitlines() or [""])[0][:80]
    return f"code cell {number} (cell {index} of the file, starting {first_line!r})"


def execute(nb, path: Path, timeout: int) -> dict:
    """Run every code cell in order; raise BuildError naming the first cell that fails, times out or kills
    the kernel.

    Returns the widget states the kernel reported (used to render progress bars as text).
    """
    running = {}
    client = NotebookClient(nb, timeout=timeout, kernel_name=KERNEL, record_timing=False,
                            resources={"metadata": {"path": str(path.parent)}},
                            on_cell_start=lambda cell, cell_index: running.update(index=cell_index))
    try:
        client.execute()
    except CellTimeoutError:
        raise BuildError(f"{path.name}: {cell_name(nb, running['index'])} did not finish within {timeout} s "
                         f"(the cell timeout; raise it with --timeout)") from None
    except DeadKernelError:
        raise BuildError(f"{path.name}: the kernel died while running {cell_name(nb, running['index'])} "
                         f"(out of memory, or the cell ended the process)") from None
    except CellExecutionError as err:
        index, cell = next(((i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code" and
                            any(o.output_type == "error" for o in c.outputs)), (None, None))
        if cell is None:
            raise BuildError(f"{path.name}: {err.ename}: {err.evalue}") from None
        raise BuildError(f"{path.name}: {cell_name(nb, index)} raised {err.ename}: {err.evalue}") from None
    return nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})


def widget_text(model_id: str, states: dict) -> str | None:
    """Render a tqdm progress-bar widget (HBox of label, bar, text) as its final text line."""
    box = states.get(model_id, {}).get("state", {})
    children = [states.get(c.removeprefix("IPY_MODEL_"), {}).get("state", {}) for c in box.get("children", [])]
    if len(children) != 3 or "max" not in children[1]:
        return None
    left, bar, right = children  # "desc: 100%", the bar, "20/20 [00:01<00:00, 15.2it/s]"
    done, total = bar.get("value", 0), bar.get("max", 0) or 1
    filled = min(10, int(10 * done / total))
    text = f"{left.get('value', '')}|{'█' * filled}{' ' * (10 - filled)}| {right.get('value', '')}"
    text = html.unescape(re.sub(r"<[^>]+>", "", text)).replace("\u2007", " ").replace("\xa0", " ")
    return re.sub(r" {2,}", " ", text).strip()


def clean(nb, states: dict) -> None:
    """Strip volatile metadata and turn progress-bar widgets into text, in place."""
    nb.metadata.pop("widgets", None)
    nb.metadata["kernelspec"] = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": KERNEL}
    info = nb.metadata.get("language_info", {})
    for key in ("version",):
        info.pop(key, None)
    for cell in nb.cells:
        for key in ("execution", "collapsed", "scrolled"):
            cell.metadata.pop(key, None)
        if cell.cell_type != "code":
            continue
        outputs = []
        for out in cell.outputs:
            data = out.get("data", {})
            if WIDGET_VIEW in data:
                text = widget_text(data[WIDGET_VIEW].get("model_id", ""), states)
                if text is None:
                    text = data.get("text/plain", "")
                    text = "".join(text) if isinstance(text, list) else text
                if text:
                    outputs.append(nbformat.v4.new_output("stream", name="stderr", text=text + "\n"))
                continue
            if "image/png" in data:  # PIL pictures come as PNG and JPEG: keep the lossless one only
                data.pop("image/jpeg", None)
            out.get("metadata", {}).pop("execution", None)
            outputs.append(out)
        cell.outputs = outputs


def check(nb, name: str) -> list[str]:
    """Return one message per output that shows a machine path or a token."""
    problems = []
    for index, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            texts = []
            if out.output_type == "stream":
                texts.append(out.text)
            elif out.output_type == "error":
                texts += [out.ename, out.evalue, *out.traceback]
            for mime, value in out.get("data", {}).items():
                if TEXT_MIME.match(mime):
                    texts.append(value if isinstance(value, str) else json.dumps(value))
            for text in texts:
                for pattern, what in FORBIDDEN:
                    match = pattern.search(text)
                    if match:
                        problems.append(f"{name}: cell {index} prints {what}: ...{text[max(0, match.start() - 30): match.end() + 30]!r}...")
    return problems


def write_notebook(nb, target: Path) -> None:
    """Write ``nb`` to ``target`` whole or not at all: into a temporary file beside it, then renamed over it.

    A write that fails part-way (a full disk, an interrupted build) leaves the old file as it was."""
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        nbformat.write(nb, temporary)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def read_notebook(path: Path):
    """The notebook at ``path``, or BuildError with one sentence when it is not a notebook file."""
    try:
        return nbformat.read(path, as_version=4)
    except (ValueError, UnicodeDecodeError, KeyError, AttributeError, TypeError) as err:
        # nbformat raises NotJSONError (a ValueError) for text that is not JSON, and assorted errors for JSON
        # that is not a notebook
        reason = str(err).split("\n")[0][:120] or type(err).__name__
        raise BuildError(f"{path.name}: not a readable notebook file ({reason}); restore it, for example "
                         f"with git checkout -- {path.name}") from None


def write_html(nb, target: Path) -> None:
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    target.write_text(body, encoding="utf-8")


def title_of(nb, fallback: str) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return fallback


def summary_of(nb) -> str:
    """The first sentence of the paragraph after the notebook's title, as plain text."""
    for cell in nb.cells:
        if cell.cell_type != "markdown" or "\n# " not in "\n" + cell.source:
            continue
        after = ("\n" + cell.source).split("\n# ", 1)[1].split("\n", 1)[-1]
        paragraph = next((p for p in re.split(r"\n\s*\n", after) if p.strip()), "")
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", " ".join(paragraph.split()))  # links -> their text
        text = re.sub(r"[*_`]", "", text)
        sentences = [m.strip() for m in re.findall(r".+?[.!?:](?=\s|$)", text)] or [text]
        summary = sentences[0]
        if len(summary) < 60 and len(sentences) > 1:  # "Chapter 3 took the pipeline apart." says little alone
            summary += " " + sentences[1]
        return summary[:-1] + "." if summary.endswith(":") else summary
    return ""


def first_picture(nb) -> bytes | None:
    """The first PNG among the notebook's outputs (decoded), or None."""
    import base64

    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {}).get("image/png")
            if data:
                return base64.b64decode("".join(data) if isinstance(data, list) else data)
    return None


FALLBACK_LINE = re.compile(r"sdcourse: (\S+) cannot be loaded \(([^)]*)\); using the bundled mini model")


def model_of_run(notebooks: list) -> str:
    """Which model the run used and why, from the environment and what the notebooks printed."""
    for nb in notebooks:
        for cell in nb.cells:
            for output in cell.get("outputs", []):
                found = FALLBACK_LINE.search(output.get("text", "") if isinstance(output.get("text", ""), str) else "")
                if found:
                    return (f"the course's mini model, because {found.group(1)} could not be loaded "
                            f"({found.group(2)})")
    chosen = os.environ.get("SDCOURSE_MODEL")
    if chosen == "mini":
        return "the course's mini model, because SDCOURSE_MODEL=mini asks for it"
    if chosen:
        return f"{chosen}, because SDCOURSE_MODEL names it"
    return "Stable Diffusion v1-4 (CompVis/stable-diffusion-v1-4), the real weights"


def write_index(entries: list[dict], out: Path, model: str = "") -> Path:
    """``out/index.html``: one card per notebook (``entries``: page, title, summary, status, seconds, picture
    (PNG bytes or None), error) with its picture, summary, time and, for a failure, the failing cell."""
    pictures = out / "pictures"
    cards = []
    for entry in entries:
        picture = ""
        if entry.get("picture"):
            pictures.mkdir(parents=True, exist_ok=True)
            name = Path(entry["page"]).stem + ".png"
            (pictures / name).write_bytes(entry["picture"])
            picture = f'<img src="pictures/{html.escape(name)}" alt="a picture from {html.escape(entry["title"])}">'
        failed = entry["status"] != "ran"
        status = (f'<p class="failed">Failed: {html.escape(entry.get("error") or "")}</p>' if failed else
                  f'<p class="time">ran in {entry["seconds"]:.0f} s</p>')
        cards.append(
            f'<li class="card{" failed" if failed else ""}"><a href="{html.escape(entry["page"])}">{picture}</a>'
            f'<div><h2><a href="{html.escape(entry["page"])}">{html.escape(entry["title"])}</a></h2>'
            f'<p>{html.escape(entry.get("summary", ""))}</p>{status}</div></li>')
    ran = sum(e["status"] == "ran" for e in entries)
    total = sum(e.get("seconds", 0) for e in entries)
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        "<title>Stable Diffusion from the outside in: the executed course</title><style>"
        "body{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em;line-height:1.5;"
        "color:#222}h1{margin-bottom:.2em}.model{background:#f3f6fa;border-left:4px solid #4a78b5;padding:.6em 1em}"
        "ul{list-style:none;padding:0}.card{display:flex;gap:1em;align-items:flex-start;padding:.8em 0;"
        "border-bottom:1px solid #ddd}.card img{width:160px;height:160px;object-fit:contain;background:#eee;"
        "image-rendering:pixelated;border-radius:4px}.card h2{font-size:1.15em;margin:.1em 0}"
        ".card p{margin:.3em 0}.time{color:#666;font-size:.9em}.failed{color:#b00020;font-weight:600}"
        "</style></head>\n"
        "<body><h1>Stable Diffusion from the outside in</h1>\n"
        f"<p class=\"model\"><strong>Model:</strong> {html.escape(model or 'not recorded')}.</p>\n"
        f"<p>{ran} of {len(entries)} notebooks ran, in {total / 60:.1f} min. Each link opens the executed "
        "notebook with its outputs.</p>\n"
        f"<ul>\n{chr(10).join(cards)}\n</ul></body></html>\n")
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="notebooks to run (default: notebooks/*.ipynb)")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--inplace", action="store_true", help="write the executed notebooks back over the originals")
    target.add_argument("--out", type=Path, default=ROOT / "build",
                        help="folder for the executed notebooks, their HTML pages and index.html (default: build/)")
    parser.add_argument("--timeout", type=int, default=1200, help="seconds one cell may run (default: 1200)")
    args = parser.parse_args(argv)

    paths = args.notebooks or sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
    missing = [str(p) for p in paths if not p.is_file() or p.suffix != ".ipynb"]
    if not paths or missing:
        print(f"build_notebooks: no notebooks to run{': not found: ' + ', '.join(missing) if missing else ''}",
              file=sys.stderr)
        return 2
    private_kernelspec()
    if not args.inplace:
        args.out.mkdir(parents=True, exist_ok=True)

    failures, entries, executed = [], [], []
    try:
        for number, path in enumerate(paths, 1):
            print(f"[{number}/{len(paths)}] {path.name} ...", end=" ", flush=True)
            start = time.perf_counter()
            failure = build_one(path.resolve(), args, entries, executed)
            print("FAILED" if failure else f"ok ({time.perf_counter() - start:.1f} s)")
            if failure:
                failures.append(failure)
    except KeyboardInterrupt:
        failures.append(f"interrupted (Ctrl-C) after {len(executed)} of {len(paths)} notebooks; "
                        "the notebooks not reached are as they were")
    finally:
        if not args.inplace:  # the index is written whatever happened, with a card for each notebook run
            index = write_index(entries, args.out, model_of_run(executed))
            print(f"build_notebooks: executed notebooks and HTML pages are in {args.out.resolve()}/; "
                  f"open {index.resolve()}")

    course = [p.resolve() for p in paths if p.resolve().parent == ROOT / "notebooks"]
    if args.inplace and course and not failures:  # the learners' copies follow their instructor sources
        sys.path.insert(0, str(ROOT))
        from sdcourse.grading import make_learner_copies

        for written in make_learner_copies(notebooks=course, out_dir=ROOT / "chapters",
                                           solutions_dir=ROOT / "solutions"):
            print(f"build_notebooks: wrote the learner's copy {written.relative_to(ROOT)} and its solutions page")
    for failure in failures:
        print(f"FAILED {failure}", file=sys.stderr)
    if failures:
        print(f"build_notebooks: {len(failures)} of {len(paths)} notebooks failed: "
              f"{', '.join(f.split(':')[0] for f in failures)}", file=sys.stderr)
    return 1 if failures else 0


def build_one(path: Path, args, entries: list, executed: list) -> str | None:
    """Run one notebook and write it out (and its HTML page and index card); return why it failed, or None.

    With --inplace a notebook is written back only when it ran and passed the checks, and whole or not at all.
    """
    start = time.perf_counter()
    nb = None
    try:
        nb = read_notebook(path)
        entry = {"page": path.stem + ".html", "title": title_of(nb, path.stem), "summary": summary_of(nb)}
        states = execute(nb, path, args.timeout)
        clean(nb, states)
        problems = check(nb, path.name)
        if problems:
            raise BuildError("\n".join(problems))
    except BuildError as err:
        if not args.inplace:  # keep what ran, error included, to look at; never over the original
            entry = {"page": path.stem + ".html", "title": path.stem, "summary": ""} if nb is None else entry
            if nb is not None:
                clean(nb, {})
                write_notebook(nb, args.out / path.name)
                write_html(nb, args.out / (path.stem + ".html"))
            entries.append({**entry, "status": "FAILED", "seconds": time.perf_counter() - start,
                            "picture": first_picture(nb) if nb is not None else None,
                            "error": str(err).split("\n")[0][:300]})
        return str(err)
    executed.append(nb)
    target = path if args.inplace else args.out / path.name
    try:
        write_notebook(nb, target)
        if not args.inplace:
            write_html(nb, args.out / (path.stem + ".html"))
    except OSError as err:
        return f"{path.name}: ran, but could not be written to {target} ({err.strerror or err}); the file there is as it was"
    if not args.inplace:
        entries.append({**entry, "status": "ran", "seconds": time.perf_counter() - start,
                        "picture": first_picture(nb)})
    return None


if __name__ == "__main__":
    sys.exit(main())
