"""How stiff is the sampling equation? The dominant eigenvalue of the guided denoiser, and solver stability.

K-LMS and Euler solve the same ordinary differential equation in the noise level sigma,

    dx/dsigma = (x - D(x)) / sigma,        D(x) = x - sigma * eps_hat(x),

where ``eps_hat`` is the UNet's noise prediction after classifier-free guidance and ``D(x)`` is
the denoiser: its guess of the clean latents. How fast the right-hand side changes when ``x``
moves is set by the Jacobian dD/dx. Along an eigenvector of dD/dx with eigenvalue ``lam``, the
equation behaves like ``dy/dsigma = mu * y`` with ``mu = (1 - lam) / sigma``, and an explicit
solver that takes a step ``h`` (in sigma) stays stable only while ``h * mu`` lies inside its
stability region. On the negative real axis that region reaches to -2 for Euler's method but
only to -1, -6/11 and -3/10 for the Adams-Bashforth methods of orders 2, 3 and 4 (K-LMS's
default order is 4). A strongly negative ``lam`` (a "stiff" equation) therefore breaks the
higher-order multistep solvers first.

* :func:`dominant_eigenvalue` measures ``lam`` for a pipeline, prompt, guidance scale and sigma
  (power iteration on finite-difference Jacobian-vector products, about a dozen UNet calls);
* :func:`power_iteration` is that algorithm for any function ``D`` (tested on a linear map);
* :func:`stability_limit` computes how far each method's stability region reaches along the
  negative real axis, from the method's characteristic polynomial;
* :func:`relative_steps` gives the steps ``h / sigma`` K-LMS takes, so ``h * mu`` can be compared.

Example (the mini model on a CPU, about a second)::

    >>> import sdcourse
    >>> from sdcourse.stiffness import dominant_eigenvalue, stability_limit
    >>> pipe = sdcourse.load_pipeline("mini")  # doctest: +SKIP
    >>> dominant_eigenvalue(pipe, "a red circle", guidance_scale=7.5, sigma=1.0)  # doctest: +SKIP
    Eigenvalue(value=-7.2..., residual=0.0..., unet_calls=11)
    >>> round(stability_limit(4), 6)  # Adams-Bashforth of order 4
    0.3

From a shell, a table for several guidance scales and noise levels::

    python -m sdcourse.stiffness --model mini --guidance 1 7.5 --sigma 0.5 1 2
"""
from __future__ import annotations

import argparse
import copy
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from .loop import _uses_guidance, encode_prompt, generate
from .schedulers import make_scheduler
from .seeds import make_generator
from .validate import (check_guidance, check_int, check_number, check_pipeline, check_prompt, check_seed, check_sigma,
                       check_steps, check_tensor)

__all__ = ["Eigenvalue", "adams_bashforth_coefficients", "clean_latents", "dominant_eigenvalue", "guided_denoiser",
           "ideal_guided_eigenvalue", "ideal_jacobian", "is_stable", "power_iteration", "relative_steps",
           "stability_limit", "timestep_of_sigma"]

MAX_ORDER = 6  # Adams-Bashforth orders offered; K-LMS uses up to 4
MAX_ITERATIONS = 1000


@dataclass
class Eigenvalue:
    """What :func:`power_iteration` finds: the eigenvalue, and how well it has converged.

    ``history`` holds the estimate after every iteration (it should level off); ``residual`` is
    ``|J v - value * v| / |J v|`` for the last direction ``v``: 0 for an exact eigenvector.
    """

    value: float
    history: list = field(repr=False)
    residual: float
    unet_calls: int

    def __format__(self, spec):
        return format(self.value, spec)


