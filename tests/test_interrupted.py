"""Ctrl-C in the middle of a generation: the pipeline is left as it was, and the next call draws the same picture.

A learner who stops a cell half-way (Ctrl-C, or Colab's stop button, both a KeyboardInterrupt) must not be left
with a pipeline that has another scheduler, attention processors still recording or re-weighting, a changed
progress bar or a VAE in another mode: the next call of the same helper must give the picture it gave before.
Each case stops the helper at its UNet's third call."""
import numpy as np
import pytest
import torch
from PIL import Image

import sdcourse
from sdcourse import attention, interp


@pytest.fixture(scope="module")
def pipe():
    p = sdcourse.load_pipeline("mini")
    p.set_progress_bar_config(disable=True)
    return p


def state(pipe) -> dict:
    """Everything a helper may change on the pipeline and must put back."""
    return {
        "scheduler": (type(pipe.scheduler).__name__, dict(pipe.scheduler.config)),
        "processors": {k: type(v).__name__ for k, v in pipe.unet.attn_processors.items()},
        "progress": dict(getattr(pipe, "_progress_bar_config", {})),
        "training": (pipe.unet.training, pipe.vae.training, pipe.text_encoder.training),
        "grad": torch.is_grad_enabled(),
        "dtype": (pipe.unet.dtype, pipe.vae.dtype),
    }


def pictures(result) -> np.ndarray:
    """The pictures a helper returned, as one array, whatever it returns them in."""
    if isinstance(result, attention.AttentionResult):
        result = result.images
    if hasattr(result, "images"):
        result = result.images
    if isinstance(result, torch.Tensor):
        return result.detach().float().cpu().numpy()
    if isinstance(result, Image.Image):
        result = [result]
    return np.stack([np.asarray(im.convert("RGB") if isinstance(im, Image.Image) else im, dtype=np.float32)
                     for im in result])


class Stop:
    """Make ``pipe.unet`` raise KeyboardInterrupt at its ``at``-th call, as Ctrl-C would there."""

    def __init__(self, pipe, at: int = 3):
        self.unet, self.at, self.calls = pipe.unet, at, 0

    def __enter__(self):
        forward = type(self.unet).forward

        def stopping(*args, **kwargs):
            self.calls += 1
            if self.calls == self.at:
                raise KeyboardInterrupt
            return forward(self.unet, *args, **kwargs)

        self.unet.forward = stopping
        return self

    def __exit__(self, *exc):
        del self.unet.forward
        return False


def square(colour=(200, 40, 40)) -> Image.Image:
    im = Image.new("RGB", (64, 64), (0, 0, 0))
    im.paste(colour, (20, 20, 44, 44))
    return im


PROMPT = "a red square in the center on a black background"


CALLS = {
    "the pipeline itself": lambda p: p(PROMPT, num_inference_steps=8, generator=torch.Generator().manual_seed(1)),
    "generate": lambda p: sdcourse.generate(p, PROMPT, seed=1, steps=8, progress=False),
    "generate, K-LMS": lambda p: sdcourse.generate(p, PROMPT, seed=1, steps=8, progress=False,
                                                   scheduler=sdcourse.make_scheduler("klms", p.scheduler.config)),
    "img2img": lambda p: sdcourse.img2img(p, square(), PROMPT, strength=0.8, steps=10, seed=2),
    "inpaint": lambda p: sdcourse.inpaint(p, square(), Image.new("L", (64, 64), 255), "a blue circle", steps=8,
                                          seed=3),
    "animate": lambda p: sdcourse.animate(p, square(), PROMPT, 3, zoom=1.1, steps=8, progress=False),
    "a walk's frames": lambda p: interp.render_frames(
        p, interp.slerp_frames(torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(4)),
                               torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5)), 3),
        sdcourse.encode_prompt(p.tokenizer, p.text_encoder, [PROMPT]), steps=6, progress=False),
    "cross-attention maps": lambda p: attention.generate_with_maps(p, [PROMPT], seed=6, steps=8, progress=False),
    "re-weighted words": lambda p: attention.generate_with_maps(p, [PROMPT], seed=6, steps=8, progress=False,
                                                                weights={attention.token_index(p.tokenizer, PROMPT, "red"): 3.0}),
}


@pytest.mark.parametrize("name", CALLS, ids=list(CALLS))
def test_ctrl_c_leaves_the_pipeline_as_it_was(pipe, name):
    call = CALLS[name]
    before = state(pipe)
    expected = pictures(call(pipe))
    with Stop(pipe) as stop, pytest.raises(KeyboardInterrupt):
        call(pipe)
    assert stop.calls == stop.at, "the helper never reached its third UNet call"
    assert state(pipe) == before
    np.testing.assert_array_equal(pictures(call(pipe)), expected)
