"""Make the model yours: teach it a new word (textual inversion) and a new look (LoRA), in minutes on a CPU.

Both trainings use the loss that trained the model (predict the noise added to a picture's latents) on a few
pictures of something new, and change almost nothing:

* **textual inversion** adds one token to the tokenizer and trains one row of the text encoder's embedding
  table, the new token's; everything else stays frozen. Saved in diffusers' format (a file holding
  ``{token: embedding}``), it loads with ``pipe.load_textual_inversion(path)``.
* **LoRA** adds a low-rank update ``W + (alpha / r) * B @ A`` beside the UNet's attention projections with peft,
  through diffusers' own ``unet.add_adapter``, and trains only ``A`` and ``B``. Saved with
  ``StableDiffusionPipeline.save_lora_weights``, it loads with ``pipe.load_lora_weights(folder)``, and
  ``cross_attention_kwargs={"scale": s}`` sets how much of it is used.

The pictures come from the shapes world with one thing it does not have: a colour no caption names
(:func:`new_colour_pictures`) or shapes drawn as outlines (:func:`outlined_pictures`).
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from . import shapes
from .images import pil_to_latents

TEAL = (20, 160, 160)  # between the palette's green and blue; no caption names it
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")  # the attention projections, as diffusers' LoRA scripts


@dataclass
class Training:
    """What a training did: the loss of every step, how long it took, how many numbers it trained."""

    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    trained_numbers: int = 0

    def __repr__(self):
        first, last = np.mean(self.losses[:20]), np.mean(self.losses[-20:])
        return (f"Training({len(self.losses)} steps in {self.seconds:.0f} s, {self.trained_numbers:,} numbers "
                f"trained, loss {first:.3f} -> {last:.3f})")


# ---------------------------------------------------------------- the pictures
def new_colour_pictures(word: str, rgb=TEAL, n: int = 12, seed: int = 0) -> list[tuple[Image.Image, str]]:
    """``n`` flat pictures of random scenes whose shape has the colour ``rgb``, each with its caption in
    which ``word`` stands for that colour ("a <teal> square in the top left on a white background")."""
    rng = random.Random(seed)
    pairs = []
    while len(pairs) < n:
        scene = shapes.random_scene(rng)
        if scene.colour not in ("green", "blue") and scene.background not in ("green", "blue"):
            picture = np.array(shapes.render(scene))
            picture[shape_mask(scene)] = rgb  # the shape's pixels, repainted
            caption = scene.caption().replace(f" {scene.colour} ", f" {word} ", 1)
            pairs.append((Image.fromarray(picture), caption))
    return pairs


def outlined_pictures(n: int = 12, seed: int = 0, width: int = 3) -> list[tuple[Image.Image, str]]:
    """``n`` pictures of random scenes with the shape drawn as an outline ``width`` pixels wide (its inside has
    the background's colour), each with the scene's plain caption: a look that no word asks for."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        scene = shapes.random_scene(rng)
        picture = Image.new("RGB", (64, 64), shapes.PALETTE[scene.background])
        box = shapes.shape_box(scene, 64)
        draw, colour = ImageDraw.Draw(picture), shapes.PALETTE[scene.colour]
        if scene.shape == "circle":
            draw.ellipse(box, outline=colour, width=width)
        elif scene.shape == "square":
            draw.rectangle(box, outline=colour, width=width)
        else:
            left, top, right, bottom = box
            draw.polygon([((left + right) / 2, top), (right, bottom), (left, bottom)], outline=colour, width=width)
        pairs.append((picture, scene.caption()))
    return pairs


def shape_mask(scene: shapes.Scene, resolution: int = 64) -> np.ndarray:
    """Where the scene's shape is in its flat render: a boolean array of (resolution, resolution)."""
    return np.any(np.array(shapes.render(scene, resolution)) != shapes.PALETTE[scene.background], axis=-1)


def inside_mask(scene: shapes.Scene, resolution: int = 64, margin: int = 4) -> np.ndarray:
    """The shape's pixels at least ``margin`` pixels from its edge (what an outline leaves empty)."""
    mask = shape_mask(scene, resolution)
    inside = mask.copy()
    for dy in range(-margin, margin + 1):
        for dx in range(-margin, margin + 1):
            inside &= np.roll(np.roll(mask, dy, axis=0), dx, axis=1)
    return inside


def shape_colour(picture: Image.Image, scene: shapes.Scene) -> np.ndarray:
    """The mean RGB of a picture over where ``scene`` puts its shape, away from the edge."""
    return np.asarray(picture.convert("RGB"), dtype=np.float64)[inside_mask(scene, picture.width, 2)].mean(axis=0)


def hollowness(picture: Image.Image, scene: shapes.Scene) -> float:
    """The share of the shape's inside (:func:`inside_mask`) whose colour is nearer the background's than the
    shape's: about 0 for a filled shape, about 1 for an outline."""
    pixels = np.asarray(picture.convert("RGB"), dtype=np.float64)[inside_mask(scene, picture.width)]
    to_shape = np.linalg.norm(pixels - shapes.PALETTE[scene.colour], axis=1)
    to_background = np.linalg.norm(pixels - shapes.PALETTE[scene.background], axis=1)
    return float(np.mean(to_background < to_shape))


# ---------------------------------------------------------------- one training step, shared
def picture_latents(pipe, pictures) -> torch.Tensor:
    """The VAE's latents of PIL pictures (posterior means), times the scaling factor: what the UNet sees."""
    with torch.no_grad():
        return pil_to_latents(pipe.vae, [p.convert("RGB") for p in pictures])


def denoising_loss(pipe, latents, ids, generator) -> torch.Tensor:
    """The loss that trained the model: noise the latents at random timesteps and score the UNet's guess of
    the noise, given the captions' token ``ids``."""
    noise = torch.randn(latents.shape, generator=generator).to(latents)
    t = torch.randint(0, pipe.scheduler.config.num_train_timesteps, (len(latents),), generator=generator)
    noisy = pipe.scheduler.add_noise(latents, noise, t.to(latents.device))
    text = pipe.text_encoder(ids)[0]
    return torch.nn.functional.mse_loss(pipe.unet(noisy, t.to(latents.device), text).sample, noise)


def _train(pipe, pairs, params, lr, steps, batch, seed, desc, after_backward=None, trained_numbers=None,
           progress=True) -> Training:
    """The loop both trainings share: random batches of the pairs, AdamW on ``params``, a live loss."""
    from tqdm.auto import tqdm

    latents = picture_latents(pipe, [p for p, _ in pairs])
    ids = pipe.tokenizer([c for _, c in pairs], padding="max_length", truncation=True,
                         max_length=pipe.tokenizer.model_max_length, return_tensors="pt").input_ids.to(pipe.device)
    generator = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    record, t0 = Training(trained_numbers=trained_numbers or sum(p.numel() for p in params)), time.time()
    bar = tqdm(range(steps), desc=desc, disable=not progress, mininterval=1.0)
    for _ in bar:
        pick = torch.randint(0, len(pairs), (batch,), generator=generator)
        loss = denoising_loss(pipe, latents[pick], ids[pick.to(ids.device)], generator)
        loss.backward()
        if after_backward is not None:
            after_backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        record.losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(record.losses[-20:]):.4f}", refresh=False)
    record.seconds = time.time() - t0
    return record


