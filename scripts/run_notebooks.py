"""Run notebooks top to bottom on any model folder, timing each and counting its UNet calls.

Usage (from the repository root)::

    python scripts/run_notebooks.py --standin /tmp/sd-standin          # build the tiny SD stand-in, run all
    python scripts/run_notebooks.py --model FOLDER notebooks/01_pipeline.ipynb
    python scripts/run_notebooks.py --standin DIR --full-size --out benchmarks/results --name gpu_notebooks
    python scripts/run_notebooks.py --standin /tmp/sd-standin --jobs 2   # two notebooks at a time

Each notebook is executed with nbclient in a fresh kernel (the outputs are not written back):
the runner puts one cell in front that starts counting UNet forward passes
(``sdcourse.cost.start_counting``) and one at the end that reports the count, the count the
notebook states in its Colab note (``sdcourse.cost.colab_note``) and the peak GPU memory.
A notebook fails when a cell raises (its assertions included) or when its stated count differs
from the counted one (unless ``--no-check-calls``, which scripts/gpu_check.sh uses: on a GPU,
chapter 10 runs CUDA-only cells, and CUDA-graph replays do not pass through the counter). Output checks of nbval (cells tagged ``nbval-check-output``) are not applied: their
reference outputs are the mini model's.

The model is passed to the notebooks through ``SDCOURSE_MODEL``; ``--standin DIR`` first builds
an SD v1-4-shaped folder with random weights there (``sdcourse.standin.build_standin``).
Exit status 1 if any notebook failed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARK = "SDCOURSE_RUN_REPORT "
# Left out unless named: chapter 13 trains a small UNet on the bundled mini model's frozen VAE and text encoder,
# whatever SDCOURSE_MODEL says, so another model (the stand-in) runs the very same cells; it runs under nbval.
MODEL_INDEPENDENT = ("13_train_your_own.ipynb",)

SETUP = """import sdcourse.cost as _sdc_cost
_sdc_counter = _sdc_cost.start_counting()
try:
    import torch as _sdc_torch
    if _sdc_torch.cuda.is_available():
        _sdc_torch.cuda.reset_peak_memory_stats()
except Exception:
    pass"""

REPORT = """import json as _sdc_json
import torch as _sdc_torch
_sdc_report = dict(_sdc_counter.as_dict(), peak_gib=None)
if _sdc_torch.cuda.is_available():
    _sdc_report["peak_gib"] = round(_sdc_torch.cuda.max_memory_allocated() / 2**30, 2)
_sdc_cost.stop_counting()
print("%s" + _sdc_json.dumps(_sdc_report))""" % MARK


def run_notebook(path: Path, timeout: int = 1200, check_calls: bool = True, threads: int | None = None) -> dict:
    """Execute one notebook in a fresh kernel; return its wall time, UNet calls and any error.

    ``threads`` caps the kernel's CPU threads (``OMP_NUM_THREADS``, which torch reads when it starts)."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    from sdcourse.cost import stated_calls

    result = {"notebook": path.name, "ok": False, "error": None}
    try:
        nb = nbformat.read(path, as_version=4)
        result["declared_calls"] = stated_calls(nb)  # the count its Colab note states
    except Exception as exc:  # not JSON, not a notebook: this one fails, the others still run
        return {**result, "seconds": 0.0, "error": f"not a readable notebook file ({type(exc).__name__}: "
                                                   f"{str(exc).splitlines()[0][:200] if str(exc) else ''})"}
    nb.cells.insert(0, nbformat.v4.new_code_cell(SETUP))
    nb.cells.append(nbformat.v4.new_code_cell(REPORT))
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    try:
        client.execute(**({"env": {**os.environ, "OMP_NUM_THREADS": str(threads)}} if threads else {}))
    except CellExecutionError as exc:
        failed = [(cell.get("id"), out) for cell in nb.cells for out in cell.get("outputs", [])
                  if out.get("output_type") == "error"]
        if failed:
            cell_id, out = failed[0]
            result["error"] = f"cell {cell_id}: {out.get('ename')}: {out.get('evalue')}"[:500]
        else:
            lines = [line for line in str(exc).splitlines() if line.strip()]
            result["error"] = lines[-1][:500] if lines else "a cell failed"
    except Exception as exc:  # a dead kernel, a timeout
        result["error"] = f"{type(exc).__name__}: {exc}"[:500]
    result["seconds"] = round(time.perf_counter() - start, 1)
    for output in nb.cells[-1].get("outputs", []):
        text = output.get("text", "")
        if MARK in text:
            result.update(json.loads(text.split(MARK, 1)[1].strip()))
    if result["error"] is None:
        result["ok"] = True
        declared, counted = result.get("declared_calls"), result.get("unet_calls")
        if check_calls and declared is not None and declared != counted:
            result["ok"] = False
            result["error"] = (f"the notebook's Colab note states {declared} UNet calls but it made "
                               f"{counted}; write sdcourse.cost.colab_note({counted}) there")
    return result


