"""A playground: every knob of the course's pipelines on one panel of ipywidgets, no code to edit.

Four modes, each a call the chapters built:

* **txt2img**: :func:`sdcourse.loop.generate` (chapter 4's loop), 1 to 4 pictures from one seed;
* **img2img**: :func:`sdcourse.img2img.img2img` from a course picture in ``data/`` or an upload;
* **inpaint**: :func:`sdcourse.inpaint.inpaint` with a mask preset from ``data/`` or an upload
  (white = repaint), the masked region shown in red over the picture;
* **dream**: a walk from one seed and prompt to another (:func:`sdcourse.interp.slerp_frames`,
  :func:`sdcourse.interp.render_frames`), shown as an animated GIF.

Every result comes with the code that makes it again (:func:`reproduce_code`): the same
``sdcourse`` calls with the same numbers, so it gives the same pixels. :func:`run` is the
part without widgets; :class:`Playground` puts the knobs around it.

>>> pg = Playground(pipe)        # doctest: +SKIP
>>> pg                           # doctest: +SKIP  (in a notebook: the panel)
>>> pg.prompt.value = "a red circle"; pg.generate()  # doctest: +SKIP  (drive it from code)
"""
from __future__ import annotations

import base64
import io
import math
import os
import random
import threading
from dataclasses import asdict, dataclass, replace

import torch
from PIL import Image, UnidentifiedImageError

from .course_data import load_picture
from .images import image_grid, upscale
from .img2img import img2img
from .inpaint import inpaint
from .interp import render_frames, slerp_frames
from .loader import is_mini_model
from .loop import encode_prompt, generate, prepare_timesteps
from .schedulers import set_scheduler
from .seeds import make_generator
from .validate import (check_choice, check_guidance, check_instance, check_int, check_literal, check_num_frames,
                       check_pipeline, check_same_pair_size, check_seed, check_size, check_steps, check_strength,
                       check_text, check_upload)
from .video import gif_bytes

MODES = ("txt2img", "img2img", "inpaint", "dream")
SCHEDULERS = {"PNDM": "pndm", "DDIM": "ddim", "K-LMS": "klms", "Euler": "euler", "DPM-Solver++": "dpm++"}
PICTURES = ("scene", "sketch")          # start pictures in data/
MASKS = ("mask_center", "mask_top_left")  # mask presets in data/ (white = repaint)
UPLOAD = "upload"
HISTORY = 8                             # results kept in the strip


class Stopped(Exception):
    """Raised inside the loop (from a UNet hook) when the Stop button was pressed."""


@dataclass(frozen=True)
class Settings:
    """Everything that decides a result. ``picture``/``mask``: a name in ``data/`` or ``"upload"``."""

    mode: str = "txt2img"
    prompt: str = "a red circle in the center on a blue background"
    negative: str = ""
    n_images: int = 1
    steps: int = 20
    guidance: float = 7.5
    seed: int = 0
    width: int = 64
    height: int = 64
    scheduler: str = "ddim"
    strength: float = 0.6
    picture: str = "scene"
    mask: str = "mask_center"
    prompt_b: str = ""
    seed_b: int = 1
    frames: int = 6


def default_size(pipe) -> int:
    """The model's picture side in pixels: ``unet.config.sample_size * vae_scale_factor``."""
    check_pipeline(pipe)
    return pipe.unet.config.sample_size * pipe.vae_scale_factor


def _data_side(pipe) -> int:
    # course pictures are drawn at multiples of 64 px; take the one nearest the model's size
    return max(64, round(default_size(pipe) / 64) * 64)


