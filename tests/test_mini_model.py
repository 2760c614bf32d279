"""The shipped mini model: its folder, its size, its measured scaling factor, and a small evaluation.

The small evaluation is the CI version of ``python -m sdcourse.mini.evaluate``: if the weights or
their loading break, the pictures stop matching their captions and this fails.
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sdcourse import shapes
from sdcourse.mini import evaluate as ev

MINI = Path(__file__).resolve().parents[1] / "sdcourse" / "mini_model"


@pytest.fixture(scope="module")
def pipe():
    from diffusers import StableDiffusionPipeline

    p = StableDiffusionPipeline.from_pretrained(MINI, dtype=torch.float32, safety_checker=None)
    p.set_progress_bar_config(disable=True)
    return p


def test_folder_layout():
    index = json.loads((MINI / "model_index.json").read_text())
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"]
    assert index["vae"] == ["diffusers", "AutoencoderKL"]
    assert index["text_encoder"] == ["transformers", "CLIPTextModel"]
    assert index["tokenizer"] == ["transformers", "CLIPTokenizer"]
    for sub in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        assert (MINI / "tokenizer" / sub).exists()
    assert json.loads((MINI / "tokenizer" / "tokenizer_config.json").read_text())["model_max_length"] == 77


def test_training_record_holds_the_recipe_that_ships():
    """The folder's train_info.json documents the shipped run; its settings are the training command's defaults
    (change a default and this fails until the model is retrained or the record explains the difference)."""
    from dataclasses import asdict

    from sdcourse.mini.train import Recipe

    record = json.loads((MINI / "train_info.json").read_text())
    recipe = json.loads(json.dumps(asdict(Recipe())))
    assert {k: record[k] for k in recipe} == recipe
    assert record["scaling_factor"] == pytest.approx(0.39153, abs=1e-5)


@pytest.mark.parametrize("folder", [MINI, None], ids=["shipped", "exported"])
def test_the_text_encoders_tensors_have_clips_classic_names(folder, tmp_path):
    """text_model.embeddings... as in CLIP's and SD v1.x's checkpoints: transformers 5.0 reads only that
    spelling (without it the text encoder loads randomly initialised); later releases read both."""
    from safetensors import safe_open

    from sdcourse.mini import train

    if folder is None:  # what the training command's export writes
        pipe = sdcourse_pipe()
        folder = train.export(tmp_path / "model", pipe.vae, pipe.text_encoder, pipe.unet, 0.18215)
    with safe_open(folder / "text_encoder" / "model.safetensors", "pt") as f:
        names = list(f.keys())
    assert names and all(name.startswith("text_model.") for name in names), names[:3]


def sdcourse_pipe():
    import sdcourse

    return sdcourse.load_pipeline("mini", device="cpu")


def test_weights_are_small():
    total = sum(f.stat().st_size for f in MINI.rglob("*.safetensors"))
    assert total <= 40 * 2**20, f"{total / 2**20:.1f} MiB of weights"


def test_default_loading_gives_float32_everywhere():
    """Plain diffusers/transformers calls with no dtype, as every SD tutorial writes them, load float32
    components (the weights are stored in float16) and the pipeline runs on a CPU."""
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    assert CLIPTextModel.from_pretrained(MINI, subfolder="text_encoder").dtype == torch.float32
    assert UNet2DConditionModel.from_pretrained(MINI, subfolder="unet").dtype == torch.float32
    assert AutoencoderKL.from_pretrained(MINI, subfolder="vae").dtype == torch.float32
    plain = StableDiffusionPipeline.from_pretrained(MINI)
    plain.set_progress_bar_config(disable=True)
    image = plain("a red circle", num_inference_steps=3).images[0]
    assert image.size == (plain.unet.config.sample_size * plain.vae_scale_factor,) * 2


def test_same_classes_and_schedule_as_sd(pipe):
    assert pipe.vae.config.latent_channels == 4 and pipe.vae_scale_factor == 8
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size
    cfg = pipe.scheduler.config
    assert (cfg.beta_schedule, cfg.beta_start, cfg.beta_end, cfg.num_train_timesteps, cfg.prediction_type) == (
        "scaled_linear", 0.00085, 0.012, 1000, "epsilon")


def test_scaling_factor_is_sds_and_scaled_latents_have_unit_std(pipe):
    """The folder's scaling factor is SD's 0.18215 (the measured one is folded into the VAE's two small
    convolutions), and scaled latents of the training pictures still have (about) unit standard deviation."""
    from sdcourse.mini.train import scenes_tensor

    assert pipe.vae.config.scaling_factor == 0.18215
    with torch.no_grad():
        x = scenes_tensor(shapes.all_scenes()[::7])
        latents = pipe.vae.encode(x).latent_dist.mean * pipe.vae.config.scaling_factor
    assert 0.9 < latents.std().item() < 1.1


def test_classic_tutorial_decode_gives_the_right_colours(pipe):
    """Latents from the pipeline, decoded the way SD tutorials write it (``1 / 0.18215 * latents``),
    show the caption's colour and background (read by the evaluation's checker)."""
    pairs = ev.heldout_prompts(8, seed=3)
    gens = [torch.Generator("cpu").manual_seed(i) for i in range(len(pairs))]
    latents = pipe([c for _, c in pairs], num_inference_steps=20, guidance_scale=7.5, generator=gens,
                   output_type="latent").images
    with torch.no_grad():
        pictures = pipe.vae.decode(1 / 0.18215 * latents).sample
    pictures = ((pictures.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    scores = [ev.score(ev.read_picture(p), s) for p, (s, _) in zip(pictures, pairs)]
    assert sum(sc["colour"] for sc in scores) >= 7 and sum(sc["background"] for sc in scores) >= 7, scores


def test_small_evaluation(pipe):
    """16 held-out captions, DDIM (the mini model's sampler), 20 steps, guidance 7.5, as in the model card:
    the shipped weights get colour and background 16/16, shape 13/16, size 15/16, purity 97% here.
    Random or broken weights score near chance (colour and background 1 in 8, shape 1 in 3,
    size 1 in 2) and fail."""
    pairs = ev.heldout_prompts(16, seed=7)
    images = ev.draw_captions(pipe, [c for _, c in pairs], guidance=7.5, steps=20, progress=False, sampler="ddim")
    readings = [ev.read_picture(im) for im in images]
    scores = [ev.score(r, s) for r, (s, _) in zip(readings, pairs)]
    acc = {k: np.mean([sc[k] for sc in scores]) for k in ("colour", "background", "shape", "size")}
    purity = np.mean([r.purity for r in readings])
    print("small evaluation:", {k: f"{v:.0%}" for k, v in acc.items()}, f"purity {purity:.0%}")
    assert acc["colour"] >= 0.8 and acc["background"] >= 0.8, acc
    assert acc["shape"] >= 0.6 and acc["size"] >= 0.75, acc
    assert purity >= 0.9


def test_draw_captions_leaves_the_callers_pipeline_alone(pipe):
    """The evaluation swaps samplers on a second pipeline that shares the models: the caller's scheduler and
    progress-bar setting stay as they were, and the pictures are those of a pipeline given that sampler."""
    from sdcourse.schedulers import make_scheduler

    scheduler, bar = pipe.scheduler, dict(getattr(pipe, "_progress_bar_config", {}))
    image = ev.draw_captions(pipe, ["a red circle"], guidance=7.5, steps=3, progress=False, sampler="klms")[0]
    assert pipe.scheduler is scheduler and dict(getattr(pipe, "_progress_bar_config", {})) == bar
    own = type(pipe)(**{**pipe.components, "scheduler": make_scheduler("klms", scheduler.config)},
                     requires_safety_checker=False)
    own.set_progress_bar_config(disable=True)
    same = own("a red circle", num_inference_steps=3, guidance_scale=7.5,
               generator=torch.Generator("cpu").manual_seed(0)).images[0]
    assert np.array_equal(np.asarray(image), np.asarray(same))


def test_pndm_is_judged_with_sd_v1_4s_scheduler(pipe):
    """"pndm" is Stable Diffusion v1-4's default sampler exactly: its scheduler_config, timesteps included."""
    from sdcourse.standin import SD14_SCHEDULER

    judged = ev.judged_scheduler(pipe, "pndm")
    assert type(judged).__name__ == "PNDMScheduler"
    assert {k: judged.config[k] for k in SD14_SCHEDULER} == SD14_SCHEDULER
    assert ev.judged_scheduler(pipe, "klms").config.timestep_spacing == pipe.scheduler.config.timestep_spacing


def test_vae_round_trip_is_the_ceiling(pipe):
    """The evaluation's ceiling line: the shipped VAE's round trips of held-out renders read back almost
    perfectly (colour, background), and its palette purity is what generated pictures are compared with."""
    row = ev.vae_round_trip(pipe, n=24)
    assert set(row) == set(shapes.ATTRIBUTES) | {"palette_purity"}
    assert row["colour"] >= 0.9 and row["background"] >= 0.9 and row["position"] >= 0.9, row
    assert 0.9 <= row["palette_purity"] < 1.0, row  # decoded edges are never perfectly flat
