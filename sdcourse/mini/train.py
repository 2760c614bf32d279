"""Train the course's mini Stable Diffusion from scratch, on a CPU or a GPU, resumably.

One command retrains everything with a fixed seed::

    python -m sdcourse.mini.train --out runs/mini      # then exports to sdcourse/mini_model/

Every setting of the run (steps, batch sizes, learning rates, warm-ups, loss weights, dropout, offset noise,
EMA, seeds) is a field of :class:`Recipe`, and each one is also a command-line option (``--unet-steps 12000``).
The exported folder gets a ``train_info.json`` that records the recipe, the machine and the time per stage.

The stages (each saves checkpoints in ``--out`` and resumes from them when rerun):

1. **VAE**: an AutoencoderKL learns to squeeze 3 x 64 x 64 pictures into 4 x 8 x 8 latents
   (MSE + 0.5 L1 + a tiny KL term).
2. **Decoder**: the encoder is frozen and the decoder alone is fine-tuned (sharper edges).
3. **Latent cache and scaling factor**: the posterior mean and std of all 1,680 scenes (in a varied world,
   ``looks_per_scene`` pictures of each), computed once; the scaling factor is *measured* as 1 / std of those
   latents, so scaled latents have unit variance.
4. **Robust decoder**: the decoder is fine-tuned again on latents with Gaussian noise added
   (up to 0.3 in scaled units), so that the UNet's slightly-off latents still decode to flat
   colours and sharp corners. The encoder, and so the UNet's training data, do not change.
5. **Text encoder + UNet**, trained together on the denoising loss of SD (epsilon
   prediction, scaled_linear schedule over 1000 steps) with
   * caption dropout (10% empty captions) so classifier-free guidance works,
   * captions with parts left out (size, position, background) so short prompts work,
   * offset noise (0.1 x a per-sample, per-channel constant) so the flat background
     colour can be learnt despite the signal SD's schedule leaves at t = 999,
   * min-SNR-5 loss weighting and an EMA of the weights, which is what is exported,
   * optionally, in the last ``smooth_steps`` steps, a guidance-smoothness penalty
     (:func:`denoise_and_smoothness`, ``--smooth-weight``): it keeps the caption from changing how the
     prediction reacts to the latents, which is what makes guided sampling stiff at guidance 7.5.
6. **Decoder polish**: the trained UNet draws 2,048 pictures from *training* captions (DDIM, 20 steps,
   guidance 1, 3, 5 and 7.5 in turn); those whose colour, background, position and size already match
   the caption are kept, and the decoder is fine-tuned to turn those latents into the caption's clean
   render (half of each batch; the other half as in stage 4).

The export folds the measured scaling factor into the VAE, so the folder says SD's 0.18215.

**Chapter 13's run** (``--preset classroom``, :meth:`Recipe.classroom`) is stage 5 alone: the VAE and text encoder
come from the bundled model (``frozen_from``) and stay frozen, and a new UNet learns on their latents and text
vectors in minutes; it exports to ``OUT/model``, never over the bundled model. The pieces of stage 5 that the chapter
shows one by one are functions of this module: :func:`noise_schedule`, :func:`batch_captions` (caption dropout),
:func:`unet_batch` (the forward process) and :func:`denoising_loss`.

**The world.** By default every stage sees flat renders (``shapes.render`` without a look), the world of the
shipped model. ``--looks-per-scene 16 --polish-steps 0`` trains on the varied world instead: each picture with
a random ``shapes.Look`` (position, size, tint, light and smooth edges left open by the caption). Guided
sampling in the flat world is stiff at guidance 7.5 (the model card's "Stiffness" section); the varied world is
much less so.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import pickle
import contextlib
import random
import shutil
import signal
import threading
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from .. import shapes
from ..loader import MINI_MODEL_DIR
from . import arch


def setting(default, help: str):
    """A field of :class:`Recipe` with its command-line help."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Recipe:
    """Every setting of a training run, in one place. The defaults are the shipped model's recipe.

    Learning rates rise linearly over the warm-up steps, then fall along a cosine to ``lr_floor`` times
    the peak. Every optimiser is AdamW; every gradient is clipped to norm ``grad_clip``.
    """

    seed: int = setting(0, "the seed that every stage's random numbers come from (see stage_seed)")
    frozen_from: str = setting("", "take the VAE and text encoder from this diffusers folder ('bundled': the shipped "
                                   "mini model) and keep them frozen, so that only a new UNet trains (stage 5 alone)")
    unet_width: int = setting(32, "stage 5: channels of the UNet's first block; the next two have 2x and 4x")
    # the world: flat renders, or varied ones (shapes.Look) that leave open what the caption does not name
    looks_per_scene: int = setting(0, "varied pictures per scene in the UNet's latents (0: one flat render each); "
                                      "the VAE stages then draw a fresh random look for every picture")
    look_strength: float = setting(1.0, "how far the looks vary, 0-1 (scales shapes.LOOK_LIMITS)")
    flat_share: float = setting(0.0, "in a varied world, the share of flat renders among the VAE stages' pictures")
    # stage 1: VAE
    vae_width: int = setting(16, "stages 1-4: channels of the VAE's first block; the next three have 2x, 4x, 4x")
    vae_layers: int = setting(1, "stages 1-4: layers per VAE block (diffusers gives the decoder one more)")
    vae_steps: int = setting(1500, "stage 1: VAE training steps")
    vae_batch: int = setting(16, "pictures per batch in every VAE and decoder stage")
    vae_lr: float = setting(1e-3, "stage 1: peak learning rate")
    vae_warmup: int = setting(100, "stage 1: warm-up steps")
    vae_l1_weight: float = setting(0.5, "stage 1: loss = MSE + this x L1 + vae_kl_weight x KL per pixel")
    vae_kl_weight: float = setting(1e-4, "stage 1: weight of the KL term")
    # stage 2: decoder alone
    decoder_steps: int = setting(1500, "stage 2: decoder fine-tuning steps, encoder frozen")
    decoder_lr: float = setting(5e-4, "stage 2: peak learning rate")
    decoder_warmup: int = setting(50, "warm-up steps of every decoder stage (2, 4, 6)")
    decoder_l1_weight: float = setting(1.0, "every decoder stage: loss = MSE + this x L1")
    subject_weight: float = setting(0.0, "stage 1 and every decoder stage: the pixels far from the picture's "
                                         "background colour (the shape) count 1 + this many times in the loss "
                                         "(0: all alike)")
    # stage 4: robust decoder
    robust_decoder_steps: int = setting(2000, "stage 4: decoder fine-tuning on noisy latents (0: skip)")
    robust_decoder_lr: float = setting(3e-4, "stage 4: peak learning rate")
    latent_noise: float = setting(0.3, "stages 4 and 6: largest noise added to latents, in scaled-latent units")
    # stage 5: text encoder + UNet
    unet_steps: int = setting(18000, "stage 5: text encoder + UNet training steps")
    unet_batch: int = setting(64, "stage 5: latents per batch")
    unet_lr: float = setting(6e-4, "stage 5: peak learning rate")
    unet_warmup: int = setting(300, "stage 5: warm-up steps")
    unet_weight_decay: float = setting(0.01, "stage 5: AdamW weight decay (the VAE stages use none)")
    caption_dropout: float = setting(0.1, "stage 5: share of empty captions (for classifier-free guidance)")
    caption_part_dropout: float = setting(0.3, "stage 5: chance to leave out each of size, position, background")
    offset_noise: float = setting(0.1, "stage 5: std of a per-picture, per-channel constant added to the noise")
    snr_gamma: float = setting(5.0, "stage 5: min-SNR loss weighting, min(SNR, gamma) / SNR")
    ema_decay: float = setting(0.999, "stage 5: decay of the weights' EMA (the EMA is exported)")
    smooth_weight: float = setting(0.0, "stage 5: weight of the guidance-smoothness penalty (0: none; see "
                                        "denoise_and_smoothness), which keeps K-LMS and PNDM stable at guidance 7.5")
    smooth_steps: int = setting(0, "stage 5: the penalty is on for the last this many steps")
    smooth_batch: int = setting(16, "stage 5: captioned latents per batch that the penalty looks at")
    smooth_delta: float = setting(0.05, "stage 5: the penalty's finite-difference step, in noisy-latent units")
    smooth_sigma_max: float = setting(0.0, "stage 5: 0: the penalty looks at the batch's own noisy latents; above "
                                           "0: at the same clean latents noised afresh to a sigma of at most this")
    smooth_sigma_min: float = setting(0.0, "stage 5: with smooth_sigma_max, the fresh noise level's sigma is at "
                                           "least this")
    smooth_power_iters: int = setting(0, "stage 5: 0: the penalty looks along a random direction; n: along the "
                                         "direction the guidance direction's Jacobian stretches most (n power steps)")
    smooth_hinge: float = setting(0.0, "stage 5: 0: the penalty is the whole squared stretch; above 0: only the "
                                       "part of each latent's stretch above this, squared")
    # stage 6: decoder polish
    polish_steps: int = setting(2000, "stage 6: decoder fine-tuning on the UNet's own latents (0: skip)")
    polish_samples: int = setting(2048, "stage 6: pictures the UNet draws for it (training captions only)")
    polish_lr: float = setting(2e-4, "stage 6: peak learning rate")
    polish_guidances: tuple = setting((1.0, 3.0, 5.0, 7.5), "stage 6: guidance scales, one per batch in turn")
    polish_sampling_steps: int = setting(20, "stage 6: DDIM steps per drawn picture")
    polish_draw_batch: int = setting(64, "stage 6: pictures drawn per pipeline call (one guidance scale each)")
    # every stage
    grad_clip: float = setting(1.0, "gradient norm clip, every stage")
    lr_floor: float = setting(0.1, "the cosine ends at this fraction of the peak learning rate, every stage")

    def __post_init__(self):
        for name, (low, high, closed) in LIMITS.items():
            value = getattr(self, name)
            kind = int if isinstance(self.__dataclass_fields__[name].default, int) else float
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
                raise ValueError(f"{name} must be {'a whole number' if kind is int else 'a number'}, got {value!r}")
            inside = low <= value <= high if closed else low <= value < high
            if not math.isfinite(value) or not inside:
                raise ValueError(f"{name} must be from {low:g} to {high:g}{'' if closed else ' (not included)'}"
                                 f", got {value!r}")
        if not self.polish_guidances or not all(isinstance(g, (int, float)) and 0 <= g <= 100
                                                for g in self.polish_guidances):
            raise ValueError(f"polish_guidances must be one or more guidance scales from 0 to 100, "
                             f"got {self.polish_guidances!r}")
        if self.looks_per_scene < 0 or not 0 <= self.look_strength <= 1:
            raise ValueError(f"looks_per_scene must be 0 or more and look_strength 0-1; got {self.looks_per_scene} "
                             f"and {self.look_strength}")
        if self.smooth_weight < 0 or not 0 <= self.smooth_steps <= self.unet_steps or (self.smooth_weight > 0) != (
                self.smooth_steps > 0) or self.smooth_batch < 1 or self.smooth_delta <= 0:
            raise ValueError(f"the guidance-smoothness penalty needs a weight above 0 together with 1 to unet_steps "
                             f"({self.unet_steps}) steps, or neither; a batch of 1 or more and a delta above 0; got "
                             f"weight {self.smooth_weight}, steps {self.smooth_steps}, batch {self.smooth_batch}, "
                             f"delta {self.smooth_delta}")
        if self.vae_width % 2:
            raise ValueError(f"vae_width must be even (the VAE's group norms), got {self.vae_width}")
        if self.unet_width % 8:
            raise ValueError(f"unet_width must be a multiple of 8 (the UNet's group norms), got {self.unet_width}")
        if not isinstance(self.frozen_from, str) or self.frozen_from not in ("", "bundled") and not all(
                (Path(self.frozen_from) / part).is_dir() for part in ("vae", "text_encoder")):
            raise ValueError(f"frozen_from must be '' (train everything), 'bundled' or a diffusers folder with vae/ "
                             f"and text_encoder/, got {self.frozen_from!r}")
        if self.frozen_from and (self.looks_per_scene or self.polish_steps):
            raise ValueError("a frozen VAE and text encoder (frozen_from) train the UNet alone, on flat renders: "
                             "pass --looks-per-scene 0 --polish-steps 0")
        if self.subject_weight < 0:
            raise ValueError(f"subject_weight must be 0 or more, got {self.subject_weight}")
        if self.looks_per_scene and self.polish_steps:
            raise ValueError("the decoder polish (stage 6) trains towards each caption's flat render, which a varied "
                             "world does not have: with --looks-per-scene, pass --polish-steps 0")

    @classmethod
    def classroom(cls, **changes) -> "Recipe":
        """Chapter 13's run: a new UNet of the shipped model's shape (3.3M parameters) learns from random weights on
        the bundled model's frozen VAE and text encoder, 1,500 steps of 64 latents at a peak learning rate of 2e-3
        (about 6 minutes on 2 CPU cores). ``changes`` replace single settings."""
        return replace(cls(**CLASSROOM), **changes)

    def stage_seed(self, stage: str) -> int:
        """The seed of one stage's random numbers. Each stage has its own, so that what it draws does not
        depend on the stages before it having run in the same process. A stage resumed from a checkpoint
        reseeds with this seed plus the step it resumes at."""
        return {
            "vae": self.seed,  # weights' initialisation and batches
            "decoder": self.seed + 7,
            "decoder_robust": self.seed + 8,
            "unet_init": self.seed,  # the text encoder's and UNet's initial weights
            "unet": self.seed * 1000,  # captions, noise, timesteps
            "polish_captions": self.seed + 11,  # which training captions the UNet draws
            "polish_pictures": self.seed * 100_000,  # + the picture's number: its starting noise
            "decoder_polish": self.seed + 13,
            "looks": self.seed + 17,  # the looks of the UNet's latent pool
        }[stage]


