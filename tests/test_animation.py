"""sdcourse.animation: schedules, the 2D camera move, and the feedback loop."""
import math

import numpy as np
import pytest
from PIL import Image, ImageDraw

from sdcourse.animation import animate, prompt_schedule, schedule, transform
from sdcourse.course_data import load_picture


def dot_picture():
    im = Image.new("RGB", (64, 64))
    ImageDraw.Draw(im).rectangle((52, 30, 55, 33), fill=(255, 255, 255))
    return im


def centre(im):
    ys, xs = np.nonzero(np.asarray(im)[..., 0] > 128)
    return xs.mean(), ys.mean()


def test_schedule_forms():
    assert schedule(1.5, 3) == [1.5, 1.5, 1.5]
    assert schedule([1, 2, 3], 3) == [1.0, 2.0, 3.0]
    assert schedule({1: 0.0, 3: 1.0}, 5) == [0.0, 0.0, 0.5, 1.0, 1.0]
    assert schedule(lambda i: i * i, 3) == [0.0, 1.0, 4.0]


def test_schedule_bad_inputs():
    with pytest.raises(ValueError, match="has 2 values but there are 3 frames"):
        schedule([1, 2], 3, "zoom")
    with pytest.raises(ValueError, match="keyframe 7 must be a frame index from 0 to 4"):
        schedule({7: 1.0}, 5, "angle")
    with pytest.raises(ValueError, match=r"strength at frame 1 is 1.5; it must lie in \[0.0, 1.0\]"):
        schedule([0.5, 1.5], 2, "strength", (0.0, 1.0))
    with pytest.raises(ValueError, match="zoom at frame 2 must be a finite number"):
        schedule(lambda i: float("nan") if i == 2 else 1.0, 3, "zoom")
    with pytest.raises(TypeError, match="must be a number, a list"):
        schedule("fast", 3, "zoom")
    with pytest.raises(ValueError, match="keyframes are empty"):
        schedule({}, 3)
    with pytest.raises(ValueError, match="at least 2"):
        schedule(1.0, 1)


def test_prompt_schedule():
    assert prompt_schedule("a red circle", 2) == ["a red circle"] * 2
    assert prompt_schedule({0: "a", 2: "b"}, 3) == ["a", "a", "b"]
    with pytest.raises(ValueError, match="must start at frame 0"):
        prompt_schedule({1: "a"}, 3)
    with pytest.raises(ValueError, match="non-empty string"):
        prompt_schedule({0: ""}, 3)


def test_transform_moves():
    im = dot_picture()
    assert np.array_equal(np.asarray(transform(im)), np.asarray(im))  # identity is exact
    x, y = centre(transform(im, angle=90))  # anticlockwise: the dot right of centre goes above it
    assert abs(x - 31.5) < 1 and abs(y - 9.5) < 1
    x, y = centre(transform(im, translate_x=-0.125, translate_y=0.125))  # 8 px left, 8 px down
    assert abs(x - 45.5) < 1 and abs(y - 39.5) < 1
    x, _ = centre(transform(im, zoom=1.25))  # 21.5 px right of the centre becomes ~26.9
    assert abs(x - (32 + 21.5 * 1.25)) < 1


def test_transform_bad_inputs():
    with pytest.raises(ValueError, match="zoom must be positive"):
        transform(dot_picture(), zoom=0)
    with pytest.raises(ValueError, match="angle must be a finite number"):
        transform(dot_picture(), angle=math.inf)
    with pytest.raises(TypeError, match="PIL picture"):
        transform(np.zeros((8, 8, 3)))


def test_animate_frames(pipe):
    init = load_picture("scene", 64)
    seen = []
    frames = animate(pipe, init, {0: "a red circle", 2: "a blue square"}, 4, zoom=1.05, angle={0: 0, 3: 6},
                     strength=[0.5, 0.5, 0.4, 0.3], steps=6, seed=1, progress=False,
                     callback=lambda i, f: seen.append(i))
    assert len(frames) == 4 and seen == [1, 2, 3]
    assert frames[0] is not init and np.array_equal(np.asarray(frames[0]), np.asarray(init))
    assert all(f.size == (64, 64) for f in frames)
    again = animate(pipe, init, {0: "a red circle", 2: "a blue square"}, 4, zoom=1.05, angle={0: 0, 3: 6},
                    strength=[0.5, 0.5, 0.4, 0.3], steps=6, seed=1, progress=False)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(frames, again))  # seeded


def test_animate_bad_inputs(pipe):
    init = load_picture("scene", 64)
    with pytest.raises(ValueError, match="num_frames must be at least 2"):
        animate(pipe, init, "a red circle", 1)
    with pytest.raises(ValueError, match=r"strength at frame 2 is 1.2"):
        animate(pipe, init, "a red circle", 3, strength={0: 0.5, 2: 1.2})
    with pytest.raises(ValueError, match=r"zoom at frame 0 is 3.0; it must lie in \[0.5, 2.0\]"):
        animate(pipe, init, "a red circle", 3, zoom=3.0)
    with pytest.raises(TypeError, match="init_image must be a PIL picture"):
        animate(pipe, "scene.png", "a red circle", 3)
