"""A Stable Diffusion v1-4-shaped pipeline with random weights, built from configs in seconds.

No SD checkpoint can be downloaded where this course is tested, yet every notebook has
settings that only the real model uses: 512 x 512 pictures (64 x 64 latents), the PNDM
scheduler with SD's "leading" timesteps, the VAE scaling factor 0.18215, a 77-token CLIP
prompt. :func:`build_standin` writes a diffusers pipeline folder with exactly those
configs, so that ``load_pipeline(folder)`` (or ``SDCOURSE_MODEL=folder``) runs every cell
through its SD branch. Its pictures are noise: the point is that every line runs with SD's
sizes and defaults.

Two sizes, one builder:

* ``full_size=False`` (the default): tiny widths, so that a CPU runs a notebook in seconds
  (the test suite's second notebook run);
* ``full_size=True``: the real SD v1-4 architecture (UNet 860M, VAE 84M, text encoder 123M
  parameters), for timing and memory on a GPU (``scripts/gpu_check.sh``,
  ``benchmarks/bench_gpu_fullsize.py``); a forward pass costs the same whatever the weights are.

The tokenizer is the real CLIP tokenizer (49,408 tokens, 77 positions) shipped with the mini
model. Weights are seeded, so a folder built twice holds the same numbers.

Example::

    >>> from sdcourse.standin import build_standin
    >>> folder = build_standin("/tmp/sd-standin")          # a few seconds on a CPU
    >>> pipe = sdcourse.load_pipeline(folder, device="cpu")
    >>> sdcourse.is_mini_model(pipe), pipe.unet.config.sample_size * pipe.vae_scale_factor
    (False, 512)
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from .loader import MINI_MODEL_DIR

# Stable Diffusion v1-4 (CompVis/stable-diffusion-v1-4) at full size, written out explicitly.
SD14_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, center_input_sample=False, flip_sin_to_cos=True,
    freq_shift=0, down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                    "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, downsample_padding=1,
    mid_block_scale_factor=1, act_fn="silu", norm_num_groups=32, norm_eps=1e-5, cross_attention_dim=768,
    attention_head_dim=8,
)
SD14_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, sample_size=512, act_fn="silu",
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32, scaling_factor=0.18215,
)
SD14_TEXT = dict(  # openai/clip-vit-large-patch14, text tower (special-token ids as the CLIP tokenizer gives them)
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=768,
    bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
)
MARKER = "sdcourse_standin.json"  # written into every stand-in folder: only such a folder is ever replaced
SD14_SCHEDULER_FILE = {  # scheduler/scheduler_config.json of CompVis/stable-diffusion-v1-4, key for key
    "_class_name": "PNDMScheduler", "_diffusers_version": "0.7.0.dev0", "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000, "set_alpha_to_one": False,
    "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None, "clip_sample": False,
}
# The file names no timestep_spacing: a scheduler built from it (or from a pipeline loaded with it) takes its
# own class's default, "leading" for PNDM and DDIM, "linspace" for K-LMS, Euler and DPM-Solver++.
SD14_SCHEDULER = dict(  # the PNDMScheduler that SD v1-4 loads from that file: its settings, defaults included
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    steps_offset=1, prediction_type="epsilon", skip_prk_steps=True, set_alpha_to_one=False,
    clip_sample=False, trained_betas=None, timestep_spacing="leading",
)


def write_sd14_scheduler(folder: Path) -> None:
    """Write SD v1-4's scheduler file into the pipeline folder ``folder`` (``scheduler/scheduler_config.json``,
    exactly as the checkpoint ships it) and name ``PNDMScheduler`` in its ``model_index.json``.
    ``save_pretrained`` would write every default, ``timestep_spacing`` included, and a scheduler loaded from
    that file would pass its spacing on to the others, which SD's own file does not."""
    (folder / "scheduler").mkdir(parents=True, exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(SD14_SCHEDULER_FILE, indent=2) + "\n")
    index_file = folder / "model_index.json"
    if index_file.is_file():
        index = json.loads(index_file.read_text())
        index["scheduler"] = ["diffusers", "PNDMScheduler"]
        index_file.write_text(json.dumps(index, indent=2) + "\n")

