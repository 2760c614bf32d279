"""The sampling loop of Stable Diffusion, built by hand from public diffusers/transformers calls.

``StableDiffusionPipeline.__call__`` does four things: it turns the prompt into text
embeddings, draws starting noise, runs the denoising loop (UNet + scheduler, with
classifier-free guidance), and decodes the final latents with the VAE. This module
does the same steps in the open, one function each, so a learner can read them and
other chapters can reuse them:

* :func:`encode_prompt`  prompt text -> ``[unconditional, conditional]`` embeddings
* :func:`prepare_timesteps` the timesteps of one run (the one place that calls ``set_timesteps``)
* :func:`initial_latents` seed -> starting noise, scaled for the scheduler
* :func:`denoise`        the loop itself (any scheduler with ``scale_model_input``/``step``)
* :func:`predict_x0`     the scheduler's guess of the clean latents at one step
* :func:`generate`       all of the above, plus decoding, in one call

With the same scheduler, seed, steps and guidance, :func:`generate` gives the same
latents as the pipeline (tested in ``tests/test_loop.py``). Only public calls are
used: the tokenizer, ``text_encoder(...)``, ``unet(...)``, ``scheduler.set_timesteps``,
``scheduler.scale_model_input``, ``scheduler.step`` and ``vae.decode`` (through
:func:`sdcourse.latents_to_pil`).

Example (paste into a notebook)::

    import sdcourse
    from sdcourse.loop import generate
    pipe = sdcourse.load_pipeline("mini")
    out = generate(pipe, "a red circle on a blue background", seed=0, steps=20)
    out.images[0]
"""
from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch
from tqdm.auto import tqdm

from .images import check_vae, latents_to_pil, vae_factor
from .seeds import make_generator
from .validate import (check_denoise_inputs, check_guidance, check_prompts, check_seed, check_size, check_steps,
                       check_text_inputs)

__all__ = [
    "Generated",
    "check_guidance",
    "check_steps",
    "denoise",
    "encode_prompt",
    "generate",
    "initial_latents",
    "predict_x0",
    "prepare_timesteps",
]

StepCallback = Callable[[int, torch.Tensor, torch.Tensor], "torch.Tensor | None"]


def _uses_guidance(guidance_scale: float) -> bool:
    # The pipeline's own rule (its `do_classifier_free_guidance`): guidance only above 1.
    # At exactly 1 the guided formula gives the conditional prediction anyway, so the
    # unconditional UNet pass is skipped.
    return guidance_scale > 1.0


# --------------------------------------------------------------------------- step 1: text
@torch.no_grad()
def encode_prompt(tokenizer, text_encoder, prompts, negative=None) -> torch.Tensor:
    """Turn prompts into the text embeddings the UNet attends to, ready for guidance.

    Each prompt is tokenized, padded (or truncated, with a warning) to
    ``tokenizer.model_max_length`` ids (77 for CLIP) and run through the text encoder.
    The same is done for the negative prompts (``""`` when ``negative`` is None: the
    "unconditional" text). Returns ``torch.cat([uncond, cond])``, shape
    ``(2 * B, model_max_length, hidden_size)``: the first half unconditional, the
    second half conditional, as the pipeline orders them.

    >>> emb = encode_prompt(pipe.tokenizer, pipe.text_encoder, ["a red circle"])  # doctest: +SKIP
    >>> emb.shape  # (2, 77, hidden_size)  # doctest: +SKIP
    """
    prompts, negative = check_text_inputs(tokenizer, text_encoder, prompts, negative)  # one negative per prompt
    cond = _embed(tokenizer, text_encoder, prompts)  # what the picture should show
    uncond = _embed(tokenizer, text_encoder, negative)  # what guidance pushes away from ("" by default)
    return torch.cat([uncond, cond])  # the pipeline's order: unconditional half first


def _short(texts: list[str], limit: int = 200) -> str:
    joined = " | ".join(texts)
    return joined if len(joined) <= limit else f"{joined[:limit]}... ({len(joined) - limit} more characters)"


