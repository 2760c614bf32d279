"""The mini model's architecture: the same diffusers/transformers classes as Stable Diffusion v1.x, smaller.

| part | SD v1.x | mini model |
|---|---|---|
| picture | 512 x 512 | 64 x 64 |
| VAE | AutoencoderKL, x8, 4 latent channels, 84M params | AutoencoderKL, x8, 4 latent channels, ~1M params |
| latents | 4 x 64 x 64 | 4 x 8 x 8 |
| text encoder | CLIPTextModel, 12 layers x 768 | CLIPTextModel, 3 layers x 128 |
| tokenizer | CLIP BPE, 49,408 tokens, 77 positions | the same files |
| UNet | UNet2DConditionModel, 860M params, cross-attention | UNet2DConditionModel, ~3M params, cross-attention (*) |
| noise schedule | scaled_linear 0.00085 -> 0.012, 1000 steps, epsilon | the same |

(*) and the pooled text embedding added to the time embedding (see ``UNET_CONFIG``).
"""
from __future__ import annotations

RESOLUTION = 64

VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(16, 32, 64, 64),
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=8,
    sample_size=RESOLUTION,
)

TEXT_CONFIG = dict(
    vocab_size=49408,
    hidden_size=128,
    intermediate_size=512,
    num_hidden_layers=3,
    num_attention_heads=4,
    max_position_embeddings=77,
    projection_dim=128,
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=49407,
)

UNET_CONFIG = dict(
    sample_size=RESOLUTION // 8,
    in_channels=4,
    out_channels=4,
    block_out_channels=(32, 64, 128),
    layers_per_block=1,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=128,
    attention_head_dim=4,
    norm_num_groups=32,
    # SD v1.x hears the prompt only through cross-attention. The mini model also pools the
    # text embeddings into the timestep embedding (diffusers' "text" addition embedding, as
    # DeepFloyd IF does), a global path that learns colours and shapes far faster on a CPU
    # budget. The pipeline and the hand-built loop call the UNet exactly as for SD v1.x.
    addition_embed_type="text",
    addition_embed_type_num_heads=4,
)



def vae_config(width: int = 16, layers: int = 1) -> dict:
    """``VAE_CONFIG`` with ``width`` channels in the first block (2x, 4x and 4x in the next three) and ``layers``
    layers per block; 16 and 1 are the shipped VAE. Still x8 with 4 latent channels, as SD's."""
    if (width, layers) == (16, 1):
        return dict(VAE_CONFIG)
    return dict(VAE_CONFIG, block_out_channels=(width, 2 * width, 4 * width, 4 * width), layers_per_block=layers,
                norm_num_groups=min(32, width // 2))


def unet_config(width: int = 32) -> dict:
    """``UNET_CONFIG`` with ``width`` channels in the first block (2x and 4x in the next two); 32 is the shipped
    UNet. Narrower ones train faster (chapter 13's classroom run uses one)."""
    if width == 32:
        return dict(UNET_CONFIG)
    return dict(UNET_CONFIG, block_out_channels=(width, 2 * width, 4 * width), norm_num_groups=min(32, width))


# Stable Diffusion v1.x's noise schedule, with every field written out so that
# `SomeScheduler.from_config(pipe.scheduler.config)` inherits nothing by accident.
# timestep_spacing "trailing" makes every sampler start at t = 999, the noise level
# the model was trained to start from (SD v1.4 ships "leading", which starts lower).
# The default sampler is DDIM, not SD v1.x's PNDM: the multistep samplers (PNDM, K-LMS)
# overshoot with this small model at guidance 7.5 (see its model card and chapter 5).
SCHEDULER_CONFIG = dict(
    _class_name="DDIMScheduler",
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    trained_betas=None,
    skip_prk_steps=True,
    set_alpha_to_one=False,
    steps_offset=1,  # SD v1.x's value (it only matters for timestep_spacing "leading")
    prediction_type="epsilon",
    timestep_spacing="trailing",
    clip_sample=False,
)


def build_components(seed: int = 0):
    """Fresh, randomly initialised (vae, text_encoder, unet), the same every time for one seed."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    vae = AutoencoderKL(**VAE_CONFIG)
    text_encoder = CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))
    unet = UNet2DConditionModel(**UNET_CONFIG)
    return vae, text_encoder, unet