# The tiny setting: the same block types, sizes and factors, with widths small enough for a CPU and two
# attention heads (the fewest that attention slicing can halve; self-attention over the 64 x 64 latent
# positions is most of a CPU's time, and it grows with the number of heads).
TINY_UNET = {**SD14_UNET, "block_out_channels": (8, 8, 8, 8), "layers_per_block": 1, "norm_num_groups": 4,
             "cross_attention_dim": 32, "attention_head_dim": 2}
TINY_VAE = {**SD14_VAE, "block_out_channels": (4, 4, 4, 4), "layers_per_block": 1, "norm_num_groups": 2}
TINY_TEXT = {**SD14_TEXT, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
             "num_attention_heads": 2, "projection_dim": 32}


def configs(full_size: bool = False) -> tuple[dict, dict, dict]:
    """The (UNet, VAE, text encoder) configs: SD v1-4's own, or the tiny setting."""
    return (SD14_UNET, SD14_VAE, SD14_TEXT) if full_size else (TINY_UNET, TINY_VAE, TINY_TEXT)


def build_models(device="cpu", dtype=torch.float32, full_size: bool = False, seed: int = 0) -> dict:
    """Random-weight UNet, VAE and CLIP text encoder (``device="meta"``: shapes only, no memory)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    unet_cfg, vae_cfg, text_cfg = configs(full_size)
    torch.manual_seed(seed)
    with torch.device(device):
        unet = UNet2DConditionModel(**unet_cfg)
        vae = AutoencoderKL(**vae_cfg)
        text_encoder = CLIPTextModel(CLIPTextConfig(**text_cfg))
    unet, vae, text_encoder = (m.eval() for m in (unet, vae, text_encoder))
    if torch.device(device).type != "meta" and dtype != torch.float32:
        unet, vae, text_encoder = (m.to(dtype) for m in (unet, vae, text_encoder))
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder}


def build_standin(folder: str | os.PathLike, full_size: bool = False, seed: int = 0) -> Path:
    """Write an SD v1-4-shaped diffusers pipeline folder with seeded random weights; return its path.

    Args:
        folder: where to write it (created; an existing stand-in there is replaced).
        full_size: ``False`` for tiny widths (seconds on a CPU), ``True`` for SD v1-4's own
            architecture (about 1.1 billion parameters, 4.3 GB on disk in float32).
        seed: the seed of the random weights.
    """
    from diffusers import PNDMScheduler, StableDiffusionPipeline
    from transformers import CLIPTokenizer

    from .validate import check_instance, check_path, check_seed

    folder = check_path(folder, "folder", "/tmp/sd-standin")
    check_instance(full_size, "full_size", bool, "True or False")
    seed = check_seed(seed)
    if folder.resolve() == MINI_MODEL_DIR:
        raise ValueError(f"folder {str(folder)!r} is the bundled mini model; give another folder for the stand-in.")
    if folder.exists():
        if not folder.is_dir():
            raise ValueError(f"folder {str(folder)!r} is a file; give an empty or new folder for the stand-in.")
        if any(folder.iterdir()) and not (folder / MARKER).is_file():
            raise ValueError(f"folder {str(folder)!r} holds files that build_standin did not write (it has no "
                             f"{MARKER}); nothing was changed. Give an empty or new folder for the stand-in.")
        shutil.rmtree(folder)
    parts = build_models("cpu", torch.float32, full_size=full_size, seed=seed)
    pipe = StableDiffusionPipeline(
        **parts, tokenizer=CLIPTokenizer.from_pretrained(MINI_MODEL_DIR / "tokenizer"),
        scheduler=PNDMScheduler.from_config(SD14_SCHEDULER), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    pipe.save_pretrained(folder)
    write_sd14_scheduler(folder)
    (folder / MARKER).write_text(json.dumps({"made_by": "sdcourse.standin.build_standin", "full_size": full_size,
                                             "seed": seed}) + "\n")
    return folder