BIG = 10**9
# What each setting may be: (lowest, highest, highest included). Step counts of the stages that make the weights
# (the VAE, the UNet) start at 1: a run with none of them would export random weights.
LIMITS = {
    "seed": (0, 2**63 - 1, True), "unet_width": (8, 1024, True), "looks_per_scene": (0, 1000, True),
    "look_strength": (0, 1, True), "flat_share": (0, 1, True), "vae_width": (8, 512, True), "vae_layers": (1, 8, True),
    "vae_steps": (1, BIG, True), "vae_batch": (1, 4096, True), "vae_lr": (1e-12, 1, True), "vae_warmup": (0, BIG, True),
    "vae_l1_weight": (0, 1e3, True), "vae_kl_weight": (0, 1e3, True), "decoder_steps": (0, BIG, True),
    "decoder_lr": (1e-12, 1, True), "decoder_warmup": (0, BIG, True), "decoder_l1_weight": (0, 1e3, True),
    "subject_weight": (0, 1e3, True), "robust_decoder_steps": (0, BIG, True), "robust_decoder_lr": (1e-12, 1, True),
    "latent_noise": (0, 10, True), "unet_steps": (1, BIG, True), "unet_batch": (1, 4096, True),
    "unet_lr": (1e-12, 1, True), "unet_warmup": (0, BIG, True), "unet_weight_decay": (0, 10, True),
    "caption_dropout": (0, 1, True), "caption_part_dropout": (0, 1, True), "offset_noise": (0, 10, True),
    "snr_gamma": (1e-6, 1e6, True), "ema_decay": (0, 1, False), "smooth_weight": (0, 1e3, True),
    "smooth_steps": (0, BIG, True), "smooth_batch": (1, 4096, True), "smooth_delta": (1e-6, 10, True),
    "smooth_sigma_max": (0, 1e3, True), "smooth_sigma_min": (0, 1e3, True), "smooth_power_iters": (0, 100, True),
    "smooth_hinge": (0, 1e3, True),
    "polish_steps": (0, BIG, True), "polish_samples": (1, 10**6, True), "polish_lr": (1e-12, 1, True),
    "polish_sampling_steps": (1, 1000, True), "polish_draw_batch": (1, 4096, True), "grad_clip": (1e-6, 1e6, True),
    "lr_floor": (0, 1, True),
}


# Chapter 13's run (Recipe.classroom): only the UNet trains, on the bundled VAE's latents of flat renders.
CLASSROOM = dict(frozen_from="bundled", unet_width=32, unet_steps=1500, unet_batch=64, unet_lr=2e-3, unet_warmup=100,
                 ema_decay=0.99, robust_decoder_steps=0, polish_steps=0)
PRESETS = {"shipped": Recipe, "classroom": Recipe.classroom}