# --------------------------------------------------------------------------- the denoiser at one noise level
def timestep_of_sigma(scheduler, sigma: float) -> float:
    """The (fractional) training timestep whose noise level is ``sigma``, as K-LMS interpolates it.

    >>> from diffusers import DDIMScheduler
    >>> s = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    >>> round(timestep_of_sigma(s, 1.0), 1), round(timestep_of_sigma(s, 14.6))
    (353.9, 999)
    """
    sigma = check_sigma(sigma, scheduler)
    alphas = scheduler.alphas_cumprod.double().numpy()
    sigmas = np.sqrt((1 - alphas) / alphas)  # one noise level per training timestep, rising with t
    # log(sigma) is nearly linear in t, so interpolate there (as diffusers' K-LMS and Euler do)
    return float(np.interp(np.log(sigma), np.log(sigmas), np.arange(len(sigmas))))


def guided_denoiser(pipe, prompt: str, guidance_scale: float = 7.5, sigma: float = 1.0) -> Callable:
    """The function ``D(x) = x - sigma * eps_hat(x)`` at one noise level, for one prompt.

    ``x`` are latents at noise level ``sigma`` in K-LMS's convention (picture + sigma * noise,
    shape ``(1, 4, h, w)``); ``D(x)`` is the guided guess of the clean latents, same shape, float32.
    Each call is one batched UNet call (the empty prompt's and the prompt's halves, as the pipeline
    does; only the prompt's half at ``guidance_scale <= 1``). A float16 UNet (SD on a GPU) is copied
    to float32 first: finite differences of D need more digits than float16 keeps.

    >>> D = guided_denoiser(pipe, "a red circle", 7.5, sigma=1.0)  # doctest: +SKIP
    >>> D(torch.zeros(1, 4, 8, 8)).shape  # doctest: +SKIP
    torch.Size([1, 4, 8, 8])
    """
    prompt, guidance_scale, sigma = check_prompt(prompt), check_guidance(guidance_scale), check_sigma(
        sigma, check_pipeline(pipe).scheduler)
    unet = pipe.unet if pipe.unet.dtype == torch.float32 else copy.deepcopy(pipe.unet).float()
    guided = _uses_guidance(guidance_scale)  # the pipeline's rule: at 1 the empty prompt's half is not needed
    embeddings = encode_prompt(pipe.tokenizer, pipe.text_encoder, [prompt])  # [empty prompt, prompt]
    embeddings = (embeddings if guided else embeddings[1:]).to(unet.device, unet.dtype)
    t = torch.tensor(timestep_of_sigma(pipe.scheduler, sigma), device=unet.device)  # the UNet's clock
    scale = 1 / math.sqrt(sigma**2 + 1)  # K-LMS's scale_model_input: back to unit variance

    @torch.no_grad()
    def denoiser(x: torch.Tensor) -> torch.Tensor:
        sample = x.to(unet.device, unet.dtype) * scale
        model_input = torch.cat([sample] * 2) if guided else sample  # one copy per half
        eps = unet(model_input, t, encoder_hidden_states=embeddings, return_dict=False)[0]  # the noise guess
        if guided:
            eps_empty, eps_prompt = eps.chunk(2)
            eps = eps_empty + guidance_scale * (eps_prompt - eps_empty)  # classifier-free guidance
        return x.float() - sigma * eps.float().to(x.device)  # the guess of the clean latents

    return denoiser


def clean_latents(pipe, prompt: str, seed: int = 0, steps: int = 20, guidance_scale: float = 7.5) -> torch.Tensor:
    """A clean sample to measure around: DDIM, ``steps`` steps, the pipeline's own noise schedule.

    Returns latents of shape ``(1, unet.config.in_channels, h, w)`` (sizes from the configs), float32
    on the CPU. Costs ``steps`` UNet calls.
    """
    prompt, seed, steps, guidance_scale = check_prompt(prompt), check_seed(seed), check_steps(steps), check_guidance(
        guidance_scale)
    ddim = make_scheduler("ddim", check_pipeline(pipe).scheduler.config)  # any scheduler would do; DDIM is quick
    out = generate(pipe, prompt, seed=seed, steps=steps, guidance=guidance_scale, scheduler=ddim, decode=False,
                   progress=False)
    return out.latents.float().cpu()


