"""The bundled model under the code that Stable Diffusion v1.x tutorials teach, written the way they write it.

Nothing here uses ``sdcourse``'s loaders or loop: the components come from the folder by ``subfolder`` with
default dtypes, the prompt is tokenised and encoded by hand, the K-LMS scheduler is built from the folder's
``scheduler`` config, the loop does classifier-free guidance itself, and the latents are decoded with
``1 / 0.18215``, the number every SD v1.x tutorial hard-codes.
"""
from pathlib import Path

import numpy as np
import pytest
import torch

MINI = Path(__file__).resolve().parents[1] / "sdcourse" / "mini_model"


@pytest.fixture(scope="module")
def parts():
    from diffusers import AutoencoderKL, LMSDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    return dict(
        tokenizer=CLIPTokenizer.from_pretrained(MINI, subfolder="tokenizer"),
        text_encoder=CLIPTextModel.from_pretrained(MINI, subfolder="text_encoder"),
        vae=AutoencoderKL.from_pretrained(MINI, subfolder="vae"),
        unet=UNet2DConditionModel.from_pretrained(MINI, subfolder="unet"),
        scheduler=LMSDiscreteScheduler.from_pretrained(MINI, subfolder="scheduler"),
    )


def tutorial_loop(tokenizer, text_encoder, vae, unet, scheduler, prompts, seed=0, steps=50, guidance_scale=7.5,
                  height=64, width=64):
    """The hand-written K-LMS loop of the classic SD v1.x notebooks, one batch of prompts, one generator."""
    batch_size = len(prompts)
    text_input = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                           return_tensors="pt")
    with torch.no_grad():
        text_embeddings = text_encoder(text_input.input_ids)[0]
    uncond_input = tokenizer([""] * batch_size, padding="max_length", max_length=text_input.input_ids.shape[-1],
                             return_tensors="pt")
    with torch.no_grad():
        uncond_embeddings = text_encoder(uncond_input.input_ids)[0]
    text_embeddings = torch.cat([uncond_embeddings, text_embeddings])

    generator = torch.manual_seed(seed)
    latents = torch.randn((batch_size, unet.config.in_channels, height // 8, width // 8), generator=generator)
    scheduler.set_timesteps(steps)
    latents = latents * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        latent_model_input = scheduler.scale_model_input(torch.cat([latents] * 2), t)
        with torch.no_grad():
            noise_pred = unet(latent_model_input, t, encoder_hidden_states=text_embeddings).sample
        noise_pred_uncond, noise_pred_text = noise_pred.chunk(2)
        noise_pred = noise_pred_uncond + guidance_scale * (noise_pred_text - noise_pred_uncond)
        latents = scheduler.step(noise_pred, t, latents).prev_sample

    latents = 1 / 0.18215 * latents
    with torch.no_grad():
        image = vae.decode(latents).sample
    image = (image / 2 + 0.5).clamp(0, 1)
    return (image.permute(0, 2, 3, 1).numpy() * 255).round().astype("uint8")


def test_the_tutorial_loop_draws_what_the_pipeline_draws(parts):
    """The same prompts, seed, sampler, steps and guidance through ``StableDiffusionPipeline``: the same pictures
    (so the loop above is the pipeline's, and whatever the pipeline draws, a tutorial's code draws too)."""
    from diffusers import LMSDiscreteScheduler, StableDiffusionPipeline

    prompts = ["a large red circle in the center on a blue background", "a green square"]
    ours = tutorial_loop(**parts, prompts=prompts, seed=5, steps=20)
    components = dict(parts, scheduler=LMSDiscreteScheduler.from_config(parts["scheduler"].config))
    pipe = StableDiffusionPipeline(**components, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)  # the same weights, loaded once
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(prompts, num_inference_steps=20, guidance_scale=7.5, height=64, width=64,
                  generator=torch.manual_seed(5), output_type="np").images
    assert ours.shape == (2, 64, 64, 3)
    assert np.abs(ours.astype(int) - (theirs * 255).round().astype(int)).max() <= 2
