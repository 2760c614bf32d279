"""Cross-attention: record where each word of the prompt lands, and edit it.

In every transformer block of Stable Diffusion's UNet, the second attention layer
(``attn2``) is *cross*-attention: each latent pixel sends a query, each of the 77 text
vectors a key and a value, and the pixel receives ``softmax(Q K^T / sqrt(d)) V``, a mix of
the text vectors weighted by how well its query matches their keys. Those weights, one
per (pixel, token), are the attention maps this module records.

It works through diffusers' public attention-processor API: :func:`cross_attention` puts
a :class:`RecordingProcessor` on every ``attn2`` layer with ``unet.set_attn_processor``
and puts the original processors back when the ``with`` block ends, even on an error.
The self-attention layers (``attn1``) keep their own processor.

Memory: the maps are averaged on the fly. Each layer's maps, averaged over its heads,
are resized to the latent grid and summed into one float32 tensor of shape
``(B, 77, h, w)`` on the UNet's device; at the end of every step the step's mean over the
layers is added to the total and (``keep_steps=True``) copied to the CPU in float16. For
SD v1.x at 512 x 512 (a 64 x 64 latent grid) that is 1.3 MB per prompt on the GPU and
0.6 MB per prompt and step on the CPU, at every resolution (64, 32, 16 and 8), so
recording fits a T4 with room to spare. Only the cross-attention probabilities are
computed explicitly (at most ``2B x 8 heads x 4096 x 77`` values, 10 MB in float16);
the large self-attention layers keep their memory-efficient processor.

>>> result = generate_with_maps(pipe, "a small red circle in the top left on a blue background", seed=0)
>>> result.maps.shape            # (prompts, 77, latent height, latent width)
>>> word_maps(result, 0)         # [("small", map), ("red", map), ...]
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .images import latents_to_pil
from .loop import _uses_guidance, denoise, encode_prompt, initial_latents, prepare_timesteps
from .seeds import make_generator
from .shapes import PALETTE, Scene
from .validate import (check_bool_mask, check_guidance, check_index, check_instance, check_int, check_list_of,
                       check_number, check_picture, check_pipeline, check_prompts, check_seed, check_side, check_steps,
                       check_tensor, check_text, check_unet, check_weights, MAX_STEPS)

# How the heat maps are drawn over the picture (see overlay).
HEAT_ALPHA = 0.65  # share of the heat colour in the blend (the rest: the picture in grey)


# --------------------------------------------------------------------------- where the layers sit
def cross_attention_layers(unet, height: int | None = None, width: int | None = None) -> list[dict]:
    """One row per cross-attention layer of ``unet``: name, latent grid, heads and sizes.

    ``height``/``width`` are the latent grid (default ``unet.config.sample_size``). A layer in
    down block ``i`` works at the grid shrunk ``2**i`` times, the middle block at the smallest
    grid, and up block ``j`` at the grid of down block ``n - 1 - j``.

    >>> cross_attention_layers(pipe.unet)[0]["name"]
    'down_blocks.0.attentions.0.transformer_blocks.0.attn2'
    """
    check_unet(unet)
    height = check_int(unet.config.sample_size if height is None else height, "height", 1, 256, example=64)
    width = check_int(unet.config.sample_size if width is None else width, "width", 1, 256, example=64)
    levels = len(unet.config.block_out_channels)
    rows = []
    for name, module in unet.named_modules():
        if not name.endswith("attn2"):
            continue
        part, index = name.split(".")[0], int(name.split(".")[1]) if name[0] in "du" else 0
        shrink = {"down_blocks": 2 ** index, "mid_block": 2 ** (levels - 1),
                  "up_blocks": 2 ** (levels - 1 - index)}[part]
        rows.append({
            "name": name,
            "grid": (height // shrink, width // shrink),
            "heads": module.heads,
            "head_dim": module.inner_dim // module.heads,
            "query_dim": module.to_q.in_features,  # channels of the latent pixels
            "text_dim": module.to_k.in_features,  # size of each text vector
        })
    return rows


# --------------------------------------------------------------------------- the formula
def attention_by_formula(attn, hidden_states: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-attention written out: ``softmax(Q K^T / sqrt(d)) V``, then the output projection.

    ``attn`` is a diffusers ``Attention`` layer (an ``attn2``); ``hidden_states`` the latent
    pixels ``(B, N, C)``; ``text`` the text vectors ``(B, 77, D)``. Returns ``(output, probs)``:
    output ``(B, N, C)``, as the layer returns it, and the attention probabilities
    ``(B, heads, N, 77)``.
    """
    if not all(hasattr(attn, part) for part in ("to_q", "to_k", "to_v", "to_out", "heads")):
        raise TypeError(f"attn must be a diffusers Attention layer (an attn2 of the UNet, found with "
                        f"cross_attention_layers); got {type(attn).__name__}.")
    hidden_states = check_tensor(hidden_states, "hidden_states", ndim=3)
    text = check_tensor(text, "text", ndim=3)
    c, dim = attn.to_q.in_features, attn.to_k.in_features
    if hidden_states.shape[-1] != c:
        raise ValueError(f"hidden_states must be (batch, pixels, {c}) for this layer; "
                         f"got shape {tuple(hidden_states.shape)}.")
    if text.shape[-1] != dim:
        raise ValueError(f"text must be (batch, 77, {dim}) text vectors for this layer; got shape {tuple(text.shape)}. "
                         f"An attn1 (self-attention) layer takes no text.")
    if text.shape[0] != hidden_states.shape[0]:
        raise ValueError(f"hidden_states and text need the same batch size; got {hidden_states.shape[0]} and "
                         f"{text.shape[0]}.")
    b, n, _ = hidden_states.shape
    heads = attn.heads
    q = attn.to_q(hidden_states)  # queries from the latent pixels
    k = attn.to_k(text)  # keys and values from the text vectors
    v = attn.to_v(text)
    d = q.shape[-1] // heads  # each head works on d of the channels
    q, k, v = (x.reshape(b, -1, heads, d).transpose(1, 2) for x in (q, k, v))  # (B, heads, tokens, d)
    probs = (q @ k.transpose(-1, -2) / math.sqrt(d)).softmax(dim=-1)  # (B, heads, N, 77), rows sum to 1
    out = (probs @ v).transpose(1, 2).reshape(b, n, heads * d)  # every pixel gets a mix of the values
    return attn.to_out[0](out), probs  # output projection (to_out[1] is dropout, off in eval)


