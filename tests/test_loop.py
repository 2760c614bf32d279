"""The hand-built loop (sdcourse.loop) against StableDiffusionPipeline, on the CPU with the mini model."""
import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
)

from sdcourse.loop import (
    check_guidance,
    check_steps,
    denoise,
    encode_prompt,
    generate,
    initial_latents,
    predict_x0,
)

PROMPTS = ["a red circle on a blue background", "a small green square in the top left"]
STEPS = 8


def pipeline_latents(pipe, scheduler_cls, prompt, seed, steps, guidance, **kwargs):
    pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config)
    generator = torch.Generator("cpu").manual_seed(seed)
    return pipe(prompt, num_inference_steps=steps, guidance_scale=guidance, generator=generator,
                output_type="latent", **kwargs).images


@pytest.mark.parametrize("guidance", [7.5, 1.0])
def test_loop_equals_pipeline_with_klms(pipe, guidance):
    expected = pipeline_latents(pipe, LMSDiscreteScheduler, PROMPTS, 3, STEPS, guidance)
    scheduler = LMSDiscreteScheduler.from_config(pipe.scheduler.config)
    out = generate(pipe, PROMPTS, seed=3, steps=STEPS, guidance=guidance, scheduler=scheduler,
                   decode=False, progress=False)
    diff = (out.latents - expected).abs().max().item()
    print(f"K-LMS, guidance {guidance}: max abs difference loop vs pipeline = {diff}")
    assert out.latents.shape == expected.shape
    assert diff == 0.0


@pytest.mark.parametrize(
    "scheduler_cls",
    [PNDMScheduler, DDIMScheduler, EulerAncestralDiscreteScheduler, DPMSolverMultistepScheduler],
)
def test_loop_equals_pipeline_with_other_schedulers(pipe, scheduler_cls):
    expected = pipeline_latents(pipe, scheduler_cls, PROMPTS[0], 5, STEPS, 7.5)
    out = generate(pipe, PROMPTS[0], seed=5, steps=STEPS, guidance=7.5,
                   scheduler=scheduler_cls.from_config(pipe.scheduler.config), decode=False, progress=False)
    diff = (out.latents - expected).abs().max().item()
    print(f"{scheduler_cls.__name__}: max abs difference = {diff}")
    assert diff == 0.0


def test_negative_prompt_equals_pipeline(pipe):
    negative = "a white background"
    expected = pipeline_latents(pipe, LMSDiscreteScheduler, PROMPTS[0], 1, STEPS, 7.5, negative_prompt=negative)
    out = generate(pipe, PROMPTS[0], seed=1, steps=STEPS, guidance=7.5, negative=negative,
                   scheduler=LMSDiscreteScheduler.from_config(pipe.scheduler.config), decode=False, progress=False)
    assert (out.latents - expected).abs().max().item() == 0.0


def test_decoded_pictures_equal_pipeline(pipe):
    pipe.scheduler = LMSDiscreteScheduler.from_config(pipe.scheduler.config)
    expected = pipe(PROMPTS[0], num_inference_steps=STEPS, generator=torch.Generator("cpu").manual_seed(2)).images[0]
    out = generate(pipe, PROMPTS[0], seed=2, steps=STEPS, progress=False,
                   scheduler=LMSDiscreteScheduler.from_config(pipe.scheduler.config))
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    assert out.images[0].size == (size, size)
    assert np.array_equal(np.asarray(out.images[0]), np.asarray(expected))


def test_generate_accepts_a_dict_of_components(pipe):
    parts = {name: getattr(pipe, name) for name in ("tokenizer", "text_encoder", "unet", "vae")}
    parts["scheduler"] = LMSDiscreteScheduler.from_config(pipe.scheduler.config)
    a = generate(parts, PROMPTS[0], seed=4, steps=4, decode=False, progress=False).latents
    parts["scheduler"] = LMSDiscreteScheduler.from_config(pipe.scheduler.config)
    b = generate(parts, PROMPTS[0], seed=4, steps=4, decode=False, progress=False).latents
    c = generate(parts, PROMPTS[0], seed=5, steps=4, decode=False, progress=False).latents
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_encode_prompt_shape_order_and_pipeline_agreement(pipe):
    emb = encode_prompt(pipe.tokenizer, pipe.text_encoder, PROMPTS)
    length, hidden = pipe.tokenizer.model_max_length, pipe.text_encoder.config.hidden_size
    assert emb.shape == (2 * len(PROMPTS), length, hidden)
    cond, uncond = pipe.encode_prompt(PROMPTS, torch.device("cpu"), 1, True)  # the pipeline's public method
    assert torch.equal(emb[: len(PROMPTS)], uncond)
    assert torch.equal(emb[len(PROMPTS):], cond)


