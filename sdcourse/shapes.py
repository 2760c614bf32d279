"""A procedural, captioned picture generator: the mini model's whole training world.

Every picture is one coloured shape on a background. Its caption comes from a small grammar::

    a [small|large] <colour> <circle|square|triangle> [in the <position>] [on a <colour> background]

for example ``"a small green circle in the top left on a black background"``.

A :class:`Scene` is what the caption says. On its own, :func:`render` draws it flat: every pixel exactly
a palette colour, no anti-aliasing, the shape exactly at its named position and size. With a :class:`Look`
(drawn by :func:`random_look`) it draws one of the many pictures the same caption allows: the shape a little
off its named position, a little larger or smaller, both colours a little lighter, darker or shifted, a soft
light falling across the picture, smooth edges. Words settle only what they name, as in real captions;
that is what keeps guided sampling stable at guidance 7.5 (see the model card's "Stiffness" section).
Everything is seeded: the same seed gives the same scenes, looks, pictures and captions.

>>> scene = Scene("circle", "green", "black", "top left", "small")
>>> scene.caption()
'a small green circle in the top left on a black background'
>>> render(scene, 64).size
(64, 64)
"""
from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 230),
    "yellow": (245, 220, 30),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
    "orange": (245, 140, 20),
    "purple": (140, 50, 190),
}
COLOURS = tuple(PALETTE)
SHAPES = ("circle", "square", "triangle")
SIZES = ("small", "large")
# Centre of the shape as a fraction of the picture's width and height.
POSITIONS: dict[str, tuple[float, float]] = {
    "center": (0.5, 0.5),
    "top left": (0.3, 0.3),
    "top right": (0.7, 0.3),
    "bottom left": (0.3, 0.7),
    "bottom right": (0.7, 0.7),
}
# Half the side of the shape's bounding box, as a fraction of the picture's width.
HALF_EXTENT = {"small": 0.11, "large": 0.2}
ATTRIBUTES = ("colour", "shape", "background", "position", "size")


@dataclass(frozen=True)
class Scene:
    """One picture's content: a coloured shape at a position, of a size, on a background."""

    shape: str
    colour: str
    background: str
    position: str = "center"
    size: str = "large"

    def __post_init__(self):
        for name, value, allowed in [
            ("shape", self.shape, SHAPES),
            ("colour", self.colour, COLOURS),
            ("background", self.background, COLOURS),
            ("position", self.position, tuple(POSITIONS)),
            ("size", self.size, SIZES),
        ]:
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(allowed)}")
        if self.colour == self.background:
            raise ValueError(f"the shape and the background are both {self.colour}: a shape needs a different colour")

    def caption(self, size: bool = True, position: bool = True, background: bool = True) -> str:
        """The scene in words; the flags leave parts out ("a red circle")."""
        words = [self.size] if size else []
        words += [self.colour, self.shape]
        text = " ".join(words)
        text = ("an " if text[0] in "aeiou" else "a ") + text
        if position:
            text += f" in the {self.position}"
        if background:
            text += f" on {'an' if self.background[0] in 'aeiou' else 'a'} {self.background} background"
        return text


def all_scenes() -> list[Scene]:
    """Every distinct scene of the grammar (3 shapes x 56 colour pairs x 5 positions x 2 sizes = 1,680)."""
    return [
        Scene(shape, colour, bg, pos, size)
        for shape, colour, bg, pos, size in itertools.product(SHAPES, COLOURS, COLOURS, POSITIONS, SIZES)
        if colour != bg
    ]


def split_scenes(n_heldout: int = 168, seed: int = 1234) -> tuple[list[Scene], list[Scene]]:
    """(training scenes, held-out scenes): a fixed 10% of the grammar's combinations the model never sees.

    Evaluating on held-out combinations ("a small red circle in the top left on a blue
    background" never appears in training, though each of its words does) measures whether
    the model composes words, not whether it remembers pictures.
    """
    scenes = all_scenes()
    order = list(range(len(scenes)))
    random.Random(seed).shuffle(order)
    held = set(order[:n_heldout])
    return [s for i, s in enumerate(scenes) if i not in held], [s for i, s in enumerate(scenes) if i in held]


def random_scene(rng: random.Random) -> Scene:
    """A uniformly random scene, drawn from ``rng``."""
    colour, background = rng.sample(COLOURS, 2)
    return Scene(rng.choice(SHAPES), colour, background, rng.choice(tuple(POSITIONS)), rng.choice(SIZES))


# How far a Look may move things, at strength 1. Chosen so that every varied render still reads as its caption
# (the checker reads 98% or more of them right; tests/test_shapes.py): an offset of 0.09 keeps the shape's
# centre nearer its named position than any other (they are 0.2 apart), sizes stay on their side of the
# small/large threshold, and a shifted colour stays nearer its palette colour than any other.
LOOK_LIMITS = {"offset": 0.09, "scale": 0.2, "tint": 30.0, "shade": 0.10}
SUPERSAMPLE = 4  # a varied picture is drawn this many times larger, then averaged down: smooth edges