# --------------------------------------------------------------------------- power iteration
def power_iteration(denoiser: Callable, x: torch.Tensor, iterations: int = 10, seed: int = 0,
                    step: float = 1e-3) -> Eigenvalue:
    """The eigenvalue of largest size of the Jacobian dD/dx at ``x``, by power iteration.

    ``denoiser`` maps a tensor shaped like ``x`` to one of the same shape. The Jacobian is never
    formed: each iteration needs only ``J v``, taken as a finite difference
    ``(D(x + eps v) - D(x)) / eps`` with ``eps = step * |x|``. Costs ``iterations + 1`` calls of
    ``denoiser``. Converges fast when the largest eigenvalue stands clear of the next one; read
    ``history`` and ``residual`` to see whether it has.

    >>> A = torch.diag(torch.tensor([-5.0, 2.0, 1.0, 0.5], dtype=torch.float64))  # a linear "denoiser" x -> x A
    >>> found = power_iteration(lambda x: x @ A, torch.ones(1, 4, dtype=torch.float64), iterations=30)
    >>> round(found.value, 6), found.unet_calls
    (-5.0, 31)
    """
    x, iterations, seed, step = check_tensor(x, "x"), check_int(iterations, "iterations", 1, MAX_ITERATIONS), \
        check_seed(seed), check_number(step, "step", 1e-8, 1.0, example=1e-3)
    if not callable(denoiser):
        raise TypeError(f"denoiser must be a function of the latents; got {type(denoiser).__name__}.")
    x = x if x.dtype == torch.float64 else x.float()  # differences need at least float32
    generator = torch.Generator("cpu").manual_seed(seed)
    v = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)  # a random start direction...
    v = v / v.norm()  # ...of length 1
    eps = step * float(x.norm()) or step  # a small move, relative to the size of x
    d0 = denoiser(x)  # D at the point itself (one call, reused by every difference)
    history, residual = [], 0.0
    for _ in range(iterations):
        jv = (denoiser(x + eps * v) - d0) / eps  # J v, the Jacobian times v, by a finite difference
        value = float((v * jv).sum())  # Rayleigh quotient v.Jv (|v| = 1): the eigenvalue estimate
        history.append(value)
        size = float(jv.norm())
        if size == 0:  # D does not change with x at all: every eigenvalue is 0
            break
        residual = float((jv - value * v).norm()) / size  # 0 once v is an eigenvector
        v = jv / size * (1 if value >= 0 else -1)  # next direction; keeping its sign keeps the difference one-sided
    return Eigenvalue(value=history[-1], history=history, residual=residual, unet_calls=len(history) + 1)


def dominant_eigenvalue(pipe, prompt: str, guidance_scale: float = 7.5, sigma: float = 1.0, seed: int = 0,
                        iterations: int = 10, latents: torch.Tensor | None = None) -> Eigenvalue:
    """The dominant eigenvalue of dD/dx for the guided denoiser D at noise level ``sigma``.

    The point it is measured at is ``x = latents + sigma * noise``: ``latents`` a clean sample
    (by default :func:`clean_latents` of the same prompt and seed, guidance 7.5, 20 UNet calls
    more) and ``noise`` the seed's standard normal noise, the same noise that sample started from.
    Pass the same ``latents`` to compare guidance scales and noise levels at one picture.
    ``iterations + 1`` UNet calls (each batched over the empty prompt and the prompt, as the
    pipeline does). Negative values far below -1 make the sampling equation stiff.

    >>> clean = clean_latents(pipe, "a red circle", seed=0)  # doctest: +SKIP
    >>> dominant_eigenvalue(pipe, "a red circle", 7.5, 1.0, latents=clean).value  # doctest: +SKIP
    -7.2...
    """
    prompt, guidance_scale, seed = check_prompt(prompt), check_guidance(guidance_scale), check_seed(seed)
    sigma = check_sigma(sigma, check_pipeline(pipe).scheduler)  # a noise level of the model's schedule
    iterations = check_int(iterations, "iterations", 1, MAX_ITERATIONS)
    if latents is None:  # a picture of the prompt to measure around
        latents = clean_latents(pipe, prompt, seed)
    latents = check_tensor(latents, "latents", ndim=4, channels=pipe.unet.config.in_channels).float().cpu()
    noise = torch.randn(latents.shape, generator=make_generator(seed))  # the seed's noise, on the CPU
    x = latents + sigma * noise  # a point at noise level sigma, as K-LMS sees it
    D = guided_denoiser(pipe, prompt, guidance_scale, sigma)
    return power_iteration(D, x, iterations, seed)