def test_encode_prompt_negative_and_string(pipe):
    emb = encode_prompt(pipe.tokenizer, pipe.text_encoder, "a red circle", negative="a blue circle")
    ref = encode_prompt(pipe.tokenizer, pipe.text_encoder, ["a blue circle", "a red circle"])
    assert emb.shape[0] == 2
    assert torch.allclose(emb[0], ref[2], atol=1e-6) and torch.allclose(emb[1], ref[3], atol=1e-6)


def test_encode_prompt_warns_about_truncation(pipe):
    long_prompt = " ".join(["red circle"] * 60)
    with pytest.warns(UserWarning, match="cut off"):
        emb = encode_prompt(pipe.tokenizer, pipe.text_encoder, long_prompt)
    assert emb.shape[1] == pipe.tokenizer.model_max_length


def test_encode_prompt_rejects_mismatched_negatives(pipe):
    with pytest.raises(ValueError, match="negative has 1 prompts but there are 2 prompts"):
        encode_prompt(pipe.tokenizer, pipe.text_encoder, PROMPTS, negative=["x"])


def setup_loop(pipe, steps=STEPS, seed=0):
    scheduler = LMSDiscreteScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(steps)
    emb = encode_prompt(pipe.tokenizer, pipe.text_encoder, PROMPTS[0])
    latents = initial_latents(pipe.unet, scheduler, 1, 64, 64, seed=seed, vae_scale_factor=pipe.vae_scale_factor)
    return scheduler, emb, latents