HELD_EVERY = 97  # every 97th scene (18 of them) measures the VAE's PSNR in the logs
LOG_EVERY = 100  # steps between log lines (and the VAE stages' checkpoints)
UNET_SAVE_EVERY = 500  # steps between stage 5's checkpoints


# ---------------------------------------------------------------- helpers every stage uses
def log(msg: str, out: Path | None = None, quiet: bool = False):
    """Print ``msg`` with the time (not when ``quiet``) and append it to ``out / "train.log"``."""
    line = f"[{time.strftime('%H:%M:%S')}] {msg}"
    if not quiet:
        print(line, flush=True)
    if out is not None:
        with open(out / "train.log", "a") as f:
            f.write(line + "\n")


def scenes_tensor(scenes, resolution=arch.RESOLUTION, looks=None) -> torch.Tensor:
    """Render scenes (each with its look from ``looks``, or flat) to a float tensor in [-1, 1], shape (N, 3, H, W)."""
    looks = looks or [None] * len(scenes)
    pictures = np.stack([np.asarray(shapes.render(s, resolution, look)) for s, look in zip(scenes, looks)])
    return torch.from_numpy(pictures).permute(0, 3, 1, 2).float() / 127.5 - 1


def world_batch(rng: random.Random, scenes: list, k: int, r: Recipe) -> torch.Tensor:
    """``k`` random pictures of the training world for the VAE stages: flat renders of random scenes, or, in a
    varied world (``r.looks_per_scene`` > 0), each with a fresh random look."""
    picks = rng.choices(scenes, k=k)
    looks = [shapes.random_look(rng, r.look_strength) for _ in picks] if r.looks_per_scene else None
    if looks and r.flat_share:  # (drawn only then, so that a recipe without flat renders draws as it always did)
        looks = [None if rng.random() < r.flat_share else look for look in looks]
    return scenes_tensor(picks, looks=looks)


def training_scene_indices() -> list[int]:
    """Indices into ``shapes.all_scenes()`` of the scenes training may use: held-out scenes stay unseen."""
    train_scenes = set(shapes.split_scenes()[0])
    return [i for i, s in enumerate(shapes.all_scenes()) if s in train_scenes]


def load_tokenizer():
    """CLIP's tokenizer, from the files shipped in ``sdcourse/mini_model/tokenizer``."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(MINI_MODEL_DIR / "tokenizer")


def build_pipeline(vae, text_encoder, unet):
    """A StableDiffusionPipeline around trained parts, with the shipped tokenizer and DDIM on ``arch``'s schedule."""
    from diffusers import DDIMScheduler

    from ..loader import _pipeline_class

    StableDiffusionPipeline = _pipeline_class()  # without transformers' warnings about image processors
    scheduler = DDIMScheduler.from_config({k: v for k, v in arch.SCHEDULER_CONFIG.items() if k != "_class_name"})
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=load_tokenizer(), unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def save_ckpt(path: Path, **state):
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_ckpt(path: Path, device: str) -> dict:
    """A checkpoint written by :func:`save_ckpt`, or ValueError with one sentence naming a damaged file."""
    try:
        return torch.load(path, map_location=device)
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, AttributeError, ImportError,
            pickle.UnpicklingError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        if isinstance(err, pickle.UnpicklingError):  # torch's own text suggests loading it unsafely: not that
            reason = "not a file that torch.save wrote"
        raise ValueError(f"the checkpoint {path} is damaged ({reason}); delete it to run that stage again from "
                         f"its start") from None


def check_resume(out: Path, recipe: Recipe) -> None:
    """Refuse to go on with a run in ``out`` that was started with another recipe; record the recipe of a new run.

    Without this, ``--seed 3`` would resume a seed-0 run and record seed 3, and another ``--unet-width`` would
    fail with a hundred lines of size mismatches."""
    path = out / "recipe.json"
    now = json.loads(json.dumps(asdict(recipe)))  # tuples as lists, as in the file
    if path.exists():
        try:
            before = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"{path} is damaged ({err}); delete it only if the checkpoints in {out} were made "
                             f"with the settings you give now") from None
        changed = [k for k, v in now.items() if k in before and before[k] != v]
        if changed:
            was = ", ".join(f"{k}={before[k]!r}" for k in changed[:4])
            asked = ", ".join(f"{k}={now[k]!r}" for k in changed[:4])
            raise ValueError(f"{out} holds a run made with {was}; this one asks for {asked}. Give another folder to "
                             f"start a new run, or the same settings to go on with that one.")
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(now, indent=1) + "\n")


@contextlib.contextmanager
def checkpoint_on_interrupt():
    """Within the block, Ctrl-C (SIGINT) does not stop a training step half-way: it sets ``.requested``, and the
    loop saves a checkpoint at the end of the step, then raises KeyboardInterrupt (:func:`stop_if_asked`)."""
    request = threading.Event()
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield request
        return
    previous = signal.signal(signal.SIGINT, lambda *_: request.set())
    try:
        yield request
    finally:
        signal.signal(signal.SIGINT, previous)


def stop_if_asked(request: threading.Event, save, out: Path, what: str, step: int) -> None:
    """After a whole step: if Ctrl-C came during it, save (``save()``) and stop with KeyboardInterrupt."""
    if request.is_set():
        save()
        log(f"{what}: interrupted; checkpoint saved at step {step}, rerun the same command to go on", out)
        raise KeyboardInterrupt(f"{what} interrupted at step {step}; the checkpoint in {out} resumes it")


def lr_at(step: int, total: int, peak: float, warmup: int, floor: float) -> float:
    """Linear warm-up to ``peak``, then a cosine down to ``floor * peak`` at step ``total``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def set_lr(opt, lr: float):
    for group in opt.param_groups:
        group["lr"] = lr


def optimiser_step(opt, loss, params, grad_clip: float):
    """Backpropagate ``loss``, clip the gradients of ``params`` and take one optimiser step."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, grad_clip)
    opt.step()


def resume(ckpt: Path, model, opt, steps: int, what: str, out: Path, device: str) -> int:
    """Load ``model`` and ``opt`` from ``ckpt`` if it exists; return the step to go on from (``steps`` when done)."""
    if not ckpt.exists():
        return 0
    state = load_ckpt(ckpt, device)
    model.load_state_dict(state["model"]), opt.load_state_dict(state["opt"])
    start = state["step"]
    log(f"{what} already trained ({start} steps)" if start >= steps else f"{what}: resuming at step {start}", out)
    return start


@torch.no_grad()
def round_trip_psnr(vae, pictures: torch.Tensor) -> float:
    """PSNR in dB of the VAE's round trip (posterior mode) of ``pictures``, tensors in [-1, 1]."""
    rec = vae.decode(vae.encode(pictures).latent_dist.mode()).sample.clamp(-1, 1)
    mse = ((rec - pictures) / 2).square().mean().item()  # on the 0..1 scale, where the peak is 1
    return 10 * math.log10(1 / max(mse, 1e-10))


def fit_vae(out: Path, name: str, vae, params, steps: int, lr: float, warmup: int, seed: int, r: Recipe,
            device: str, batch_loss):
    """The loop of every VAE stage: only ``params`` learn, from ``batch_loss(rng) -> (loss, log note)``.

    A linear warm-up and a cosine learning rate; every ``LOG_EVERY`` steps a log line (with the PSNR of
    the VAE's round trip on 18 scenes) and a checkpoint ``out / "<name>.pt"``, resumed from when rerun.
    """
    ckpt = out / f"{name.lower()}.pt"
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    start = resume(ckpt, vae, opt, steps, name, out, device)
    if start >= steps:
        return vae.eval()
    for p in vae.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    held = scenes_tensor(shapes.all_scenes()[::HELD_EVERY]).to(device)
    rng = random.Random(seed + start)
    torch.manual_seed(seed + start)
    t0 = time.time()
    with checkpoint_on_interrupt() as interrupted:
        for step in range(start, steps):
            set_lr(opt, lr_at(step, steps, lr, warmup, r.lr_floor))
            loss, note = batch_loss(rng)
            optimiser_step(opt, loss, params, r.grad_clip)
            if (step + 1) % LOG_EVERY == 0 or step + 1 == steps:
                rate = (step + 1 - start) / (time.time() - t0)
                log(f"{name} step {step + 1}/{steps} loss {loss.item():.4f}{note} "
                    f"PSNR {round_trip_psnr(vae, held):.1f} dB on {len(held)} scenes ({rate:.2f} steps/s)", out)
                save_ckpt(ckpt, model=vae.state_dict(), opt=opt.state_dict(), step=step + 1)
            stop_if_asked(interrupted, lambda: save_ckpt(ckpt, model=vae.state_dict(), opt=opt.state_dict(),
                                                         step=step + 1), out, name, step + 1)
    for p in vae.parameters():
        p.requires_grad_(False)
    return vae.eval()


