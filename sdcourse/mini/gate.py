"""The mini model's ship gate: does a model folder behave like Stable Diffusion v1.x wherever a learner can tell?

``python -m sdcourse.mini.evaluate --gate [--model FOLDER]`` prints one PASS or FAIL line per check and a
verdict. The checks, all at guidance 7.5 (the samplers are built from the folder's own scheduler config;
"pndm" gets SD v1-4's timesteps, see :func:`sdcourse.mini.evaluate.judged_scheduler`):

* **SD's samplers at SD's defaults**: K-LMS and PNDM at 50 steps on the held-out captions and the short
  prompts; K-LMS at 30 steps (the fastai deep dive's setting); DDIM at 20 steps, whose shapes must be no worse
  than version 1's (:data:`SAMPLER_GATE`).
* **The VAE**: its own round trips (encode, decode) of the held-out scenes read the shape right at least 90% of
  the time on flat renders and on varied ones (:data:`VAE_SHAPE_LEAST`).
* **Seeds matter**: 6 seeds of each of a few full captions, drawn by ``pipe(prompt)`` with nothing else
  set (the folder's own scheduler, 50 steps), differ by a mean of at least 6 of 255 (pairwise), and the
  checker still reads at least 90% of their attributes right; 6 seeds of "a red circle" give at least 3
  different backgrounds; a 9-frame slerp walk between two seeds' noises has no frame-to-frame change larger
  than 4 times the median one.
* **The folder**: at most 40 MB; plain ``from_pretrained`` calls give float32 components of SD v1.x's
  classes; the tokenizer is CLIP's (49,408 ids, ``<|startoftext|>`` 49406); the VAE's scaling factor is
  0.18215; and one 20-step picture takes at most 1.5 s on this machine's CPU (measured here, with the
  thread count printed; the benchmark in ``benchmarks/`` is the record).
"""
from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np

# (sampler, steps): {what: least share}; "short_prompt" is the 48 short prompts' accuracy
SAMPLER_GATE = {
    ("klms", 50): {"colour": 0.90, "background": 0.95, "shape": 0.80, "position": 0.85, "size": 0.85,
                   "short_prompt": 0.85},
    ("pndm", 50): {"colour": 0.90, "background": 0.95, "shape": 0.80, "position": 0.85, "size": 0.85,
                   "short_prompt": 0.85},
    ("klms", 30): {"colour": 0.80, "shape": 0.75},
    ("ddim", 20): {"colour": 0.95, "background": 0.95, "shape": 0.85, "position": 0.85, "size": 0.90},
}
VAE_SHAPE_LEAST = 0.90  # the VAE's own round trips of flat and of varied renders: the ceiling on every picture
GUIDANCE = 7.5
SEEDS = 6
SPREAD_LEAST = 6.0  # mean pairwise difference of the seeds' pictures, in 0-255 units
SPREAD_READ_RIGHT = 0.90
SHORT_BACKGROUNDS_LEAST = 3
WALK_FRAMES = 9
WALK_JUMP_MOST = 4.0  # largest frame-to-frame change / median one
MAX_MB = 40.0
MAX_SECONDS_20_STEPS = 1.5
SD_CLASSES = {"text_encoder": "CLIPTextModel", "tokenizer": "CLIPTokenizer", "vae": "AutoencoderKL",
              "unet": "UNet2DConditionModel"}


def _line(ok: bool, text: str) -> tuple[bool, str]:
    return ok, f"{'PASS' if ok else 'FAIL'} {text}"


def _arrays(images) -> list[np.ndarray]:
    return [np.asarray(im.convert("RGB"), dtype=np.float32) for im in images]


def mean_pairwise_difference(images) -> float:
    """Mean absolute pixel difference (0-255) over all pairs of ``images``."""
    arrs = _arrays(images)
    if len(arrs) < 2:
        raise ValueError(f"need at least 2 pictures to compare, got {len(arrs)}")
    return float(np.mean([np.abs(a - b).mean() for a, b in itertools.combinations(arrs, 2)]))


def frame_jumps(frames) -> list[float]:
    """Mean absolute pixel difference (0-255) between each frame and the next."""
    arrs = _arrays(frames)
    return [float(np.abs(a - b).mean()) for a, b in zip(arrs[:-1], arrs[1:])]