@dataclass(frozen=True)
class Look:
    """What a caption leaves open about one picture of its scene.

    ``dx``, ``dy``: the shape's offset from its named position (fractions of the picture);
    ``scale``: its size relative to the named size; ``tint``, ``background_tint``: RGB offsets
    (0-255 scale) added to the shape's and the background's palette colours; ``shade``: a soft
    light, the brightness rising by ``shade`` from the picture's centre to its edge along the
    direction ``angle`` (radians) and falling as much on the other side.
    """

    dx: float = 0.0
    dy: float = 0.0
    scale: float = 1.0
    tint: tuple[float, float, float] = (0.0, 0.0, 0.0)
    background_tint: tuple[float, float, float] = (0.0, 0.0, 0.0)
    shade: float = 0.0
    angle: float = 0.0


def random_look(rng: random.Random, strength: float = 1.0) -> Look:
    """A random :class:`Look`, drawn from ``rng``; ``strength`` scales every limit in ``LOOK_LIMITS``
    (0: no variation; 1: the training world's)."""
    if not 0 <= strength <= 1:
        raise ValueError(f"strength must be between 0 and 1, got {strength!r}")
    lim = {k: v * strength for k, v in LOOK_LIMITS.items()}
    return Look(dx=rng.uniform(-lim["offset"], lim["offset"]), dy=rng.uniform(-lim["offset"], lim["offset"]),
                scale=1 + rng.uniform(-lim["scale"], lim["scale"]),
                tint=tuple(rng.uniform(-lim["tint"], lim["tint"]) for _ in range(3)),
                background_tint=tuple(rng.uniform(-lim["tint"], lim["tint"]) for _ in range(3)),
                shade=rng.uniform(0, lim["shade"]), angle=rng.uniform(0, 2 * math.pi))


def shape_box(scene: Scene, resolution: int, look: Look | None = None) -> tuple[float, float, float, float]:
    """The shape's bounding box (left, top, right, bottom) in pixels; flat renders' are whole pixels,
    right/bottom inclusive."""
    look = look or Look()
    cx, cy = POSITIONS[scene.position]
    h = HALF_EXTENT[scene.size] * look.scale * resolution
    x, y = (cx + look.dx) * resolution, (cy + look.dy) * resolution
    if look == Look():
        return round(x - h), round(y - h), round(x + h) - 1, round(y + h) - 1
    return x - h, y - h, x + h, y + h


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box, fill):
    left, top, right, bottom = box
    if shape == "circle":
        draw.ellipse((left, top, right, bottom), fill=fill)
    elif shape == "square":
        draw.rectangle((left, top, right, bottom), fill=fill)
    else:  # an upright triangle filling its box
        draw.polygon([((left + right) / 2, top), (right, bottom), (left, bottom)], fill=fill)


def render(scene: Scene, resolution: int = 64, look: Look | None = None) -> Image.Image:
    """Draw ``scene`` as an RGB picture of ``resolution`` x ``resolution`` pixels.

    Without a ``look``: flat palette colours and no anti-aliasing. With one: the picture that look
    describes (drawn ``SUPERSAMPLE`` times larger and averaged down, then shaded)."""
    if not isinstance(resolution, int) or resolution < 16 or resolution % 8:
        raise ValueError(f"resolution must be a multiple of 8 and at least 16, got {resolution!r}")
    if look is None:
        img = Image.new("RGB", (resolution, resolution), PALETTE[scene.background])
        _draw_shape(ImageDraw.Draw(img), scene.shape, shape_box(scene, resolution), PALETTE[scene.colour])
        return img

    def tinted(name, offset):
        return tuple(int(round(min(255.0, max(0.0, c + o)))) for c, o in zip(PALETTE[name], offset))

    big = resolution * SUPERSAMPLE
    img = Image.new("RGB", (big, big), tinted(scene.background, look.background_tint))
    box = [v * SUPERSAMPLE for v in shape_box(scene, resolution, look)]
    _draw_shape(ImageDraw.Draw(img), scene.shape, box, tinted(scene.colour, look.tint))
    pixels = np.asarray(img.resize((resolution, resolution), Image.BOX), dtype=np.float32)
    ys, xs = np.mgrid[0:resolution, 0:resolution] / (resolution - 1) - 0.5  # -0.5 .. 0.5 across the picture
    light = 1 + 2 * look.shade * (math.cos(look.angle) * xs + math.sin(look.angle) * ys)
    return Image.fromarray(np.clip(pixels * light[..., None], 0, 255).round().astype(np.uint8))


def random_caption(scene: Scene, rng: random.Random, p_drop: float = 0.3) -> str:
    """The scene's caption with each optional part (size, position, background) left out with probability ``p_drop``."""
    keep_size, keep_position, keep_background = (rng.random() >= p_drop for _ in range(3))
    return scene.caption(size=keep_size, position=keep_position, background=keep_background)


def dataset(n: int, seed: int = 0, resolution: int = 64) -> list[tuple[Image.Image, str, Scene]]:
    """``n`` seeded (picture, full caption, scene) triples.

    >>> [c for _, c, _ in dataset(2, seed=1)]  # doctest: +SKIP
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        scene = random_scene(rng)
        out.append((render(scene, resolution), scene.caption(), scene))
    return out