SUBJECT_DISTANCE = 50.0  # RGB distance (0-255 scale) from the background colour beyond which a pixel is the shape


def subject_weights(pictures: torch.Tensor, weight: float) -> torch.Tensor:
    """Per-pixel loss weights (N, 1, H, W) for ``pictures`` (N, 3, H, W) in [-1, 1]: 1 + ``weight`` where a
    pixel is further than ``SUBJECT_DISTANCE`` from its picture's background colour (the median of a
    2-pixel border), 1 elsewhere. The shape covers about 5% of a picture, so a plain mean lets its colour
    go wrong cheaply; this makes it count."""
    border = torch.cat([pictures[:, :, :2].flatten(2), pictures[:, :, -2:].flatten(2),
                        pictures[:, :, :, :2].flatten(2), pictures[:, :, :, -2:].flatten(2)], dim=2)
    background = border.median(dim=2).values[:, :, None, None]
    far = ((pictures - background) * 127.5).norm(dim=1, keepdim=True) > SUBJECT_DISTANCE
    return 1.0 + weight * far.to(pictures.dtype)


def decoder_loss(vae, latents: torch.Tensor, target: torch.Tensor, r: Recipe):
    """Every decoder stage's loss: MSE + L1 between the decoded ``latents`` and the ``target`` pictures,
    each a mean over pixels weighted by :func:`subject_weights` (a plain mean when ``r.subject_weight`` is 0)."""
    rec = vae.decode(latents).sample
    if not r.subject_weight:
        return F.mse_loss(rec, target) + r.decoder_l1_weight * F.l1_loss(rec, target), ""
    w = subject_weights(target, r.subject_weight).expand_as(target)
    err = rec - target
    return ((w * err.square()).sum() + r.decoder_l1_weight * (w * err.abs()).sum()) / w.sum(), ""


def decoder_params(vae) -> list:
    """What the decoder stages train: the decoder and the 1x1 convolution in front of it."""
    return list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())


@torch.no_grad()
def encode_with_noise(vae, pictures: torch.Tensor, latent_noise: float, scaling: float) -> torch.Tensor:
    """Sampled latents of ``pictures``, each with Gaussian noise of a random strength up to ``latent_noise``
    (in scaled-latent units; ``scaling`` converts) added; none when ``latent_noise`` is 0."""
    z = vae.encode(pictures).latent_dist.sample()
    if latent_noise:
        z = z + torch.rand(len(z), 1, 1, 1, device=z.device) * latent_noise / scaling * torch.randn_like(z)
    return z


# ---------------------------------------------------------------- stage 1: VAE
def train_vae(out: Path, r: Recipe, device: str):
    """Stage 1: train an AutoencoderKL (``arch.vae_config(r.vae_width, r.vae_layers)``) to reconstruct random scenes.

    The loss is MSE + ``vae_l1_weight`` x L1 on the pictures, plus ``vae_kl_weight`` x the KL divergence of
    the posterior from a standard normal (per pixel): just enough to keep the latents a smooth, bounded cloud.
    Returns the VAE in eval mode."""
    from diffusers import AutoencoderKL

    torch.manual_seed(r.stage_seed("vae"))
    vae = AutoencoderKL(**arch.vae_config(r.vae_width, r.vae_layers)).to(device)
    all_scenes = shapes.all_scenes()

    def reconstruction_loss(rng):
        x = world_batch(rng, all_scenes, r.vae_batch, r).to(device)
        posterior = vae.encode(x).latent_dist
        rec = vae.decode(posterior.sample()).sample
        kl = posterior.kl().mean() / x[0].numel()
        if r.subject_weight:  # the shape's pixels weigh more, as in the decoder stages
            w = subject_weights(x, r.subject_weight).expand_as(x)
            err = rec - x
            fit = ((w * err.square()).sum() + r.vae_l1_weight * (w * err.abs()).sum()) / w.sum()
        else:
            fit = F.mse_loss(rec, x) + r.vae_l1_weight * F.l1_loss(rec, x)
        loss = fit + r.vae_kl_weight * kl
        return loss, f" kl {kl.item():.3f}"

    return fit_vae(out, "VAE", vae, list(vae.parameters()), r.vae_steps, r.vae_lr, r.vae_warmup,
                   r.stage_seed("vae"), r, device, reconstruction_loss)


# ---------------------------------------------------------------- stages 2 and 4: decoder alone
def train_decoder(out: Path, vae, r: Recipe, device: str, robust: bool = False, scaling: float = 1.0):
    """Stage 2: freeze the encoder (so the latents, and everything the UNet learns, stay put) and
    sharpen the decoder alone. Joint training leaves a blurry decoder (edges smeared into rings);
    the decoder alone, with its encoder fixed, learns much sharper pictures quickly.

    Stage 4 (``robust=True``): each latent gets Gaussian noise of a random strength up to ``r.latent_noise``
    (in scaled-latent units; the measured ``scaling`` converts), and the decoder learns to draw the clean
    picture anyway. The UNet's latents are never exactly on the encoder's manifold; a decoder that
    forgives small errors draws flat colours and sharp corners from them."""
    all_scenes = shapes.all_scenes()
    noise = r.latent_noise if robust else 0.0

    def noisy_latents_loss(rng):
        x = world_batch(rng, all_scenes, r.vae_batch, r).to(device)
        return decoder_loss(vae, encode_with_noise(vae, x, noise, scaling), x, r)

    name, steps, lr = ("decoder_robust", r.robust_decoder_steps, r.robust_decoder_lr) if robust else (
        "decoder", r.decoder_steps, r.decoder_lr)
    return fit_vae(out, name, vae, decoder_params(vae), steps, lr, r.decoder_warmup, r.stage_seed(name), r, device,
                   noisy_latents_loss)


# ---------------------------------------------------------------- stage 3: latents and scaling factor
@torch.no_grad()
def latent_cache(vae, device: str, r: Recipe | None = None) -> tuple[torch.Tensor, torch.Tensor, float, torch.Tensor]:
    """Stage 3: the UNet's pool of latents. Returns (posterior means, posterior stds, the measured scaling
    factor 1 / std of the means, the scene of each pool entry as an index into ``shapes.all_scenes()``).

    In the flat world the pool is one render per scene, in scene order; in a varied world
    (``r.looks_per_scene`` > 0) it is that many pictures per scene, each with a seeded random look."""
    all_scenes = shapes.all_scenes()
    per_scene = r.looks_per_scene if r is not None else 0
    scene_of = torch.arange(len(all_scenes)).repeat_interleave(max(1, per_scene))
    rng = random.Random(r.stage_seed("looks") if r is not None else 0)
    looks = [shapes.random_look(rng, r.look_strength) for _ in scene_of] if per_scene else None
    means, stds = [], []
    for i in range(0, len(scene_of), 128):
        chunk = [all_scenes[j] for j in scene_of[i : i + 128].tolist()]
        x = scenes_tensor(chunk, looks=looks[i : i + 128] if looks else None).to(device)
        dist = vae.encode(x).latent_dist
        means.append(dist.mean), stds.append(dist.std)
    mean, std = torch.cat(means), torch.cat(stds)
    scaling = 1.0 / mean.std().item()
    return mean, std, scaling, scene_of


def cached_latents(out: Path, vae, device: str, r: Recipe):
    """:func:`latent_cache`, kept in ``out / "latents.pt"`` so that a resumed run skips re-encoding the pool.

    The pool depends only on the encoder (trained in stage 1, frozen after it) and on the looks, so the file
    is reused when the recipe's look settings and the encoder's weights are the ones it was made with."""
    path = out / "latents.pt"
    encoder = [*vae.encoder.parameters(), *vae.quant_conv.parameters()]
    key = {"seed": r.stage_seed("looks"), "looks_per_scene": r.looks_per_scene, "look_strength": r.look_strength,
           "encoder_sum": float(sum(p.detach().double().sum() for p in encoder))}
    if path.exists():
        saved = load_ckpt(path, device)
        if saved["key"] == key:
            log("latent pool: reusing latents.pt", out)
            return saved["mean"], saved["std"], saved["scaling"], saved["scene_of"]
    mean, std, scaling, scene_of = latent_cache(vae, device, r)
    save_ckpt(path, key=key, mean=mean, std=std, scaling=scaling, scene_of=scene_of)
    return mean, std, scaling, scene_of