# --------------------------------------------------------------------------- checks
def problems(s: Settings, uploads: dict | None = None, open_pictures: bool = True) -> dict[str, str]:
    """Check the settings; returns ``{knob: one sentence}`` for each bad knob (empty when all is well).

    ``open_pictures=False`` leaves out opening the start picture and mask (for code that only names them).
    """
    check_instance(s, "settings", Settings, "a playground Settings(...)")
    uploads = uploads or {}
    found = {}

    def guard(knob, check, *args):
        try:
            check(*args)
        except (TypeError, ValueError) as err:
            found[knob] = str(err)

    guard("mode", check_choice, s.mode, "mode", MODES)
    for knob in ("prompt", "negative", "prompt_b"):
        guard(knob, check_text, getattr(s, knob), knob)
    if "prompt" not in found and not s.prompt.strip():
        found["prompt"] = "The prompt is empty: type what the picture should show, e.g. 'a red circle'."
    if s.mode != "dream":
        guard("n_images", check_int, s.n_images, "n_images (the number of pictures)", 1, 4, 2)
    guard("steps", check_steps, s.steps)
    guard("guidance", check_guidance, s.guidance)
    guard("seed", check_seed, s.seed)
    guard("width", check_size, 8, s.width)
    guard("height", check_size, s.height, 8)
    guard("scheduler", check_choice, s.scheduler, "scheduler", list(SCHEDULERS.values()),
          {v: k for k, v in SCHEDULERS.items()})
    if s.mode == "img2img":
        guard("strength", check_strength, s.strength)
    if s.mode in ("img2img", "inpaint"):
        guard("picture", check_choice, s.picture, "picture", (*PICTURES, UPLOAD))
    if s.mode == "inpaint":
        guard("mask", check_choice, s.mask, "mask", (*MASKS, UPLOAD))
    if open_pictures and s.mode in ("img2img", "inpaint") and not found.keys() & {"picture", "width", "height"}:
        try:
            start_picture(s, uploads, 64)
        except (TypeError, ValueError) as err:
            found["picture"] = str(err)
    if open_pictures and s.mode == "inpaint" and not found.keys() & {"picture", "mask", "width", "height"}:
        try:
            mask_picture(s, uploads, 64)
        except (TypeError, ValueError) as err:
            found["mask"] = str(err)
    if s.mode == "dream":
        guard("seed_b", check_seed, s.seed_b)
        guard("frames", check_num_frames, s.frames)
        if "frames" not in found and s.frames > 32:
            found["frames"] = f"Use at most 32 frames (each one is a full generation); got {s.frames}."
    return found


def check_settings(s: Settings, uploads: dict | None = None, open_pictures: bool = True) -> Settings:
    """Raise ``ValueError`` naming the first bad knob of ``s`` (see :func:`problems`); return ``s`` when all is well."""
    found = problems(s, uploads, open_pictures)
    if found:
        knob, sentence = next(iter(found.items()))
        raise ValueError(f"Settings.{knob}={getattr(s, knob)!r}: {sentence}")
    return s


def uploaded_files(value) -> list[dict]:
    """The files in a ``FileUpload`` widget's ``value``, as ``[{"name": str, "content": bytes}, ...]``.

    The two ipywidgets versions the course meets store uploads differently:

    * ipywidgets 8 (JupyterLab): a tuple of dicts ``{"name", "type", "size", "content", "last_modified"}``,
      the content a ``memoryview``;
    * ipywidgets 7 (Colab's front end): a dict ``{filename: {"metadata": {"name", "type", "size",
      "lastModified"}, "content": bytes}}``.

    >>> uploaded_files(({"name": "cat.png", "content": memoryview(b"PNG...")},))  # ipywidgets 8
    [{'name': 'cat.png', 'content': b'PNG...'}]
    >>> uploaded_files({"cat.png": {"metadata": {"name": "cat.png"}, "content": b"PNG..."}})  # ipywidgets 7
    [{'name': 'cat.png', 'content': b'PNG...'}]
    """
    if isinstance(value, dict):  # ipywidgets 7: filename -> {"metadata": {...}, "content": bytes}
        value = [{"name": item.get("metadata", {}).get("name", name), "content": item.get("content")}
                 if isinstance(item, dict) else item for name, item in value.items()]
    check_instance(value, "value", (tuple, list), "a FileUpload widget's value (a tuple; a dict in ipywidgets 7)")
    files = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) \
                or not isinstance(item.get("content"), (bytes, bytearray, memoryview)):
            raise TypeError(f"each uploaded file must be a dict with 'name' (str) and 'content' (bytes); "
                            f"got {item!r:.80}.")
        files.append({"name": item["name"], "content": bytes(item["content"])})
    return files


