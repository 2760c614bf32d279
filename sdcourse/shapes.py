"""A procedural, captioned picture generator: the mini model's whole training world.

Every picture is one flat-coloured shape on a flat background, drawn without
anti-aliasing so that every pixel is exactly a palette colour. Its caption comes
from a small grammar::

    a [small|large] <colour> <circle|square|triangle> [in the <position>] [on a <colour> background]

for example ``"a small green circle in the top left on a black background"``.
Everything is seeded: the same seed gives the same scenes, pictures and captions.

>>> scene = Scene("circle", "green", "black", "top left", "small")
>>> scene.caption()
'a small green circle in the top left on a black background'
>>> render(scene, 64).size
(64, 64)
"""
from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

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


def shape_box(scene: Scene, resolution: int) -> tuple[int, int, int, int]:
    """The shape's bounding box (left, top, right, bottom) in pixels, right/bottom inclusive."""
    cx, cy = POSITIONS[scene.position]
    h = HALF_EXTENT[scene.size] * resolution
    x, y = cx * resolution, cy * resolution
    return round(x - h), round(y - h), round(x + h) - 1, round(y + h) - 1


def render(scene: Scene, resolution: int = 64) -> Image.Image:
    """Draw ``scene`` as an RGB picture of ``resolution`` x ``resolution`` pixels (no anti-aliasing)."""
    if not isinstance(resolution, int) or resolution < 16 or resolution % 8:
        raise ValueError(f"resolution must be a multiple of 8 and at least 16, got {resolution!r}")
    img = Image.new("RGB", (resolution, resolution), PALETTE[scene.background])
    draw = ImageDraw.Draw(img)
    left, top, right, bottom = shape_box(scene, resolution)
    fill = PALETTE[scene.colour]
    if scene.shape == "circle":
        draw.ellipse((left, top, right, bottom), fill=fill)
    elif scene.shape == "square":
        draw.rectangle((left, top, right, bottom), fill=fill)
    else:  # an upright triangle filling its box
        draw.polygon([((left + right) / 2, top), (right, bottom), (left, bottom)], fill=fill)
    return img


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