# --------------------------------------------------------------------------- recording and editing
class AttentionStore:
    """Collects the cross-attention maps of one run, averaged on the fly.

    ``latent_hw``: the latent grid ``(h, w)``. ``batch``: prompts in the run. ``guided``: the
    UNet sees ``[uncond, cond]`` rows (classifier-free guidance); only the ``cond`` rows are
    recorded and edited. ``weights``: ``{token index: factor}``, multiplies those tokens'
    attention in the conditional rows (prompt-to-prompt re-weighting). ``share_maps``: every
    prompt's conditional rows use the first prompt's attention (a word swap that keeps the
    layout) for the first ``share_steps`` steps.
    """

    def __init__(self, latent_hw: tuple[int, int], batch: int, guided: bool, *, weights: dict | None = None,
                 share_maps: bool = False, share_steps: int | None = None, keep_steps: bool = True):
        if not isinstance(latent_hw, (tuple, list)) or len(latent_hw) != 2:
            raise TypeError(f"latent_hw must be the latent grid (height, width), e.g. (8, 8) for a 64 px picture; "
                            f"got {latent_hw!r}.")
        latent_hw = tuple(check_int(v, "latent_hw", 1, 1024, example=8) for v in latent_hw)
        batch = check_int(batch, "batch", 1, 4096, example=1, meaning=" (the number of prompts in the run)")
        for flag, value in (("guided", guided), ("share_maps", share_maps), ("keep_steps", keep_steps)):
            check_instance(value, flag, bool, "True or False")
        if share_steps is not None:
            share_steps = check_int(share_steps, "share_steps", 0, MAX_STEPS, example=5)
        weights = check_weights(weights, 77)
        self.latent_hw, self.batch, self.guided = latent_hw, batch, guided
        self.weights = dict(weights)
        self.share_maps, self.share_steps, self.keep_steps = share_maps, share_steps, keep_steps
        self.step = 0
        self._step_sum, self._layers = None, 0
        self.total, self.step_maps, self.recorded_steps = None, [], 0

    def edit_and_record(self, probs: torch.Tensor) -> torch.Tensor:
        """Called by every cross-attention layer with its probabilities ``(rows, heads, N, 77)``."""
        rows = probs.shape[0]
        if rows != self.batch * (2 if self.guided else 1):
            raise ValueError(f"AttentionStore(batch={self.batch}, guided={self.guided}) expects "
                             f"{self.batch * (2 if self.guided else 1)} rows per UNet call, "
                             f"but the UNet ran with {rows}: "
                             f"give the number of prompts, and guided=True when guidance is above 1.")
        cond = slice(self.batch, None) if self.guided else slice(None)
        sharing = self.share_maps and (self.share_steps is None or self.step < self.share_steps)
        if self.weights or sharing:
            probs = probs.clone()
            c = probs[cond]
            if sharing:  # every prompt takes the first prompt's maps (its values stay its own)
                c[:] = c[:1].clone()
            for token, factor in self.weights.items():
                c[..., token] *= factor  # after the softmax, as prompt-to-prompt does
            probs[cond] = c
        self._record(probs[cond])
        return probs

    def _record(self, probs: torch.Tensor) -> None:
        b, _, n, t = probs.shape
        h, w = self.latent_hw
        # this layer's grid is the latent grid shrunk `shrink` times
        shrink = math.isqrt(h * w // n) if n <= h * w else 0
        expected = getattr(self, "_layer_pixels", None)  # set by cross_attention(), which knows the UNet
        if not shrink or (h // shrink) * (w // shrink) != n or h % shrink or w % shrink or (
                expected is not None and n not in expected):
            raise ValueError(f"AttentionStore(latent_hw={self.latent_hw}) does not match this run: a cross-attention "
                             f"layer sees {n} latent pixels. Give the latent grid of the pictures being made: "
                             f"(height // 8, width // 8) for SD's VAE.")
        grid = probs.float().mean(dim=1).transpose(1, 2).reshape(b, t, h // shrink, w // shrink)  # mean over heads
        grid = F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False) if shrink > 1 else grid
        self._step_sum = grid if self._step_sum is None else self._step_sum + grid
        self._layers += 1

    def end_step(self, *_):
        """The loop's per-step callback: close the step (mean over its layers) and add it to the total."""
        if self._layers:
            mean = self._step_sum / self._layers
            self.total = mean if self.total is None else self.total + mean
            self.recorded_steps += 1
            if self.keep_steps:
                self.step_maps.append(mean.to("cpu", torch.float16))
        self._step_sum, self._layers = None, 0
        self.step += 1

    def maps(self) -> torch.Tensor:
        """Mean over heads, layers and steps: ``(B, 77, h, w)`` float32 on the CPU."""
        if self.total is None:
            raise RuntimeError("no cross-attention was recorded: run the UNet inside the `with` block first.")
        return (self.total / self.recorded_steps).cpu()


class RecordingProcessor:
    """A cross-attention processor that computes the probabilities explicitly and hands them to a store.

    It follows diffusers' ``AttnProcessor`` step by step (same projections, same
    ``attn.get_attention_scores``), with one addition: the probabilities pass through
    ``store.edit_and_record`` before they mix the values.
    """

    def __init__(self, store: AttentionStore):
        self.store = store

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        if encoder_hidden_states is None:
            raise ValueError("RecordingProcessor is for cross-attention (attn2) layers; it got no text vectors.")
        residual = hidden_states
        batch, n, _ = hidden_states.shape
        attention_mask = attn.prepare_attention_mask(attention_mask, encoder_hidden_states.shape[1], batch)
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))  # (B * heads, N, d)
        key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))  # (B * heads, 77, d)
        value = attn.head_to_batch_dim(attn.to_v(encoder_hidden_states))
        probs = attn.get_attention_scores(query, key, attention_mask)  # softmax(Q K^T / sqrt(d))
        probs = probs.reshape(batch, attn.heads, n, -1)
        probs = self.store.edit_and_record(probs).reshape(batch * attn.heads, n, -1)
        out = attn.batch_to_head_dim(torch.bmm(probs, value))  # weighted mix of the values
        out = attn.to_out[1](attn.to_out[0](out))  # output projection, dropout
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