def frozen(pipe):
    """Every weight of the pipeline's text encoder, UNet and VAE stops taking gradients."""
    for part in (pipe.text_encoder, pipe.unet, pipe.vae):
        part.requires_grad_(False)


# ---------------------------------------------------------------- a new word: textual inversion
def add_word(pipe, word: str, like: str) -> int:
    """Add ``word`` to the tokenizer as one new token whose embedding starts as ``like``'s; return its id."""
    if pipe.tokenizer.add_tokens(word) != 1:
        raise ValueError(f"{word!r} is already in the tokenizer: choose a word it does not have, such as <{word}>")
    like_ids = pipe.tokenizer(like, add_special_tokens=False).input_ids
    if len(like_ids) != 1:
        raise ValueError(f"{like!r} is {len(like_ids)} tokens; start the new word from a one-token word")
    pipe.text_encoder.resize_token_embeddings(len(pipe.tokenizer), mean_resizing=False)  # (the row is set below)
    table = pipe.text_encoder.get_input_embeddings().weight
    token_id = pipe.tokenizer.convert_tokens_to_ids(word)
    with torch.no_grad():
        table[token_id] = table[like_ids[0]]
    return token_id


def keep_only_row(table: torch.Tensor, row: int) -> None:
    """Zero the gradient of every row of the embedding ``table`` but ``row``: the one row that learns."""
    keep = torch.zeros(len(table), 1, dtype=table.grad.dtype, device=table.grad.device)
    keep[row] = 1
    table.grad *= keep