# ---------------------------------------------------------------- stage 5: text encoder + UNet
class CaptionIds:
    """Tokenises captions once and remembers them (the grammar has few distinct captions)."""

    def __init__(self, tokenizer):
        self.tokenizer, self.cache = tokenizer, {}

    def __call__(self, captions: list[str]) -> torch.Tensor:
        missing = [c for c in set(captions) if c not in self.cache]
        if missing:
            ids = self.tokenizer(missing, padding="max_length", max_length=self.tokenizer.model_max_length,
                                 truncation=True, return_tensors="pt").input_ids
            self.cache.update(zip(missing, ids))
        return torch.stack([self.cache[c] for c in captions])


def denoise_and_smoothness(unet, xt, t, emb, uncond, keep, v, delta: float, alphas_cumprod, points=None,
                           hinge: float = 0.0):
    """The UNet's noise prediction for the batch ``xt`` (timesteps ``t``, text embeddings ``emb``), and the
    guidance-smoothness penalty of the latents ``keep`` (indices of captioned ones), in one UNet call.

    Classifier-free guidance steps along the guidance direction Delta(x) = eps(x, caption) - eps(x, "").
    The guided denoiser's Jacobian is J_u + g (J_c - J_u): where the caption makes the prediction react to x
    differently from the empty prompt, guidance multiplies the difference by g, and multistep samplers
    (K-LMS, PNDM) overshoot. The penalty is a finite-difference estimate of ||sigma dDelta/dx||^2 per number,
    with a random standard-normal direction ``v`` per latent and a step ``delta`` in noisy-latent units:
    mean over ``keep`` of (1 - alpha_bar_t) x mean((Delta(x + delta v) - Delta(x)) / delta)^2 (the factor
    turns a derivative by the noisy latents into one by sigma-scaled latents). ``uncond`` is the empty
    prompt's embedding, (1, tokens, width). ``points``, when given, is (noisy latents, timesteps) of the ``keep``
    latents to take the penalty at instead of ``xt[keep]`` and ``t[keep]`` (for example the same clean latents
    noised to the low noise levels where K-LMS's steps are relatively largest). Returns (prediction for all of
    ``xt``, penalty); with an empty ``keep`` the penalty is 0 and the call is a plain UNet call. With ``hinge``
    above 0, each latent's term is relu(sqrt(term) - hinge)^2: only stretches beyond ``hinge`` are penalised."""
    if len(keep) == 0:
        return unet(xt, t, emb).sample, xt.new_zeros(())
    k = len(keep)
    xk, tk = (xt[keep], t[keep]) if points is None else points
    moved = xk + delta * v
    empty = uncond.expand(k, -1, -1)
    extra = [] if points is None else [xk]  # the caption's prediction at points of their own
    out = unet(torch.cat([xt, xk, moved, moved] + extra), torch.cat([t, tk, tk, tk] + [tk] * len(extra)),
               torch.cat([emb, empty, emb[keep], empty] + [emb[keep]] * len(extra))).sample
    n = len(xt)
    pred, u_here, c_moved, u_moved = out[:n], out[n : n + k], out[n + k : n + 2 * k], out[n + 2 * k : n + 3 * k]
    c_here = pred[keep] if points is None else out[n + 3 * k :]
    change = ((c_moved - u_moved) - (c_here - u_here)) / delta
    per_latent = change.square().mean(dim=(1, 2, 3)) * (1 - alphas_cumprod[tk])
    if hinge > 0:
        per_latent = (per_latent.clamp_min(1e-12).sqrt() - hinge).clamp_min(0).square()
    return pred, per_latent.mean()


@torch.no_grad()
def stiffest_direction(unet, xk, tk, emb_k, uncond, v, delta: float, iters: int) -> torch.Tensor:
    """The direction, per latent, that the guidance direction's Jacobian dDelta/dx (Delta = eps(x, caption) -
    eps(x, "")) stretches most at the noisy latents ``xk`` (timesteps ``tk``, caption embeddings ``emb_k``),
    found by ``iters`` steps of power iteration from ``v`` with finite differences of step ``delta``. Guidance
    multiplies this stretch by its scale, and the largest one decides whether a multistep sampler's step is
    stable. Returned with a root mean square of 1 per latent, like a standard-normal ``v``."""
    def unit(d):
        return d / d.square().mean(dim=(1, 2, 3), keepdim=True).sqrt().clamp_min(1e-12)

    k = len(xk)
    empty = uncond.expand(k, -1, -1)
    out = unet(torch.cat([xk, xk]), torch.cat([tk, tk]), torch.cat([emb_k, empty])).sample
    here = out[:k] - out[k:]
    v = unit(v)
    for _ in range(iters):
        moved = xk + delta * v
        out = unet(torch.cat([moved, moved]), torch.cat([tk, tk]), torch.cat([emb_k, empty])).sample
        v = unit((out[:k] - out[k:]) - here)
    return v


def low_noise_points(x0: torch.Tensor, sigma_max: float, scheduler, gen: torch.Generator, sigma_min: float = 0.0):
    """``x0`` noised by ``scheduler.add_noise`` at timesteps drawn uniformly from those whose noise level
    sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t) lies in [``sigma_min``, ``sigma_max``] (timestep 0 when
    ``sigma_min`` is 0 and none is that low). Returns (noisy latents, timesteps)."""
    ab = scheduler.alphas_cumprod
    sigma = ((1 - ab) / ab).sqrt()  # grows with t
    allowed = torch.nonzero((sigma >= sigma_min) & (sigma <= sigma_max)).flatten()
    if len(allowed) == 0:
        if sigma_min > 0:
            raise ValueError(f"no timestep has a noise level between sigma {sigma_min} and {sigma_max}")
        allowed = torch.zeros(1, dtype=torch.long)
    t = allowed[torch.randint(0, len(allowed), (len(x0),), generator=gen)].to(x0.device)
    noise = torch.randn(x0.shape, generator=gen).to(x0.device)
    return scheduler.add_noise(x0, noise, t), t


class Schedule(NamedTuple):
    """SD's training noise schedule: the scheduler, its alpha_bar_t (1000,) and each timestep's min-SNR loss weight."""

    scheduler: object
    alphas_cumprod: torch.Tensor
    loss_weight: torch.Tensor


def noise_schedule(r: Recipe | None = None, device: str = "cpu") -> Schedule:
    """Stable Diffusion's training schedule (scaled_linear betas 0.00085 -> 0.012 over 1000 steps, epsilon
    prediction) as a DDPMScheduler, with alpha_bar_t and the min-SNR weights min(SNR_t, gamma) / SNR_t of
    epsilon prediction, where SNR_t = alpha_bar_t / (1 - alpha_bar_t) and gamma is ``r.snr_gamma``."""
    from diffusers import DDPMScheduler

    r = r or Recipe()
    schedule_keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type")
    sched = DDPMScheduler(**{k: arch.SCHEDULER_CONFIG[k] for k in schedule_keys})
    ab = sched.alphas_cumprod.to(device)
    snr = ab / (1 - ab)
    return Schedule(sched, ab, torch.clamp(snr, max=r.snr_gamma) / snr)


def batch_captions(scenes: list, rng: random.Random, r: Recipe) -> list[str]:
    """One caption per scene, as training sees them: empty with probability ``r.caption_dropout`` (so that the
    model also learns the unconditional prediction classifier-free guidance needs), otherwise the scene's
    caption with each of size, position and background left out with probability ``r.caption_part_dropout``."""
    return ["" if rng.random() < r.caption_dropout else shapes.random_caption(scene, rng, r.caption_part_dropout)
            for scene in scenes]


class Batch(NamedTuple):
    """One training batch of stage 5: captions, clean latents x0, the noise, timesteps t and x_t."""

    captions: list
    x0: torch.Tensor
    noise: torch.Tensor
    t: torch.Tensor
    xt: torch.Tensor