@contextlib.contextmanager
def cross_attention(unet, store: AttentionStore):
    """Inside the ``with`` block every ``attn2`` layer of ``unet`` runs a :class:`RecordingProcessor`.

    The original processors come back afterwards, also when the block raises.

    >>> store = AttentionStore((8, 8), batch=1, guided=True)
    >>> with cross_attention(pipe.unet, store):
    ...     latents = denoise(pipe.unet, pipe.scheduler, emb, latents, callback=store.end_step)
    """
    check_instance(store, "store", AttentionStore, "an AttentionStore((height // 8, width // 8), batch, guided)")
    # the pixels each cross-attention layer sees when the latent grid is store.latent_hw
    store._layer_pixels = {r["grid"][0] * r["grid"][1] for r in cross_attention_layers(unet, *store.latent_hw)}
    original = unet.attn_processors  # {layer name + ".processor": processor}
    recording = RecordingProcessor(store)
    unet.set_attn_processor({name: recording if name.endswith("attn2.processor") else proc
                             for name, proc in original.items()})
    try:
        yield store
    finally:
        unet.set_attn_processor(original)


# --------------------------------------------------------------------------- one call: generate and record
@dataclass
class AttentionResult:
    """What :func:`generate_with_maps` returns."""

    images: list
    latents: torch.Tensor
    maps: torch.Tensor  # (B, 77, h, w): mean over heads, layers and steps
    step_maps: list = field(default_factory=list)  # one (B, 77, h, w) float16 tensor per step
    tokens: list = field(default_factory=list)  # per prompt: the token strings, start token first