def train_word(pipe, word: str, pairs, like: str = "green", steps: int = 300, lr: float = 0.02, batch: int = 8,
               seed: int = 0, progress: bool = True) -> Training:
    """Textual inversion: add ``word`` (starting as ``like``) and train its embedding alone on ``pairs`` of
    (picture, caption using ``word``)."""
    frozen(pipe)
    row = add_word(pipe, word, like)
    table = pipe.text_encoder.get_input_embeddings().weight
    table.requires_grad_(True)
    pipe.text_encoder.train()  # (CLIP's text encoder has no dropout: train mode changes nothing else)
    try:
        return _train(pipe, pairs, [table], lr, steps, batch, seed, f"learning {word}",
                      after_backward=lambda: keep_only_row(table, row), trained_numbers=table.shape[1],
                      progress=progress)
    finally:
        table.requires_grad_(False)
        pipe.text_encoder.eval()


def save_word(pipe, word: str, path) -> Path:
    """Save ``word``'s embedding as diffusers saves a textual inversion: a safetensors file of
    ``{word: embedding}``, which ``pipe.load_textual_inversion(path)`` reads."""
    from safetensors.torch import save_file

    row = pipe.tokenizer.convert_tokens_to_ids(word)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({word: pipe.text_encoder.get_input_embeddings().weight[row].detach().cpu().clone()}, path)
    return path


# ---------------------------------------------------------------- a new look: LoRA
def add_lora(pipe, rank: int = 4, seed: int = 0) -> int:
    """Put a LoRA adapter of rank ``rank`` on the UNet's attention projections (peft, through diffusers'
    ``add_adapter``); ``B`` starts at zero, so the model is unchanged until it trains. Returns the number of
    numbers the adapter adds."""
    from peft import LoraConfig

    frozen(pipe)
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # A's random start
        pipe.unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                         target_modules=list(LORA_TARGETS)))
    return sum(p.numel() for p in lora_parameters(pipe.unet))


def lora_parameters(unet) -> list[torch.nn.Parameter]:
    return [p for name, p in unet.named_parameters() if "lora_" in name]


def train_lora(pipe, pairs, rank: int = 4, steps: int = 300, lr: float = 3e-3, batch: int = 8, seed: int = 0,
               progress: bool = True) -> Training:
    """LoRA: add an adapter (:func:`add_lora`) and train it alone on ``pairs`` of (picture, caption)."""
    add_lora(pipe, rank, seed)
    params = lora_parameters(pipe.unet)
    for p in params:
        p.requires_grad_(True)
    pipe.unet.train()
    try:
        return _train(pipe, pairs, params, lr, steps, batch, seed, f"training a rank-{rank} LoRA",
                      progress=progress)
    finally:
        pipe.unet.eval()


def save_lora(pipe, folder) -> Path:
    """Save the UNet's LoRA adapter as diffusers does; ``pipe.load_lora_weights(folder)`` reads it."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet))
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=layers)
    return Path(folder)
