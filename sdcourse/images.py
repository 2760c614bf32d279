"""Pictures in and out: grids, inline display, and the VAE's trip between pixels and latents.

Shapes used throughout (B pictures, H x W pixels, the VAE shrinks each side by 8):

* PIL pictures: a list of ``B`` RGB images of ``W x H`` pixels;
* pixel tensors: ``(B, 3, H, W)`` floats in ``[-1, 1]`` (what the VAE reads and writes);
* latents: ``(B, 4, H/8, W/8)`` floats, already multiplied by ``vae.config.scaling_factor``
  (what the UNet denoises).

Example::

    >>> latents = pil_to_latents(pipe.vae, [picture])      # (1, 4, H/8, W/8)  # doctest: +SKIP
    >>> again = latents_to_pil(pipe.vae, latents)[0]        # a PIL picture, close to `picture`  # doctest: +SKIP
    >>> show(image_grid([picture, again], rows=1, cols=2))  # doctest: +SKIP
"""
from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from .validate import (MAX_SIDE, check_grid, check_int, check_layout, check_pictures, check_pixels, check_same_size,
                       check_tensor, check_vae_pictures)

SHOW_MIN_SIZE = 256


def image_grid(images: list[Image.Image], rows: int, cols: int, *, row_labels=None,
               col_labels=None) -> Image.Image:
    """Paste ``rows * cols`` equally sized pictures into one picture, row by row.

    ``row_labels`` (one text per row) and ``col_labels`` (one per column) are written in a white margin on
    the left and on top, so a reader sees which row and column is which.

    Example::

        >>> grid = image_grid(pipe(["a red circle"] * 4).images, rows=2, cols=2)  # doctest: +SKIP
        >>> grid.size   # (2 * width, 2 * height)  # doctest: +SKIP
    """
    images, (w, h) = check_grid(images, rows, cols)  # rows * cols pictures, all w x h
    mode = images[0].mode if len({im.mode for im in images}) == 1 else "RGB"  # mixed modes meet in RGB
    grid = Image.new(mode, (cols * w, rows * h))  # a blank canvas, cols pictures wide
    for i, im in enumerate(images):
        grid.paste(im.convert(mode), ((i % cols) * w, (i // cols) * h))  # row by row, left to right
    return label_grid(grid, rows, cols, row_labels=row_labels, col_labels=col_labels)


def _labels(labels, count: int, name: str) -> list[str] | None:
    if labels is None:
        return None
    if isinstance(labels, (str, bytes)) or not hasattr(labels, "__len__"):
        raise TypeError(f"{name} must be a list of {count} texts, one per {name.split('_')[0]}; "
                        f"got {type(labels).__name__}.")
    if len(labels) != count:
        raise ValueError(f"{name} has {len(labels)} texts for {count} {name.split('_')[0]}s; give one per "
                         f"{name.split('_')[0]}.")
    return [str(label) for label in labels]


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # a Pillow without FreeType: its fixed small font
        return ImageFont.load_default()


def label_grid(grid: Image.Image, rows: int, cols: int, *, row_labels=None, col_labels=None) -> Image.Image:
    """``grid`` (``rows x cols`` equal cells) with ``row_labels`` in a margin on the left and ``col_labels``
    on top; the grid itself unchanged when both are ``None``."""
    from PIL import ImageDraw

    if not isinstance(grid, Image.Image):
        raise TypeError(f"grid must be a PIL image; got {type(grid).__name__}.")
    rows, cols = check_int(rows, "rows", 1, MAX_SIDE), check_int(cols, "cols", 1, MAX_SIDE)
    row_labels, col_labels = _labels(row_labels, rows, "row_labels"), _labels(col_labels, cols, "col_labels")
    if row_labels is None and col_labels is None:
        return grid
    cw, ch = grid.width // cols, grid.height // rows
    font = _font(max(10, min(18, min(cw, ch) // 8)))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    def width(text):
        return max((probe.textbbox((0, 0), line, font=font)[2] for line in text.split("\n")), default=0)
    line_h = probe.textbbox((0, 0), "Ag", font=font)[3] + 2
    left = 0 if row_labels is None else max(width(t) for t in row_labels) + 8
    top = 0 if col_labels is None else max(t.count("\n") + 1 for t in col_labels) * line_h + 6
    out = Image.new("RGB", (left + grid.width, top + grid.height), "white")
    out.paste(grid.convert("RGB"), (left, top))
    draw = ImageDraw.Draw(out)
    for j, text in enumerate(col_labels or []):
        draw.multiline_text((left + j * cw + cw / 2, top - 3), text, fill="black", font=font, anchor="md",
                            align="center")
    for i, text in enumerate(row_labels or []):
        draw.multiline_text((left - 4, top + i * ch + ch / 2), text, fill="black", font=font, anchor="rm",
                            align="right")
    return out


def upscale(image: Image.Image, min_size: int = SHOW_MIN_SIZE, cell: tuple[int, int] | None = None) -> Image.Image:
    """Enlarge ``image`` by a whole factor with NEAREST (crisp pixels) until ``cell`` is >= ``min_size``.

    ``cell`` is the size of one picture inside ``image`` (for a grid); it defaults to the
    whole image. Pictures already that large are returned unchanged.

    Example::

        >>> upscale(Image.new("RGB", (64, 64))).size
        (256, 256)
    """
    if not isinstance(image, Image.Image):
        raise TypeError(f"image must be a PIL image; got {type(image).__name__}.")
    min_size = check_int(min_size, "min_size", 1, MAX_SIDE)
    cw, ch = cell or image.size
    factor = math.ceil(min_size / min(cw, ch))
    if factor <= 1:
        return image
    return image.resize((image.width * factor, image.height * factor), Image.NEAREST)


def show(images, rows: int | None = None, cols: int | None = None, min_size: int = SHOW_MIN_SIZE, *,
         row_labels=None, col_labels=None) -> None:
    """Display one picture or a grid of pictures inline in a notebook.

    A list is laid out as ``rows x cols`` (default: one row). Pictures smaller than
    ``min_size`` pixels are enlarged with NEAREST so a 64 x 64 picture stays crisp and visible.
    ``row_labels`` and ``col_labels`` (one text per row or column) are written beside the enlarged grid.

    Example::

        >>> show(pipe("a small blue square").images[0])  # doctest: +SKIP
        >>> show(images, rows=2, cols=4, row_labels=["seed 0", "seed 1"])  # doctest: +SKIP
    """
    from IPython.display import display

    display(show_grid(images, rows, cols, min_size, row_labels=row_labels, col_labels=col_labels))


def show_grid(images, rows: int | None = None, cols: int | None = None, min_size: int = SHOW_MIN_SIZE, *,
              row_labels=None, col_labels=None) -> Image.Image:
    """The picture that :func:`show` displays: the grid, enlarged, with its labels."""
    images, rows, cols = check_layout(images, rows, cols)  # rows and cols may be None
    if rows is None and cols is None:  # one row
        rows, cols = 1, len(images)
    elif rows is None:
        rows = math.ceil(len(images) / cols)
    elif cols is None:
        cols = math.ceil(len(images) / rows)
    row_labels, col_labels = _labels(row_labels, rows, "row_labels"), _labels(col_labels, cols, "col_labels")
    cell = check_same_size(images)  # the size of one picture
    if rows * cols > len(images):  # fill the last row with blank cells
        images = images + [Image.new(images[0].mode, cell)] * (rows * cols - len(images))
    grid = upscale(image_grid(images, rows, cols), min_size, cell=cell)
    return label_grid(grid, rows, cols, row_labels=row_labels, col_labels=col_labels)


def pil_to_tensor(images) -> torch.Tensor:
    """Turn PIL pictures into a ``(B, 3, H, W)`` float32 tensor in ``[-1, 1]``.

    This is the same preprocessing as diffusers' ``VaeImageProcessor`` (divide by 255, then
    map ``[0, 1]`` to ``[-1, 1]``).

    Example::

        >>> pil_to_tensor(Image.new("RGB", (64, 48))).shape
        torch.Size([1, 3, 48, 64])
    """
    images = check_pictures(images, empty="got an empty list of pictures; give at least one.")
    check_same_size(images)
    array = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0 for im in images])
    return torch.from_numpy(array).permute(0, 3, 1, 2) * 2.0 - 1.0


def tensor_to_pil(pixels: torch.Tensor) -> list[Image.Image]:
    """Turn a ``(B, 3, H, W)`` tensor in ``[-1, 1]`` into a list of ``B`` PIL pictures.

    Values outside ``[-1, 1]`` are clipped; rounding matches diffusers' ``VaeImageProcessor``,
    so a hand-built loop gives exactly the pipeline's pictures.

    Example::

        >>> tensor_to_pil(torch.zeros(1, 3, 8, 8))[0].getpixel((0, 0))
        (128, 128, 128)
    """
    check_pixels(pixels)  # (B, 3, H, W), finite
    array = (pixels / 2 + 0.5).clamp(0, 1).detach().cpu().permute(0, 2, 3, 1).float().numpy()  # [0, 1], B x H x W x 3
    array = (array * 255).round().astype("uint8")  # 0..255, rounded as the pipeline does
    return [Image.fromarray(a) for a in array]


def check_vae(vae):
    """Return ``vae`` if it is an autoencoder such as ``pipe.vae`` (not a pipeline, not None), else raise."""
    config = getattr(vae, "config", None)
    if not isinstance(vae, torch.nn.Module) or not hasattr(config, "scaling_factor") or not callable(
            getattr(vae, "decode", None)):
        hint = " (pass pipe.vae, not the pipeline)" if hasattr(vae, "vae") else ""
        raise TypeError(f"vae must be a VAE such as pipe.vae; got {type(vae).__name__}{hint}.")
    return vae


def vae_factor(vae) -> int:
    """How many times the VAE shrinks each side: 2 per down block after the first (8 for SD; pipelines' rule)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


@torch.no_grad()
def pil_to_latents(vae, images, generator: torch.Generator | None = None) -> torch.Tensor:
    """Encode pictures into scaled latents: ``(B, 3, H, W)`` pixels -> ``(B, 4, H/8, W/8)``.

    The VAE encoder returns a distribution per latent pixel. Without a ``generator`` its mean is
    used (deterministic); with one, a sample is drawn, as the img2img pipeline does. The result
    is multiplied by ``vae.config.scaling_factor`` (0.18215 for SD v1) so it has roughly unit
    variance, the scale the UNet was trained on.

    Example::

        >>> pil_to_latents(pipe.vae, [picture]).shape     # picture of 512 x 512 pixels  # doctest: +SKIP
        torch.Size([1, 4, 64, 64])
    """
    images = check_vae_pictures(check_vae(vae), images, vae_factor(vae))  # sides multiples of 8 for SD
    pixels = pil_to_tensor(images).to(device=vae.device, dtype=vae.dtype)  # (B, 3, H, W) in [-1, 1]
    dist = vae.encode(pixels).latent_dist  # a Gaussian per latent pixel
    latents = dist.sample(generator) if generator is not None else dist.mean  # a sample, or the mean
    shift = getattr(vae.config, "shift_factor", None)  # None for SD v1.x
    if shift is not None:
        latents = latents - shift
    return latents * vae.config.scaling_factor  # about unit variance, the UNet's scale


@torch.no_grad()
def latents_to_pil(vae, latents: torch.Tensor) -> list[Image.Image]:
    """Decode scaled latents into pictures: ``(B, 4, H/8, W/8)`` -> ``B`` PIL pictures of ``H x W``.

    Undoes the ``scaling_factor`` of :func:`pil_to_latents`, runs the VAE decoder and turns the
    ``(B, 3, H, W)`` result in ``[-1, 1]`` into PIL pictures.

    Example::

        >>> latents_to_pil(pipe.vae, torch.randn(1, 4, 8, 8))[0].size   # the mini model's VAE  # doctest: +SKIP
        (64, 64)
    """
    channels = check_vae(vae).config.latent_channels
    if not torch.is_tensor(latents) or latents.ndim != 4 or latents.shape[1] != channels:
        shape = tuple(latents.shape) if torch.is_tensor(latents) else type(latents).__name__
        hint = " (add the batch dimension with latents[None])" if torch.is_tensor(latents) and latents.ndim == 3 else ""
        raise ValueError(f"expected latents of shape (B, {channels}, h, w); got {shape}{hint}.")
    check_tensor(latents, "latents")
    latents = latents.to(device=vae.device, dtype=vae.dtype) / vae.config.scaling_factor
    shift = getattr(vae.config, "shift_factor", None)
    if shift is not None:
        latents = latents + shift
    return tensor_to_pil(vae.decode(latents).sample)