def to_markdown(data: dict) -> str:
    machine = data["machine"]
    named = ", ".join(str(machine[k]) for k in ("gpu", "cpu") if machine.get(k))
    lines = [f"# Notebooks on the {data['model']}", "",
             f"Machine: {named}. Command: `{data['command']}`.", "",
             "| notebook | ok | seconds | UNet calls (stated) | peak GPU GiB |",
             "| --- | --- | ---: | ---: | ---: |"]
    for r in data["rows"]:
        lines.append(f"| {r['notebook']} | {'yes' if r['ok'] else 'NO'} | {r['seconds']} | "
                     f"{r.get('unet_calls')} ({r.get('declared_calls')}) | {r.get('peak_gib')} |")
    lines += ["", f"Total: {data['total_seconds']} s."]
    failed = [r for r in data["rows"] if not r["ok"]]
    lines += [f"- {r['notebook']}: {r['error']}" for r in failed]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="default: every notebooks/*.ipynb but those that do not depend on the model")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="'mini', a hub id or a diffusers folder (SDCOURSE_MODEL)")
    which.add_argument("--standin", type=Path, help="build the SD v1-4-shaped stand-in in this folder, run on it")
    parser.add_argument("--full-size", action="store_true", help="with --standin: SD v1-4's real widths")
    parser.add_argument("--timeout", type=int, default=1200, help="seconds per cell")
    parser.add_argument("--no-check-calls", action="store_true",
                        help="record the UNet calls but do not compare them with the stated ones (on a GPU, chapter "
                             "10's CUDA-only cells make calls that CUDA-graph replays hide from the counter)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="notebooks run at a time, the CPU cores shared out among them (default 1; on a GPU, "
                             "keep 1: the timings and the peak memory are then each notebook's own)")
    parser.add_argument("--out", type=Path, help="write <name>.json and <name>.md into this folder")
    parser.add_argument("--name", default="notebooks")
    args = parser.parse_args(argv)
    if not 1 <= args.jobs <= 64:
        parser.error(f"--jobs must be 1 to 64, got {args.jobs}")

    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    notebooks = args.notebooks or [p for p in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
                                   if p.name not in MODEL_INDEPENDENT]
    if not args.notebooks:
        print(f"run_notebooks: leaving out {', '.join(MODEL_INDEPENDENT)} (it does not depend on the model; "
              "name it to run it)", flush=True)
    if not notebooks:
        parser.error("no notebooks found (notebooks/NN_*.ipynb)")
    missing = [str(p) for p in notebooks if not p.is_file()]
    if missing:
        parser.error(f"no such notebook: {', '.join(missing)}")
    if args.standin is not None:
        from sdcourse.standin import build_standin

        start = time.perf_counter()
        model = str(build_standin(args.standin, full_size=args.full_size))
        print(f"built the {'full-size' if args.full_size else 'tiny'} SD v1-4 stand-in in "
              f"{time.perf_counter() - start:.1f} s", flush=True)
    else:
        model = args.model
    os.environ["SDCOURSE_MODEL"] = model

    threads = max(1, (os.cpu_count() or 1) // args.jobs) if args.jobs > 1 else None

    def run_and_report(path) -> dict:
        row = run_notebook(Path(path).resolve(), args.timeout, check_calls=not args.no_check_calls, threads=threads)
        print(f"{row['notebook']:32} {'ok  ' if row['ok'] else 'FAIL'} {row['seconds']:7.1f} s  "
              f"UNet calls {row.get('unet_calls')} (stated {row.get('declared_calls')})"
              + (f"  peak {row['peak_gib']} GiB" if row.get("peak_gib") is not None else "")
              + (f"\n    {row['error']}" if row["error"] else ""), flush=True)
        return row

    start = time.perf_counter()
    if args.jobs == 1:
        rows = [run_and_report(path) for path in notebooks]
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            rows = list(pool.map(run_and_report, notebooks))
    total = round(sum(r["seconds"] for r in rows), 1)
    wall = f", {time.perf_counter() - start:.1f} s of wall time with {args.jobs} at a time" if args.jobs > 1 else ""
    print(f"{len(rows)} notebooks, {sum(not r['ok'] for r in rows)} failed, {total} s in all{wall}")
    if args.out is not None:
        from sdcourse.speed import machine_info, write_results

        import torch

        kind = "full-size SD v1-4 stand-in" if args.full_size else "tiny SD v1-4 stand-in"
        data = {"model": kind if args.standin is not None else model,
                "machine": machine_info("cuda" if torch.cuda.is_available() else "cpu"),
                "command": "python scripts/run_notebooks.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                "rows": rows, "total_seconds": total}
        write_results(args.name, data, to_markdown(data), args.out)
    return 1 if any(not r["ok"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
