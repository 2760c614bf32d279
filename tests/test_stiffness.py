"""Stiffness: the stability limits of Euler and Adams-Bashforth, power iteration, and the mini model's eigenvalue."""
import doctest

import numpy as np
import pytest
import torch

import sdcourse
from sdcourse import stiffness
from sdcourse.cost import count_unet_calls
from sdcourse.stiffness import (adams_bashforth_coefficients, clean_latents, dominant_eigenvalue, guided_denoiser,
                                power_iteration, relative_steps, stability_limit, timestep_of_sigma)

PROMPT = "a large red circle in the center on a blue background"


# --------------------------------------------------------------------------- the solvers
@pytest.mark.parametrize("order, known", [(1, 2.0), (2, 1.0), (3, 6 / 11), (4, 3 / 10)])
def test_stability_limits_are_the_textbook_values(order, known):
    # Euler reaches h*mu = -2 on the negative real axis; Adams-Bashforth 2, 3, 4 reach -1, -6/11, -3/10
    assert stability_limit(order) == pytest.approx(known, abs=1e-6)


def test_stability_limit_is_the_edge_of_stability():
    limit = stability_limit(4)
    assert stiffness.is_stable(4, -0.99 * limit) and not stiffness.is_stable(4, -1.01 * limit)


def test_adams_bashforth_weights():
    assert adams_bashforth_coefficients(1) == pytest.approx([1.0])
    assert adams_bashforth_coefficients(4) == pytest.approx(np.array([55, -59, 37, -9]) / 24)
    for order in range(1, 7):  # every method integrates a constant slope exactly
        assert adams_bashforth_coefficients(order).sum() == pytest.approx(1.0)


@pytest.mark.parametrize("order", [0, 7, 2.5, "4"])
def test_bad_orders(order):
    with pytest.raises((TypeError, ValueError), match="order"):
        stability_limit(order)


def test_relative_steps_follow_klms_sigmas(pipe):
    sigmas, ratios = relative_steps(pipe.scheduler.config, 20)
    klms = sdcourse.make_scheduler("klms", pipe.scheduler.config)
    klms.set_timesteps(20)
    assert len(sigmas) == len(ratios) == 20
    assert np.allclose(sigmas, klms.sigmas[:-1].double().numpy())
    assert np.all(ratios < 0) and ratios[-1] == -1.0  # sigma falls; the last step lands on sigma = 0
    # more steps, smaller relative steps (compared where both schedules are, before their last step)
    assert np.abs(relative_steps(pipe, 50)[1][:-1]).max() < np.abs(ratios[:-1]).max()


# --------------------------------------------------------------------------- power iteration on known matrices
def _linear_denoiser(eigenvalues, seed=0, dtype=torch.float64):
    """x -> A x for a non-symmetric A = P diag(eigenvalues) P^-1 (x of shape (1, n))."""
    n = len(eigenvalues)
    generator = torch.Generator().manual_seed(seed)
    basis = torch.eye(n, dtype=torch.float64) + torch.randn(n, n, generator=generator, dtype=torch.float64) / n
    A = basis @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ torch.linalg.inv(basis)
    return lambda x: (x.double() @ A.T).to(x.dtype), A


@pytest.mark.parametrize("eigenvalues", [
    [-6.0, 3.0, 1.0, 0.5, 0.2, -0.1, 0.0, 0.9],  # a stiff, negative dominant eigenvalue
    [2.5, -1.0, 0.5, 0.25, 0.1, 0.0, -0.3, 1.2],  # a positive one
])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_power_iteration_finds_a_known_eigenvalue(eigenvalues, dtype):
    denoiser, A = _linear_denoiser(eigenvalues)
    x = torch.randn(1, len(eigenvalues), generator=torch.Generator().manual_seed(1), dtype=dtype)
    found = power_iteration(denoiser, x, iterations=40)
    assert found.value == pytest.approx(eigenvalues[0], abs=1e-3)
    assert found.residual < 1e-2 and found.unet_calls == 41 and len(found.history) == 40
    assert abs(found.history[-1] - found.history[-2]) < 1e-3  # the readout shows it has levelled off


def test_power_iteration_of_a_constant_map_is_zero():
    found = power_iteration(lambda x: torch.ones_like(x), torch.ones(1, 4), iterations=5)
    assert found.value == 0.0


