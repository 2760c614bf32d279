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
