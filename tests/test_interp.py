"""sdcourse.interp: slerp, lerp and frame schedules."""
import math

import pytest
import torch

from sdcourse.interp import check_num_frames, frame_times, lerp, lerp_frames, slerp, slerp_frames, slerp_path


def noise(seed, shape=(1, 4, 8, 8), dtype=torch.float32):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_endpoints_exact():
    a, b = noise(0), noise(1)
    assert torch.equal(slerp(0.0, a, b), a)
    assert torch.equal(slerp(1, a, b), b)


def test_norm_preserved_for_equal_norms():
    a, b = noise(0), noise(1)
    b = b * (a.norm() / b.norm())
    for t in (0.1, 0.25, 0.5, 0.9):
        assert slerp(t, a, b).norm().item() == pytest.approx(a.norm().item(), rel=1e-5)
    # ...while the straight line sags towards the origin half way (about 1/sqrt(2) for independent noise).
    assert lerp(0.5, a, b).norm() < 0.8 * a.norm()


def test_halfway_is_equal_angle():
    a, b = noise(2), noise(3)
    b = b * (a.norm() / b.norm())
    m = slerp(0.5, a, b)
    cos = lambda x, y: torch.dot(x.flatten(), y.flatten()) / (x.norm() * y.norm())  # noqa: E731
    assert cos(m, a).item() == pytest.approx(cos(m, b).item(), abs=1e-5)


def test_orthogonal_unit_vectors_follow_the_circle():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    out = slerp(1 / 3, a, b)
    assert torch.allclose(out, torch.tensor([math.cos(math.pi / 6), math.sin(math.pi / 6)]))


def test_falls_back_to_lerp_when_nearly_parallel():
    a = noise(0)
    b = a * 2.0 + 1e-4 * noise(1)  # the same direction, twice as long
    assert torch.allclose(slerp(0.5, a, b), lerp(0.5, a, b))
    assert torch.allclose(slerp(0.5, a, b), 1.5 * a, atol=1e-3)


def test_keeps_dtype_and_shape():
    a, b = noise(0, dtype=torch.float16), noise(1, dtype=torch.float16)
    out = slerp(0.3, a, b)
    assert out.dtype == torch.float16 and out.shape == a.shape


def test_different_shapes_rejected():
    with pytest.raises(ValueError, match=r"different shapes: v0 is \(1, 4, 8, 8\), v1 is \(1, 4, 4, 4\)"):
        slerp(0.5, noise(0), noise(1, (1, 4, 4, 4)))


@pytest.mark.parametrize("t", [-0.1, 1.5, float("nan")])
def test_t_out_of_range(t):
    with pytest.raises(ValueError, match=r"t must be from 0 to 1"):
        slerp(t, noise(0), noise(1))


def test_bad_inputs():
    with pytest.raises(TypeError, match="t must be a number"):
        slerp("half", noise(0), noise(1))
    with pytest.raises(TypeError, match="v1 must be a torch.Tensor"):
        slerp(0.5, noise(0), [1.0])
    with pytest.raises(TypeError, match="floating-point"):
        slerp(0.5, torch.ones(3, dtype=torch.int64), torch.ones(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="norm 0"):
        slerp(0.5, torch.zeros(3), torch.ones(3))
    with pytest.raises(ValueError, match="dot_threshold"):
        slerp(0.5, noise(0), noise(1), dot_threshold=1.5)


def test_frames():
    assert frame_times(3) == [0.0, 0.5, 1.0]
    a, b = noise(0), noise(1)
    frames = slerp_frames(a, b, 4)
    assert len(frames) == 4 and torch.equal(frames[0], a) and torch.equal(frames[-1], b)
    assert len(lerp_frames(a, b, 2)) == 2


@pytest.mark.parametrize("n", [0, 1])
def test_fewer_than_two_frames(n):
    with pytest.raises(ValueError, match=f"num_frames must be at least 2 .*got {n}"):
        slerp_frames(noise(0), noise(1), n)


def test_num_frames_type():
    with pytest.raises(TypeError, match="num_frames must be a whole number"):
        check_num_frames(2.5)


def test_path_and_loop():
    keys = [noise(0), noise(1), noise(2)]
    path = slerp_path(keys, 4)
    assert len(path) == 2 * 3 + 1
    assert torch.equal(path[0], keys[0]) and torch.equal(path[3], keys[1]) and torch.equal(path[-1], keys[2])
    loop = slerp_path(keys, 4, loop=True)
    assert len(loop) == 3 * 3 and torch.equal(loop[0], keys[0]) and not torch.equal(loop[-1], keys[0])
    with pytest.raises(ValueError, match="at least 2 tensors"):
        slerp_path(keys[:1], 4)


# ---------------------------------------------------------------- render_frames (needs the mini model: conftest's pipe)
def test_render_frames_first_frame_is_the_seed_picture(pipe):
    import numpy as np

    from sdcourse.interp import render_frames
    from sdcourse.loop import encode_prompt, generate

    prompt = "a small blue square in the top left on a white background"
    shape = (1, 4, 8, 8)
    a = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    b = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    emb = encode_prompt(pipe.tokenizer, pipe.text_encoder, [prompt])
    expected = np.asarray(generate(pipe, prompt, seed=0, steps=4, progress=False).images[0], dtype=int)
    one_by_one = render_frames(pipe, slerp_frames(a, b, 3), emb, steps=4, batch_size=1, progress=False)
    assert len(one_by_one) == 3 and one_by_one[0].size == (64, 64)
    assert np.array_equal(np.asarray(one_by_one[0]), expected)
    # In a batch the network rounds in another order: at most one level of 255 apart.
    batched = render_frames(pipe, slerp_frames(a, b, 3), emb, steps=4, batch_size=2, progress=False)
    assert np.abs(np.asarray(batched[0], dtype=int) - expected).max() <= 1


def test_render_frames_bad_inputs(pipe):
    from sdcourse.interp import render_frames
    from sdcourse.loop import encode_prompt

    emb = encode_prompt(pipe.tokenizer, pipe.text_encoder, ["a red circle"])
    lat = [noise(0), noise(1)]
    with pytest.raises(ValueError, match="got 2 latents but 3 embeddings"):
        render_frames(pipe, lat, [emb] * 3, steps=2)
    with pytest.raises(ValueError, match=r"latents\[1\] must have shape \(1, 4, 8, 8\)"):
        render_frames(pipe, [noise(0), noise(1, (1, 4, 4, 4))], emb, steps=2)
    with pytest.raises(ValueError, match=r"embeddings\[0\] must be an \[uncond, cond\] tensor"):
        render_frames(pipe, lat, emb[1], steps=2)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        render_frames(pipe, lat, emb, steps=2, batch_size=0)