@pytest.mark.parametrize("args, error, match", [
    (("not a function", torch.ones(1, 4)), TypeError, "denoiser must be a function"),
    ((lambda x: x, torch.tensor([1.0, float("nan")])), ValueError, "x holds 1 NaN"),
    ((lambda x: x, torch.ones(1, 4), 0), ValueError, "iterations must be from 1"),
    ((lambda x: x, [1.0, 2.0]), TypeError, "x must be a torch.Tensor"),
])
def test_power_iteration_bad_input(args, error, match):
    with pytest.raises(error, match=match):
        power_iteration(*args)


# --------------------------------------------------------------------------- the mini model
@pytest.fixture(scope="module")
def clean(pipe):
    return clean_latents(pipe, PROMPT, seed=0)


def test_clean_latents_have_the_model_shape(pipe, clean):
    size = pipe.unet.config.sample_size
    assert clean.shape == (1, pipe.unet.config.in_channels, size, size) and clean.dtype == torch.float32


def test_timestep_of_sigma_inverts_the_schedule(pipe):
    sigmas = sdcourse.schedulers.sigma_of_timestep(pipe.scheduler, [10, 250.5, 999])
    assert [timestep_of_sigma(pipe.scheduler, float(s)) for s in sigmas] == pytest.approx([10, 250.5, 999], abs=1e-3)


def test_denoiser_is_the_pipeline_guess_of_the_clean_latents(pipe, clean):
    # at a high noise level with the sampler's own start, D must move towards the clean sample it led to
    sigma = 2.0
    noise = torch.randn(clean.shape, generator=sdcourse.make_generator(0))
    x = clean + sigma * noise
    D = guided_denoiser(pipe, PROMPT, 7.5, sigma)
    assert (D(x) - clean).norm() < 0.5 * (x - clean).norm()


def test_guidance_makes_the_denoiser_stiffer(pipe, clean):
    # what guidance does, whatever the model: it pushes the dominant eigenvalue down
    with count_unet_calls() as counter:
        guided = dominant_eigenvalue(pipe, PROMPT, 7.5, 1.0, latents=clean)
    plain = dominant_eigenvalue(pipe, PROMPT, 1.0, 1.0, latents=clean)
    assert counter.calls == 11 and guided.unet_calls == 11  # iterations + 1, each batched over both prompts
    assert plain.value > -1.0  # without guidance, D is close to an average of pictures: no strong negative mode
    assert guided.value < plain.value - 1.0
    again = dominant_eigenvalue(pipe, PROMPT, 7.5, 1.0, latents=clean)
    assert again.value == guided.value  # reproducible from its seed


def test_dominant_eigenvalue_makes_its_own_clean_sample(pipe, clean):
    with count_unet_calls() as counter:
        found = dominant_eigenvalue(pipe, PROMPT, 2.0, 1.0, seed=0, iterations=3)
    assert counter.calls == 20 + 4  # 20 DDIM steps for the clean sample, then iterations + 1
    assert found.value == dominant_eigenvalue(pipe, PROMPT, 2.0, 1.0, seed=0, iterations=3, latents=clean).value


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(sigma=20.0), ValueError, "sigma must be from 0.029.* to 14.6"),
    (dict(sigma="1"), TypeError, "sigma must be a number"),
    (dict(guidance_scale=-1), ValueError, "guidance_scale must be from 0"),
    (dict(prompt=["a red circle", "a blue square"]), ValueError, "prompt must be one prompt"),
    (dict(latents=torch.zeros(1, 3, 8, 8)), ValueError, "latents must have 4 channels"),
    (dict(seed=-1), ValueError, "seed must be between"),
])
def test_dominant_eigenvalue_bad_input(pipe, kwargs, error, match):
    args = dict(prompt=PROMPT, latents=torch.zeros(1, 4, 8, 8)) | kwargs
    with pytest.raises(error, match=match):
        dominant_eigenvalue(pipe, **args)


def test_not_a_pipeline():
    with pytest.raises(TypeError, match="pipe must be a Stable Diffusion pipeline"):
        dominant_eigenvalue("mini", PROMPT)


