"""Frames to video: animated GIF and MP4 files (imageio), shown inline in a notebook.

Inline videos are embedded as base64 (a GIF as an ``image/gif`` output, an MP4 as an HTML
``<video>`` tag) so that they survive in the saved notebook, on GitHub and on Colab, with no
file next to it. Small frames (the mini model's 64 px) are enlarged by a whole factor with
NEAREST resampling, so they stay sharp.

>>> from sdcourse.video import write_gif, show_gif
>>> write_gif(frames, "dream.gif", fps=8)   # doctest: +SKIP
>>> show_gif(frames)                        # doctest: +SKIP
"""
from __future__ import annotations

import base64
import numbers
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from .validate import check_fps, check_number

# Small frames are enlarged until their shorter side reaches this many pixels.
DISPLAY_SIDE = 256


def _to_array(frame, index: int) -> np.ndarray:
    if isinstance(frame, Image.Image):
        return np.asarray(frame.convert("RGB"))
    if isinstance(frame, np.ndarray):
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"frame {index} must be an H x W x 3 RGB array, got shape {frame.shape}")
        if frame.dtype != np.uint8:
            raise ValueError(f"frame {index} must be a uint8 array (0..255), got dtype {frame.dtype}")
        return frame
    raise TypeError(f"frame {index} must be a PIL image or a uint8 H x W x 3 array, got {type(frame).__name__}")


def check_frames(frames) -> list[np.ndarray]:
    """Validate a frame sequence and return it as uint8 H x W x 3 arrays.

    A video needs at least 2 frames, all of the same size.
    """
    if isinstance(frames, (Image.Image, np.ndarray)) and not (isinstance(frames, np.ndarray) and frames.ndim == 4):
        raise TypeError("frames must be a sequence of pictures (a list of PIL images), got a single picture")
    try:
        frames = list(frames)
    except TypeError:
        raise TypeError(f"frames must be a list of PIL images or arrays, got {type(frames).__name__}") from None
    if len(frames) < 2:
        raise ValueError(f"a video needs at least 2 frames, got {len(frames)}")
    arrays = [_to_array(f, i) for i, f in enumerate(frames)]
    size = arrays[0].shape
    for i, a in enumerate(arrays):
        if a.shape != size:
            raise ValueError(
                f"all frames must have the same size: frame 0 is {size[1]}x{size[0]}, "
                f"frame {i} is {a.shape[1]}x{a.shape[0]}"
            )
    return arrays


def _check_path(path, suffix: str) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file name such as 'out{suffix}'; got {path!r}")
    path = Path(path)
    if path.suffix.lower() != suffix:
        kind = suffix[1:].upper()
        raise ValueError(f"a{'n' if kind == 'MP4' else ''} {kind} file name must end in {suffix}, got {path.name!r}")
    return path


