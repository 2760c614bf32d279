"""GPU benchmark of Stable Diffusion v1.x at full size: from the shipped pipeline to CUDA graphs.

Usage (from the repository root, on a machine with a CUDA GPU)::

    python benchmarks/bench_gpu_fullsize.py                      # batch 1, 4, 8; all rows
    python benchmarks/bench_gpu_fullsize.py --batches 1 --skip-compile
    python benchmarks/bench_gpu_fullsize.py --count-only         # no GPU needed: parameters, FLOPs

Writes ``benchmarks/results/gpu_fullsize.json`` and ``gpu_fullsize.md``.

The models are the SD v1.4 architecture at full size, built from the configs written
out below (UNet 860M, VAE 84M, CLIP text encoder 123M parameters) with **random
weights**: a forward pass costs the same arithmetic and memory traffic whatever the
weights are, and no checkpoint can be downloaded where this course is built.  The
tokenizer is the real CLIP vocabulary bundled with the mini model.  Pictures are
512 x 512 (64 x 64 latents), fp16, classifier-free guidance 7.5, K-LMS 50 steps.

Rows (each timed as encode prompt + sampling loop, latents only, no VAE decode):

1. the diffusers ``StableDiffusionPipeline`` as shipped (``output_type="latent"``);
2. the course's hand-built loop (``sdcourse.loop.denoise``, chapter 4);
3. the fast loop, eager (``sdcourse.fast_loop.FastLoop``: precomputed K-LMS weights,
   latents in fp32 on the device); this is the **reference** for the error column;
4. + channels-last;  5. + ``torch.compile``;  6. + CUDA graph (eager UNet);
7. + ``torch.compile`` + CUDA graph;
8. DPM-Solver++ at 20 steps with the UNet of row 7 (diffusers' own step).

Columns: seconds per picture (median of ``--repeats`` >= 3 runs after warm-up,
``torch.cuda.synchronize`` around each), pictures per second, peak GPU memory
(``torch.cuda.max_memory_allocated``, weights included), and the relative error
``||x - ref|| / ||ref||`` of the final latents against the eager fp32-accumulated
reference (row 3; row 8 against an eager DPM-Solver++ run, with its distance to the
K-LMS picture given separately).  Also the arithmetic floor: the FLOPs of one guided
UNet step (``torch.utils.flop_counter.FlopCounterMode``), the fp16 matmul rate
measured on the same GPU, the seconds per picture they imply, and each batch's best
time as a multiple of it.
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------------------------------------
# Stable Diffusion v1.4 at full size (CompVis/stable-diffusion-v1-4): the configs and the builder are
# sdcourse.standin's (one builder, with a full-size and a tiny setting).
sys.path.insert(0, str(ROOT))
from sdcourse.standin import SD14_TEXT, SD14_UNET, SD14_VAE  # noqa: E402
from sdcourse.standin import build_models as _build_models  # noqa: E402

SD14_SCHEDULER = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    steps_offset=1, prediction_type="epsilon",
)
EXPECTED_PARAMS = {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480}

PROMPT = "a small red circle in the center on a black background"
GUIDANCE = 7.5
STEPS = 50
DPM_STEPS = 20
GOALS = {"batch1_s": 0.25, "batch8_s": 0.12, "batch1_peak_gib": 3.0}  # the course's speed goals, set for an H100
NO_CUDA_MESSAGE = (
    "bench_gpu_fullsize.py needs a CUDA GPU (torch.cuda.is_available() is False here). "
    "Run it on a GPU machine; here you can run `python benchmarks/bench_gpu_fullsize.py --count-only` "
    "(parameters and FLOPs, no GPU needed) or benchmarks/bench_cpu_mini.py."
)


def build_models(device="cpu", dtype=torch.float32):
    """Random-weight UNet, VAE and CLIP text encoder of SD v1.4 (``device="meta"``: no memory)."""
    return _build_models(device, dtype, full_size=True)


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def guided_step_flops(unet, batch: int = 1, tokens: int = 77) -> int:
    """FLOPs of one classifier-free-guided UNet call: ``2 * batch`` latents at the UNet's sample size."""
    from torch.utils.flop_counter import FlopCounterMode

    size = unet.config.sample_size
    dev, dt = unet.device, unet.dtype
    x = torch.zeros(2 * batch, unet.config.in_channels, size, size, device=dev, dtype=dt)
    emb = torch.zeros(2 * batch, tokens, unet.config.cross_attention_dim, device=dev, dtype=dt)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        unet(x, torch.tensor(999.0, device=dev), encoder_hidden_states=emb)
    return int(counter.get_total_flops())


