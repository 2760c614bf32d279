"""Chapter 13: train a small text-to-image diffusion model yourself, with the shipped model's own training code.

:func:`train` runs stage 5 of ``sdcourse.mini.train`` (:func:`sdcourse.mini.train.train_unet`) with the
recipe ``Recipe.classroom()``: a new UNet learns SD's denoising objective on the latents of the bundled VAE and
the embeddings of the bundled text encoder, both frozen. While it trains, a progress bar moves, the loss curve
grows, and every ``sample_every`` steps the model draws pictures of held-out captions, which the course's
checker reads (``sdcourse.mini.evaluate``). The command line runs the same recipe::

    python -m sdcourse.mini.train --preset classroom --out runs/classroom   # exports to runs/classroom/model

>>> from sdcourse.mini.train import Recipe
>>> Recipe.classroom().frozen_from, Recipe.classroom(seed=1).seed
('bundled', 1)
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import shapes
from .mini import evaluate
from .mini import train as mini_train
from .validate import check_int

MEASURED = Path(__file__).resolve().parent / "measured"
"""Records of measurements that chapters print (made by the scripts they name), shipped with the package."""
ATTRIBUTES = shapes.ATTRIBUTES
CHANCE = {"colour": 1 / len(shapes.COLOURS), "background": 1 / len(shapes.COLOURS), "shape": 1 / len(shapes.SHAPES),
          "position": 1 / len(shapes.POSITIONS), "size": 1 / len(shapes.SIZES)}


@dataclass
class Snapshot:
    """What the model drew at one step of training: the checker's accuracy per attribute on held-out captions
    (guidance 7.5, DDIM 20 steps) and the first pictures."""

    step: int
    accuracy: dict
    images: list


@dataclass
class TrainingRun:
    """A finished run: the recipe, the pipeline around the trained UNet (EMA weights), every step's loss, the
    snapshots, the measured scaling factor of the frozen VAE, the training time and the checkpoint folder."""

    recipe: mini_train.Recipe
    pipe: object
    losses: list = field(default_factory=list)
    snapshots: list = field(default_factory=list)
    scaling: float = 0.0
    seconds: float = 0.0
    out: Path | None = None

    def unet_weights(self) -> dict:
        """The trained UNet's weights (a copy), for comparing two runs."""
        return {k: v.detach().clone() for k, v in self.pipe.unet.state_dict().items()}


def heldout_captions(n: int = 64) -> list[tuple[shapes.Scene, str]]:
    """``n`` (scene, caption) pairs of scenes that training never sees (the checker's held-out set)."""
    return evaluate.heldout_prompts(check_int(n, "n", 1, 10_000))


def pipeline(text_encoder, unet, vae=None):
    """A StableDiffusionPipeline around a trained UNet, with the bundled VAE, text encoder and tokenizer and
    DDIM on SD's schedule; its progress bar is off."""
    if vae is None:
        vae, _ = mini_train.frozen_parts("bundled")
    pipe = mini_train.build_pipeline(vae, text_encoder, unet)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def accuracy(pipe, guidance: float = 7.5, n: int = 64, steps: int = 20, seed: int = 0):
    """The checker's accuracy per attribute on ``n`` held-out captions (one picture each, DDIM, ``steps``
    steps, caption i with seed ``seed + i``) and the pictures: (accuracy dict, images)."""
    pairs = heldout_captions(n)
    images = evaluate.draw_captions(pipe, [c for _, c in pairs], guidance, steps, seed=seed, progress=False)
    return evaluate.attribute_accuracy(map(evaluate.read_picture, images), [scene for scene, _ in pairs]), images


def dropout_record() -> dict:
    """The table of the classroom recipe trained with and without caption dropout, as
    ``scripts/classroom_dropout.py`` measured it (with the machine it ran on)."""
    return json.loads((MEASURED / "classroom_dropout.json").read_text())


def smooth(values, window: int = 50) -> np.ndarray:
    """The running mean of ``values`` over the last ``window`` steps (shorter at the start)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return values
    window = check_int(window, "window", 1, 10**9)
    sums = np.cumsum(np.insert(values, 0, 0.0))
    starts = np.maximum(np.arange(1, len(values) + 1) - window, 0)
    return (sums[1:] - sums[starts]) / (np.arange(1, len(values) + 1) - starts)


def progress_figure(losses, snapshots, total_steps: int):
    """The loss curve (every step, and its running mean) beside the checker's accuracy per attribute at each
    snapshot, with chance level dashed: a matplotlib figure."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
    steps = np.arange(1, len(losses) + 1)
    left.plot(steps, losses, color="0.8", linewidth=0.6, label="each step")
    left.plot(steps, smooth(losses), color="C0", label="mean of the last 50")
    left.set(xlim=(0, total_steps), xlabel="training step", ylabel="denoising loss", title="loss (min-SNR weighted)")
    if len(losses) and min(losses) > 0:
        left.set_yscale("log")
    left.legend(loc="upper right", fontsize=8)
    for i, attribute in enumerate(ATTRIBUTES):
        xs = [s.step for s in snapshots]
        right.plot(xs, [100 * s.accuracy[attribute] for s in snapshots], "o-", color=f"C{i}", label=attribute)
        right.axhline(100 * CHANCE[attribute], color=f"C{i}", linestyle=":", linewidth=0.8)
    right.set(xlim=(0, total_steps), ylim=(0, 100), xlabel="training step", ylabel="% read right",
              title="held-out captions, guidance 7.5 (dotted: chance)")
    right.legend(loc="upper left", fontsize=8, ncol=2)
    fig.tight_layout()
    plt.close(fig)
    return fig


