"""The fast loop (sdcourse.fast_loop) against diffusers' own K-LMS / Euler schedulers, on the CPU."""
import pytest
import torch
from diffusers import EulerDiscreteScheduler, LMSDiscreteScheduler

from sdcourse.fast_loop import FAST_SCHEDULERS, FastLoop, UNetRunner, lms_coefficients
from sdcourse.loop import encode_prompt, generate

PROMPTS = ["a small red circle in the center on a black background",
           "a large blue square in the top left on a white background"]
STEPS = 12


@pytest.fixture(scope="module")
def emb(pipe):
    return encode_prompt(pipe.tokenizer, pipe.text_encoder, PROMPTS)


def plain_loop(pipe, scheduler_cls, emb, noise, steps, guidance):
    """The textbook loop: the diffusers scheduler object does scale_model_input and step every time."""
    sched = scheduler_cls.from_config(pipe.scheduler.config)
    sched.set_timesteps(steps)
    x = noise * sched.init_noise_sigma
    with torch.no_grad():
        for t in sched.timesteps:
            x_in = sched.scale_model_input(torch.cat([x, x]), t)
            u, c = pipe.unet(x_in, t, encoder_hidden_states=emb).sample.chunk(2)
            x = sched.step(u + guidance * (c - u), t, x).prev_sample
    return x


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("name,cls", [("klms", LMSDiscreteScheduler), ("euler", EulerDiscreteScheduler)])
@pytest.mark.parametrize("guidance", [7.5, 0.0])
def test_fast_loop_equals_plain_diffusers_loop(pipe, emb, name, cls, guidance):
    noise = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(7))
    expected = plain_loop(pipe, cls, emb, noise, STEPS, guidance)
    loop = FastLoop(pipe.unet, pipe.scheduler, scheduler=name, steps=STEPS, guidance_scale=guidance,
                    batch_size=2, vae_scale_factor=pipe.vae_scale_factor)
    got = loop(emb, noise=noise)
    assert got.shape == expected.shape == (2, 4, 8, 8)
    assert got.dtype == torch.float32
    assert rel_err(got, expected) <= 1e-3
    assert not loop.runner.graphed and not loop.runner.compiled  # CPU: plain eager UNet


def test_fast_loop_seed_matches_hand_built_generate(pipe, emb):
    out = generate(pipe, PROMPTS, seed=3, steps=6, guidance=7.5,
                   scheduler=LMSDiscreteScheduler.from_config(pipe.scheduler.config),
                   decode=False, progress=False)
    loop = FastLoop(pipe.unet, pipe.scheduler, scheduler="klms", steps=6, batch_size=2)
    assert rel_err(loop(emb, seed=3), out.latents) <= 1e-3


def test_channels_last_gives_the_same_latents(pipe, emb):
    noise = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(1))
    plain = FastLoop(pipe.unet, pipe.scheduler, scheduler="euler", steps=4, batch_size=2)(emb, noise=noise)
    try:
        loop = FastLoop(pipe.unet, pipe.scheduler, scheduler="euler", steps=4, batch_size=2,
                        channels_last=True)
        fast = loop(emb, noise=noise)
        assert pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    finally:
        pipe.unet.to(memory_format=torch.contiguous_format)
    assert rel_err(fast, plain) <= 1e-5


def test_lms_coefficients_equal_diffusers_per_step_integrals(pipe):
    sched = LMSDiscreteScheduler.from_config(pipe.scheduler.config)
    sched.set_timesteps(10)
    coeffs = lms_coefficients(sched, order=4)
    assert coeffs.shape == (10, 4) and coeffs.dtype == torch.float64
    for i in range(10):
        n = min(i + 1, 4)
        assert coeffs[i, :n].tolist() == [sched.get_lms_coefficient(n, i, j) for j in range(n)]
        assert coeffs[i, n:].abs().sum() == 0  # no history yet in the first steps
    # the weights of one step integrate a partition of unity: they add up to the step length
    steps = sched.sigmas[1:] - sched.sigmas[:-1]
    assert coeffs.sum(dim=1).tolist() == pytest.approx(steps.double().tolist(), rel=1e-5)


