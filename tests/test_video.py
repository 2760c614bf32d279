"""sdcourse.video: GIF and MP4 writing, inline display, frame changes."""
import numpy as np
import pytest
from PIL import Image

from sdcourse.video import (
    check_frames,
    display_scale,
    frame_changes,
    gif_bytes,
    read_video,
    repeat_pixels,
    show_gif,
    show_mp4,
    video_html,
    write_gif,
    write_mp4,
)


def frames(n=5, size=64):
    # A bright bar sliding to the right over a dark background.
    out = []
    for i in range(n):
        a = np.full((size, size, 3), 20, np.uint8)
        a[:, 8 * i : 8 * i + 8] = (240, 200, 40)
        out.append(Image.fromarray(a))
    return out


def test_gif_roundtrip(tmp_path):
    path = write_gif(frames(), tmp_path / "a.gif", fps=10)
    back = read_video(path)
    assert len(back) == 5 and back[0].shape == (256, 256, 3)  # 64 px enlarged x4
    # NEAREST enlargement: every 4 x 4 block is one colour; the bar is where it was drawn.
    assert np.array_equal(back[2][::4, ::4], np.asarray(frames()[2]))


def test_mp4_roundtrip(tmp_path):
    path = write_mp4(frames(6), tmp_path / "a.mp4", fps=6)
    back = read_video(path)
    assert len(back) == 6 and back[0].shape == (256, 256, 3)
    # Lossy, but the bar is still in the right place.
    assert back[3][:, 100:124].mean() > back[3][:, 200:].mean() + 100


def test_scale():
    assert display_scale(64) == 4 and display_scale(512) == 1 and display_scale(100) == 3
    assert display_scale(frames()) == 4


def test_repeat_pixels_makes_blocks():
    frame = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    big = repeat_pixels(frame, 3)
    assert big.shape == (6, 6, 3) and (big[:3, :3] == frame[0, 0]).all() and (big[3:, 3:] == frame[1, 1]).all()
    assert repeat_pixels(frame, 1) is frame


def test_explicit_scale(tmp_path):
    back = read_video(write_gif(frames(), tmp_path / "b.gif", scale=1))
    assert back[0].shape == (64, 64, 3)
    with pytest.raises(ValueError, match="scale must be a whole number"):
        gif_bytes(frames(), scale=0)


def test_inline_outputs(tmp_path):
    gif = show_gif(frames())
    assert gif._repr_mimebundle_()[0].keys() == {"image/gif"}
    html = show_mp4(frames()).data
    assert html.startswith("<video") and "data:video/mp4;base64," in html
    path = write_mp4(frames(), tmp_path / "c.mp4")
    assert video_html(path, width=256).startswith('<video width="256"')


@pytest.mark.parametrize("n", [0, 1])
def test_fewer_than_two_frames(tmp_path, n):
    with pytest.raises(ValueError, match=f"at least 2 frames, got {n}"):
        write_gif(frames(5)[:n], tmp_path / "x.gif")
    with pytest.raises(ValueError, match=f"at least 2 frames, got {n}"):
        write_mp4(frames(5)[:n], tmp_path / "x.mp4")


def test_bad_frames(tmp_path):
    with pytest.raises(ValueError, match="same size: frame 0 is 64x64, frame 1 is 32x32"):
        check_frames([frames()[0], frames(size=32)[0]])
    with pytest.raises(TypeError, match="single picture"):
        check_frames(frames()[0])
    with pytest.raises(TypeError, match="frame 1 must be a PIL image"):
        check_frames([frames()[0], "x"])
    with pytest.raises(ValueError, match="uint8"):
        check_frames([np.zeros((8, 8, 3)), np.zeros((8, 8, 3))])


def test_bad_names_and_fps(tmp_path):
    with pytest.raises(ValueError, match="must end in .gif"):
        write_gif(frames(), tmp_path / "a.png")
    with pytest.raises(ValueError, match="must end in .mp4"):
        write_mp4(frames(), tmp_path / "a.gif")
    with pytest.raises(ValueError, match="fps must be above 0; got 0"):
        write_gif(frames(), tmp_path / "a.gif", fps=0)
    with pytest.raises(ValueError, match="multiple of 16"):
        write_mp4(frames(size=72), tmp_path / "a.mp4", scale=1)


def test_frame_changes():
    ch = frame_changes(frames(4))
    assert ch.shape == (3,)
    # Each step moves an 8-px bar by 8 px: 16 of 64 columns change by 220 (bar colour vs background).
    expected = (16 / 64) * np.mean([220, 180, 20]) / 255
    np.testing.assert_allclose(ch, expected)
    assert frame_changes([frames()[0], frames()[0]])[0] == 0


def test_read_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no video file named 'nothing.mp4'"):
        read_video(tmp_path / "nothing.mp4")