def _open_upload(knob: str, upload: dict | None, mode: str) -> Image.Image:
    if not upload:
        raise ValueError(f"No {knob} uploaded yet: use the upload button next to it, or pick one from data/.")
    try:
        with check_upload(upload, knob) as im:  # refuses a file that is not a picture, or a huge one, unread
            return im.convert(mode)
    except (UnidentifiedImageError, OSError):
        raise ValueError(f"The uploaded {knob} {upload['name']!r} is not a picture (use a PNG or JPEG).") from None


def start_picture(s: Settings, uploads: dict, data_side: int) -> Image.Image:
    """The start picture of img2img and inpainting, resized to ``width x height``."""
    if s.picture == UPLOAD:
        picture = _open_upload("picture", uploads.get("picture"), "RGB")
    else:
        picture = load_picture(s.picture, data_side)
    return picture if picture.size == (s.width, s.height) else picture.resize((s.width, s.height))


def mask_picture(s: Settings, uploads: dict, data_side: int) -> Image.Image:
    """The inpainting mask (mode "L", white = repaint). An upload must already have the picture's size."""
    if s.mask != UPLOAD:
        mask = load_picture(s.mask, data_side)
        return mask if mask.size == (s.width, s.height) else mask.resize((s.width, s.height), Image.NEAREST)
    mask = _open_upload("mask", uploads.get("mask"), "L")
    if mask.size != (s.width, s.height):
        raise ValueError(f"The mask is {mask.width}x{mask.height} pixels but the picture is "
                         f"{s.width}x{s.height}; upload a mask of the picture's size.")
    return mask


def mask_overlay(picture: Image.Image, mask: Image.Image) -> Image.Image:
    """The picture with the region to repaint (white in the mask) tinted red."""
    check_same_pair_size(check_instance(picture, "picture", Image.Image, "a PIL picture"),
                    check_instance(mask, "mask", Image.Image, "a PIL picture"))
    red = Image.new("RGB", picture.size, (255, 0, 0))
    tinted = Image.blend(picture.convert("RGB"), red, 0.5)
    return Image.composite(tinted, picture.convert("RGB"), mask.convert("L").point(lambda v: 255 if v >= 128 else 0))