def test_initial_latents_shape_and_scale(pipe):
    scheduler, _, latents = setup_loop(pipe)
    factor = pipe.vae_scale_factor
    assert latents.shape == (1, pipe.unet.config.in_channels, 64 // factor, 64 // factor)
    noise = torch.randn(latents.shape, generator=torch.Generator("cpu").manual_seed(0))
    assert torch.equal(latents, noise * scheduler.init_noise_sigma)
    assert scheduler.init_noise_sigma > 1  # K-LMS starts from noise of standard deviation sigma_max


def test_callback_sees_every_step_and_can_replace_latents(pipe):
    scheduler, emb, latents = setup_loop(pipe)
    seen = []

    def callback(i, t, lat):
        seen.append((i, int(t)))
        return torch.zeros_like(lat) if i == STEPS - 1 else None

    out = denoise(pipe.unet, scheduler, emb, latents, 7.5, STEPS, callback=callback, progress=False)
    assert [i for i, _ in seen] == list(range(STEPS))
    assert [t for _, t in seen] == [int(t) for t in scheduler.timesteps]
    assert torch.count_nonzero(out) == 0


def test_start_step_skips_the_first_steps(pipe):
    scheduler, emb, latents = setup_loop(pipe)
    seen = []
    denoise(pipe.unet, scheduler, emb, latents, 7.5, STEPS, start_step=5, progress=False,
            callback=lambda i, t, lat: seen.append(i))
    assert seen == list(range(5, STEPS))


def test_return_x0_gives_one_prediction_per_step(pipe):
    scheduler, emb, latents = setup_loop(pipe)
    out, x0s = denoise(pipe.unet, scheduler, emb, latents, 7.5, STEPS, progress=False, return_x0=True)
    assert len(x0s) == STEPS
    assert all(x.shape == out.shape for x in x0s)


def test_predict_x0_formulas(pipe):
    # K-LMS returns pred_original_sample = sample - sigma * eps; the DDPM-style formula inverts add_noise.
    scheduler = LMSDiscreteScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(STEPS)
    sample, eps = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    t = scheduler.timesteps[0]
    scheduler.scale_model_input(sample, t)  # K-LMS expects this call before step
    output = scheduler.step(eps, t, sample)
    assert torch.allclose(predict_x0(scheduler, sample, eps, t, output), sample - scheduler.sigmas[0] * eps)

    ddpm = PNDMScheduler.from_config(pipe.scheduler.config)
    x0, t = torch.randn(1, 4, 8, 8), torch.tensor(500)
    noisy = ddpm.add_noise(x0, eps, t)
    assert torch.allclose(predict_x0(ddpm, noisy, eps, t), x0, atol=1e-5)


def test_predict_x0_refuses_what_it_cannot_compute(pipe):
    v_pred = PNDMScheduler.from_config(pipe.scheduler.config, prediction_type="v_prediction")
    with pytest.raises(ValueError, match="cannot work out x0 for PNDMScheduler"):
        predict_x0(v_pred, torch.zeros(1), torch.zeros(1), 10)


@pytest.mark.parametrize("value, error, message", [
    (-1.0, ValueError, "guidance_scale must be from 0 to 100.*got -1"),
    (float("nan"), ValueError, "guidance_scale must be from 0 to 100.*got nan"),
    ("7.5", TypeError, "guidance_scale must be a number such as 7.5; got '7.5'"),
    (True, TypeError, "guidance_scale must be a number"),
])
def test_bad_guidance(value, error, message):
    with pytest.raises(error, match=message):
        check_guidance(value)


@pytest.mark.parametrize("value, error, message", [
    (0, ValueError, "num_inference_steps must be from 1 to 1000, got 0"),
    (-3, ValueError, "got -3"),
    (2.5, TypeError, "num_inference_steps must be a whole number such as 20; got 2.5"),
])
def test_bad_steps(value, error, message):
    with pytest.raises(error, match=message):
        check_steps(value)


def test_good_values_pass_through():
    assert check_guidance(0) == 0.0 and check_guidance(7.5) == 7.5
    assert check_steps(1) == 1


def test_generate_rejects_bad_inputs_at_the_door(pipe):
    with pytest.raises(ValueError, match="500"):
        generate(pipe, PROMPTS[0], height=500, width=512, progress=False)
    with pytest.raises(ValueError, match="guidance_scale"):
        generate(pipe, PROMPTS[0], guidance=-2, progress=False)
    with pytest.raises(ValueError, match="num_inference_steps must be from 1 to 1000"):
        generate(pipe, PROMPTS[0], steps=0, progress=False)
    with pytest.raises(TypeError, match="missing: unet, vae, scheduler"):
        generate({"tokenizer": pipe.tokenizer, "text_encoder": pipe.text_encoder}, PROMPTS[0])


def test_denoise_rejects_bad_inputs(pipe):
    scheduler, emb, latents = setup_loop(pipe)
    with pytest.raises(ValueError, match=r"text_embeddings must have 2 \* batch = 2 rows"):
        denoise(pipe.unet, scheduler, emb[1:], latents, 7.5, STEPS, progress=False)
    with pytest.raises(ValueError, match=f"start_step must be a whole number from 0 to .* {STEPS - 1}, got {STEPS}"):
        denoise(pipe.unet, scheduler, emb, latents, 7.5, STEPS, start_step=STEPS, progress=False)


# ---------------------------------------------------------------- one owner for the timesteps
def test_each_run_sets_the_timesteps_once(pipe, monkeypatch):
    import sdcourse
    from sdcourse.course_data import load_picture
    from sdcourse.interp import render_frames

    calls = []
    original = type(pipe.scheduler).set_timesteps

    def counted(self, *args, **kwargs):
        calls.append(args[0] if args else kwargs.get("num_inference_steps"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(pipe.scheduler), "set_timesteps", counted)
    generate(pipe, PROMPTS[0], steps=2, progress=False)
    assert calls == [2]
    picture = load_picture("scene", pipe.unet.config.sample_size * pipe.vae_scale_factor)
    sdcourse.img2img(pipe, picture, PROMPTS[0], strength=1.0, steps=2)
    assert calls == [2, 2]
    noise = [torch.randn(1, pipe.unet.config.in_channels, 8, 8) for _ in range(3)]
    render_frames(pipe, noise, encode_prompt(pipe.tokenizer, pipe.text_encoder, PROMPTS[0]), steps=2,
                  batch_size=2, progress=False)
    assert calls == [2, 2, 2, 2]  # one fresh run per batch of frames


def test_denoise_refuses_a_scheduler_not_prepared_for_this_run(pipe):
    from sdcourse.loop import prepare_timesteps

    scheduler, emb, latents = setup_loop(pipe)
    with pytest.raises(ValueError, match=f"the scheduler is set for {STEPS} steps, not num_inference_steps = 4"):
        denoise(pipe.unet, scheduler, emb, latents, 7.5, 4, progress=False)
    out = denoise(pipe.unet, scheduler, emb, latents, progress=False)  # the steps it was set for
    with pytest.raises(ValueError, match=r"already run steps since its set_timesteps\(8\) call"):
        denoise(pipe.unet, scheduler, emb, latents, 7.5, STEPS, progress=False)
    prepare_timesteps(scheduler, STEPS)
    assert torch.equal(denoise(pipe.unet, scheduler, emb, latents, 7.5, STEPS, progress=False), out)
    fresh = PNDMScheduler.from_config(pipe.scheduler.config)  # set_timesteps never called
    with pytest.raises(ValueError, match="the scheduler is set for None steps"):
        denoise(pipe.unet, fresh, emb, latents, 7.5, STEPS, progress=False)