def unet_batch(rng: random.Random, gen: torch.Generator, pool: "LatentPool", r: Recipe, schedule: Schedule,
               device: str = "cpu") -> Batch:
    """A batch of ``r.unet_batch`` pool entries of training scenes: their captions (:func:`batch_captions`),
    a sample of each latent's posterior times the scaling factor (x0), noise with a per-channel offset of std
    ``r.offset_noise``, random timesteps of SD's schedule and the noisy latents
    x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise (the scheduler's ``add_noise``)."""
    idx = rng.choices(pool.train_idx, k=r.unet_batch)
    caps = batch_captions([pool.scenes[pool.scene_of[i]] for i in idx], rng, r)
    idx_t = torch.tensor(idx, device=device)
    eps_post = torch.randn(pool.mean[idx_t].shape, generator=gen).to(device)
    x0 = (pool.mean[idx_t] + pool.std[idx_t] * eps_post) * pool.scaling  # a sample of the posterior, scaled
    noise = torch.randn(x0.shape, generator=gen).to(device)
    noise = noise + r.offset_noise * torch.randn(x0.shape[0], x0.shape[1], 1, 1, generator=gen).to(device)
    t = torch.randint(0, schedule.scheduler.config.num_train_timesteps, (r.unet_batch,), generator=gen).to(device)
    return Batch(caps, x0, noise, t, schedule.scheduler.add_noise(x0, noise, t))


def denoising_loss(pred: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, loss_weight: torch.Tensor):
    """SD's objective: the mean squared error between the UNet's prediction and the noise that was added, per
    picture, weighted by ``loss_weight[t]`` (min-SNR, see :func:`noise_schedule`), averaged over the batch."""
    return ((pred - noise).square().mean(dim=(1, 2, 3)) * loss_weight[t]).mean()


class LatentPool(NamedTuple):
    """What stage 5 draws from: posterior means and stds, the scaling factor, every entry's scene (an index into
    ``scenes``) and the entries of training scenes."""

    mean: torch.Tensor
    std: torch.Tensor
    scaling: float
    scene_of: list
    train_idx: list
    scenes: list


def latent_pool(mean, std, scaling: float, scene_of: torch.Tensor | None = None, device: str = "cpu") -> LatentPool:
    """A :class:`LatentPool` of cached latents (:func:`latent_cache`); held-out scenes are never trained on."""
    all_scenes = shapes.all_scenes()
    scene_of = torch.arange(len(all_scenes)) if scene_of is None else scene_of
    training = set(training_scene_indices())
    train_idx = [i for i, scene in enumerate(scene_of.tolist()) if scene in training]  # pool entries
    return LatentPool(mean.to(device), std.to(device), scaling, scene_of.tolist(), train_idx, all_scenes)


def frozen_parts(folder: str, device: str = "cpu"):
    """The VAE and text encoder of a diffusers folder ('bundled': the shipped mini model), frozen, in eval mode."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel

    from ..loader import _quiet_loading

    path = MINI_MODEL_DIR if folder == "bundled" else Path(folder)
    if not (path / "vae").is_dir() or not (path / "text_encoder").is_dir():
        raise ValueError(f"frozen_from must be 'bundled' or a diffusers folder with vae/ and text_encoder/, "
                         f"got {folder!r}")
    with _quiet_loading():  # no loading bars
        vae = AutoencoderKL.from_pretrained(path, subfolder="vae").to(device).eval().requires_grad_(False)
        text_encoder = CLIPTextModel.from_pretrained(path, subfolder="text_encoder").to(device).eval()
    return vae, text_encoder.requires_grad_(False)


def train_unet(out: Path, r: Recipe, mean: torch.Tensor, std: torch.Tensor, scaling: float, device: str,
               scene_of: torch.Tensor | None = None, text_encoder=None, on_step=None):
    """Stage 5: train a CLIPTextModel and a UNet2DConditionModel together on SD's denoising loss.

    Each step takes ``unet_batch`` entries of the latent pool whose scenes are training scenes (``scene_of``:
    each entry's scene, one entry per scene by default), samples their latents from the cached posterior
    (``mean``, ``std``; times the measured ``scaling``), noises them at random timesteps of SD's schedule and
    asks the UNet for the noise (epsilon prediction), conditioned on the scene's caption with parts left out,
    or on the empty caption (``caption_dropout``). The noise has a per-channel offset (``offset_noise``); each
    picture's loss is weighted by min(SNR, ``snr_gamma``) / SNR. An EMA of the weights is kept, and that EMA
    is what this returns (text encoder and UNet, in eval mode). Resumes from ``out / "unet.pt"``.

    With a ``text_encoder`` given, that one is used frozen and only a new UNet learns. ``on_step(step, loss,
    ema_models)``, when given, is called after every step with the step's number (1, 2, ...), its denoising loss
    and a function that returns copies of (text encoder, UNet) with the EMA weights."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    ckpt = out / "unet.pt"
    torch.manual_seed(r.stage_seed("unet_init"))
    frozen = text_encoder is not None
    if not frozen:
        text_encoder = CLIPTextModel(CLIPTextConfig(**arch.TEXT_CONFIG)).to(device)
    unet = UNet2DConditionModel(**arch.unet_config(r.unet_width)).to(device)
    params = ([] if frozen else list(text_encoder.parameters())) + list(unet.parameters())
    ema = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=r.unet_lr, weight_decay=r.unet_weight_decay)
    start = 0
    if ckpt.exists():
        state = load_ckpt(ckpt, device)
        if not frozen:
            text_encoder.load_state_dict(state["text_encoder"])
        unet.load_state_dict(state["unet"])
        if "opt" in state:  # a checkpoint seeded from exported weights has no optimizer state or EMA yet
            opt.load_state_dict(state["opt"])
        ema = [e.to(device) for e in state["ema"]] if "ema" in state else [p.detach().clone() for p in params]
        start = state["step"]
        log(f"UNet: resuming at step {start}", out)

    def ema_models():
        te, un = text_encoder if frozen else copy.deepcopy(text_encoder), copy.deepcopy(unet)
        with torch.no_grad():
            for p, e in zip(([] if frozen else list(te.parameters())) + list(un.parameters()), ema):
                p.copy_(e)
        return te.eval(), un.eval()

    def save(step: int):  # weights, optimiser state and EMA: everything a rerun needs to go on
        save_ckpt(ckpt, **({} if frozen else {"text_encoder": text_encoder.state_dict()}),
                  unet=unet.state_dict(), opt=opt.state_dict(), ema=ema, step=step)

    if start < r.unet_steps:
        schedule = noise_schedule(r, device)
        tok = CaptionIds(load_tokenizer())
        pool = latent_pool(mean, std, scaling, scene_of, device)
        rng = random.Random(r.stage_seed("unet") + start)
        gen = torch.Generator(device="cpu").manual_seed(r.stage_seed("unet") + start)
        t0, ema_loss, ema_penalty = time.time(), None, None
        text_encoder.train(not frozen), unet.train()
        with checkpoint_on_interrupt() as interrupted:
            for step in range(start, r.unet_steps):
                set_lr(opt, lr_at(step, r.unet_steps, r.unet_lr, r.unet_warmup, r.lr_floor))
                # a batch: scenes, their captions (some empty, some shortened), latents, noise, timesteps
                batch = unet_batch(rng, gen, pool, r, schedule, device)
                ids = tok(batch.captions).to(device)
                # the UNet predicts the noise; each picture's squared error is weighted by min-SNR
                with torch.set_grad_enabled(not frozen):
                    emb = text_encoder(ids).last_hidden_state
                if step >= r.unet_steps - r.smooth_steps:  # the last smooth_steps steps: with the penalty
                    keep = torch.tensor([j for j, c in enumerate(batch.captions) if c][: r.smooth_batch],
                                        dtype=torch.long)
                    v = torch.randn((len(keep),) + tuple(batch.x0.shape[1:]), generator=gen).to(device)
                    with torch.set_grad_enabled(not frozen):
                        uncond = text_encoder(tok([""]).to(device)).last_hidden_state
                    points = None
                    if r.smooth_sigma_max > 0:  # the same clean latents, noised afresh to a low noise level
                        points = low_noise_points(batch.x0[keep.to(device)], r.smooth_sigma_max,
                                                  schedule.scheduler, gen, r.smooth_sigma_min)
                    if r.smooth_power_iters > 0:  # look along the stiffest direction instead of a random one
                        xk, tk = (batch.xt[keep.to(device)], batch.t[keep.to(device)]) if points is None else points
                        v = stiffest_direction(unet, xk, tk, emb[keep.to(device)].detach(), uncond.detach(), v,
                                               r.smooth_delta, r.smooth_power_iters)
                    pred, penalty = denoise_and_smoothness(unet, batch.xt, batch.t, emb, uncond, keep.to(device), v,
                                                           r.smooth_delta, schedule.alphas_cumprod, points,
                                                           r.smooth_hinge)
                else:
                    pred, penalty = unet(batch.xt, batch.t, emb).sample, None
                denoising = denoising_loss(pred, batch.noise, batch.t, schedule.loss_weight)
                loss = denoising
                if penalty is not None:
                    ema_penalty = penalty.item() if ema_penalty is None else 0.98 * ema_penalty + 0.02 * penalty.item()
                    loss = denoising + r.smooth_weight * penalty
                optimiser_step(opt, loss, params, r.grad_clip)
                with torch.no_grad():  # the EMA warms up: its decay grows from 0.1 towards ema_decay
                    d = min(r.ema_decay, (1 + step) / (10 + step))
                    torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - d)
                ema_loss = denoising.item() if ema_loss is None else 0.98 * ema_loss + 0.02 * denoising.item()
                if (step + 1) % LOG_EVERY == 0 or step + 1 == r.unet_steps:
                    rate = (step + 1 - start) / (time.time() - t0)
                    eta = (r.unet_steps - step - 1) / rate / 60
                    smooth = "" if ema_penalty is None else f" smoothness {ema_penalty:.5f}"
                    log(f"UNet step {step + 1}/{r.unet_steps} loss {ema_loss:.4f}{smooth} lr "
                        f"{opt.param_groups[0]['lr']:.2e} ({rate:.2f} steps/s, {eta:.0f} min left)", out,
                        quiet=on_step is not None)
                if (step + 1) % UNET_SAVE_EVERY == 0 or step + 1 == r.unet_steps:
                    save(step + 1)
                if on_step is not None:
                    on_step(step + 1, denoising.item(), ema_models)
                stop_if_asked(interrupted, lambda: save(step + 1), out, "UNet", step + 1)
    text_encoder.eval()
    with torch.no_grad():
        for p, e in zip(params, ema):
            p.copy_(e)
    return text_encoder.eval(), unet.eval()


