"""Damaged and unusual picture files: one sentence naming the file, or a picture converted correctly."""
import numpy as np
import pytest
from PIL import Image

import sdcourse
from sdcourse.validate import check_picture


def png(image: Image.Image, path):
    image.save(path)
    return Image.open(path)


def test_a_cut_short_png_is_named_with_what_to_do(tmp_path, pipe):
    path = tmp_path / "holiday.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:2000])
    image = Image.open(path)  # only the header is read here, so this works
    with pytest.raises(ValueError, match=r"image \(holiday.png\) could not be read .*damaged or cut short") as caught:
        sdcourse.img2img(pipe, image, "a red circle", strength=0.5, steps=2)
    assert "\n" not in str(caught.value)


def test_sixteen_bit_grey_is_scaled_not_clipped_to_white(tmp_path):
    ramp = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)  # 0 .. 65520
    image = png(Image.fromarray(ramp), tmp_path / "ramp16.png")
    assert image.mode.startswith("I")
    rgb = np.asarray(check_picture(image))
    assert rgb.shape == (64, 64, 3) and rgb.min() == 0 and 250 <= rgb.max() <= 255
    assert abs(rgb.mean() - 127.5) < 2  # a plain convert("RGB") would make nearly all of it 255


def test_cmyk_and_palette_pictures_are_converted(tmp_path):
    red = Image.new("RGB", (64, 64), (220, 20, 20))
    for picture in (red.convert("CMYK"), red.convert("P")):
        rgb = np.asarray(check_picture(picture)).reshape(-1, 3).mean(0)
        assert rgb[0] > 150 and rgb[1] < 80 and rgb[2] < 80, picture.mode


def test_a_fully_transparent_picture_is_refused_a_partly_transparent_one_is_not(tmp_path):
    clear = png(Image.new("RGBA", (64, 64), (255, 0, 0, 0)), tmp_path / "clear.png")
    with pytest.raises(ValueError, match=r"image \(clear.png\) is fully transparent"):
        check_picture(clear)
    half = Image.new("RGBA", (64, 64), (255, 0, 0, 0))
    half.paste((0, 0, 255, 255), (0, 0, 32, 64))
    assert check_picture(half).mode == "RGB"


def test_a_one_pixel_picture_gets_the_size_sentence():
    with pytest.raises(ValueError, match="the picture is 1x1; both sides must be positive multiples of 8"):
        check_picture(Image.new("RGB", (1, 1)))



def cut_short(tmp_path, name, mode="RGB", fmt=None):
    path = tmp_path / name
    pixels = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(path, format=fmt)
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 3])
    return Image.open(path)


CUT_SHORT_CALLS = {  # every helper that takes a picture from a learner's file
    "img2img, a JPEG": lambda p, t: sdcourse.img2img(p, cut_short(t, "photo.jpg"), "a red circle", steps=2),
    "inpaint, the picture": lambda p, t: sdcourse.inpaint(p, cut_short(t, "photo.png"), Image.new("L", (64, 64), 255),
                                                         "a red circle", steps=2),
    "inpaint, the mask": lambda p, t: sdcourse.inpaint(p, Image.new("RGB", (64, 64)), cut_short(t, "photo.png", "L"),
                                                      "a red circle", steps=2),
    "animate": lambda p, t: sdcourse.animate(p, cut_short(t, "photo.png"), "a red circle", 2, steps=2,
                                             progress=False),
}


@pytest.mark.parametrize("call", CUT_SHORT_CALLS, ids=list(CUT_SHORT_CALLS))
def test_every_picture_helper_names_a_cut_short_file(tmp_path, pipe, call):
    with pytest.raises(ValueError, match=r"\(photo\.(png|jpg)\) could not be read .*damaged or cut short") as caught:
        CUT_SHORT_CALLS[call](pipe, tmp_path)
    assert "\n" not in str(caught.value)