# --------------------------------------------------------------------------- the ideal denoiser of a finite world
def ideal_jacobian(points: np.ndarray, x: np.ndarray, sigma: float, log_prior: np.ndarray | None = None) -> np.ndarray:
    """The Jacobian dD/dx of the best possible denoiser for data made of a finite set of ``points``.

    If the clean latents are one of ``points`` (shape ``(n, d)``, chosen with probabilities
    ``exp(log_prior)``, uniform by default) and ``x = point + sigma * noise``, the denoiser that
    makes the smallest squared error is the posterior mean ``D(x) = sum_i w_i(x) p_i`` with
    ``w_i`` proportional to ``prior_i * exp(-|x - p_i|^2 / (2 sigma^2))``; its Jacobian is the
    posterior covariance of the clean point divided by ``sigma**2``: symmetric, never negative.
    A trained UNet can only approximate this function, so its eigenvalues show how stiff the
    world itself makes the sampling equation. Points with a log prior of ``-inf`` never count
    (a prompt that rules them out).

    >>> two = np.array([[-1.0], [1.0]])  # two equally likely points, 2 apart
    >>> float(ideal_jacobian(two, np.zeros(1), sigma=1.0)[0, 0])  # halfway: w = (1/2, 1/2), covariance 1
    1.0
    """
    points, x = _finite_array(points, "points"), _finite_array(x, "x")
    if points.ndim != 2 or 0 in points.shape or x.shape != points.shape[1:]:
        raise ValueError(f"points must be (n, d) with n, d >= 1 and x (d,); got {points.shape} and {x.shape}")
    sigma = check_number(sigma, "sigma", 1e-6, example=1.0)
    log_w = -((points - x) ** 2).sum(1) / (2 * sigma**2)  # the Gaussian likelihood of x for each point
    if log_prior is not None:
        try:
            log_prior = np.asarray(log_prior, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"log_prior must be an array of {len(points)} numbers (log probabilities, -inf for "
                            f"points ruled out); got {type(log_prior).__name__}") from None
        if log_prior.shape != (len(points),) or np.isnan(log_prior).any() or np.isposinf(log_prior).any():
            raise ValueError(f"log_prior must hold one log probability per point ({len(points)}), no NaN or +inf; "
                             f"got shape {log_prior.shape}")
        if np.isneginf(log_prior).all():
            raise ValueError("log_prior rules out every point (all -inf): at least one point must be possible")
        log_w = log_w + log_prior
    w = np.exp(log_w - log_w.max())
    w /= w.sum()  # the posterior over the points
    centred = points - w @ points
    return centred.T @ (centred * w[:, None]) / sigma**2  # posterior covariance / sigma^2