# ---------------------------------------------------------------- stage 6: decoder on the UNet's latents
@torch.no_grad()
def generated_latents(out: Path, vae, text_encoder, unet, r: Recipe, scaling: float, device: str):
    """Latents that the trained UNet itself draws (DDIM) for ``r.polish_samples`` training captions, at the
    guidance scales ``r.polish_guidances`` in turn, kept where the current decoder's picture already shows the
    caption's colour, background, position and size (so that the caption's render is a fair target).
    Held-out scenes are never used. Returns (latents, scene indices), or (None, None) when none is kept.
    Cached in ``out / "generated_latents.pt"``."""
    from . import evaluate

    n, batch = r.polish_samples, r.polish_draw_batch
    cache = out / "generated_latents.pt"
    if cache.exists():
        state = load_ckpt(cache, device)
        if state["n"] == n:
            return state["latents"], state["scene_index"]
    vae.register_to_config(scaling_factor=float(round(scaling, 5)))  # the pipeline scales latents by it
    pipe = build_pipeline(vae, text_encoder, unet)
    pipe.set_progress_bar_config(disable=True)
    all_scenes = shapes.all_scenes()
    idx = random.Random(r.stage_seed("polish_captions")).choices(training_scene_indices(), k=n)
    kept_lat, kept_idx, t0 = [], [], time.time()
    for b in range(0, n, batch):
        chunk = idx[b : b + batch]
        guidance = r.polish_guidances[(b // batch) % len(r.polish_guidances)]
        gen = [torch.Generator("cpu").manual_seed(r.stage_seed("polish_pictures") + b + j) for j in range(len(chunk))]
        lat = pipe([all_scenes[i].caption() for i in chunk], num_inference_steps=r.polish_sampling_steps,
                   guidance_scale=guidance, generator=gen, output_type="latent").images
        pics = ((vae.decode(lat / vae.config.scaling_factor).sample.clamp(-1, 1) + 1) * 127.5).round().byte()
        for z, pic, i in zip(lat, pics.permute(0, 2, 3, 1).cpu().numpy(), chunk):
            ok = evaluate.score(evaluate.read_picture(pic), all_scenes[i])
            if ok["colour"] and ok["background"] and ok["position"] and ok["size"]:
                kept_lat.append(z / vae.config.scaling_factor), kept_idx.append(i)
        log(f"generated latents: {b + len(chunk)}/{n} drawn, {len(kept_idx)} kept ({time.time() - t0:.0f} s)", out)
    if not kept_idx:
        log("generated latents: no picture matched its caption, so there is nothing to polish on", out)
        return None, None
    latents, scene_index = torch.stack(kept_lat), torch.tensor(kept_idx)
    save_ckpt(cache, latents=latents, scene_index=scene_index, n=n)
    return latents, scene_index


def polish_decoder(out: Path, vae, latents: torch.Tensor, scene_index: torch.Tensor, r: Recipe, scaling: float,
                   device: str):
    """Stage 6: fine-tune the decoder on batches that are half the UNet's own ``latents`` (target: the clean
    render of the scene ``scene_index`` names) and half the encoder's latents with noise (as in stage 4), so
    that it draws flat colours and straight edges from what the sampler actually produces and still
    reconstructs encoded pictures."""
    all_scenes = shapes.all_scenes()
    train_list = [all_scenes[i] for i in training_scene_indices()]
    targets = scenes_tensor([all_scenes[i] for i in scene_index.tolist()]).to(device)
    half = r.vae_batch // 2

    def half_generated_half_encoded_loss(rng):
        pick = torch.tensor(rng.choices(range(len(latents)), k=half))
        x = scenes_tensor(rng.choices(train_list, k=r.vae_batch - half)).to(device)
        z = encode_with_noise(vae, x, r.latent_noise, scaling)
        return decoder_loss(vae, torch.cat([latents[pick].to(device), z]), torch.cat([targets[pick], x]), r)

    return fit_vae(out, "decoder_polish", vae, decoder_params(vae), r.polish_steps, r.polish_lr, r.decoder_warmup,
                   r.stage_seed("decoder_polish"), r, device, half_generated_half_encoded_loss)


# ---------------------------------------------------------------- export
SD_SCALING_FACTOR = 0.18215  # Stable Diffusion v1.x's latent scale, which tutorials write as 1 / 0.18215
LATENT_CONVS = ("quant_conv.", "post_quant_conv.")  # kept in float32 on disk: they carry the folded scale


@torch.no_grad()
def fold_latent_scale(vae, measured: float, target: float = SD_SCALING_FACTOR):
    """Make ``target`` the VAE's scaling factor without changing what the UNet sees or what is decoded.

    The UNet learnt latents ``measured * z``. With ``k = measured / target`` the VAE is rewritten to
    produce ``z' = k * z`` instead, so that ``target * z' == measured * z`` exactly:
    ``quant_conv``'s mean outputs are multiplied by ``k`` (a Gaussian's std scales with it, so its
    log-variance outputs gain ``2 ln k``), and ``post_quant_conv``'s weights are divided by ``k`` (it
    reads ``z'`` and must compute what it computed from ``z``)."""
    k = measured / target
    channels = vae.config.latent_channels
    qc, pqc = vae.quant_conv, vae.post_quant_conv
    qc.weight[:channels] *= k  # mean
    qc.bias[:channels] *= k
    qc.bias[channels:] += 2 * math.log(k)  # log-variance
    pqc.weight /= k
    vae.register_to_config(scaling_factor=target)
    return vae


def export(folder: Path, vae, text_encoder, unet, scaling: float, record: dict | None = None):
    """Save a diffusers folder that StableDiffusionPipeline.from_pretrained reads (safetensors).

    The weights are stored in float16 (half the size) but every config says float32, so plain
    ``from_pretrained`` calls with no dtype give float32 components, as SD v1.x's do. The measured
    ``scaling`` is folded into the VAE (``fold_latent_scale``), so the folder's scaling factor is SD's
    0.18215 and the two small convolutions that carry it stay in float32. ``record`` (the recipe, the
    machine, the times) is written beside the weights as ``train_info.json``."""
    import diffusers

    folder = Path(folder)
    tokenizer_files = {p.name: p.read_bytes() for p in (MINI_MODEL_DIR / "tokenizer").iterdir()}
    build_pipeline(fold_latent_scale(copy.deepcopy(vae), scaling), text_encoder, unet).save_pretrained(
        folder, safe_serialization=True)
    halve_weights(folder, keep_float32=LATENT_CONVS)
    classic_text_encoder_keys(folder / "text_encoder" / "model.safetensors")
    # transformers 5 saves only tokenizer.json; ship the classic vocab.json + merges.txt pair
    # that sdcourse.mini.clip_vocab made from open_clip's vocabulary file (the same ids, readable files).
    shutil.rmtree(folder / "tokenizer")
    (folder / "tokenizer").mkdir()
    for name, data in tokenizer_files.items():
        (folder / "tokenizer" / name).write_bytes(data)
    # Write the scheduler config in full, with every field pinned: DDIM reads clip_sample
    # (its default, True, would clip latents to [-1, 1]).
    cfg = dict(arch.SCHEDULER_CONFIG, _diffusers_version=diffusers.__version__)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    if record is not None:
        (folder / "train_info.json").write_text(json.dumps(record, indent=2) + "\n")
    return folder


def classic_text_encoder_keys(path: Path) -> None:
    """Rename a CLIP text encoder's tensors in ``path`` as CLIP's and SD v1.x's checkpoints spell them,
    ``text_model.embeddings...``. transformers 5.0 reads only that spelling (a file without the prefix loads
    as a randomly initialised model, with a warning); later 5.x releases read both, but save without it."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(path, "pt") as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if all(k.startswith("text_model.") for k in tensors):
        return
    renamed = {k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in tensors.items()}
    tmp = path.with_suffix(".tmp")
    save_file(renamed, tmp, metadata=metadata)
    tmp.replace(path)


def halve_weights(folder: Path, keep_float32: tuple[str, ...] = ()):
    """Rewrite every ``*.safetensors`` file under ``folder`` in float16, except the tensors whose names start
    with one of ``keep_float32``. The configs are left as saved (float32), and diffusers and transformers
    load float16 weights into a float32 model when no dtype is asked for."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    for path in Path(folder).rglob("*.safetensors"):
        with safe_open(path, "pt") as f:
            metadata = f.metadata()
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        halved = {k: v if not v.is_floating_point() or k.startswith(keep_float32) else v.half()
                  for k, v in tensors.items()}
        save_file(halved, path, metadata=metadata)


# ---------------------------------------------------------------- the command
def parse_args(argv=None) -> tuple[argparse.Namespace, Recipe]:
    """The run's options, and the :class:`Recipe` made of the others (one option per field)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=folder_path, default=Path("runs/mini"), help="checkpoint folder (resumes from it)")
    ap.add_argument("--export", type=folder_path, default=None,
                    help="where the trained diffusers folder goes (default: OUT/model). The bundled model is "
                         "replaced only when this names it: --export sdcourse/mini_model")
    ap.add_argument("--decoder-only", action="store_true", help="stop after the decoder stages (2 and 4)")
    ap.add_argument("--export-now", action="store_true",
                    help="export the latest checkpoints (EMA weights) without training further")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="shipped",
                    help="the recipe to start from: the shipped model's, or chapter 13's small run (a new UNet on the "
                         "bundled VAE and text encoder, minutes on a CPU); the options below change single settings")
    recipe = ap.add_argument_group("recipe", "every training setting (defaults: the preset's)")
    for f in fields(Recipe):
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, tuple):
            recipe.add_argument(flag, type=float, nargs="+", default=f.default, help=f.metadata["help"])
        else:
            recipe.add_argument(flag, type=type(f.default), default=f.default, help=f.metadata["help"])
    known, _ = ap.parse_known_args(argv)
    ap.set_defaults(**asdict(PRESETS[known.preset]()))
    args = ap.parse_args(argv)
    if args.threads < 0:
        ap.error(f"--threads must be 0 (torch's default) or more, got {args.threads}")
    values = {f.name: getattr(args, f.name) for f in fields(Recipe)}
    try:
        recipe = Recipe(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    except ValueError as err:  # one line, as argparse's own errors
        ap.error(f"{err} (each setting is the option of the same name: unet_lr is --unet-lr)")
    if args.export is None:  # a run never replaces the bundled model unless --export names it
        args.export = args.out / "model"
    if recipe.frozen_from and Path(args.export).resolve() == MINI_MODEL_DIR.resolve():
        ap.error("a run on frozen parts trains a new UNet only; export it elsewhere than sdcourse/mini_model/, "
                 "whose VAE and text encoder it uses")
    return args, recipe


def folder_path(text: str) -> Path:
    """An argparse type: a folder's path, not empty (an empty one would mean the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("give a folder's path, not an empty string")
    return Path(text)


def steps_done(out: Path, frozen: bool = False) -> dict:
    """How many steps each stage's checkpoint in ``out`` holds (0 for an optional stage never run); with a
    ``frozen`` VAE and text encoder, only the UNet's."""
    for needed in ("unet.pt",) if frozen else ("vae.pt", "unet.pt"):
        if not (out / needed).exists():
            raise SystemExit(f"--export-now needs the checkpoint {out / needed}, which does not exist")

    def step(name: str) -> int:
        path = out / f"{name}.pt"
        return load_ckpt(path, "cpu")["step"] if path.exists() else 0

    if frozen:
        return {"unet_steps": step("unet")}
    done = {"vae_steps": step("vae"), "unet_steps": step("unet"), "robust_decoder_steps": step("decoder_robust"),
            "polish_steps": step("decoder_polish")}
    if (out / "decoder.pt").exists():
        done["decoder_steps"] = step("decoder")
    return done


def main(argv=None):
    args, r = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out, device = args.out, args.device
    try:
        check_resume(out, r)  # the same recipe as the run already in `out`, if any
    except ValueError as err:
        raise SystemExit(f"train: {err}") from None
    if args.export_now:
        r = replace(r, **steps_done(out, bool(r.frozen_from)))
    t0 = clock = time.time()
    minutes = {}

    def stage_done(name: str):
        nonlocal clock
        minutes[name], clock = round((time.time() - clock) / 60, 1), time.time()

    log(f"training on {device} ({torch.get_num_threads()} threads), torch {torch.__version__}", out)
    frozen_text = None
    if r.frozen_from:  # the VAE and text encoder come trained and stay frozen: stage 5 alone
        vae, frozen_text = frozen_parts(r.frozen_from, device)
        log(f"VAE and text encoder: {r.frozen_from}, frozen", out)
    else:
        vae = train_vae(out, r, device)
        stage_done("vae")
        vae = train_decoder(out, vae, r, device)
        stage_done("decoder")
    mean, std, scaling, scene_of = cached_latents(out, vae, device, r)
    log(f"{len(mean)} latents {tuple(mean.shape[1:])}, measured scaling factor {scaling:.5f}", out)
    stage_done("latent_cache")
    if r.robust_decoder_steps and not r.frozen_from:
        vae = train_decoder(out, vae, r, device, robust=True, scaling=scaling)
        stage_done("decoder_robust")
    if args.decoder_only:
        return
    text_encoder, unet = train_unet(out, r, mean, std, scaling, device, scene_of, text_encoder=frozen_text)
    stage_done("unet")
    if r.polish_steps:
        latents, scene_index = generated_latents(out, vae, text_encoder, unet, r, scaling, device)
        stage_done("polish_pictures")
        if latents is None:
            r = replace(r, polish_steps=0)
        else:
            vae = polish_decoder(out, vae, latents, scene_index, r, scaling, device)
            stage_done("decoder_polish")
    record = {**asdict(r), "scaling_factor": scaling, "device": device, "threads": torch.get_num_threads(),
              "torch": torch.__version__, "stage_minutes_this_run": minutes,
              "wall_minutes_this_run": round((time.time() - t0) / 60, 1)}
    export(args.export, vae.cpu(), text_encoder.cpu(), unet.cpu(), scaling, record)
    (out / "train_info.json").write_text(json.dumps(record, indent=2) + "\n")
    log(f"exported to {args.export} after {record['wall_minutes_this_run']:.1f} min", out)


if __name__ == "__main__":
    main()