def _embed(tokenizer, text_encoder, texts: list[str]) -> torch.Tensor:
    max_length = tokenizer.model_max_length
    ids = tokenizer(texts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt").input_ids
    full = tokenizer(texts, padding="longest", return_tensors="pt").input_ids
    if full.shape[-1] > max_length:
        # Like the pipeline, say what was cut off (everything between the 76th id and </end>).
        dropped = tokenizer.batch_decode(full[:, max_length - 1 : -1], skip_special_tokens=True)
        warnings.warn(
            f"CLIP reads at most {max_length} tokens; this part of the prompt was cut off: {_short(dropped)}",
            stacklevel=3,
        )
    return text_encoder(ids.to(text_encoder.device))[0]


# --------------------------------------------------------------------------- step 2: timesteps and noise
def prepare_timesteps(scheduler, num_inference_steps: int, start_step: int = 0, device=None) -> torch.Tensor:
    """Start a run: set the scheduler's timesteps for ``num_inference_steps`` steps; return those the loop visits.

    This is the pipeline's "prepare timesteps" step, and the one place in the course's loops that
    calls ``scheduler.set_timesteps``. It also clears the scheduler's memory of an earlier run
    (K-LMS and PNDM combine the last few noise predictions), so call it once before every run,
    before :func:`initial_latents` (K-LMS's ``init_noise_sigma`` depends on it) and :func:`denoise`.
    ``start_step`` skips the first steps, as img2img does: the scheduler's step counter starts there.

    >>> from diffusers import LMSDiscreteScheduler
    >>> klms = LMSDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    >>> len(prepare_timesteps(klms, 20)), len(prepare_timesteps(klms, 20, start_step=8))
    (20, 12)
    """
    scheduler.set_timesteps(check_steps(num_inference_steps), device=device)  # noisiest first; forgets the last run
    begin = start_step * getattr(scheduler, "order", 1)  # second-order schedulers list each timestep twice
    if begin and hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(begin)  # the scheduler's step counter starts here, not at 0
    return scheduler.timesteps[begin:]


def initial_latents(unet, scheduler, batch_size: int, height: int, width: int, seed=None, *,
                    generator: torch.Generator | None = None, vae_scale_factor: int = 8,
                    device=None, dtype=None) -> torch.Tensor:
    """Starting noise for the loop, shape ``(B, unet.config.in_channels, height/8, width/8)``.

    The noise is drawn on the generator's device (the CPU for a seed), so a seed gives
    the same noise on every machine, then moved to ``device`` and multiplied by
    ``scheduler.init_noise_sigma`` (1 for DDPM-style schedulers, about 14.6 for K-LMS
    with SD's schedule). Call :func:`prepare_timesteps` first: K-LMS's
    ``init_noise_sigma`` depends on it.

    >>> lat = initial_latents(pipe.unet, pipe.scheduler, 1, 64, 64, seed=0,  # doctest: +SKIP
    ...                       vae_scale_factor=pipe.vae_scale_factor)
    """
    check_size(height, width)
    if generator is None:
        if seed is None:
            raise ValueError("initial_latents needs a seed (a whole number) or a torch.Generator.")
        generator = torch.Generator("cpu").manual_seed(check_seed(seed))
    device = unet.device if device is None else torch.device(device)
    dtype = unet.dtype if dtype is None else dtype
    shape = (batch_size, unet.config.in_channels, height // vae_scale_factor, width // vae_scale_factor)
    noise = torch.randn(shape, generator=generator, device=generator.device, dtype=dtype).to(device)
    return noise * scheduler.init_noise_sigma


# --------------------------------------------------------------------------- step 3: the loop
def predict_x0(scheduler, sample: torch.Tensor, noise_pred: torch.Tensor, timestep, step_output=None) -> torch.Tensor:
    """The clean latents the model "sees" at one step: the noisy sample minus its predicted noise.

    Uses the scheduler's own ``pred_original_sample`` when its step returns one (K-LMS,
    Euler, DDIM do). Otherwise works it out for an epsilon-predicting model from
    DDPM-style samples ``x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps``, with ``a_t`` from
    ``scheduler.alphas_cumprod``: ``x0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t)``.
    Shapes in and out: ``(B, 4, h, w)``.
    """
    x0 = getattr(step_output, "pred_original_sample", None)
    if x0 is not None:
        return x0
    if scheduler.config.prediction_type != "epsilon" or float(scheduler.init_noise_sigma) != 1.0:
        raise ValueError(
            f"predict_x0 cannot work out x0 for {type(scheduler).__name__} "
            f"(prediction_type {scheduler.config.prediction_type!r}): its step returns no pred_original_sample."
        )
    a_t = scheduler.alphas_cumprod[int(timestep)].to(sample.device, sample.dtype)
    return (sample - (1 - a_t).sqrt() * noise_pred) / a_t.sqrt()


@torch.no_grad()
def denoise(unet, scheduler, text_embeddings: torch.Tensor, latents: torch.Tensor, guidance_scale: float = 7.5,
            num_inference_steps: int | None = None, callback: StepCallback | None = None, progress: bool = True, *,
            start_step: int = 0, generator: torch.Generator | None = None, return_x0: bool = False):
    """Run the denoising loop: noisy latents in, clean latents out (same shape, ``(B, 4, h, w)``).

    ``text_embeddings`` is :func:`encode_prompt`'s ``[uncond, cond]`` tensor of
    ``2 * B`` rows. At every timestep: duplicate the latents for the two halves,
    ``scheduler.scale_model_input``, one UNet call predicts the noise for both, guidance
    mixes them (``uncond + guidance_scale * (cond - uncond)``), and ``scheduler.step``
    moves the latents one step towards clean. With ``guidance_scale <= 1`` only the
    conditional half is used, as in the pipeline.

    The caller chooses the timesteps first, as the pipeline does before its loop:
    :func:`prepare_timesteps` (or ``scheduler.set_timesteps(num_inference_steps)``), once per run;
    ``num_inference_steps`` (default: what the scheduler was set for) must match. ``start_step``
    skips the first inference steps (img2img starts part-way: the caller noises its latents to
    ``scheduler.timesteps[start_step * scheduler.order]``). ``callback(step_index, t, latents)``
    runs after every step; if it returns a tensor, the loop continues from that
    (inpainting pastes the known region back this way). ``return_x0=True`` also returns
    the list of predicted clean latents, one per step (on the CPU).

    >>> emb = encode_prompt(pipe.tokenizer, pipe.text_encoder, "a red circle")  # doctest: +SKIP
    >>> prepare_timesteps(pipe.scheduler, 20)  # doctest: +SKIP
    >>> lat = initial_latents(pipe.unet, pipe.scheduler, 1, 64, 64, seed=0,  # doctest: +SKIP
    ...                       vae_scale_factor=pipe.vae_scale_factor)
    >>> lat = denoise(pipe.unet, pipe.scheduler, emb, lat, 7.5, 20)  # doctest: +SKIP
    """
    guidance_scale, num_inference_steps = check_denoise_inputs(
        unet, scheduler, text_embeddings, latents, guidance_scale, num_inference_steps, callback, start_step)
    guided = _uses_guidance(guidance_scale)  # the pipeline's rule: guidance only above 1
    embeddings = text_embeddings if guided else text_embeddings[latents.shape[0]:]  # without guidance: cond only
    embeddings = embeddings.to(device=unet.device, dtype=unet.dtype)
    begin = start_step * getattr(scheduler, "order", 1)  # second-order schedulers list each timestep twice
    timesteps = scheduler.timesteps[begin:]  # as prepare_timesteps set them for this run
    step_kwargs = {}  # only noise-adding schedulers (Euler ancestral, ...) take the generator
    if generator is not None and "generator" in inspect.signature(scheduler.step).parameters:
        step_kwargs["generator"] = generator

    x0s = []  # the predicted clean latents, one per step, when return_x0 is asked for
    for i, t in enumerate(tqdm(timesteps, disable=not progress, desc="denoise")):  # t: noisiest first
        model_input = torch.cat([latents] * 2) if guided else latents  # one copy per half: [uncond, cond]
        model_input = scheduler.scale_model_input(model_input, t)  # K-LMS/Euler divide by sqrt(sigma^2 + 1)
        noise_pred = unet(model_input, t, encoder_hidden_states=embeddings, return_dict=False)[0]  # the noise guess
        if guided:  # classifier-free guidance: push away from the unconditional guess
            noise_uncond, noise_cond = noise_pred.chunk(2)  # the two halves of the batch
            noise_pred = noise_uncond + guidance_scale * (noise_cond - noise_uncond)  # extrapolate towards the prompt
        output = scheduler.step(noise_pred, t, latents, **step_kwargs, return_dict=True)  # one step towards clean
        if return_x0:  # what the model thinks the clean latents are at this step
            x0s.append(predict_x0(scheduler, latents, noise_pred, t, output).detach().cpu())
        latents = output.prev_sample  # the slightly less noisy latents for the next step
        if callback is not None:  # e.g. inpainting pastes the known region back here
            latents = _callback_result(callback(begin + i, t, latents), latents, begin + i)
    if not bool(torch.isfinite(latents).all()):
        raise ValueError(f"the loop produced NaN or infinite latents (guidance_scale {guidance_scale:g}, "
                         f"{num_inference_steps} steps); the picture would be black. Try a guidance_scale near 7.5.")
    return (latents, x0s) if return_x0 else latents


def _callback_result(replaced, latents: torch.Tensor, step: int) -> torch.Tensor:
    """The latents to continue from: the callback's tensor if it returned one of the right shape, else ``latents``."""
    if replaced is None:
        return latents
    if not torch.is_tensor(replaced) or replaced.shape != latents.shape:
        brief = f"of shape {tuple(replaced.shape)}" if torch.is_tensor(replaced) else repr(replaced)[:60]
        raise TypeError(f"callback must return None or a tensor of shape {tuple(latents.shape)}; "
                        f"at step {step} it returned {type(replaced).__name__} {brief}.")
    return replaced


# --------------------------------------------------------------------------- all together
@dataclass
class Generated:
    """What :func:`generate` returns: final latents, decoded pictures, and (optionally) the x0 per step."""

    latents: torch.Tensor
    images: list = field(default_factory=list)
    x0: list = field(default_factory=list)


def check_scheduler(scheduler):
    """Return ``scheduler`` if it is a diffusers scheduler object, else raise (a name is not enough)."""
    if not all(callable(getattr(scheduler, n, None)) for n in ("set_timesteps", "step", "scale_model_input")):
        hint = (" (make one with sdcourse.make_scheduler(name, pipe.scheduler.config))"
                if isinstance(scheduler, str) else "")
        raise TypeError(f"scheduler must be a diffusers scheduler object; got {scheduler!r} of type "
                        f"{type(scheduler).__name__}{hint}.")
    return scheduler


def _parts(pipe_or_components):
    names = ("tokenizer", "text_encoder", "unet", "vae", "scheduler")
    if isinstance(pipe_or_components, dict):
        missing = [n for n in names if n not in pipe_or_components]
        get = pipe_or_components.get
    else:
        missing = [n for n in names if getattr(pipe_or_components, n, None) is None]
        get = lambda n: getattr(pipe_or_components, n)  # noqa: E731
    if missing:
        raise TypeError(
            f"generate needs a pipeline or a dict with {', '.join(names)}; missing: {', '.join(missing)}."
        )
    return [get(n) for n in names]


def generate(pipe_or_components, prompt, seed: int = 0, steps: int = 20, guidance: float = 7.5,
             height: int | None = None, width: int | None = None, scheduler=None, *, negative=None,
             decode: bool = True, return_x0: bool = False, progress: bool = True) -> Generated:
    """Text to picture with the hand-built loop: encode, noise, denoise, decode.

    ``pipe_or_components`` is a ``StableDiffusionPipeline`` or a dict with ``tokenizer``,
    ``text_encoder``, ``unet``, ``vae`` and ``scheduler``. ``height``/``width`` default
    to the UNet's ``sample_size`` times the VAE factor (512 for SD v1.x, 64 for the mini
    model). ``scheduler`` replaces the pipeline's one (the course uses
    ``LMSDiscreteScheduler.from_config(pipe.scheduler.config)``). The result's
    ``latents`` equal ``pipe(..., output_type="latent").images`` for the same seed,
    scheduler, steps and guidance.

    >>> out = generate(pipe, "a red circle on a blue background", seed=0, steps=20, guidance=7.5)  # doctest: +SKIP
    >>> out.latents.shape, out.images[0].size  # doctest: +SKIP
    """
    tokenizer, text_encoder, unet, vae, own_scheduler = _parts(pipe_or_components)
    scheduler = own_scheduler if scheduler is None else check_scheduler(scheduler)
    check_vae(vae)
    factor = vae_factor(vae)  # 8 for SD: each latent pixel covers 8 x 8 picture pixels
    height = unet.config.sample_size * factor if height is None else height
    width = unet.config.sample_size * factor if width is None else width
    check_size(height, width)
    seed = check_seed(seed)
    steps = check_steps(steps)
    guidance = check_guidance(guidance)
    prompts = check_prompts(prompt)

    embeddings = encode_prompt(tokenizer, text_encoder, prompts, negative)
    prepare_timesteps(scheduler, steps, device=unet.device)
    generator = make_generator(seed)  # on the CPU: the same noise on every machine
    latents = initial_latents(unet, scheduler, len(prompts), height, width, generator=generator,
                              vae_scale_factor=factor, dtype=embeddings.dtype)
    result = denoise(unet, scheduler, embeddings, latents, guidance, steps, progress=progress,
                     generator=generator, return_x0=return_x0)
    latents, x0 = result if return_x0 else (result, [])
    images = latents_to_pil(vae, latents) if decode else []
    return Generated(latents=latents, images=images, x0=x0)
