"""CPU benchmark of the bundled mini model: seconds per picture by scheduler and step count.

Usage (from the repository root)::

    python benchmarks/bench_cpu_mini.py                 # schedulers x steps, batching, fast loop
    python benchmarks/bench_cpu_mini.py --notebooks     # ... plus executing the whole notebook series

Writes ``benchmarks/results/cpu_mini.json`` and ``cpu_mini.md``, naming the machine
(CPU model, cores, "no GPU"), the library versions, the date and any heavy job that ran
beside it (the mini model's training, when it was running, slows every number here).

What is timed, always the median of ``--repeats`` runs after one warm-up run:

* ``StableDiffusionPipeline.__call__`` for one 64 x 64 picture (text encoding, the
  loop with classifier-free guidance 7.5, VAE decoding, PIL conversion) for each
  scheduler (pndm, ddim, klms, euler, dpm++) and each step count;
* the same at batch 4 (seconds per picture), to show what batching buys on a CPU;
* the latents-only loop three ways: ``sdcourse.loop.denoise`` (the chapter 4 loop),
  ``sdcourse.fast_loop.FastLoop`` (precomputed K-LMS), and the pipeline with
  ``output_type="latent"``;
* with ``--notebooks``: the wall time of executing every ``notebooks/NN_*.ipynb`` with
  ``scripts/build_notebooks.py`` into a temporary folder (the committed ones are untouched).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import sdcourse
from sdcourse.fast_loop import FastLoop
from sdcourse.loop import denoise, encode_prompt, initial_latents
from sdcourse.schedulers import make_scheduler, scheduler_names
from sdcourse.speed import machine_info, markdown_table, median, time_call, write_results

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "a small red circle in the center on a black background"
GUIDANCE = 7.5
TARGET_20_STEPS_S = 1.5  # the target: one 20-step 64 px picture on the 2-core CPU


def load_mini():
    pipe = sdcourse.load_pipeline("mini", device="cpu", dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def time_pipeline(pipe, scheduler: str, steps: int, batch: int, repeats: int, output_type: str = "pil") -> float:
    """Median seconds per picture of one pipeline call making ``batch`` pictures."""
    pipe.scheduler = make_scheduler(scheduler, pipe.scheduler.config)
    prompts = [PROMPT] * batch

    def run():
        pipe(prompts, num_inference_steps=steps, guidance_scale=GUIDANCE, output_type=output_type,
             generator=torch.Generator().manual_seed(0))

    return median(time_call(run, repeats=repeats, warmup=1)) / batch


def scheduler_table(pipe, schedulers, step_counts, repeats):
    rows = []
    for name in schedulers:
        row = {"scheduler": name}
        for steps in step_counts:
            row[f"{steps} steps (s/picture)"] = round(time_pipeline(pipe, name, steps, 1, repeats), 3)
        rows.append(row)
        print(row, flush=True)
    return rows


def batching_table(pipe, steps, repeats):
    rows = []
    for batch in (1, 4):
        s = time_pipeline(pipe, "klms", steps, batch, repeats)
        rows.append({"batch": batch, "s/picture": round(s, 3), "pictures/s": round(1 / s, 2)})
        print(rows[-1], flush=True)
    return rows


def loop_table(pipe, steps, repeats):
    """Latents only, K-LMS, prompt encoding included: the pipeline vs chapter 4's loop vs the fast loop."""
    h = pipe.unet.config.sample_size * pipe.vae_scale_factor
    sched = make_scheduler("klms", pipe.scheduler.config)
    fast = FastLoop(pipe.unet, pipe.scheduler, scheduler="klms", steps=steps,
                    vae_scale_factor=pipe.vae_scale_factor, guidance_scale=GUIDANCE)

    def plain():
        emb = encode_prompt(pipe.tokenizer, pipe.text_encoder, [PROMPT])
        sched.set_timesteps(steps)
        lat = initial_latents(pipe.unet, sched, 1, h, h, seed=0, vae_scale_factor=pipe.vae_scale_factor)
        return denoise(pipe.unet, sched, emb, lat, GUIDANCE, steps, progress=False)

    def fast_run():
        return fast(encode_prompt(pipe.tokenizer, pipe.text_encoder, [PROMPT]), seed=0)

    ref = plain()
    err = ((fast_run() - ref).norm() / ref.norm()).item()
    rows = [
        {"loop": "pipeline, output_type='latent'",
         "s/picture": round(time_pipeline(pipe, "klms", steps, 1, repeats, "latent"), 4)},
        {"loop": "sdcourse.loop.denoise (chapter 4)",
         "s/picture": round(median(time_call(plain, repeats=repeats)), 4)},
        {"loop": "sdcourse.fast_loop.FastLoop",
         "s/picture": round(median(time_call(fast_run, repeats=repeats)), 4)},
    ]
    for row in rows:
        print(row, flush=True)
    return rows, err


def time_notebooks() -> dict:
    """Execute every notebook with scripts/build_notebooks.py into a temporary folder; return wall times."""
    script = ROOT / "scripts" / "build_notebooks.py"
    notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if not script.is_file() or not notebooks:
        return {"skipped": "scripts/build_notebooks.py or notebooks/NN_*.ipynb not found"}
    per_notebook, beside = {}, set()
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    start_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for nb in notebooks:
            beside.update(machine_info("cpu")["concurrent_jobs"])  # someone else's runs slow these down
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, str(script), "--out", tmp, str(nb)], cwd=ROOT, env=env,
                                  capture_output=True, text=True)
            per_notebook[nb.name] = round(time.perf_counter() - start, 1)
            if proc.returncode:
                per_notebook[nb.name] = f"failed ({per_notebook[nb.name]} s): {proc.stderr.strip()[-200:]}"
            print(nb.name, per_notebook[nb.name], flush=True)
    return {"total_s": round(time.perf_counter() - start_all, 1), "per_notebook_s": per_notebook,
            "concurrent_jobs": sorted(beside), "load_average_1min_at_end": round(os.getloadavg()[0], 2)}


