"""A fast K-LMS / Euler sampling loop: precomputed coefficients, device-resident, CUDA-graph replay.

The plain loop of chapter 4 asks the scheduler object for help at every step:
``scale_model_input`` looks up sigma, ``step`` integrates a polynomial with scipy
to get the K-LMS weights, and Python lists hold the old derivatives.  None of
that depends on the picture, only on the chosen timesteps, so this module does
it all once, before the loop:

* ``lms_coefficients`` integrates the K-LMS weights for every step (Euler is the
  same formula with order 1: its single weight is ``sigma[i+1] - sigma[i]``);
* the per-step arithmetic is written in the same order as diffusers' schedulers,
  so on a CPU the result equals the plain loop bit for bit;
* the sigmas, input scales, timesteps and weights become tensors on the device,
  so the loop never waits for the CPU;
* ``UNetRunner`` runs the UNet eagerly, through ``torch.compile``, and/or replays
  it from a CUDA graph (static input buffers, warm-up on a side stream), so one
  step costs one graph launch instead of about a thousand kernel launches.

Where a speed-up is not available (CUDA graphs on a CPU, a ``torch.compile`` that
fails) it prints one line and runs eagerly instead of crashing.

Example (CPU, mini model)::

    import torch, sdcourse
    from sdcourse.fast_loop import FastLoop
    pipe = sdcourse.load_pipeline("mini", device="cpu", dtype=torch.float32)
    loop = FastLoop(pipe.unet, pipe.scheduler, scheduler="klms", steps=20)
    emb = sdcourse.encode_prompt(pipe.tokenizer, pipe.text_encoder,
                                 ["a small red circle in the center on a black background"])
    latents = loop(emb, seed=0)                      # [1, 4, 8, 8], float32
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers import EulerDiscreteScheduler, LMSDiscreteScheduler

from .seeds import make_generator
from .validate import check_guidance, check_lms_scheduler, check_size, check_steps, check_whole

# name -> (diffusers scheduler class whose sigmas we reuse, order of the multistep formula)
FAST_SCHEDULERS: dict[str, tuple[type, int]] = {
    "klms": (LMSDiscreteScheduler, 4),
    "euler": (EulerDiscreteScheduler, 1),
}


def _scheduler_spec(name) -> tuple[type, int]:
    if name not in FAST_SCHEDULERS:
        raise ValueError(
            f"Unknown scheduler {name!r} for the fast loop; choose one of {sorted(FAST_SCHEDULERS)}."
        )
    return FAST_SCHEDULERS[name]


def lms_coefficients(scheduler, order: int = 4) -> torch.Tensor:
    """K-LMS weights for every step of ``scheduler``, computed once (float64, shape ``[steps, order]``).

    ``scheduler`` is an ``LMSDiscreteScheduler`` after ``set_timesteps``.  Row ``i``
    holds the weights of the derivatives of steps ``i, i-1, i-2, ...``: the
    Lagrange polynomial through the last ``min(i + 1, order)`` sigmas, integrated
    from ``sigma[i]`` to ``sigma[i+1]`` with ``scipy.integrate.quad``.  diffusers'
    public ``scheduler.get_lms_coefficient`` does that integration; its ``step``
    calls it again at every step of every picture, here it runs once per
    (step, weight) before the loop, so the loop only multiplies and adds.
    Unused weights (the first steps have no history yet) are 0.

    >>> sched = LMSDiscreteScheduler.from_config(pipe.scheduler.config); sched.set_timesteps(20)  # doctest: +SKIP
    >>> lms_coefficients(sched).shape  # doctest: +SKIP
    torch.Size([20, 4])
    """
    order = check_lms_scheduler(scheduler, order)  # a K-LMS scheduler, order >= 1
    steps = len(scheduler.timesteps)
    coeffs = torch.zeros(steps, order, dtype=torch.float64)  # unused weights stay 0
    for i in range(steps):
        n = min(i + 1, order)  # step i has i + 1 derivatives so far, at most `order`
        for j in range(n):  # weight of the derivative j steps back: the integral of its Lagrange basis
            coeffs[i, j] = scheduler.get_lms_coefficient(n, i, j)
    return coeffs


class UNetRunner:
    """Calls ``unet(x, t, emb)`` and returns the noise prediction, as fast as the device allows.

    Modes (chosen in the constructor, each falling back with one printed line):
    eager; ``channels_last`` (convolutions read NHWC memory; converts ``unet`` in
    place); ``compile`` (``torch.compile``); ``cuda_graph`` (records one UNet call
    into a CUDA graph and replays it: inputs are copied into static buffers and
    the returned tensor is the graph's static output, overwritten by the next call).

    Shapes: ``x`` ``[N, C, h, w]``, ``t`` a 0-d tensor, ``emb`` ``[N, tokens, dim]``;
    returns ``[N, C, h, w]``.  ``N`` is fixed for the graph (the doubled CFG batch).
    """

    def __init__(self, unet, x_shape, emb_shape, *, channels_last: bool = False,
                 compile: bool = False, cuda_graph: bool | None = None, verbose: bool = True):
        self.unet = unet
        self.device = unet.device
        self.dtype = unet.dtype
        self.x_shape = tuple(x_shape)
        self.emb_shape = tuple(emb_shape)
        self.channels_last = bool(channels_last)
        self.verbose = verbose
        self.messages: list[str] = []
        if self.channels_last:
            unet.to(memory_format=torch.channels_last)
        self._fn: Callable = self._eager
        self.compiled = False
        if compile:
            self._try_compile()
        if cuda_graph is None:
            cuda_graph = self.device.type == "cuda"
        self.graphed = False
        if cuda_graph:
            self._try_capture()

    def _say(self, line: str) -> None:
        self.messages.append(line)
        if self.verbose:
            print(line)

    def _eager(self, x, t, emb):
        return self.unet(x, t, encoder_hidden_states=emb, return_dict=False)[0]

    def _example(self):
        x = torch.zeros(self.x_shape, device=self.device, dtype=self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        t = torch.tensor(999.0, device=self.device)
        emb = torch.zeros(self.emb_shape, device=self.device, dtype=self.dtype)
        return x, t, emb

    def _try_compile(self) -> None:
        try:
            compiled = torch.compile(self.unet, dynamic=False)  # fixed shapes suit CUDA graphs
            x, t, emb = self._example()
            with torch.no_grad():  # compiles now, so a failure shows here and not mid-loop
                compiled(x, t, encoder_hidden_states=emb, return_dict=False)
        except Exception as err:  # no compiler, unsupported platform, ...: run eagerly
            first = (str(err).strip().splitlines() or [""])[0][:120]
            self._say(f"torch.compile is unavailable here ({type(err).__name__}: {first}); "
                      "the UNet runs eagerly.")
            return
        self._fn = lambda x, t, emb: compiled(x, t, encoder_hidden_states=emb, return_dict=False)[0]
        self.compiled = True

    def _try_capture(self) -> None:
        if self.device.type != "cuda" or not torch.cuda.is_available():
            self._say(f"CUDA graphs need a CUDA GPU; on {self.device.type} the UNet runs without them.")
            return
        try:
            self._static_in = self._example()
            with torch.no_grad():
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):  # warm-up: cuDNN/cuBLAS choices, compile, allocator
                    for _ in range(3):
                        self._fn(*self._static_in)
                torch.cuda.current_stream().wait_stream(side)
                self._graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(self._graph):
                    self._static_out = self._fn(*self._static_in)
        except Exception as err:
            first = (str(err).strip().splitlines() or [""])[0][:120]
            self._say(f"CUDA graph capture failed ({type(err).__name__}: {first}); the UNet runs without it.")
            self._graph = None
            return
        self.graphed = True

    def __call__(self, x: torch.Tensor, t: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if not self.graphed:
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            return self._fn(x.to(self.dtype), t, emb.to(self.dtype))
        sx, st, se = self._static_in
        sx.copy_(x)
        st.copy_(t)
        se.copy_(emb)
        self._graph.replay()
        return self._static_out


class FastLoop:
    """Classifier-free-guided K-LMS or Euler sampling with everything precomputed on the device.

    Build it once for a (scheduler, steps, batch, size) combination, then call it
    for as many pictures as you like::

        loop = FastLoop(pipe.unet, pipe.scheduler, scheduler="klms", steps=50, batch_size=1)
        emb = encode_prompt(pipe.tokenizer, pipe.text_encoder, ["a red circle"])  # [2, tokens, dim]
        latents = loop(emb, seed=0)                                               # [1, 4, h, w]

    ``scheduler_or_config``: any diffusers scheduler (or its ``.config``) carrying
    the model's noise schedule; its ``timestep_spacing`` and sigma options are kept.
    ``height``/``width`` in pixels (default: the UNet's sample size times
    ``vae_scale_factor``).  Latents are accumulated in float32 even when the UNet
    runs in float16.  The CFG batch is doubled: ``[uncond; cond]`` in one UNet call.
    """

    def __init__(self, unet, scheduler_or_config, *, scheduler: str = "klms", steps: int = 50,
                 guidance_scale: float = 7.5, batch_size: int = 1, height: int | None = None,
                 width: int | None = None, vae_scale_factor: int = 8, channels_last: bool = False,
                 compile: bool = False, cuda_graph: bool | None = None, verbose: bool = True):
        cls, order = _scheduler_spec(scheduler)
        steps = check_steps(steps)
        guidance_scale = check_guidance(guidance_scale)
        batch_size = check_whole(batch_size, "batch_size", 1)
        default = unet.config.sample_size * vae_scale_factor
        height = default if height is None else height
        width = default if width is None else width
        height, width = check_size(height, width, multiple=vae_scale_factor)
        config = getattr(scheduler_or_config, "config", scheduler_or_config)
        if config.get("prediction_type", "epsilon") != "epsilon":
            raise ValueError(f"The fast loop needs an epsilon-predicting model, got prediction_type "
                             f"{config.get('prediction_type')!r}.")

        self.name, self.order, self.steps = scheduler, order, steps
        self.guidance_scale = guidance_scale
        self.batch_size = batch_size
        self.device = unet.device
        self.latent_shape = (batch_size, unet.config.in_channels,
                             height // vae_scale_factor, width // vae_scale_factor)

        # --- everything the scheduler would recompute per step, computed once ---
        sched = cls.from_config(config)
        sched.set_timesteps(steps)
        sigmas = sched.sigmas                                          # float32, [steps + 1], last is 0
        self.init_noise_sigma = float(sched.init_noise_sigma)
        self.timesteps = sched.timesteps.to(self.device, torch.float32)  # what the UNet sees
        self.sigmas = sigmas.to(self.device)
        # the input scale of every step, with the scheduler's own float32 expression
        self.in_denom = torch.stack([(s**2 + 1) ** 0.5 for s in sigmas[:-1]]).to(self.device)
        if order == 1:  # Euler: the integral of 1 from sigma[i] to sigma[i+1]
            coeffs = (sigmas[1:] - sigmas[:-1])[:, None]
        else:
            coeffs = lms_coefficients(sched, order)
        self.coeffs = coeffs.to(self.device, torch.float32)            # [steps, order]

        self.unet = unet
        self._runner_options = dict(channels_last=channels_last, compile=compile,
                                    cuda_graph=cuda_graph, verbose=verbose)
        self.runner: UNetRunner | None = None  # built on the first call, when the token count is known

    def _get_runner(self, tokens: int) -> UNetRunner:
        if self.runner is None:
            n = 2 * self.batch_size
            self.runner = UNetRunner(self.unet, (n, *self.latent_shape[1:]),
                                     (n, tokens, self.unet.config.cross_attention_dim),
                                     **self._runner_options)
        elif self.runner.graphed and self.runner.emb_shape[1] != tokens:
            raise ValueError(f"this loop's CUDA graph was recorded for {self.runner.emb_shape[1]} tokens, "
                             f"got {tokens}.")
        return self.runner

    def _check_embeddings(self, text_embeddings) -> torch.Tensor:
        rows, dim = 2 * self.batch_size, self.unet.config.cross_attention_dim
        shape = tuple(getattr(text_embeddings, "shape", ()))
        if not isinstance(text_embeddings, torch.Tensor) or len(shape) != 3 or shape[0] != rows \
                or shape[2] != dim:
            raise ValueError(
                f"text_embeddings must be encode_prompt's [uncond; cond] tensor of shape "
                f"[{rows}, tokens, {dim}] for batch_size {self.batch_size}, got "
                f"{shape if isinstance(text_embeddings, torch.Tensor) else type(text_embeddings).__name__}.")
        return text_embeddings.to(self.device)

    def __call__(self, text_embeddings: torch.Tensor, seed: int | None = None, *,
                 generator: torch.Generator | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Run the loop; returns float32 latents ``[batch, C, h, w]`` (decode with ``latents_to_pil``).

        ``text_embeddings``: :func:`sdcourse.encode_prompt`'s ``[uncond; cond]``,
        ``[2 * batch, tokens, dim]``.  Starting noise, first given wins: ``noise``
        (unit variance, ``[batch, C, h, w]``), ``generator``, or ``seed`` (a CPU
        generator, so the same seed gives the same noise as ``sdcourse.generate``).
        """
        emb, noise = self._check_call(text_embeddings, seed, generator, noise)  # [2B, tokens, dim]; unit noise
        runner = self._get_runner(emb.shape[1])  # eager, compiled or a CUDA graph
        x = noise.to(self.device, torch.float32) * self.init_noise_sigma  # scaled to the first step's noise level
        history: list[torch.Tensor] = []  # derivatives of the last `order` steps, oldest first
        g = self.guidance_scale
        with torch.no_grad():
            for i in range(self.steps):
                x_in = torch.cat([x, x]) / self.in_denom[i]  # one copy per CFG half, scaled by 1/sqrt(sigma^2+1)
                eps_u, eps_c = runner(x_in, self.timesteps[i], emb).float().chunk(2)  # the two noise guesses
                eps = eps_u + g * (eps_c - eps_u)  # classifier-free guidance
                sigma = self.sigmas[i]  # this step's noise level
                x0 = x - sigma * eps  # predicted clean latents
                history.append((x - x0) / sigma)  # dx/dsigma (= eps, up to rounding)
                if len(history) > self.order:  # keep only the last `order` derivatives
                    history.pop(0)
                x = x + sum(self.coeffs[i, j] * d for j, d in enumerate(reversed(history)))  # step to sigma[i+1]
        return x  # sigma 0: the clean latents

    def _check_call(self, text_embeddings, seed, generator, noise) -> tuple[torch.Tensor, torch.Tensor]:
        """The call's checks: the embeddings, and unit-variance start noise (``noise``, else drawn)."""
        emb = self._check_embeddings(text_embeddings)
        if noise is None:
            if generator is None:
                if seed is None:
                    raise ValueError("FastLoop needs a seed (a whole number), a generator or a noise tensor.")
                generator = make_generator(seed)
            noise = torch.randn(self.latent_shape, generator=generator, device=generator.device)
        if tuple(noise.shape) != self.latent_shape:
            raise ValueError(f"noise must have shape {self.latent_shape}, got {tuple(noise.shape)}.")
        return emb, noise