def _finite_array(value, name: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an array of numbers; got {type(value).__name__}") from None
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must hold finite numbers; it has NaN or inf")
    return array


def ideal_guided_eigenvalue(points: np.ndarray, x: np.ndarray, sigma: float, prompt_log_prior: np.ndarray,
                            guidance_scale: float = 7.5) -> float:
    """The most negative eigenvalue of dD/dx for the ideal guided denoiser at ``x``.

    Guidance mixes two ideal denoisers, ``D = D_u + g (D_c - D_u)``: ``D_u`` knows only the data
    (all ``points``), ``D_c`` also the prompt (``prompt_log_prior`` over the points, ``-inf`` for
    points the prompt rules out). So ``dD/dx = (1 - g) J_u + g J_c`` (:func:`ideal_jacobian`),
    negative wherever the data leave open what the prompt settles.

    >>> two = np.array([[-1.0], [1.0]])
    >>> ideal_guided_eigenvalue(two, np.zeros(1), 1.0, np.array([0.0, -np.inf]), 7.5)  # (1 - 7.5) * 1 + 7.5 * 0
    -6.5
    """
    guidance_scale = check_guidance(guidance_scale)
    j_u = ideal_jacobian(points, x, sigma)
    j_c = ideal_jacobian(points, x, sigma, prompt_log_prior)
    return float(np.linalg.eigvalsh((1 - guidance_scale) * j_u + guidance_scale * j_c)[0])


# --------------------------------------------------------------------------- stability of the solvers
def adams_bashforth_coefficients(order: int) -> np.ndarray:
    """Weights b_0..b_{k-1} of the k-step Adams-Bashforth method, ``x_{n+1} = x_n + h * sum_j b_j f_{n-j}``.

    Each weight integrates, over one step, the Lagrange polynomial that is 1 at the j-th past
    point and 0 at the others: the method integrates the polynomial through the last ``order``
    slopes. Order 1 is Euler's method.

    >>> adams_bashforth_coefficients(2)
    array([ 1.5, -0.5])
    """
    order = check_int(order, "order", 1, MAX_ORDER, example=4)
    nodes = -np.arange(order, dtype=float)  # past points in units of the step: 0, -1, -2, ...
    weights = []
    for j in range(order):
        others = np.delete(nodes, j)
        basis = np.polynomial.Polynomial.fromroots(others) if len(others) else np.polynomial.Polynomial([1.0])
        basis = basis / np.prod(nodes[j] - others)  # 1 at nodes[j], 0 at the other past points
        antiderivative = basis.integ()
        weights.append(antiderivative(1.0) - antiderivative(0.0))  # the integral over the next step
    return np.array(weights)


def is_stable(order: int, z: float) -> bool:
    """Is Adams-Bashforth of ``order`` stable for ``dy/dsigma = mu * y`` with ``h * mu = z``?

    Stable means no solution of the method's recurrence grows: every root of its characteristic
    polynomial lies in the unit disc. Euler's method is order 1.

    >>> is_stable(1, -1.5), is_stable(4, -0.5)
    (True, False)
    """
    order, z = check_int(order, "order", 1, MAX_ORDER, example=4), check_number(z, "z", example=-0.5)
    b = adams_bashforth_coefficients(order)  # the weights of the last `order` slopes
    # y' = mu y gives y_{n+1} - y_n = z * sum_j b_j y_{n-j}; try y_n = r**n and multiply by r**(order-1):
    # r**order - r**(order-1) - z * sum_j b_j r**(order-1-j) = 0
    poly = np.zeros(order + 1)
    poly[0], poly[1] = 1.0, -1.0  # coefficients from the highest power down
    poly[1:] -= z * b
    return bool(np.all(np.abs(np.roots(poly)) <= 1 + 1e-9))


def stability_limit(order: int, tolerance: float = 1e-9) -> float:
    """How far the stability region of Adams-Bashforth of ``order`` reaches along the negative real axis.

    A solver step is stable for ``dy/dsigma = mu * y`` when ``-limit <= h * mu <= 0``. Found
    numerically: scan ``z = h * mu`` from 0 towards -4 until some root of the characteristic
    polynomial leaves the unit disc, then bisect. Euler's method (order 1) reaches 2.

    >>> [round(stability_limit(k), 6) for k in (1, 2, 3, 4)]
    [2.0, 1.0, 0.545455, 0.3]
    """
    order = check_int(order, "order", 1, MAX_ORDER, example=4)
    tolerance = check_number(tolerance, "tolerance", 1e-12, 1e-3, example=1e-9,
                             meaning=" (the bisection stops when the bracket is this narrow)")
    grid = np.linspace(0, -4, 4001)[1:]  # candidate h * mu, 0.001 apart
    unstable = next((z for z in grid if not is_stable(order, z)), None)
    if unstable is None:
        raise ValueError(f"Adams-Bashforth of order {order} is stable down to h * mu = -4; no limit found.")
    stable = unstable + 1e-3  # the last grid point that was still stable
    while stable - unstable > tolerance:  # bisect between a stable and an unstable z
        middle = (stable + unstable) / 2
        stable, unstable = (middle, unstable) if is_stable(order, middle) else (stable, middle)
    return float(-stable)


def relative_steps(config, num_inference_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """The noise levels K-LMS visits and its steps relative to them, ``h / sigma``.

    ``config`` is a scheduler config (``pipe.scheduler.config``), a scheduler or a pipeline.
    Returns ``(sigmas, ratios)``: the sigma at the start of each step and
    ``(sigma_next - sigma) / sigma``, negative because sigma falls; the last step goes to
    sigma = 0, a ratio of -1. Multiply ``-ratio`` by ``1 - lam`` to get ``|h * mu|`` for an
    eigenvalue ``lam`` of dD/dx.

    >>> from diffusers import DDIMScheduler
    >>> s = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    >>> sigmas, ratios = relative_steps(s.config, 20)
    >>> len(sigmas), float(ratios[-1])
    (20, -1.0)
    """
    num_inference_steps = check_steps(num_inference_steps)
    klms = make_scheduler("klms", config)  # the same noise schedule, K-LMS's steps
    klms.set_timesteps(num_inference_steps)
    sigmas = klms.sigmas.double().numpy()  # num_inference_steps noise levels, then 0
    return sigmas[:-1], (sigmas[1:] - sigmas[:-1]) / sigmas[:-1]


# --------------------------------------------------------------------------- command line
def main(argv=None) -> None:
    """Print the dominant eigenvalue of dD/dx for each prompt and guidance scale (rows) and sigma (columns)."""
    parser = argparse.ArgumentParser(prog="python -m sdcourse.stiffness", description=main.__doc__)
    parser.add_argument("--model", default=None, help="'mini', a folder or a hub id (default: as load_pipeline)")
    parser.add_argument("--prompt", nargs="+", default=["a large red circle in the center on a blue background"])
    parser.add_argument("--guidance", nargs="+", type=float, default=[1.0, 2.0, 4.0, 7.5])
    parser.add_argument("--sigma", nargs="+", type=float, default=[0.5, 1.0, 2.0])
    parser.add_argument("--seed", nargs="+", type=int, default=[0], help="several seeds: the mean is printed")
    parser.add_argument("--iterations", type=int, default=10)
    args = parser.parse_args(argv)
    try:  # every value at the door, before the model loads
        for prompt in args.prompt:
            check_prompt(prompt)
        args.guidance = [check_guidance(g) for g in args.guidance]
        args.sigma = [check_number(v, "--sigma", 1e-6, 1e4, example=1.0) for v in args.sigma]
        args.seed = [check_seed(v) for v in args.seed]
        check_int(args.iterations, "--iterations", 1, MAX_ITERATIONS, example=10)
    except (TypeError, ValueError) as err:
        parser.error(str(err).replace("guidance_scale", "--guidance"))

    from .loader import load_pipeline

    pipe = load_pipeline(args.model, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    seeds = ", ".join(map(str, args.seed))
    print(f"dominant eigenvalue of dD/dx (power iteration, {args.iterations} iterations; mean over seeds {seeds}; "
          f"clean sample: DDIM 20 steps, guidance 7.5)")
    print(f"{'prompt':56} {'guidance':>8} " + " ".join(f"{f'sigma {s:g}':>10}" for s in args.sigma))
    for prompt in args.prompt:
        cleans = {seed: clean_latents(pipe, prompt, seed) for seed in args.seed}  # one picture per seed
        for guidance in args.guidance:
            means = [np.mean([dominant_eigenvalue(pipe, prompt, guidance, sigma, seed, args.iterations, clean).value
                              for seed, clean in cleans.items()]) for sigma in args.sigma]
            print(f"{prompt[:56]:56} {guidance:8g} " + " ".join(f"{m:10.2f}" for m in means))


if __name__ == "__main__":
    main()