def to_markdown(data: dict) -> str:
    m = data["machine"]
    jobs = ", ".join(m["concurrent_jobs"]) or "none detected"
    steps_cols = [f"{s} steps (s/picture)" for s in data["settings"]["steps"]]
    lines = [
        "# CPU benchmark: the mini model (64 x 64 pictures)",
        "",
        f"Measured {m['date']} on **{m['cpu']}, {m['cpu_cores']} cores, {m['gpu']}**; "
        f"torch {m['torch']}, diffusers {m['diffusers']}, transformers {m['transformers']}, "
        f"Python {m['python']}; {m['torch_threads']} torch threads, nice {m['nice']}, "
        f"1-minute load average {m['load_average_1min']} at the start.",
        f"Heavy jobs running beside the benchmark: **{jobs}**.",
        "",
        f"Command: `{data['command']}`. Every number is the median of {data['settings']['repeats']} "
        f"runs after one warm-up run; prompt \"{PROMPT}\", guidance {GUIDANCE}, seed 0.",
        "The mini model's weights do not change its cost: these timings hold for placeholder "
        "and trained weights alike.",
        "",
        "## Seconds per picture by scheduler and step count (full pipeline call, batch 1)",
        "",
        markdown_table(data["schedulers"], ["scheduler"] + steps_cols),
        "",
        f"One 20-step 64 px picture with K-LMS: **{data['target']['klms_20_steps_s']} s** "
        f"(target: <= {TARGET_20_STEPS_S} s on this 2-core CPU: "
        f"{'met' if data['target']['met'] else 'NOT met'}).",
        "",
        f"## Batching (K-LMS, {data['settings']['loop_steps']} steps)",
        "",
        markdown_table(data["batching"], ["batch", "s/picture", "pictures/s"]),
        "",
        f"## Latents only (K-LMS, {data['settings']['loop_steps']} steps, batch 1, prompt encoding "
        "included, no VAE decode)",
        "",
        markdown_table(data["loops"], ["loop", "s/picture"]),
        "",
        f"Fast loop vs chapter 4's loop, relative error of the final latents: "
        f"{data['fast_loop_rel_err']:.1e}.",
    ]
    nb = data.get("notebooks")
    lines += ["", "## Executing the whole notebook series", ""]
    if not nb:
        lines.append("Not measured in this run (pass `--notebooks`).")
    elif "skipped" in nb:
        lines.append(f"Skipped: {nb['skipped']}.")
    else:
        lines.append(f"Total wall time: **{nb['total_s']} s** for {len(nb['per_notebook_s'])} notebooks "
                     "(each in a fresh kernel, kernel start included).")
        if "concurrent_jobs" in nb:
            lines.append(f"Heavy jobs seen beside the notebook runs: {', '.join(nb['concurrent_jobs']) or 'none'}; "
                         f"1-minute load average at the end: {nb['load_average_1min_at_end']}.")
        lines += ["", markdown_table([{"notebook": k, "seconds": v} for k, v in nb["per_notebook_s"].items()],
                                     ["notebook", "seconds"])]
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedulers", nargs="+", default=scheduler_names())
    parser.add_argument("--steps", nargs="+", type=int, default=[10, 20, 50])
    parser.add_argument("--loop-steps", type=int, default=20, help="steps for the batching and loop tables")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--notebooks", action="store_true", help="also time executing every notebook")
    parser.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    parser.add_argument("--name", default="cpu_mini", help="results file stem")
    args = parser.parse_args(argv)

    info = machine_info("cpu")
    print(f"{info['cpu']}, {info['cpu_cores']} cores, {info['torch_threads']} torch threads; "
          f"beside: {info['concurrent_jobs'] or 'nothing heavy'}", flush=True)
    pipe = load_mini()
    data = {
        "command": "python benchmarks/bench_cpu_mini.py" + ("".join(f" {a}" for a in argv) if argv else ""),
        "machine": info,
        "settings": {"schedulers": args.schedulers, "steps": args.steps, "loop_steps": args.loop_steps,
                     "repeats": args.repeats, "prompt": PROMPT, "guidance": GUIDANCE,
                     "size": pipe.unet.config.sample_size * pipe.vae_scale_factor},
    }
    data["schedulers"] = scheduler_table(pipe, args.schedulers, args.steps, args.repeats)
    t20 = time_pipeline(pipe, "klms", 20, 1, args.repeats)
    data["target"] = {"klms_20_steps_s": round(t20, 3), "target_s": TARGET_20_STEPS_S,
                      "met": t20 <= TARGET_20_STEPS_S}
    data["batching"] = batching_table(pipe, args.loop_steps, args.repeats)
    data["loops"], data["fast_loop_rel_err"] = loop_table(pipe, args.loop_steps, args.repeats)
    data["notebooks"] = time_notebooks() if args.notebooks else None
    data["machine"]["concurrent_jobs_at_end"] = machine_info("cpu")["concurrent_jobs"]
    json_path, md_path = write_results(args.name, data, to_markdown(data), args.out)
    print(f"wrote {json_path.name} and {md_path.name}")
    return data


if __name__ == "__main__":
    main(sys.argv[1:])
