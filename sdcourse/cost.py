"""What a chapter costs with Stable Diffusion v1.x on a free Colab T4, and how to count it.

Almost all of a chapter's time on a GPU goes into UNet calls: one per picture per sampling
step (with classifier-free guidance that call sees two latents, the prompt's and the empty
prompt's). :func:`colab_cost` turns a count of such calls into minutes on a T4, and
:func:`colab_note` is the sentence that states a chapter's count and minutes in the note above its Colab
setup cell (:func:`stated_calls` reads the count back).

The per-call time is a published figure, not a measurement of ours: the diffusers
documentation's PyTorch 2.0 benchmark ("Accelerated PyTorch 2.0 support in Diffusers",
section Benchmark, table "T4 (batch size: 1)", row "SD - txt2img", column "torch 2.0 - no
compile") gives **6.9 iterations per second** for Stable Diffusion v1.5 in float16 at 512 x 512
(the same UNet architecture as v1-4). One iteration is one guided UNet call, so a call costs
1 / 6.9 = 0.145 s. VAE decodes, the text encoder and loading the model come on top and are not
counted here; ``scripts/gpu_check.sh`` measures whole notebooks on a GPU.

:func:`count_unet_calls` counts the calls a piece of code really makes (the test suite and
``scripts/gpu_check.sh`` check each notebook's stated count with it).

Example::

    >>> print(sdcourse.colab_cost(400))
    Colab cost at SD size: 400 UNet calls x 0.145 s (T4, float16, 512 px) = about 58 s (1.0 min) of UNet time.
"""
from __future__ import annotations

import contextlib
import re

from .validate import check_whole

T4_ITERATIONS_PER_S = 6.9
"""Guided UNet calls per second, SD v1.5 float16 512 px, batch 1, free Colab GPU (T4); see the module text."""

T4_SECONDS_PER_CALL = 1 / T4_ITERATIONS_PER_S

T4_SOURCE = ("diffusers documentation, 'Accelerated PyTorch 2.0 support in Diffusers', Benchmark, "
             "T4 (batch size: 1), SD - txt2img, torch 2.0 - no compile: 6.9 iterations/s "
             "(https://huggingface.co/docs/diffusers/v0.17.0/en/optimization/torch2.0)")

CHAPTER_GOAL_S = 5 * 60
"""The course's goal: every chapter's UNet work fits in 5 minutes on a free Colab T4."""


def colab_cost(unet_calls: int) -> str:
    """One line: ``unet_calls`` guided UNet calls at SD size, and what they cost on a Colab T4.

    A call is one picture's step (a batch of 4 pictures for 20 steps is 80 calls).
    """
    unet_calls = check_whole(unet_calls, "unet_calls", 0)
    seconds = unet_calls * T4_SECONDS_PER_CALL  # the published T4 rate
    return (f"Colab cost at SD size: {unet_calls} UNet calls x {T4_SECONDS_PER_CALL:.3f} s (T4, float16, "
            f"512 px) = about {seconds:.0f} s ({seconds / 60:.1f} min) of UNet time.")


NOTE_CALLS = re.compile(r"\((\d+) UNet calls at SD size")


def colab_note(unet_calls: int) -> str:
    """The sentence a chapter's Colab note states its cost in: minutes of UNet time on a free T4 and the count.

    Chapter 1's last part explains the estimate; :func:`stated_calls` reads the count back from a notebook.
    """
    unet_calls = check_whole(unet_calls, "unet_calls", 0)
    if unet_calls == 0:
        return "On Colab this chapter makes no Stable Diffusion UNet call (0 UNet calls at SD size)."
    seconds = unet_calls * T4_SECONDS_PER_CALL
    took = f"{seconds:.0f} s" if seconds < 60 else f"{seconds / 60:.1f} min"
    return (f"On Colab with the real Stable Diffusion, this chapter's pictures take about {took} of UNet time on a "
            f"free T4 ({unet_calls} UNet calls at SD size; chapter 1's last part explains the estimate).")


def stated_calls(notebook) -> int | None:
    """The UNet calls an ``nbformat`` notebook states in its Colab note (before its first code cell), or None."""
    for cell in notebook.cells:
        if cell.cell_type == "code":
            return None  # the note comes before the first code cell, the Colab setup
        match = NOTE_CALLS.search(cell.source)
        if match:
            return int(match.group(1))
    return None


class UNetCounter:
    """Counts UNet forward passes; ``calls`` is in pictures-steps: the rows of a guided pass count half
    (each picture's latents go through twice, for the prompt and the empty prompt), an unguided pass's
    rows count one each."""

    def __init__(self):
        self.forwards = 0
        self.rows = 0
        self.picture_steps = 0

    def add(self, sample) -> None:
        """Count one forward pass of the latents ``sample`` (batch first)."""
        rows = int(sample.shape[0])
        self.forwards += 1
        self.rows += rows
        self.picture_steps += rows // 2 if is_guided_batch(sample) else rows

    @property
    def calls(self) -> int:
        """Picture-steps: what one guided UNet call per picture per step costs on a GPU."""
        return self.picture_steps

    def as_dict(self) -> dict:
        return {"unet_forwards": self.forwards, "unet_rows": self.rows, "unet_calls": self.calls}


def is_guided_batch(sample) -> bool:
    """Whether a UNet input is classifier-free guidance's doubled batch: an even number of rows whose two
    halves are the same latents (diffusers and the course's loops pass ``torch.cat([latents] * 2)``).
    An unguided batch of pictures is counted row by row (two identical unguided pictures in one batch of 2
    would count as one)."""
    import torch

    rows = int(sample.shape[0])
    return rows >= 2 and rows % 2 == 0 and torch.equal(sample[: rows // 2], sample[rows // 2 :])


_original_forward = None


def start_counting() -> UNetCounter:
    """Count every ``UNet2DConditionModel`` forward pass from now on, until :func:`stop_counting`."""
    global _original_forward
    from diffusers import UNet2DConditionModel

    if _original_forward is not None:
        raise RuntimeError("UNet calls are already being counted; call stop_counting() first.")
    counter = UNetCounter()
    original = _original_forward = UNet2DConditionModel.forward

    def counted(self, sample, *args, **kwargs):
        counter.add(sample)
        return original(self, sample, *args, **kwargs)

    UNet2DConditionModel.forward = counted
    return counter


def stop_counting() -> None:
    """Stop counting (restores ``UNet2DConditionModel.forward``)."""
    global _original_forward
    from diffusers import UNet2DConditionModel

    if _original_forward is not None:
        UNet2DConditionModel.forward = _original_forward
        _original_forward = None


@contextlib.contextmanager
def count_unet_calls():
    """Count every ``UNet2DConditionModel`` forward pass made inside the ``with`` block.

    Example::

        >>> with sdcourse.cost.count_unet_calls() as counter:
        ...     pipe("a red circle", num_inference_steps=20)
        >>> counter.calls
        20
    """
    counter = start_counting()
    try:
        yield counter
    finally:
        stop_counting()