def _draw(pipe, prompts: list[str], first_seed: int = 0, steps: int = 50):
    """``pipe(prompt)`` as a learner calls it: the folder's own scheduler, prompt i with a CPU generator seeded
    ``first_seed + i`` (:func:`sdcourse.mini.evaluate.draw_captions` with no sampler of its own)."""
    from .evaluate import draw_captions

    return draw_captions(pipe, prompts, GUIDANCE, steps, seed=first_seed, progress=False, sampler=None)


def seed_checks(pipe, n_captions: int = 8, steps: int = 50) -> tuple[list[tuple[bool, str]], dict]:
    """The "seeds matter" lines and their numbers."""
    import torch

    from ..interp import slerp_frames
    from .evaluate import heldout_prompts, read_picture, score

    pairs = heldout_prompts(n_captions, seed=1)
    spreads, right = [], []
    for scene, caption in pairs:
        images = _draw(pipe, [caption] * SEEDS, 0, steps)
        spreads.append(mean_pairwise_difference(images))
        right += [v for im in images for v in score(read_picture(im), scene).values()]
    spread, read_right = float(np.mean(spreads)), float(np.mean(right))
    short = _draw(pipe, ["a red circle"] * SEEDS, 0, steps)
    backgrounds = sorted({read_picture(im).background for im in short})
    _, caption = pairs[0]
    shape = (1, pipe.unet.config.in_channels, pipe.unet.config.sample_size, pipe.unet.config.sample_size)
    ends = [torch.randn(shape, generator=torch.Generator("cpu").manual_seed(s)) for s in (0, 1)]
    noise = torch.cat(slerp_frames(ends[0], ends[1], WALK_FRAMES))
    frames = pipe([caption] * WALK_FRAMES, num_inference_steps=steps, guidance_scale=GUIDANCE,
                  latents=noise.to(pipe.unet.dtype)).images
    jumps = frame_jumps(frames)
    ratio = max(jumps) / max(float(np.median(jumps)), 1e-6)
    lines = [
        _line(spread >= SPREAD_LEAST, f"seeds: {SEEDS} seeds of each of {n_captions} full captions differ by a mean of "
              f"{spread:.1f} of 255 pairwise (at least {SPREAD_LEAST:.0f}; per caption "
              f"{', '.join(f'{s:.1f}' for s in spreads)})"),
        _line(read_right >= SPREAD_READ_RIGHT, f"seeds: the checker reads {100 * read_right:.1f}% of those pictures' "
              f"attributes right (at least {100 * SPREAD_READ_RIGHT:.0f}%)"),
        _line(len(backgrounds) >= SHORT_BACKGROUNDS_LEAST, f"seeds: 'a red circle' gets {len(backgrounds)} different "
              f"backgrounds in {SEEDS} seeds ({', '.join(backgrounds)}; at least {SHORT_BACKGROUNDS_LEAST})"),
        _line(ratio <= WALK_JUMP_MOST, f"walk: a {WALK_FRAMES}-frame slerp between seeds 0 and 1 of '{caption}': "
              f"largest frame-to-frame change {max(jumps):.1f}, {ratio:.1f}x the median {np.median(jumps):.1f} "
              f"(at most {WALK_JUMP_MOST:.0f}x)"),
    ]
    numbers = {"spread": spread, "spreads": spreads, "read_right": read_right, "short_backgrounds": backgrounds,
               "walk_jumps": jumps, "walk_ratio": ratio}
    return lines, numbers


def folder_checks(folder: Path) -> list[tuple[bool, str]]:
    """Size, classes, dtypes, tokenizer and scaling factor of the diffusers folder, loaded as tutorials load it."""
    import json

    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    mb = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6
    index = json.loads((folder / "model_index.json").read_text())
    classes = {k: index.get(k, [None, None])[1] for k in SD_CLASSES}
    text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder")
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae")
    tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
    dtypes = {m.dtype for m in (text_encoder, unet, vae)}
    ids = tokenizer("a red circle").input_ids
    return [
        _line(mb <= MAX_MB, f"folder: {mb:.1f} MB (at most {MAX_MB:.0f})"),
        _line(classes == SD_CLASSES, f"folder: model_index.json names SD v1.x's classes ({classes})"),
        _line(dtypes == {torch.float32}, f"folder: plain from_pretrained gives {sorted(map(str, dtypes))}"),
        _line(len(tokenizer) == 49408 and ids[0] == 49406 and ids[-1] == 49407,
              f"folder: CLIP's tokenizer ({len(tokenizer)} ids; 'a red circle' -> {ids})"),
        _line(vae.config.scaling_factor == 0.18215, f"folder: VAE scaling factor {vae.config.scaling_factor}"),
    ]