# --------------------------------------------------------------------------- the work
def run(pipe, s: Settings, uploads: dict | None = None) -> list[Image.Image]:
    """Make the pictures (or, for dream, the frames) for the settings ``s``.

    The same calls as :func:`reproduce_code` writes out.
    """
    check_pipeline(pipe), check_settings(s, uploads)
    uploads = uploads or {}
    set_scheduler(pipe, s.scheduler)
    neg = s.negative or None
    common = dict(steps=s.steps, guidance=s.guidance, negative=neg)
    if s.mode == "txt2img":
        return generate(pipe, [s.prompt] * s.n_images, seed=s.seed, height=s.height, width=s.width,
                        progress=False, **common).images
    if s.mode in ("img2img", "inpaint"):
        picture = start_picture(s, uploads, _data_side(pipe))
        if s.mode == "img2img":
            return [img2img(pipe, picture, s.prompt, strength=s.strength, seed=seed, **common).images[0]
                    for seed in range(s.seed, s.seed + s.n_images)]
        mask = mask_picture(s, uploads, _data_side(pipe))
        return [inpaint(pipe, picture, mask, s.prompt, seed=seed, **common).images[0]
                for seed in range(s.seed, s.seed + s.n_images)]
    shape = (1, pipe.unet.config.in_channels, s.height // pipe.vae_scale_factor, s.width // pipe.vae_scale_factor)
    a = torch.randn(shape, generator=make_generator(s.seed))
    b = torch.randn(shape, generator=make_generator(s.seed_b))
    start, end = (encode_prompt(pipe.tokenizer, pipe.text_encoder, [p], neg)
                  for p in (s.prompt, s.prompt_b or s.prompt))
    path = [torch.stack([start[0], cond]) for cond in slerp_frames(start[1], end[1], s.frames)]
    return render_frames(pipe, slerp_frames(a, b, s.frames), path, steps=s.steps, guidance=s.guidance, progress=False)


def model_argument(pipe) -> str:
    """How the shown code loads this model: ``"mini"``, a hub id, or nothing (the default; never a local path)."""
    if is_mini_model(pipe):
        return '"mini"'
    name = str(getattr(pipe, "name_or_path", "") or "")
    if name.count("/") == 1 and not os.path.isabs(name) and not os.path.exists(name):
        return repr(name)
    return ""


def reproduce_code(s: Settings, model: str = '"mini"', upload_names: dict | None = None) -> str:
    """Python code that makes the result of settings ``s`` again with ``sdcourse`` calls (same pixels)."""
    check_settings(s, open_pictures=False), check_literal(model, "model", '"mini"')
    upload_names = upload_names or {}
    common = f"steps={s.steps}, guidance={s.guidance!r}" + (f", negative={s.negative!r}" if s.negative else "")
    lines = ["import sdcourse", "from sdcourse.schedulers import set_scheduler"]
    if s.mode == "txt2img":
        lines += ["from sdcourse.loop import generate", "",
                  f"pipe = sdcourse.load_pipeline({model})", f"set_scheduler(pipe, {s.scheduler!r})",
                  f"images = generate(pipe, [{s.prompt!r}] * {s.n_images}, seed={s.seed}, {common},",
                  f"                  height={s.height}, width={s.width}, progress=False).images"]
    elif s.mode in ("img2img", "inpaint"):
        imports = ["from PIL import Image"] if UPLOAD in (s.picture, s.mask) else []
        imports += ["from sdcourse.course_data import load_picture"] if (s.picture != UPLOAD or (
            s.mode == "inpaint" and s.mask != UPLOAD)) else []
        imports += [f"from sdcourse.{s.mode} import {s.mode}"]
        lines += imports + ["", f"pipe = sdcourse.load_pipeline({model})", f"set_scheduler(pipe, {s.scheduler!r})",
                            "side = max(64, round(pipe.unet.config.sample_size * pipe.vae_scale_factor / 64) * 64)"]
        size = f"({s.width}, {s.height})"
        if s.picture == UPLOAD:
            lines.append(f"picture = Image.open({upload_names.get('picture', 'picture.png')!r}).convert('RGB')")
        else:
            lines.append(f"picture = load_picture({s.picture!r}, side)")
        lines.append(f"picture = picture if picture.size == {size} else picture.resize({size})")
        if s.mode == "img2img":
            call = f"img2img(pipe, picture, {s.prompt!r}, strength={s.strength!r}, seed=seed, {common})"
        else:
            if s.mask == UPLOAD:
                lines.append(f"mask = Image.open({upload_names.get('mask', 'mask.png')!r}).convert('L')")
            else:
                lines += [f"mask = load_picture({s.mask!r}, side)",
                          f"mask = mask if mask.size == {size} else mask.resize({size}, Image.NEAREST)"]
                if "from PIL import Image" not in lines:
                    lines.insert(2, "from PIL import Image")
            call = f"inpaint(pipe, picture, mask, {s.prompt!r}, seed=seed, {common})"
        lines += [f"images = [{call}.images[0]", f"          for seed in range({s.seed}, {s.seed + s.n_images})]"]
    else:
        neg = repr(s.negative) if s.negative else "None"
        lines += ["import torch", "from sdcourse.interp import render_frames, slerp_frames",
                  "from sdcourse.loop import encode_prompt", "from sdcourse.video import show_gif", "",
                  f"pipe = sdcourse.load_pipeline({model})", f"set_scheduler(pipe, {s.scheduler!r})",
                  f"shape = (1, pipe.unet.config.in_channels, {s.height} // pipe.vae_scale_factor, "
                  f"{s.width} // pipe.vae_scale_factor)",
                  f"a = torch.randn(shape, generator=sdcourse.make_generator({s.seed}))",
                  f"b = torch.randn(shape, generator=sdcourse.make_generator({s.seed_b}))",
                  f"start, end = (encode_prompt(pipe.tokenizer, pipe.text_encoder, [p], {neg})",
                  f"              for p in ({s.prompt!r}, {(s.prompt_b or s.prompt)!r}))",
                  f"path = [torch.stack([start[0], cond]) for cond in slerp_frames(start[1], end[1], {s.frames})]",
                  f"images = render_frames(pipe, slerp_frames(a, b, {s.frames}), path, steps={s.steps}, "
                  f"guidance={s.guidance!r}, progress=False)",
                  "show_gif(images)"]
    return "\n".join(lines) + "\n"


def result_png(images: list[Image.Image]) -> bytes:
    """The pictures side by side, enlarged with NEAREST so small ones stay crisp, as PNG bytes."""
    if isinstance(images, (list, tuple)) and not images:
        raise ValueError("images is an empty list; result_png needs at least one picture.")
    grid = image_grid(images, rows=1, cols=len(images))
    buffer = io.BytesIO()
    upscale(grid, cell=images[0].size).save(buffer, format="PNG")
    return buffer.getvalue()


def expected_steps(pipe, s: Settings) -> int:
    """How many UNet calls a run makes (the progress bar's length)."""
    check_pipeline(pipe), check_settings(s, open_pictures=False)
    scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    n = len(prepare_timesteps(scheduler, s.steps))
    if s.mode == "img2img":
        from .img2img import start_step
        return max(1, n - start_step(s.steps, s.strength) * getattr(scheduler, "order", 1)) * s.n_images
    if s.mode == "dream":
        return n * math.ceil(s.frames / 8)  # render_frames denoises 8 frames per batch
    return n * (s.n_images if s.mode == "inpaint" else 1)


# --------------------------------------------------------------------------- the panel
class KnobError(ValueError):
    """A knob set from code to a value it cannot show (out of its range, or not a whole number)."""


def _strict(widget_class, kind):
    """``widget_class`` (an ipywidgets slider or number box) whose value, set from code, is never changed behind
    the caller's back: a value out of the knob's range, or a fraction for a whole-number knob, raises
    :class:`KnobError` naming the knob, instead of being clamped or rounded to another value."""
    import math as _math
    import numbers

    import traitlets

    class Number(traitlets.Int if kind is int else traitlets.Float):
        def validate(self, obj, value):
            wanted = numbers.Integral if kind is int else numbers.Real
            if isinstance(value, bool) or not isinstance(value, wanted):
                what = "a whole number" if kind is int else "a number"
                raise KnobError(f"{obj.description or 'value'} must be {what}, got {value!r}; nothing was changed")
            return kind(value)

    class Strict(widget_class):
        value = Number(0).tag(sync=True)

        @traitlets.validate("value")
        def _validate_value(self, proposal):
            value, name = proposal["value"], self.description or "value"
            if kind is float and not _math.isfinite(value):
                raise KnobError(f"{name} must be a finite number, got {value}")
            low, high = getattr(self, "min", None), getattr(self, "max", None)
            if low is not None and high is not None and not low <= value <= high:
                raise KnobError(f"{name} must be from {low:g} to {high:g} on this knob, got {value:g}; "
                                f"nothing was changed")
            return value

    Strict.__name__ = Strict.__qualname__ = f"Strict{widget_class.__name__}"
    return Strict


class Playground:
    """The widget panel around :func:`run`. Display it in a notebook (``pg`` on the last line of a cell).

    Generate runs in a background thread (so Stop can be clicked); ``threaded=False`` runs it
    in the caller's thread, as tests and scripts want. ``pg.result`` holds the last good pictures,
    ``pg.code`` the code that makes them again.
    """

    def __init__(self, pipe, threaded: bool = True):
        import ipywidgets as w

        check_pipeline(pipe)
        self.pipe, self.threaded = pipe, threaded
        self.result, self.code, self.settings_used, self.history, self._messages = [], "", None, [], {}
        self._stop, self._lock, self._thread, self._calls = threading.Event(), threading.Lock(), None, 0
        side = default_size(pipe)
        d = Settings(width=side, height=side)
        full = w.Layout(width="460px")
        self.mode = w.ToggleButtons(options=MODES, value=d.mode, description="mode")
        self.prompt = w.Text(d.prompt, description="prompt", layout=full)
        self.negative = w.Text(d.negative, description="negative", placeholder="what to avoid", layout=full)
        int_slider, float_slider, int_text = (_strict(w.IntSlider, int), _strict(w.FloatSlider, float),
                                              _strict(w.IntText, int))
        self.n_images = int_slider(d.n_images, min=1, max=4, description="pictures")
        self.steps = int_slider(d.steps, min=1, max=100, description="steps")
        self.guidance = float_slider(d.guidance, min=0, max=20, step=0.5, description="guidance")
        self.seed = int_text(d.seed, description="seed")
        self.new_seed = w.Button(description="new seed", icon="random")  # Font Awesome 4 (ipywidgets 7) has no dice
        self.width = int_text(d.width, description="width", step=8)
        self.height = int_text(d.height, description="height", step=8)
        self.scheduler = w.Dropdown(options=list(SCHEDULERS.items()), value=d.scheduler, description="scheduler")
        self.strength = float_slider(d.strength, min=0, max=1, step=0.05, description="strength")
        self.picture = w.Dropdown(options=[*PICTURES, UPLOAD], value=d.picture, description="picture")
        self.picture_upload = w.FileUpload(accept="image/*", description="upload picture")
        self.mask = w.Dropdown(options=[*MASKS, UPLOAD], value=d.mask, description="mask")
        self.mask_upload = w.FileUpload(accept="image/*", description="upload mask")
        self.prompt_b = w.Text(d.prompt_b, description="prompt B", placeholder="empty: same prompt", layout=full)
        self.seed_b = int_text(d.seed_b, description="seed B")
        self.frames = int_slider(d.frames, min=2, max=32, description="frames")
        self.generate_button = w.Button(description="Generate", button_style="primary", icon="play")
        self.stop_button = w.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.progress = w.IntProgress(0, min=0, max=1, description="steps")
        self.status = w.HTML("Set the knobs and press Generate.")
        self.preview = w.Image(format="png", layout=w.Layout(max_width="256px"))
        self.image = w.Image(format="png", layout=w.Layout(display="none"))  # shown with the first result
        self.download = w.HTML()
        self.code_view = w.HTML()
        self.strip = w.HBox()
        self.knobs = ["mode", "prompt", "negative", "n_images", "steps", "guidance", "seed", "width", "height",
                      "scheduler", "strength", "picture", "mask", "prompt_b", "seed_b", "frames"]
        self.errors = {k: w.HTML() for k in self.knobs}
        for name in self.knobs + ["generate_button", "stop_button", "status", "image", "new_seed", "progress"]:
            getattr(self, name).add_class(f"sdc-{name.replace('_', '-')}")
        for name in self.knobs:
            self.errors[name].add_class(f"sdc-{name.replace('_', '-')}-error")

        def row(*names, extra=()):
            return w.HBox([w.VBox([getattr(self, n), self.errors[n]]) for n in names] + list(extra))

        self.rows = {
            "common": w.VBox([row("mode"), row("prompt"), row("negative"), row("n_images", "steps"),
                              row("guidance", "scheduler"), row("seed", extra=[self.new_seed]),
                              row("width", "height")]),
            "img2img": row("strength"),
            "picture": row("picture", extra=[self.picture_upload]),
            "inpaint": row("mask", extra=[self.mask_upload]),
            "dream": w.VBox([row("prompt_b"), row("seed_b", "frames")]),
        }
        self.panel = w.VBox([*self.rows.values(), self.preview,
                             w.HBox([self.generate_button, self.stop_button, self.progress]), self.status,
                             self.image, self.download, self.strip, self.code_view])
        self.panel.add_class("sdc-panel")
        self.generate_button.on_click(lambda _: self.start())
        self.stop_button.on_click(lambda _: self._stop.set())
        self.new_seed.on_click(lambda _: setattr(self.seed, "value", random.randrange(2**32)))
        for name in ("mode", "picture", "mask", "width", "height"):
            getattr(self, name).observe(lambda _: self._refresh(), "value")
        for upload in (self.picture_upload, self.mask_upload):
            upload.observe(lambda _: self._refresh(), "value")
        self._refresh()

    def _repr_mimebundle_(self, **kwargs):
        # The widget view of the panel, written out: ipywidgets 8 widgets have a _repr_mimebundle_ that gives
        # this, ipywidgets 7 widgets (Colab) have none (they display through _ipython_display_).
        return {"application/vnd.jupyter.widget-view+json": {"version_major": 2, "version_minor": 0,
                                                             "model_id": self.panel.model_id},
                "text/plain": "Playground panel (its widgets show in a running notebook: JupyterLab, Colab)"}

    # ----------------------------------------------------------------- reading the knobs
    def settings(self) -> Settings:
        """The knobs' current values."""
        return Settings(**{k: getattr(self, k).value for k in asdict(Settings())})

    def uploads(self) -> dict:
        """``{"picture": {...}, "mask": {...}}``: the uploaded files (name and content bytes)."""
        found = {}
        for key, widget in (("picture", self.picture_upload), ("mask", self.mask_upload)):
            files = uploaded_files(widget.value)  # ipywidgets 7 and 8 store them differently
            if files:
                found[key] = files[0]  # the widgets take one file each (multiple=False)
        return found

    def restore(self, s: Settings) -> None:
        """Set every knob to the values of ``s`` (what a click on the history strip does)."""
        check_settings(s, open_pictures=False)
        for key, value in asdict(s).items():  # every knob first, so that a value no knob can show changes nothing
            knob = getattr(self, key)
            low, high = getattr(knob, "min", None), getattr(knob, "max", None)
            if low is not None and high is not None and not low <= value <= high:
                raise ValueError(f"Settings.{key}={value!r}: the {knob.description} knob goes from {low:g} to "
                                 f"{high:g}; nothing was restored")
        for key, value in asdict(s).items():
            getattr(self, key).value = value

    def messages(self) -> dict[str, str]:
        """The sentences shown next to the knobs now, as ``{knob: sentence}``."""
        return dict(self._messages)

    def _show_errors(self, found: dict) -> None:
        self._messages = dict(found)
        for name, label in self.errors.items():
            text = found.get(name, "")
            label.value = f'<span style="color:#c00">{_escape(text)}</span>' if text else ""

    def _refresh(self) -> None:
        mode = self.mode.value
        self.rows["img2img"].layout.display = "" if mode == "img2img" else "none"
        self.rows["picture"].layout.display = "" if mode in ("img2img", "inpaint") else "none"
        self.rows["inpaint"].layout.display = "" if mode == "inpaint" else "none"
        self.rows["dream"].layout.display = "" if mode == "dream" else "none"
        self.n_images.disabled = mode == "dream"
        self.preview.layout.display = "none"
        s, uploads = self.settings(), self.uploads()
        if mode in ("img2img", "inpaint") and not problems(replace(s, prompt="x"), uploads):
            side = _data_side(self.pipe)
            picture = start_picture(s, uploads, side)
            if mode == "inpaint":
                picture = mask_overlay(picture, mask_picture(s, uploads, side))
            buffer = io.BytesIO()
            upscale(picture).save(buffer, format="PNG")
            self.preview.value, self.preview.layout.display = buffer.getvalue(), ""

    # ----------------------------------------------------------------- running
    def start(self) -> None:
        """What the Generate button does: :meth:`generate` in a background thread (or here when not threaded)."""
        if not self.threaded:
            self.generate()
            return
        if self._thread is not None and self._thread.is_alive():
            return
        self._thread = threading.Thread(target=self.generate, daemon=True)
        self._thread.start()

    def wait(self, timeout: float | None = None) -> None:
        """Wait for a background run to finish."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _step(self, module, args, output) -> None:
        self._calls += 1
        self.progress.value = min(self._calls, self.progress.max)
        if self._stop.is_set():
            raise Stopped

    def generate(self) -> bool:
        """Check the knobs, run, and show the result; returns True when a new result was made.

        Bad input shows a sentence next to its knob and keeps the last result; Stop ends the loop
        at the next denoising step (a forward hook on the UNet counts the steps and checks it).
        """
        s, uploads = self.settings(), self.uploads()
        found = problems(s, uploads)
        self._show_errors(found)
        if found:
            self.status.value = "Not generated: fix the knob marked in red. The last result is kept."
            return False
        with self._lock:
            self._stop.clear()
            self._calls, self.progress.value = 0, 0
            self.progress.max = expected_steps(self.pipe, s)
            self.generate_button.disabled, self.stop_button.disabled = True, False
            self.status.value = f"Working ({s.mode}, seed {s.seed}) ..."
            hook = self.pipe.unet.register_forward_hook(self._step)
            try:
                images = run(self.pipe, s, uploads)
            except Stopped:
                self.status.value = (f"Stopped after {self._calls} of {self.progress.max} steps. "
                                     "The last result is kept.")
                return False
            except Exception as err:  # noqa: BLE001  (one sentence in the page, never a traceback)
                first_line = str(err).splitlines()[0] if str(err) else ""
                self.status.value = _escape(f"Not generated: {type(err).__name__}: {first_line}")
                return False
            finally:
                hook.remove()
                self.generate_button.disabled, self.stop_button.disabled = False, True
            self.progress.value = self.progress.max
            self._show(s, images, uploads)
            return True

    def _show(self, s: Settings, images: list, uploads: dict) -> None:
        self.result, self.settings_used = images, s
        names = {k: v["name"] for k, v in uploads.items()}
        self.code = reproduce_code(s, model_argument(self.pipe), names)
        if s.mode == "dream":
            data, kind = gif_bytes(images), "gif"
        else:
            data, kind = result_png(images), "png"
        self.image.format, self.image.value = kind, data
        self.image.layout.display = ""  # drawn now: JupyterLab drew one shown while still empty as 0 x 0 px for good
        self.download.value = (f'<a download="playground.{kind}" href="data:image/{kind};base64,'
                               f'{base64.b64encode(data).decode()}">Download the {kind.upper()}</a>')
        # the line height is set because ipywidgets 7 (Colab) spaces the lines of HTML widgets 28 px apart
        self.code_view.value = ('<b>The code that makes this result again:</b><pre style="line-height: 1.3">'
                                + _escape(self.code) + "</pre>")
        what = f"{len(images)} frames" if s.mode == "dream" else f"{len(images)} picture(s)"
        seeds = f"{s.seed} to {s.seed_b}" if s.mode == "dream" else f"{s.seed}"
        self.status.value = f"Done: {what}, {s.mode}, seed {seeds}."
        self._remember(s, images[0])

    def _remember(self, s: Settings, picture: Image.Image) -> None:
        import ipywidgets as w

        buffer = io.BytesIO()
        upscale(picture, min_size=64).save(buffer, format="PNG")
        self.history = ([(s, buffer.getvalue())] + self.history)[:HISTORY]
        cells = []
        for past, thumb in self.history:
            button = w.Button(description=f"{past.mode} {past.seed}", layout=w.Layout(width="96px"),
                              tooltip=f"restore: {past.prompt}")
            button.on_click(lambda _, past=past: self.restore(past))
            cells.append(w.VBox([w.Image(value=thumb, format="png", layout=w.Layout(width="64px")), button]))
        self.strip.children = cells


def _escape(text: str) -> str:
    import html

    return html.escape(text)
