"""Measuring speed honestly: timing, the machine a number was measured on, and results files.

A timing means little without the machine, the library versions and the date, and a
GPU timing means nothing unless the GPU has finished (CUDA calls return before the
work is done). This module gives the benchmarks in ``benchmarks/`` and chapter 10
one way to do each:

* :func:`time_call` runs a function a few times after warm-up, synchronising the
  device, and returns every duration (report the median);
* :func:`machine_info` names the CPU, core count, GPU (or "no GPU"), versions, date;
* :func:`write_results` / :func:`load_results` store a result as JSON plus a
  Markdown table in ``benchmarks/results/``; :func:`markdown_table` formats rows.

Example::

    >>> from sdcourse.speed import time_call
    >>> times = time_call(lambda: sum(range(1000)), repeats=3, warmup=1)
    >>> len(times)
    3
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import time
import urllib.request
from pathlib import Path
from typing import Callable

import torch

from .colab import REPO_URL
from .validate import check_timing

__all__ = ["load_results", "machine_info", "markdown_table", "median", "results_dir", "time_call",
           "write_results"]

RAW_RESULTS_URL = REPO_URL.replace("https://github.com/", "https://raw.githubusercontent.com/") \
    + "/main/benchmarks/results"
"""Where a notebook outside a checkout (Colab) reads the committed results files from."""


def _sync(device) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], repeats: int = 3, warmup: int = 1, device=None) -> list[float]:
    """Run ``fn()`` ``warmup`` times untimed, then ``repeats`` times timed; return the seconds of each.

    With a CUDA ``device`` the GPU is synchronised before starting and after each
    call, so a duration covers the GPU work and not only the launching of it.

    >>> t = time_call(lambda: None, repeats=5, warmup=0)
    >>> len(t), min(t) >= 0
    (5, True)
    """
    repeats, warmup = check_timing(fn, repeats, warmup)
    for _ in range(warmup):  # first calls pay for compiling, caches, memory
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)  # wait for GPU work queued before the clock starts
        start = time.perf_counter()
        fn()
        _sync(device)  # a GPU call returns at once: wait until its work is done
        times.append(time.perf_counter() - start)
    return times


def median(times) -> float:
    """The median of a list of durations (robust to one slow outlier run)."""
    times = list(times)
    if not times:
        raise ValueError("median needs at least one duration, got an empty list.")
    return float(statistics.median(times))


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


_KNOWN_JOBS = [
    ("sdcourse.mini.train", "sdcourse.mini.train (mini model training)"),
    ("build_notebooks.py", "notebook execution (scripts/build_notebooks.py)"),
    ("pytest", "a pytest run"),
    ("ipykernel_launcher", "a Jupyter kernel"),
]


def _other_jobs() -> list[str]:
    """Known heavy jobs running beside the benchmark (training, notebook runs, test runs)."""
    found = []
    for pid in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        for pattern, label in _KNOWN_JOBS:
            if pattern in cmd:
                found.append(label)
    return sorted(set(found))


def machine_info(device=None) -> dict:
    """What a timing was measured on: CPU, cores, GPU, library versions, threads, load, date (UTC).

    >>> info = machine_info()
    >>> sorted(info)[:3]
    ['concurrent_jobs', 'cpu', 'cpu_cores']
    """
    import diffusers
    import transformers

    gpu = "no GPU"
    if device is not None and torch.device(device).type == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.device(device))
        gpu = f"{props.name}, {props.total_memory / 2**30:.0f} GiB"
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpu": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "gpu": gpu,
        "torch_threads": torch.get_num_threads(),
        "nice": os.nice(0) if hasattr(os, "nice") else None,
        "load_average_1min": round(load[0], 2) if load else None,
        "concurrent_jobs": _other_jobs(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.version.cuda,
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    """Format ``rows`` (dicts) as a Markdown table with the given columns (missing cells stay empty).

    >>> print(markdown_table([{"a": 1, "b": 0.5}], ["a", "b"]))
    | a | b |
    |---|---|
    | 1 | 0.5 |
    """
    if not columns:
        raise ValueError("markdown_table needs at least one column name.")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join("" if row.get(c) is None else str(row.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def results_dir() -> Path:
    """``benchmarks/results`` of the course checkout this package was installed from (may not exist)."""
    return Path(__file__).resolve().parent.parent / "benchmarks" / "results"


def _check_name(name) -> str:
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"a results name is a plain file stem such as 'cpu_mini', got {name!r}.")
    return name


def write_results(name: str, data: dict, markdown: str, directory: str | Path | None = None) -> tuple[Path, Path]:
    """Write ``<name>.json`` (the data) and ``<name>.md`` (for people) into ``directory``; return both paths."""
    name = _check_name(name)
    directory = results_dir() if directory is None else Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    json_path, md_path = directory / f"{name}.json", directory / f"{name}.md"
    json_path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    md_path.write_text(markdown.rstrip() + "\n", encoding="utf-8")
    return json_path, md_path


def load_results(name: str, directory: str | Path | None = None, *, download: bool = True) -> dict | None:
    """Read ``<name>.json``: from ``directory`` (default: this checkout's ``benchmarks/results``),
    else (outside a checkout, e.g. Colab) from the course's GitHub repository.  ``None`` if neither works.
    """
    name = _check_name(name)
    local = (results_dir() if directory is None else Path(directory)) / f"{name}.json"
    if local.is_file():
        return json.loads(local.read_text(encoding="utf-8"))
    if not download or directory is not None:
        return None
    try:
        with urllib.request.urlopen(f"{RAW_RESULTS_URL}/{name}.json", timeout=5) as response:
            return json.loads(response.read().decode("utf-8"))
    except (OSError, ValueError):
        return None