def speed_check(pipe, repeats: int = 3) -> tuple[bool, str]:
    """Seconds for one 20-step picture with the folder's own scheduler (the median of ``repeats`` after a warm-up)."""
    import torch

    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        _draw(pipe, ["a small red circle in the center on a black background"], i, steps=20)
        times.append(time.perf_counter() - t0)
    seconds = float(np.median(times[1:]))
    return _line(seconds <= MAX_SECONDS_20_STEPS, f"speed: one 20-step picture in {seconds:.2f} s on "
                 f"{torch.get_num_threads()} CPU threads (at most {MAX_SECONDS_20_STEPS})")


def sampler_checks(pipe, n: int, n_short: int, progress: bool = True) -> tuple[list[tuple[bool, str]], dict, dict]:
    """One line per sampler of :data:`SAMPLER_GATE`, naming every attribute that misses; the numbers; and
    each sampler's first 32 pictures with their captions (for a grid)."""
    from .evaluate import evaluate

    lines, rows, pictures = [], {}, {}
    for (sampler, steps), least in SAMPLER_GATE.items():
        short = n_short if "short_prompt" in least else 0
        result = evaluate(pipe, n, steps, (GUIDANCE,), short, progress=progress, sampler=sampler)[GUIDANCE]
        row = rows[f"{sampler} {steps}"] = result["row"]
        pictures[f"{sampler} {steps}"] = (result["images"], result["captions"])
        misses = [k for k, v in least.items() if not row[k] >= v]
        shown = ", ".join(f"{k} {100 * row[k]:.1f}% (≥ {100 * v:.0f})" for k, v in least.items())
        lines.append(_line(not misses, f"{sampler}, {steps} steps, {GUIDANCE}: {shown}"
                           + (f"; misses: {', '.join(misses)}" if misses else "")))
    return lines, rows, pictures


def vae_checks(pipe, n: int) -> tuple[list[tuple[bool, str]], dict]:
    """The VAE's round trips of the ``n`` held-out scenes, flat and varied: one line each, and the numbers."""
    from .evaluate import vae_round_trip

    lines, numbers = [], {}
    for world in ("flat", "varied"):
        row = numbers[world] = vae_round_trip(pipe, n, varied=world == "varied")
        lines.append(_line(row["shape"] >= VAE_SHAPE_LEAST, f"vae: round trips of {world} renders read the shape "
                           f"right {100 * row['shape']:.1f}% of the time (at least {100 * VAE_SHAPE_LEAST:.0f}%; "
                           f"colour {100 * row['colour']:.1f}%)"))
    return lines, numbers


def run_gate(pipe, folder: Path | None, n: int = 64, n_short: int = 48, progress: bool = True,
             speed: bool = True) -> tuple[bool, list[str], dict, dict]:
    """Every check; returns (all passed, the printed lines, the numbers, each sampler's first pictures and
    captions)."""
    if n < 64 or n_short < 48:
        raise ValueError(f"the gate needs at least 64 held-out captions and 48 short prompts; got {n} and {n_short}")
    checks, numbers, pictures = sampler_checks(pipe, n, n_short, progress)
    vae_lines, vae_numbers = vae_checks(pipe, n)
    seed_lines, seed_numbers = seed_checks(pipe)
    checks += vae_lines + seed_lines
    if folder is not None:
        checks += folder_checks(folder)
    if speed:
        checks.append(speed_check(pipe))
    passed = all(ok for ok, _ in checks)
    lines = [text for _, text in checks]
    lines.append(f"ship gate: {'PASS' if passed else 'FAIL'} ({sum(ok for ok, _ in checks)} of {len(checks)} checks)")
    return passed, lines, {"samplers": numbers, "vae_round_trips": vae_numbers, "seeds": seed_numbers}, pictures