def prompt_tokens(tokenizer, prompt: str) -> list[str]:
    """The prompt's tokens as the text encoder sees them, start and end tokens included.

    >>> prompt_tokens(pipe.tokenizer, "a red circle")
    ['<|startoftext|>', 'a', 'red', 'circle', '<|endoftext|>']
    """
    check_text(prompt, "prompt")
    if not callable(tokenizer) or not hasattr(tokenizer, "convert_ids_to_tokens"):
        raise TypeError(f"tokenizer must be a CLIP tokenizer such as pipe.tokenizer; got {type(tokenizer).__name__}.")
    ids = tokenizer(prompt, truncation=True, max_length=tokenizer.model_max_length).input_ids
    return [tokenizer.convert_ids_to_tokens(i).replace("</w>", "") for i in ids]


def token_index(tokenizer, prompt: str, word: str) -> int:
    """Position of ``word`` among the prompt's tokens (0 is the start token); a sentence if it is missing."""
    check_text(prompt, "prompt"), check_text(word, "word", "red")
    tokens = prompt_tokens(tokenizer, prompt)
    if word not in tokens[1:-1]:
        raise ValueError(f"word {word!r} is not one of the prompt's tokens {tokens[1:-1]}.")
    return tokens.index(word, 1)


@torch.no_grad()
def generate_with_maps(pipe, prompts, seed: int = 0, steps: int = 20, guidance: float = 7.5, *,
                       weights: dict | None = None, share_maps: bool = False, share_steps: int | None = None,
                       keep_steps: bool = True, progress: bool = True) -> AttentionResult:
    """Generate pictures from ``prompts`` (all from the same starting noise) and record their cross-attention.

    Sizes come from the pipeline's configs; the sampler is ``pipe.scheduler``. ``weights``
    (``{token index: factor}``) scales words' attention in every prompt; ``share_maps=True``
    makes every prompt use the first prompt's maps (for the first ``share_steps`` steps, all
    by default), so that a prompt with one word swapped keeps the first one's layout.
    ``result.maps`` is ``(B, 77, h, w)`` on the latent grid.

    >>> r = generate_with_maps(pipe, ["a red circle", "a blue circle"], share_maps=True)
    """
    check_pipeline(pipe)
    prompts, seed = check_prompts(prompts), check_seed(seed)
    steps, guidance = check_steps(steps), check_guidance(guidance)
    if share_steps is not None:
        share_steps = check_int(share_steps, "share_steps", 0, steps, example=steps // 2, meaning=" (the steps)")
    tokens = [prompt_tokens(pipe.tokenizer, p) for p in prompts]
    weights = check_weights(weights, min(len(t) for t in tokens))
    if share_maps and len({len(t) for t in tokens}) > 1:
        raise ValueError(f"share_maps needs prompts of the same number of tokens, got {[len(t) for t in tokens]}.")
    unet, scheduler = pipe.unet, pipe.scheduler
    factor = pipe.vae_scale_factor
    size = unet.config.sample_size * factor
    embeddings = encode_prompt(pipe.tokenizer, pipe.text_encoder, prompts)
    prepare_timesteps(scheduler, steps, device=unet.device)  # one run's timesteps, and a fresh scheduler memory
    generator = make_generator(seed)
    latents = initial_latents(unet, scheduler, 1, size, size, generator=generator, vae_scale_factor=factor,
                              dtype=embeddings.dtype).repeat(len(prompts), 1, 1, 1)  # same noise for every prompt
    store = AttentionStore(latents.shape[-2:], len(prompts), guided=_uses_guidance(guidance), weights=weights,
                           share_maps=share_maps, share_steps=share_steps, keep_steps=keep_steps)
    with cross_attention(unet, store):
        latents = denoise(unet, scheduler, embeddings, latents, guidance, steps, callback=store.end_step,
                          progress=progress, generator=generator)
    return AttentionResult(latents_to_pil(pipe.vae, latents), latents, store.maps(), store.step_maps, tokens)


# --------------------------------------------------------------------------- reading the maps
def word_maps(result: AttentionResult, index: int = 0) -> list[tuple[str, torch.Tensor]]:
    """``[(word, map (h, w))]`` for the words of prompt ``index`` (start and end tokens left out)."""
    check_instance(result, "result", AttentionResult, "what generate_with_maps returns")
    check_index(index, "index", len(result.tokens), "prompts")
    words = result.tokens[index][1:-1]
    return [(word, result.maps[index, i + 1]) for i, word in enumerate(words)]


def token_shares(result: AttentionResult, index: int = 0) -> dict[str, float]:
    """Share of all attention (summed over the grid) that each of the prompt's tokens gets, plus the padding."""
    check_instance(result, "result", AttentionResult, "what generate_with_maps returns")
    check_index(index, "index", len(result.tokens), "prompts")
    per_token = result.maps[index].sum(dim=(-2, -1))
    per_token = per_token / per_token.sum()
    n = len(result.tokens[index])
    shares = {f"{i}:{tok}": float(per_token[i]) for i, tok in enumerate(result.tokens[index])}
    shares["padding"] = float(per_token[n:].sum())
    return shares


def upsample(heat: torch.Tensor, size: int | tuple[int, int]) -> np.ndarray:
    """A map ``(h, w)`` resized (bilinear) to ``size`` pixels, as a float numpy array."""
    check_tensor(heat, "heat", ndim=2)
    size = check_side(size)
    return F.interpolate(heat[None, None].float(), size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def colour_mask(image: Image.Image, colour: str) -> np.ndarray:
    """Boolean mask of the pixels whose nearest palette colour (``shapes.PALETTE``) is ``colour``."""
    check_picture(image, multiple=1)
    if colour not in PALETTE:
        raise ValueError(f"colour must be one of {', '.join(PALETTE)}, got {colour!r}.")
    names = list(PALETTE)
    palette = np.array([PALETTE[c] for c in names], dtype=float)
    pixels = np.asarray(image.convert("RGB"), dtype=float)
    nearest = ((pixels[:, :, None, :] - palette) ** 2).sum(-1).argmin(-1)
    return nearest == names.index(colour)


def mass_inside(heat: torch.Tensor, mask: np.ndarray) -> float:
    """Fraction of the map's mass (resized to the mask's size) that lies inside the mask."""
    check_tensor(heat, "heat", ndim=2), check_bool_mask(mask)
    up = np.clip(upsample(heat, mask.shape), 0, None)
    return float(up[mask].sum() / max(up.sum(), 1e-12))


# --------------------------------------------------------------------------- pictures
def heat_colours(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] to RGB (0-255) on a dark-blue -> red -> yellow scale ("inferno"-like)."""
    stops = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=float)
    try:
        values = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"values must be an array of numbers in [0, 1]; got {type(values).__name__}.") from None
    if np.isnan(values).any():
        raise ValueError("values must be numbers in [0, 1]; they hold NaN (a map of NaN: check the run that made it).")
    x = np.clip(values, 0, 1) * (len(stops) - 1)
    low = np.floor(x).astype(int).clip(0, len(stops) - 2)
    frac = (x - low)[..., None]
    return stops[low] * (1 - frac) + stops[low + 1] * frac


def overlay(image: Image.Image, heat: torch.Tensor, alpha: float = HEAT_ALPHA) -> Image.Image:
    """The picture with a heat map blended over it, stretched from its own minimum (dark) to maximum (bright)."""
    check_picture(image, multiple=1), check_tensor(heat, "heat", ndim=2), check_number(alpha, "alpha", 0, 1)
    up = upsample(heat, (image.height, image.width))
    up = (up - up.min()) / max(up.max() - up.min(), 1e-12)
    base = np.asarray(image.convert("L").convert("RGB"), dtype=float)  # grey picture: the heat's colours stand out
    return Image.fromarray(np.uint8((1 - alpha) * base + alpha * heat_colours(up)))


def map_grid(image: Image.Image, words: list[tuple[str, torch.Tensor]], cell: int = 160, title: str | None = None,
             cols: int = 7, alpha: float = HEAT_ALPHA) -> Image.Image:
    """The picture, then one heat map per word over it, each labelled; ``cols`` cells per row.

    Each map is stretched from its own minimum to its maximum (bright = where this word gets most attention).
    """
    from PIL import ImageDraw, ImageFont

    check_picture(image, multiple=1), check_int(cell, "cell", 16, 1024, example=160), check_int(cols, "cols", 1, 64)
    check_number(alpha, "alpha", 0, 1), title is None or check_text(title, "title")
    cols = int(cols)
    font = ImageFont.load_default(size=max(12, cell // 9))
    label = cell // 6
    head = 0 if title is None else label
    cells = [image] + [overlay(image, heat, alpha) for _, heat in words]
    names = ["picture"] + [w for w, _ in words]
    cols = min(cols, len(cells))
    rows = -(-len(cells) // cols)
    grid = Image.new("RGB", (cols * cell, head + rows * (cell + label)), "white")
    draw = ImageDraw.Draw(grid)
    if title is not None:
        draw.text((4, label // 6), title, fill="black", font=font)
    for i, (picture, name) in enumerate(zip(cells, names)):
        x, y = (i % cols) * cell, head + (i // cols) * (cell + label)
        width = draw.textlength(name, font=font)
        draw.text((x + (cell - width) / 2, y + label // 6), name, fill="black", font=font)
        grid.paste(picture.resize((cell - 4, cell - 4), Image.NEAREST), (x + 2, y + label + 2))
    return grid


# --------------------------------------------------------------------------- does a word land on its thing?
def placement(pipe, scenes, seed: int = 0, steps: int = 20, guidance: float = 7.5, batch: int = 8,
              progress: bool = True) -> tuple[list[dict], list]:
    """For captioned scenes of the shapes world: how much of each word's map lies on its part of the picture.

    Each scene's full caption is generated (all from seed ``seed``'s noise, ``batch`` at a
    time) and its maps recorded. The drawn shape is the set of pixels nearest to the caption's
    shape colour (:func:`colour_mask`), the background the pixels nearest to its background
    colour. Per caption: ``area`` (share of the picture that is the shape), ``shape_mass`` and
    ``colour_mass`` (share of the shape word's and colour word's map inside it), their
    ``*_lift`` (mass / area: 1 for a map spread evenly, above 1 when it gathers on the shape),
    and the same for the background word over the background. Returns ``(rows, images)``.
    """
    from tqdm.auto import tqdm

    check_pipeline(pipe), check_int(batch, "batch", 1, 64, example=8)
    scenes = check_list_of(scenes, "scenes", Scene, "a sdcourse.shapes.Scene")
    rows, images = [], []
    for start in tqdm(range(0, len(scenes), batch), disable=not progress, desc="captions"):
        chunk = scenes[start:start + batch]
        result = generate_with_maps(pipe, [s.caption() for s in chunk], seed=seed, steps=steps,
                                    guidance=guidance, keep_steps=False, progress=False)
        for i, scene in enumerate(chunk):
            image, tokens, maps = result.images[i], result.tokens[i], result.maps[i]
            shape, background = colour_mask(image, scene.colour), colour_mask(image, scene.background)
            row = {"caption": scene.caption(), "area": float(shape.mean()), "background_area": float(background.mean())}
            for key, word, mask in [("shape", scene.shape, shape), ("colour", scene.colour, shape),
                                    ("background", "background", background)]:
                mass = mass_inside(maps[tokens.index(word, 1)], mask) if mask.any() else float("nan")
                row[f"{key}_mass"] = mass
                row[f"{key}_lift"] = mass / max(float(mask.mean()), 1e-12)
            rows.append(row)
            images.append(image)
    return rows, images