def test_fast_loop_is_bit_identical_to_the_plain_loop_on_cpu(pipe, emb):
    noise = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(11))
    for name, cls in (("klms", LMSDiscreteScheduler), ("euler", EulerDiscreteScheduler)):
        loop = FastLoop(pipe.unet, pipe.scheduler, scheduler=name, steps=STEPS, batch_size=2)
        assert torch.equal(loop(emb, noise=noise), plain_loop(pipe, cls, emb, noise, STEPS, 7.5))


def test_cuda_graph_request_on_cpu_falls_back_with_one_message(pipe, emb, capsys):
    loop = FastLoop(pipe.unet, pipe.scheduler, scheduler="klms", steps=2, batch_size=2, cuda_graph=True)
    loop(emb, seed=0)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "CUDA graphs need a CUDA GPU" in out
    assert not loop.runner.graphed and loop.runner.messages == [out.strip()]


def test_compile_failure_falls_back_with_one_message(pipe, emb, capsys, monkeypatch):
    def broken_compile(*args, **kwargs):
        raise RuntimeError("no C++ compiler found\nsecond line")

    monkeypatch.setattr(torch, "compile", broken_compile)
    loop = FastLoop(pipe.unet, pipe.scheduler, scheduler="euler", steps=2, batch_size=2, compile=True)
    loop(emb, seed=0)
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert "torch.compile is unavailable here (RuntimeError: no C++ compiler found)" in out
    assert not loop.runner.compiled


def test_unet_runner_eager_matches_unet(pipe, emb):
    runner = UNetRunner(pipe.unet, (4, 4, 8, 8), tuple(emb.shape), verbose=False)
    x = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor(500.0)
    with torch.no_grad():
        assert torch.equal(runner(x, t, emb), pipe.unet(x, t, encoder_hidden_states=emb).sample)


def test_known_scheduler_names():
    assert sorted(FAST_SCHEDULERS) == ["euler", "klms"]


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(steps=0), ValueError, "from 1 to 1000, got 0"),
    (dict(steps=2.5), TypeError, "whole number such as 20; got 2.5"),
    (dict(scheduler="pndm"), ValueError, r"Unknown scheduler 'pndm' for the fast loop; choose one of \['euler', 'klms'\]"),
    (dict(guidance_scale=-1.0), ValueError, "from 0 to 100 .*got -1"),
    (dict(guidance_scale=float("nan")), ValueError, "from 0 to 100 .*got nan"),
    (dict(batch_size=0), ValueError, "batch_size must be a whole number >= 1, got 0"),
    (dict(height=60), ValueError, "height must be a positive multiple of 8.*got 60"),
    (dict(width=-8), ValueError, "width must be a positive multiple of 8.*got -8"),
])
def test_bad_arguments_are_rejected(pipe, kwargs, error, match):
    with pytest.raises(error, match=match):
        FastLoop(pipe.unet, pipe.scheduler, **kwargs)


def test_non_epsilon_model_is_rejected(pipe):
    config = dict(pipe.scheduler.config, prediction_type="v_prediction")
    with pytest.raises(ValueError, match="epsilon-predicting model, got prediction_type 'v_prediction'"):
        FastLoop(pipe.unet, config)


def test_bad_call_inputs_are_rejected(pipe, emb):
    loop = FastLoop(pipe.unet, pipe.scheduler, steps=2, batch_size=2)
    with pytest.raises(ValueError, match=r"shape \[4, tokens, 128\] for batch_size 2, got \(2, 77, 128\)"):
        loop(emb[:2], seed=0)
    with pytest.raises(ValueError, match="got list"):
        loop([[0.0]], seed=0)
    with pytest.raises(ValueError, match=r"noise must have shape \(2, 4, 8, 8\), got \(1, 4, 8, 8\)"):
        loop(emb, noise=torch.zeros(1, 4, 8, 8))
    with pytest.raises(ValueError, match="needs a seed"):
        loop(emb)
    with pytest.raises(TypeError, match="seed must be a whole number"):
        loop(emb, seed="one")


def test_lms_coefficients_bad_inputs(pipe):
    sched = LMSDiscreteScheduler.from_config(pipe.scheduler.config)
    with pytest.raises(ValueError, match="needs an LMSDiscreteScheduler.*got EulerDiscreteScheduler"):
        lms_coefficients(EulerDiscreteScheduler.from_config(pipe.scheduler.config))
    sched.set_timesteps(4)
    with pytest.raises(ValueError, match="order must be a whole number >= 1, got 0"):
        lms_coefficients(sched, order=0)