def test_command_line(capsys):
    stiffness.main(["--model", "mini", "--guidance", "1", "7.5", "--sigma", "1", "--iterations", "3"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert "dominant eigenvalue" in lines[0] and "sigma 1" in lines[1]
    rows = [line.split() for line in lines[2:]]
    assert len(rows) == 2 and [row[-2] for row in rows] == ["1", "7.5"]
    assert float(rows[1][-1]) < float(rows[0][-1])  # guidance 7.5 more negative than guidance 1


def test_examples_in_docstrings():
    result = doctest.testmod(stiffness, extraglobs={"sdcourse": sdcourse, "torch": torch},
                             optionflags=doctest.ELLIPSIS)
    assert result.attempted > 5 and result.failed == 0


def test_a_half_precision_unet_is_measured_in_float32(clean):
    # SD on a GPU runs in float16; the measurement copies the UNet to float32 and leaves the pipeline as it was
    half = sdcourse.load_pipeline("mini", device="cpu", dtype=torch.float32)
    half.set_progress_bar_config(disable=True)
    exact = dominant_eigenvalue(half, PROMPT, 7.5, 1.0, latents=clean)
    half.unet.to(torch.bfloat16)  # CPU kernels exist for bfloat16, not for float16
    rounded = dominant_eigenvalue(half, PROMPT, 7.5, 1.0, latents=clean)
    assert half.unet.dtype == torch.bfloat16
    assert rounded.value == pytest.approx(exact.value, rel=0.05)  # only the weights' rounding differs


def test_iterations_are_checked_before_any_unet_call(pipe):
    with count_unet_calls() as counter, pytest.raises(ValueError, match="iterations must be from 1 to 1000"):
        dominant_eigenvalue(pipe, PROMPT, iterations=0)
    assert counter.calls == 0


# ---------------------------------------------------------------- the ideal denoiser of a finite world
def test_ideal_jacobian_of_two_points_is_their_posterior_variance():
    """Two points 2 apart: at x with posterior weights p, 1-p the Jacobian is p(1-p) * 4 / sigma^2."""
    from sdcourse.stiffness import ideal_jacobian

    points = np.array([[-1.0, 0.0], [1.0, 0.0]])
    for x0, sigma in [(0.0, 1.0), (0.3, 0.5), (-2.0, 2.0)]:
        p = 1 / (1 + np.exp(-2 * x0 / sigma**2))  # weight of the point at +1
        J = ideal_jacobian(points, np.array([x0, 0.7]), sigma)
        np.testing.assert_allclose(J, [[4 * p * (1 - p) / sigma**2, 0], [0, 0]], atol=1e-12)


def test_ideal_jacobian_matches_finite_differences_of_the_posterior_mean():
    from sdcourse.stiffness import ideal_jacobian

    rng = np.random.default_rng(0)
    points, x, sigma = rng.standard_normal((30, 5)), rng.standard_normal(5), 0.8
    log_prior = rng.standard_normal(30)

    def D(y):
        w = np.exp(log_prior - ((points - y) ** 2).sum(1) / (2 * sigma**2))
        return (w / w.sum()) @ points

    h = 1e-6
    numeric = np.stack([(D(x + h * e) - D(x - h * e)) / (2 * h) for e in np.eye(5)], axis=1)
    np.testing.assert_allclose(ideal_jacobian(points, x, sigma, log_prior), numeric, atol=1e-6)


def test_ideal_guidance_is_stiff_where_the_prompt_settles_what_the_data_leave_open():
    from sdcourse.stiffness import ideal_guided_eigenvalue

    points = np.array([[-1.0], [1.0]])
    settles = np.array([0.0, -np.inf])  # the prompt rules out the second point
    leaves_open = np.zeros(2)  # the prompt allows both
    x = np.zeros(1)
    assert ideal_guided_eigenvalue(points, x, 1.0, settles, 7.5) == pytest.approx(-6.5)
    assert ideal_guided_eigenvalue(points, x, 1.0, leaves_open, 7.5) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"\(n, d\)"):
        ideal_guided_eigenvalue(points, np.zeros(3), 1.0, settles)


def test_the_flat_world_is_stiff_for_the_ideal_denoiser_too(capsys):
    """scripts/ideal_stiffness.py on the shipped VAE's latents of the 1,680 flat scenes: at guidance 7.5 and
    sigma 1 the ideal guided denoiser is about as stiff as the trained UNet (the model card measures -5.8),
    at guidance 2 far less; so the stiffness comes from the world, not from training."""
    from conftest import load_script

    table = load_script("scripts/ideal_stiffness.py").main(["--guidance", "2", "7.5", "--sigma", "1", "-n", "32"])
    full_75, full_2 = table[False, 7.5, 1.0][1], table[False, 2.0, 1.0][1]  # medians
    assert -8.0 < full_75 < -4.0 and -1.5 < full_2 < -0.5
    assert "full captions" in capsys.readouterr().out
