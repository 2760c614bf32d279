"""The course's input pictures and masks, drawn procedurally (no downloads, no third-party images).

``scripts/make_data.py`` saves them in ``data/`` at 512 px (the size of SD v1.x) and 64 px
(the mini model's). :func:`load_picture` reads the saved file when the repository's ``data/``
folder is there and draws the same picture otherwise (for example after ``pip install`` on
Colab), so a notebook works either way.

Masks follow the inpainting convention: white = repaint, black = keep. They are drawn on an
8 x 8 grid of the picture, so at any size that is a multiple of 64 their edges fall on the
VAE's 8 x 8 pixel blocks (one latent cell each).

>>> load_picture("scene", 64).size
(64, 64)
"""
from __future__ import annotations

import numbers
from pathlib import Path

from PIL import Image, ImageDraw

from .shapes import Scene, render
from .validate import MAX_SIDE

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
"""The repository's ``data/`` folder (present in a git checkout, absent after a plain pip install)."""

SAVED_SIZES = (512, 64)

SCENE = Scene("circle", "red", "blue", "center", "large")
SCENE_CAPTION = SCENE.caption()  # "a large red circle in the center on a blue background"


def _sketch(size: int) -> Image.Image:
    """A child's drawing of a landscape: sky, sun, hill, house (flat colours, no anti-aliasing)."""
    s = size / 8  # one grid cell
    img = Image.new("RGB", (size, size), (110, 170, 235))
    d = ImageDraw.Draw(img)
    d.ellipse((5.6 * s, 0.6 * s, 7.2 * s, 2.2 * s), fill=(250, 215, 40))                  # sun
    d.ellipse((-3 * s, 5 * s, 11 * s, 12 * s), fill=(60, 160, 60))                       # hill
    d.rectangle((1.5 * s, 4.2 * s, 3.9 * s, 6.2 * s - 1), fill=(200, 160, 110))          # house
    d.polygon([(1.2 * s, 4.2 * s), (2.7 * s, 3 * s), (4.2 * s, 4.2 * s)], fill=(190, 40, 40))  # roof
    d.rectangle((2.4 * s, 5.1 * s, 3 * s, 6.2 * s - 1), fill=(90, 60, 30))               # door
    return img


def _mask_cells(size: int, left: int, top: int, right: int, bottom: int) -> Image.Image:
    """A black mask with the grid cells [left, right) x [top, bottom) of an 8 x 8 grid in white."""
    s = size // 8
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).rectangle((left * s, top * s, right * s - 1, bottom * s - 1), fill=255)
    return mask


# name -> (what it is, how to draw it at a given size)
PICTURES = {
    "scene": (f"the mini model's world: {SCENE_CAPTION}", lambda size: render(SCENE, size)),
    "sketch": ("a landscape sketch: sky, sun, hill and a house", _sketch),
    "mask_center": ("white square over the middle 4 x 4 cells: the scene's shape",
                    lambda size: _mask_cells(size, 2, 2, 6, 6)),
    "mask_top_left": ("white square over the top-left 3 x 3 cells", lambda size: _mask_cells(size, 0, 0, 3, 3)),
}


def _check_name_and_size(name, size) -> tuple[str, int]:
    if not isinstance(name, str):
        raise TypeError(f"name must be the name of one course picture ({', '.join(PICTURES)}); got {name!r}")
    if name not in PICTURES:
        raise ValueError(f"unknown course picture {name!r}; choose one of: {', '.join(PICTURES)}")
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 64 or size % 64 or size > MAX_SIDE:
        raise ValueError(f"size must be a multiple of 64 pixels from 64 to {MAX_SIDE} (64, 128, ..., 512), "
                         f"got {size!r}")
    return name, int(size)


def draw_picture(name: str, size: int) -> Image.Image:
    """Draw the course picture ``name`` at ``size`` x ``size`` pixels (size: a multiple of 64, at least 64)."""
    name, size = _check_name_and_size(name, size)
    return PICTURES[name][1](size)


def data_file(name: str, size: int) -> Path:
    """Where ``scripts/make_data.py`` saves picture ``name`` at ``size`` px: ``data/<name>_<size>.png``.

    ``name`` must be one of the course pictures (:data:`PICTURES`), so the path is always inside ``data/``."""
    name, size = _check_name_and_size(name, size)
    return DATA_DIR / f"{name}_{size}.png"


def load_picture(name: str, size: int) -> Image.Image:
    """The course picture ``name`` at ``size`` px: from ``data/`` when saved there, else freshly drawn.

    Masks come back in mode "L" (0 = keep, 255 = repaint), pictures in mode "RGB".
    """
    picture = draw_picture(name, size)  # validates name and size
    path = data_file(name, size)
    if path.is_file():
        with Image.open(path) as saved:
            return saved.convert(picture.mode)
    return picture