def display_scale(frames_or_side, side: int = DISPLAY_SIDE) -> int:
    """The whole enlargement factor that brings the frames' shorter side to at least ``side`` pixels (1 if already)."""
    if isinstance(frames_or_side, numbers.Integral):
        short = int(frames_or_side)
    else:
        short = min(check_frames(frames_or_side)[0].shape[:2])
    return max(1, -(-side // short))


def _resolve_scale(arrays, scale) -> int:
    if scale is None:
        return display_scale(min(arrays[0].shape[:2]))
    if isinstance(scale, bool) or not isinstance(scale, numbers.Integral) or not 1 <= scale <= 16:
        raise ValueError(f"scale must be a whole number from 1 to 16 (or None for automatic), got {scale!r}")
    return int(scale)


def repeat_pixels(frame: np.ndarray, scale: int) -> np.ndarray:
    """Each pixel of an H x W x 3 array becomes a ``scale`` x ``scale`` block (for PIL pictures: ``images.upscale``)."""
    if scale == 1:
        return frame
    return frame.repeat(scale, axis=0).repeat(scale, axis=1)


def gif_bytes(frames, fps: float = 8, scale: int | None = None, loop: bool = True) -> bytes:
    """The frames encoded as an animated GIF (bytes), enlarged by ``scale`` (None: automatic)."""
    import imageio.v3 as iio

    arrays = check_frames(frames)
    fps = check_fps(fps)
    scale = _resolve_scale(arrays, scale)
    big = np.stack([repeat_pixels(a, scale) for a in arrays])
    return iio.imwrite("<bytes>", big, extension=".gif", duration=1000.0 / fps, loop=0 if loop else 1)


def write_gif(frames, path, fps: float = 8, scale: int | None = None, loop: bool = True) -> Path:
    """Write the frames as an animated GIF file and return its path."""
    path = _check_path(path, ".gif")
    data = gif_bytes(frames, fps=fps, scale=scale, loop=loop)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def write_mp4(frames, path, fps: float = 8, scale: int | None = None, quality: float = 7) -> Path:
    """Write the frames as an H.264 MP4 file (ffmpeg from the imageio-ffmpeg wheel) and return its path.

    Browsers need even sizes and the yuv420p pixel format; frames are enlarged by ``scale``
    (None: automatic) and the size must then be a multiple of 16 (64 px frames x 4 = 256 are).
    """
    import imageio.v2 as imageio

    path = _check_path(path, ".mp4")
    quality = check_number(quality, "quality", 0, 10, example=7)
    arrays = check_frames(frames)
    fps = check_fps(fps)
    scale = _resolve_scale(arrays, scale)
    h, w = arrays[0].shape[0] * scale, arrays[0].shape[1] * scale
    if h % 16 or w % 16:
        raise ValueError(f"MP4 frames must be a multiple of 16 pixels per side after scaling, got {w}x{h}")
    try:  # fail here with one sentence, not later with ffmpeg's "Broken pipe" and its command line
        path.parent.mkdir(parents=True, exist_ok=True)
        open(path, "ab").close()
    except OSError as exc:
        raise PermissionError(f"cannot write the MP4 file {str(path)!r}: {exc.strerror or exc}") from None
    writer = imageio.get_writer(
        path, format="FFMPEG", mode="I", fps=fps, codec="libx264", quality=quality,
        pixelformat="yuv420p", macro_block_size=16, ffmpeg_log_level="error",
    )
    try:
        for a in arrays:
            writer.append_data(repeat_pixels(a, scale))
    finally:
        writer.close()
    return path


def read_video(path) -> list[np.ndarray]:
    """Read every frame of a GIF or MP4 file back as uint8 H x W x 3 arrays."""
    import imageio.v3 as iio

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no video file named {path.name!r} in {path.parent.name or '.'}/")
    plugin = "FFMPEG" if path.suffix.lower() == ".mp4" else None
    return [np.asarray(f)[..., :3] for f in iio.imiter(path, plugin=plugin)]


def show_gif(frames_or_path, fps: float = 8, scale: int | None = None):
    """An inline animated GIF (an IPython ``Image`` holding the bytes, so it is saved in the notebook)."""
    from IPython.display import Image as IPImage

    if isinstance(frames_or_path, (str, os.PathLike)):
        data = Path(frames_or_path).read_bytes()
    else:
        data = gif_bytes(frames_or_path, fps=fps, scale=scale)
    return IPImage(data=data, format="gif")


def video_html(path, width: int | None = None) -> str:
    """An HTML ``<video>`` tag with the MP4 file embedded as base64 (plays on Colab and in Jupyter)."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    size = f' width="{int(width)}"' if width else ""
    return (f'<video{size} controls autoplay loop muted playsinline>'
            f'<source src="data:video/mp4;base64,{data}" type="video/mp4"></video>')


def show_mp4(frames_or_path, fps: float = 8, scale: int | None = None, width: int | None = None):
    """An inline MP4 video (HTML with the file embedded); frames are written to a temporary file first."""
    from IPython.display import HTML

    if isinstance(frames_or_path, (str, os.PathLike)):
        return HTML(video_html(frames_or_path, width))
    with tempfile.TemporaryDirectory() as tmp:
        path = write_mp4(frames_or_path, Path(tmp) / "video.mp4", fps=fps, scale=scale)
        return HTML(video_html(path, width))


def frame_changes(frames) -> np.ndarray:
    """Mean absolute change between consecutive frames, as a fraction of the 0..255 range.

    Returns ``len(frames) - 1`` numbers in [0, 1]; small and even numbers mean a smooth video,
    a spike means a jump.
    """
    arrays = [a.astype(np.float64) for a in check_frames(frames)]
    return np.array([np.abs(b - a).mean() / 255.0 for a, b in zip(arrays[:-1], arrays[1:])])
