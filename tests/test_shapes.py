"""The procedural training world: grammar, determinism, rendering, the held-out split."""
import random

import numpy as np
import pytest

from sdcourse import shapes


def test_caption_grammar():
    s = shapes.Scene("circle", "green", "black", "top left", "small")
    assert s.caption() == "a small green circle in the top left on a black background"
    assert s.caption(size=False, position=False, background=False) == "a green circle"
    assert shapes.Scene("square", "orange", "blue").caption(size=False) == "an orange square in the center on a blue background"


def test_every_scene_once():
    scenes = shapes.all_scenes()
    assert len(scenes) == 3 * 8 * 7 * 5 * 2 == len(set(scenes))


def test_split_is_fixed_and_disjoint():
    train, held = shapes.split_scenes()
    assert len(held) == 168 and len(train) == 1680 - 168
    assert not set(train) & set(held)
    assert shapes.split_scenes()[1] == held  # the same split every time


def test_render_is_flat_palette_and_deterministic():
    s = shapes.Scene("triangle", "red", "white", "bottom right", "large")
    a, b = np.asarray(shapes.render(s)), np.asarray(shapes.render(s))
    assert a.shape == (64, 64, 3) and (a == b).all()
    colours = {tuple(c) for c in a.reshape(-1, 3)}
    assert colours == {shapes.PALETTE["red"], shapes.PALETTE["white"]}


def test_a_look_is_seeded_and_within_its_limits():
    a = [shapes.random_look(random.Random(5)) for _ in range(2)]
    assert a[0] == a[1] != shapes.random_look(random.Random(6))
    lim = shapes.LOOK_LIMITS
    for look in (shapes.random_look(random.Random(i)) for i in range(200)):
        assert abs(look.dx) <= lim["offset"] and abs(look.dy) <= lim["offset"]
        assert abs(look.scale - 1) <= lim["scale"] and 0 <= look.shade <= lim["shade"]
        assert max(map(abs, look.tint + look.background_tint)) <= lim["tint"]
    neutral = shapes.random_look(random.Random(1), strength=0)
    assert (neutral.dx, neutral.dy, neutral.scale, neutral.shade, neutral.tint) == (0, 0, 1, 0, (0, 0, 0))
    with pytest.raises(ValueError, match="strength"):
        shapes.random_look(random.Random(0), strength=2)


def test_a_varied_render_varies_where_the_caption_is_silent():
    s = shapes.Scene("square", "red", "blue", "center", "large")
    flat = np.asarray(shapes.render(s)).astype(int)
    moved = np.asarray(shapes.render(s, look=shapes.Look(dx=0.05))).astype(int)
    shaded = np.asarray(shapes.render(s, look=shapes.Look(shade=0.1, angle=0.0))).astype(int)
    assert (np.asarray(shapes.render(s, look=shapes.Look())) == flat).mean() > 0.95  # only the edges smoothed
    red_x = lambda a: np.nonzero((a[..., 0] > 150) & (a[..., 2] < 100))[1].mean()
    assert red_x(moved) - red_x(flat) == pytest.approx(0.05 * 64, abs=0.5)  # moved 3.2 pixels right
    assert shaded[32, 60, 2] > flat[32, 60, 2] > shaded[32, 3, 2]  # lighter right, darker left (angle 0)
    assert len({tuple(c) for c in shaded.reshape(-1, 3)}) > 20  # no longer two flat colours


def test_dataset_is_seeded():
    a = [c for _, c, _ in shapes.dataset(5, seed=3)]
    b = [c for _, c, _ in shapes.dataset(5, seed=3)]
    c = [c for _, c, _ in shapes.dataset(5, seed=4)]
    assert a == b and a != c


def test_random_caption_drops_parts():
    s = shapes.Scene("square", "blue", "yellow", "top right", "large")
    caps = {shapes.random_caption(s, random.Random(i), p_drop=0.5) for i in range(200)}
    assert "a blue square" in caps and s.caption() in caps


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(shape="hexagon", colour="red", background="blue"), "unknown shape 'hexagon'"),
        (dict(shape="circle", colour="pink", background="blue"), "unknown colour 'pink'"),
        (dict(shape="circle", colour="red", background="red"), "both red"),
        (dict(shape="circle", colour="red", background="blue", position="middle"), "unknown position 'middle'"),
        (dict(shape="circle", colour="red", background="blue", size="huge"), "unknown size 'huge'"),
    ],
)
def test_bad_scene(kwargs, match):
    with pytest.raises(ValueError, match=match):
        shapes.Scene(**kwargs)


@pytest.mark.parametrize("res", [60, 8, "64"])
def test_bad_resolution(res):
    with pytest.raises(ValueError, match="multiple of 8"):
        shapes.render(shapes.Scene("circle", "red", "blue"), res)


def test_bad_dataset_size():
    with pytest.raises(ValueError, match="positive integer"):
        shapes.dataset(0)