def matmul_tflops(device="cuda", n: int = 8192, dtype=torch.float16, repeats: int = 20) -> float:
    """Measured dense matmul rate (TFLOP/s) on ``device``: the practical ceiling for the UNet's arithmetic."""
    from sdcourse.speed import median, time_call

    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    c = torch.empty(n, n, device=device, dtype=dtype)

    def many():
        for _ in range(repeats):
            torch.mm(a, b, out=c)

    seconds = median(time_call(many, repeats=3, warmup=1, device=device))
    return 2 * n**3 * repeats / seconds / 1e12


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    x, ref = x.float(), ref.float().to(x.device)
    return ((x - ref).norm() / ref.norm()).item()


# ---------------------------------------------------------------------------------------------
class Bench:
    """Times the rows for one batch size on one device."""

    def __init__(self, parts, tokenizer, device, batch, steps, repeats, scheduler_config=None, verbose=True):
        from diffusers import LMSDiscreteScheduler, StableDiffusionPipeline

        self.device, self.batch, self.steps, self.repeats = torch.device(device), batch, steps, repeats
        self.unet, self.vae, self.text_encoder = parts["unet"], parts["vae"], parts["text_encoder"]
        self.tokenizer = tokenizer
        self.scheduler = LMSDiscreteScheduler.from_config(scheduler_config or SD14_SCHEDULER)
        self.pipe = StableDiffusionPipeline(
            vae=self.vae, text_encoder=self.text_encoder, tokenizer=tokenizer, unet=self.unet,
            scheduler=self.scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        self.pipe.set_progress_bar_config(disable=True)
        self.prompts = [PROMPT] * batch
        size = self.unet.config.sample_size
        self.noise = torch.randn(batch, self.unet.config.in_channels, size, size,
                                 generator=torch.Generator().manual_seed(0))
        self.verbose = verbose
        self.rows = []

    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def free(self):
        gc.collect()
        if self.cuda():
            torch.cuda.empty_cache()

    def encode(self):
        from sdcourse.loop import encode_prompt

        return encode_prompt(self.tokenizer, self.text_encoder, self.prompts)

    def measure(self, label, fn, ref=None, note=None, steps=None):
        """Warm up (the first call compiles/captures; timed separately), then time ``fn`` ``repeats`` times."""
        from sdcourse.speed import median, time_call

        self.free()
        start = time.perf_counter()
        latents = fn()
        if self.cuda():
            torch.cuda.synchronize()
        first = time.perf_counter() - start
        if self.cuda():
            torch.cuda.reset_peak_memory_stats()
        times = time_call(fn, repeats=self.repeats, warmup=0, device=self.device)  # the first call warmed up
        seconds = median(times) / self.batch
        row = {
            "row": label, "batch": self.batch, "steps": steps or self.steps,
            "s_per_image": round(seconds, 4), "images_per_s": round(1 / seconds, 2),
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if self.cuda() else None,
            "rel_err": None if ref is None else float(f"{rel_err(latents, ref):.2e}"),
            "finite": bool(torch.isfinite(latents).all()),
            "first_call_s": round(first, 1), "times_s": [round(t, 4) for t in times],
        }
        if note:
            row["note"] = note
        self.rows.append(row)
        if self.verbose:
            print({k: row[k] for k in ("row", "batch", "s_per_image", "peak_gib", "rel_err", "first_call_s")},
                  flush=True)
        return latents

    def pipeline(self, ref):
        dtype = self.unet.dtype

        def run():
            return self.pipe(self.prompts, num_inference_steps=self.steps, guidance_scale=GUIDANCE,
                             latents=self.noise.to(self.device, dtype), output_type="latent").images

        self.measure("diffusers pipeline as shipped", run, ref)

    def hand_built(self, ref):
        from sdcourse.loop import denoise

        def run():
            self.scheduler.set_timesteps(self.steps, device=self.device)
            lat = self.noise.to(self.device, self.unet.dtype) * self.scheduler.init_noise_sigma
            return denoise(self.unet, self.scheduler, self.encode(), lat, GUIDANCE, self.steps, progress=False)

        self.measure("course's hand-built loop (sdcourse.loop.denoise)", run, ref)

    def fast(self, label, ref, **options):
        from sdcourse.fast_loop import FastLoop

        loop = FastLoop(self.unet, self.scheduler, scheduler="klms", steps=self.steps, guidance_scale=GUIDANCE,
                        batch_size=self.batch, vae_scale_factor=self.pipe.vae_scale_factor, **options)
        out = self.measure(label, lambda: loop(self.encode(), noise=self.noise), ref)
        del loop
        return out

    def dpm(self, ref_klms, **options):
        from sdcourse.fast_loop import UNetRunner
        from sdcourse.schedulers import make_scheduler

        sched = make_scheduler("dpm++", self.scheduler.config)
        size = self.unet.config.sample_size
        x_shape = (2 * self.batch, self.unet.config.in_channels, size, size)
        emb_shape = (2 * self.batch, self.tokenizer.model_max_length, self.unet.config.cross_attention_dim)

        def loop_with(runner):
            def run():
                emb = self.encode()
                sched.set_timesteps(DPM_STEPS, device=self.device)
                x = self.noise.to(self.device, torch.float32) * sched.init_noise_sigma
                with torch.no_grad():
                    for t in sched.timesteps:
                        x_in = sched.scale_model_input(torch.cat([x, x]), t)
                        u, c = runner(x_in, t, emb).float().chunk(2)
                        x = sched.step(u + GUIDANCE * (c - u), t, x).prev_sample
                return x
            return run

        eager = UNetRunner(self.unet, x_shape, emb_shape, cuda_graph=False)
        ref = loop_with(eager)()
        del eager
        runner = UNetRunner(self.unet, x_shape, emb_shape, **options)
        label = f"DPM-Solver++ {DPM_STEPS} steps (" + ("+ compile " if options.get("compile") else "") \
            + "+ CUDA graph)"
        latents = self.measure(label, loop_with(runner), ref, steps=DPM_STEPS)
        self.rows[-1]["note"] = (
            f"error vs an eager DPM-Solver++ {DPM_STEPS}-step run; distance to the K-LMS {self.steps}-step "
            f"reference {rel_err(latents, ref_klms):.2e} (another solver, so another picture, not an error)")
        del runner

    def run_all(self, compile: bool = True):
        from sdcourse.fast_loop import FastLoop

        self.unet.to(memory_format=torch.contiguous_format)
        ref_loop = FastLoop(self.unet, self.scheduler, scheduler="klms", steps=self.steps, guidance_scale=GUIDANCE,
                            batch_size=self.batch, vae_scale_factor=self.pipe.vae_scale_factor, cuda_graph=False)
        ref = ref_loop(self.encode(), noise=self.noise)
        del ref_loop
        self.pipeline(ref)
        self.hand_built(ref)
        self.fast("fast loop, eager (reference)", ref, cuda_graph=False)
        self.fast("+ channels-last", ref, channels_last=True, cuda_graph=False)
        if compile:
            self.fast("+ torch.compile", ref, channels_last=True, compile=True, cuda_graph=False)
        self.fast("+ CUDA graph (eager UNet)", ref, channels_last=True, cuda_graph=True)
        if compile:
            self.fast("+ torch.compile + CUDA graph", ref, channels_last=True, compile=True, cuda_graph=True)
        self.dpm(ref, channels_last=True, compile=compile, cuda_graph=True)
        self.unet.to(memory_format=torch.contiguous_format)
        return self.rows


# ---------------------------------------------------------------------------------------------
def count_only() -> dict:
    """Parameters and FLOPs of the full-size models, counted on the meta device (no memory, no GPU)."""
    parts = build_models("meta")
    params = {name: count_parameters(m) for name, m in parts.items()}
    flops = guided_step_flops(parts["unet"], batch=1)
    return {"parameters": params, "guided_step_flops_batch1": flops,
            "loop_flops_per_image": flops * STEPS}


def floor_summary(rows, flops_step, tflops, steps=STEPS):
    floor_s = flops_step * steps / (tflops * 1e12)
    summary = {"guided_step_flops_batch1": flops_step, "matmul_tflops_fp16": round(tflops, 1),
               "floor_s_per_image": round(floor_s, 4), "best": {}}
    for batch in sorted({r["batch"] for r in rows}):
        candidates = [r for r in rows if r["batch"] == batch and r["steps"] == steps and r["finite"]]
        if candidates:
            best = min(candidates, key=lambda r: r["s_per_image"])
            summary["best"][str(batch)] = {"row": best["row"], "s_per_image": best["s_per_image"],
                                           "x_floor": round(best["s_per_image"] / floor_s, 2)}
    return summary


def goals_check(rows, steps=STEPS):
    """The speed goals against the fastest finite K-LMS row of batch 1 and of batch 8."""
    def fastest(batch):
        rows_b = [r for r in rows if r["batch"] == batch and r["steps"] == steps and r["finite"]]
        return min(rows_b, key=lambda r: r["s_per_image"]) if rows_b else None

    checks = {}
    for name, batch, key in (("batch1_s", 1, "s_per_image"), ("batch8_s", 8, "s_per_image"),
                             ("batch1_peak_gib", 1, "peak_gib")):
        row = fastest(batch)
        value = None if row is None else row[key]
        checks[name] = {"goal": GOALS[name], "measured": value, "row": None if row is None else row["row"],
                        "met": None if value is None else value <= GOALS[name]}
    return checks


def to_markdown(data: dict) -> str:
    from sdcourse.speed import markdown_table

    lines = ["# GPU benchmark: Stable Diffusion v1.x at full size", ""]
    counts = data["counts"]
    p = counts["parameters"]
    lines += [
        f"Models: the SD v1.4 architecture built from configs with random weights (UNet "
        f"{p['unet'] / 1e6:.1f}M, VAE {p['vae'] / 1e6:.1f}M, CLIP text encoder {p['text_encoder'] / 1e6:.1f}M "
        "parameters). Random weights cost exactly what the real ones cost (same shapes, same kernels); "
        "no checkpoint can be downloaded where the course is built.",
        f"One guided UNet step (batch 1, i.e. 2 latents of 64 x 64) is "
        f"{counts['guided_step_flops_batch1'] / 1e12:.3f} TFLOP by torch's FlopCounterMode "
        f"(counted on the meta device); a {STEPS}-step picture is "
        f"{counts['loop_flops_per_image'] / 1e12:.1f} TFLOP.",
        "",
    ]
    if data.get("smoke_cpu"):
        lines += ["## SMOKE TEST ON THE CPU WITH THE MINI MODEL: these are NOT GPU figures", "",
                  "`--smoke-cpu` runs every row's code path on the CPU with the 64 x 64 mini model to check "
                  "that the script works; CUDA graphs and torch.compile fall back to eager here.", ""]
    elif not data.get("recorded"):
        lines += ["## GPU figures: not yet recorded", "",
                  "**The GPU rows of this benchmark are still to be recorded.** This file was written by "
                  f"`{data['command']}` on a machine without a GPU ({data['machine']['cpu']}, "
                  f"{data['machine']['cpu_cores']} cores, {data['machine']['gpu']}; torch "
                  f"{data['machine']['torch']}, diffusers {data['machine']['diffusers']}, transformers "
                  f"{data['machine']['transformers']}; {data['machine']['date']}). Run "
                  "`python benchmarks/bench_gpu_fullsize.py` on a CUDA GPU to fill in the table "
                  "(rows: diffusers pipeline as shipped; course's hand-built loop; fast loop; + channels-last; "
                  "+ torch.compile; + CUDA graphs; DPM-Solver++ 20 steps; batch 1, 4, 8)."]
        return "\n".join(lines)
    m = data["machine"]
    size = data["settings"]["size"]
    lines += [
        f"Measured {m['date']} on **{m['gpu']}** (host: {m['cpu']}, {m['cpu_cores']} cores); torch "
        f"{m['torch']} (CUDA {m['cuda']}), diffusers {m['diffusers']}, transformers {m['transformers']}.",
        f"Command: `{data['command']}`. {data['settings']['dtype']}, {size} x {size}, guidance {GUIDANCE}, K-LMS {STEPS} steps unless "
        f"stated; latents only (prompt encoding included, VAE decode excluded); seconds per picture are "
        f"the median of {data['settings']['repeats']} synchronised runs after warm-up, divided by the batch.",
        "",
        markdown_table(data["rows"], ["row", "batch", "steps", "s_per_image", "images_per_s", "peak_gib",
                                      "rel_err", "first_call_s"]),
        "",
        "rel_err: ||latents - reference|| / ||reference||, the reference being the eager fast loop "
        "(fp16 UNet, fp32 latent arithmetic). first_call_s: the first call, which compiles and/or "
        "captures the CUDA graph.",
    ]
    for r in data["rows"]:
        if r.get("note"):
            lines.append(f"- {r['row']}, batch {r['batch']}: {r['note']}.")
        if not r["finite"]:
            lines.append(f"- {r['row']}, batch {r['batch']}: the final latents were NOT finite.")
    f = data["floor"]
    lines += ["", "## The arithmetic floor", "",
              f"{f['guided_step_flops_batch1'] / 1e12:.3f} TFLOP per guided step at {f['matmul_tflops_fp16']} "
              f"TFLOP/s (fp16 matmul measured on this GPU) gives a floor of **{f['floor_s_per_image']} s** per "
              f"{STEPS}-step picture.", ""]
    lines += [markdown_table([{"batch": b, **v} for b, v in f["best"].items()],
                             ["batch", "row", "s_per_image", "x_floor"]), ""]
    lines += ["## Speed goals (set for an H100)", "",
              markdown_table([{"what": k, **v} for k, v in data["goals"].items()],
                             ["what", "goal", "measured", "row", "met"]),
              "", "Each goal is checked on the fastest K-LMS row of its batch size (peak memory: of that row)."]
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4, 8])
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-compile", action="store_true", help="leave out the torch.compile rows")
    parser.add_argument("--count-only", action="store_true",
                        help="no GPU: count parameters and FLOPs on the meta device, write a 'not yet recorded' file")
    parser.add_argument("--smoke-cpu", action="store_true",
                        help="test the code paths on the CPU with the mini model (not a benchmark; needs --out)")
    parser.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    parser.add_argument("--name", default="gpu_fullsize")
    args = parser.parse_args(argv)
    if args.repeats < 3 and not args.count_only:
        parser.error(f"--repeats must be at least 3 (median of >= 3), got {args.repeats}")
    if args.smoke_cpu and args.out is None:
        parser.error("--smoke-cpu writes only to a folder you name with --out, never over the real results")

    sys.path.insert(0, str(ROOT))
    from sdcourse.speed import machine_info, write_results

    command = "python benchmarks/bench_gpu_fullsize.py" + "".join(f" {a}" for a in (argv or []))
    counts = count_only()
    for name, expected in EXPECTED_PARAMS.items():
        if counts["parameters"][name] != expected:
            print(f"warning: {name} has {counts['parameters'][name]:,} parameters, SD v1.4 has {expected:,}")
    if args.count_only:
        data = {"recorded": False, "command": command, "machine": machine_info("cpu"), "counts": counts}
        write_results(args.name, data, to_markdown(data), args.out)
        print(to_markdown(data))
        return data
    if args.smoke_cpu:
        import sdcourse

        device = torch.device("cpu")
        pipe = sdcourse.load_pipeline("mini", device="cpu", dtype=torch.float32)
        tokenizer, scheduler_config = pipe.tokenizer, pipe.scheduler.config
        parts = {"unet": pipe.unet, "vae": pipe.vae, "text_encoder": pipe.text_encoder}
        args.skip_compile = True  # compiling on a 2-core CPU takes minutes and tests nothing GPU-specific
    elif not torch.cuda.is_available():
        raise SystemExit(NO_CUDA_MESSAGE)
    else:
        from transformers import CLIPTokenizer

        from sdcourse import MINI_MODEL_DIR

        device = torch.device("cuda")
        tokenizer, scheduler_config = CLIPTokenizer.from_pretrained(MINI_MODEL_DIR / "tokenizer"), SD14_SCHEDULER
        parts = build_models(device, torch.float16)
    rows = []
    for batch in args.batches:
        bench = Bench(parts, tokenizer, device, batch, args.steps, args.repeats, scheduler_config)
        rows += bench.run_all(compile=not args.skip_compile)
        del bench
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    flops_step = guided_step_flops(parts["unet"], batch=1, tokens=tokenizer.model_max_length)
    vae_factor = 2 ** (len(parts["vae"].config.block_out_channels) - 1)
    tflops = matmul_tflops(device, n=256, dtype=torch.float32, repeats=2) if args.smoke_cpu \
        else matmul_tflops(device)
    data = {
        "recorded": not args.smoke_cpu, "smoke_cpu": args.smoke_cpu,
        "command": command, "machine": machine_info(device), "counts": counts,
        "settings": {"batches": args.batches, "steps": args.steps, "dpm_steps": DPM_STEPS,
                     "repeats": args.repeats, "guidance": GUIDANCE, "prompt": PROMPT,
                     "dtype": str(parts["unet"].dtype).replace("torch.", ""),
                     "size": parts["unet"].config.sample_size * vae_factor, "compile": not args.skip_compile},
        "rows": rows,
        "floor": floor_summary(rows, flops_step, tflops, args.steps),
        "goals": goals_check(rows, args.steps),
    }
    json_path, md_path = write_results(args.name, data, to_markdown(data), args.out)
    print(to_markdown(data))
    print(f"wrote {json_path.name} and {md_path.name}")
    return data


if __name__ == "__main__":
    main(sys.argv[1:])