_LATENTS: dict = {}


def frozen_latents(vae, device: str, recipe: mini_train.Recipe):
    """``mini_train.latent_cache`` of the frozen VAE, computed once per process for the same VAE file and looks:
    the pool does not change while the VAE is frozen, and encoding it takes a minute on a CPU."""
    folder = mini_train.MINI_MODEL_DIR if recipe.frozen_from == "bundled" else Path(recipe.frozen_from)
    weights = sorted((folder / "vae").glob("*.safetensors")) + sorted((folder / "vae").glob("*.bin"))
    stamp = tuple((str(w.resolve()), w.stat().st_mtime_ns, w.stat().st_size) for w in weights)
    key = (stamp, recipe.stage_seed("looks"), recipe.looks_per_scene, recipe.look_strength, str(device))
    if key not in _LATENTS:
        _LATENTS[key] = mini_train.latent_cache(vae, device, recipe)
    return _LATENTS[key]


def train(recipe: mini_train.Recipe | None = None, out: str | Path | None = None, sample_every: int = 300,
          n_eval: int = 64, live: bool = True, device: str | None = None) -> TrainingRun:
    """Train a UNet with ``recipe`` (default ``Recipe.classroom()``): stage 5 of ``sdcourse.mini.train``, on the
    latents of the frozen VAE and text encoder that ``recipe.frozen_from`` names.

    Every ``sample_every`` steps (and at the end) the EMA weights draw ``n_eval`` held-out captions at
    guidance 7.5 and the checker reads them (:class:`Snapshot`). With ``live``, a progress bar and the figure
    of :func:`progress_figure` update as it goes. Checkpoints go to ``out`` (default: a new temporary folder);
    rerun with the same ``out``, the run resumes. On a GPU (``device`` "cuda", the default when there is one)
    it is the same run, only faster; only on a CPU are two runs of one seed identical to the bit."""
    from tqdm.auto import tqdm

    recipe = mini_train.Recipe.classroom() if recipe is None else recipe
    if not isinstance(recipe, mini_train.Recipe):
        raise TypeError(f"recipe must be a sdcourse.mini.train.Recipe, got {type(recipe).__name__}")
    if not recipe.frozen_from:
        raise ValueError("this trains the UNet alone, on a frozen VAE and text encoder: give a recipe with "
                         "frozen_from (Recipe.classroom() has it); the full recipe is python -m sdcourse.mini.train")
    sample_every = check_int(sample_every, "sample_every", 1, 10**9)
    n_eval = check_int(n_eval, "n_eval", 1, 10_000)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(tempfile.mkdtemp(prefix="sdcourse-classroom-")) if out is None else Path(out)
    mini_train.check_resume(out, recipe)  # a folder holding another recipe's run is refused in one sentence
    if (out / "unet.pt").exists() and mini_train.load_ckpt(out / "unet.pt", "cpu")["step"] >= recipe.unet_steps:
        raise ValueError(f"{out} already holds this recipe's finished run ({recipe.unet_steps} steps): there is "
                         f"nothing left to train. Give another folder (or none) to train again.")
    vae, text_encoder = mini_train.frozen_parts(recipe.frozen_from, device)
    mean, std, scaling, scene_of = frozen_latents(vae, device, recipe)
    run = TrainingRun(recipe, None, scaling=scaling, out=out)
    # redrawn at most every 2 s: a bar redrawn ten times a second sends thousands of messages to the notebook,
    # and past about a thousand the kernel's output channel drops them (the cell's last outputs among them)
    bar = tqdm(total=recipe.unet_steps, desc="training the UNet", disable=not live, mininterval=2.0)
    handle = None
    if live:
        from IPython.display import display

        handle = display(progress_figure([], [], recipe.unet_steps), display_id=True)

    def on_step(step, loss, ema_models):
        run.losses.append(loss)
        bar.update(1)
        if step % 10 == 0:
            bar.set_postfix(loss=f"{smooth(run.losses)[-1]:.4f}", refresh=False)
        if step % sample_every == 0 or step == recipe.unet_steps:
            te, unet = ema_models()
            row, images = accuracy(pipeline(te, unet, vae), 7.5, n_eval)
            run.snapshots.append(Snapshot(step, row, images[:8]))
        if handle is not None and (step % 100 == 0 or step == recipe.unet_steps):
            handle.update(progress_figure(run.losses, run.snapshots, recipe.unet_steps))

    start = time.perf_counter()
    text_encoder, unet = mini_train.train_unet(out, recipe, mean, std, scaling, device, scene_of,
                                               text_encoder=text_encoder, on_step=on_step)
    bar.close()
    run.seconds = time.perf_counter() - start
    run.pipe = pipeline(text_encoder, unet, vae)
    return run
