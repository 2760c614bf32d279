"""The playground's widgets, driven headless: set values, click, read what the page would show."""
import datetime
import io
import time
import types

import numpy as np
import pytest
from PIL import Image

from sdcourse import playground as pg_module
from sdcourse.playground import Playground, Settings, problems, reproduce_code, result_png, uploaded_files

LOAD_LINE = 'pipe = sdcourse.load_pipeline("mini")\n'


@pytest.fixture
def pg(pipe):
    panel = Playground(pipe, threaded=False)
    panel.steps.value = 3  # the tests check behaviour, not quality: few steps keep them quick
    return panel


def pixels(images):
    return [np.asarray(im.convert("RGB")) for im in images]


def run_code(code, pipe):
    """Run the shown code with the test's already-loaded pipeline in place of its load line."""
    assert LOAD_LINE in code
    namespace = {"pipe": pipe}
    exec(code.replace(LOAD_LINE, ""), namespace)
    return namespace["images"]


def png_upload(picture, name="upload.png"):
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    data = buffer.getvalue()
    return ({"name": name, "type": "image/png", "size": len(data), "content": memoryview(data), "last_modified": datetime.datetime.now()},)


def test_txt2img_shows_pictures_progress_and_code_that_gives_the_same_pixels(pg, pipe):
    side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    assert (pg.width.value, pg.height.value) == (side, side)  # defaults from the model
    pg.prompt.value, pg.n_images.value, pg.seed.value = "a blue square", 2, 7
    pg.scheduler.value = "klms"
    pg.generate_button.click()
    assert len(pg.result) == 2 and pg.result[0].size == (side, side)
    assert pg.image.value == result_png(pg.result)
    assert pg.progress.value == pg.progress.max == 3
    assert "seed 7" in pg.status.value and "Done" in pg.status.value
    assert "download=" in pg.download.value and "base64," in pg.download.value
    assert not pg.generate_button.disabled and pg.stop_button.disabled
    assert pg.image.layout.display == ""  # the picture widget is shown from the first result on
    # the shown code, run as it is (it loads its own pipeline), gives the same pixels
    namespace = {}
    exec(pg.code, namespace)
    for a, b in zip(pixels(namespace["images"]), pixels(pg.result)):
        np.testing.assert_array_equal(a, b)
    assert len(pg.strip.children) == 1


def test_img2img_from_a_data_picture(pg, pipe):
    pg.mode.value, pg.picture.value, pg.strength.value = "img2img", "sketch", 0.5
    pg.steps.value = 4
    assert pg.preview.layout.display == "" and pg.preview.value  # the start picture is shown
    assert pg.generate()
    assert pg.progress.value == pg.progress.max == 2  # strength 0.5 of 4 steps
    for a, b in zip(pixels(run_code(pg.code, pipe)), pixels(pg.result)):
        np.testing.assert_array_equal(a, b)


def test_inpaint_shows_the_mask_over_the_picture_and_reproduces(pg, pipe):
    pg.mode.value, pg.picture.value, pg.mask.value = "inpaint", "scene", "mask_top_left"
    preview = np.asarray(Image.open(io.BytesIO(pg.preview.value)).convert("RGB")).astype(int)
    corner, middle = preview[2, 2], preview[preview.shape[0] // 2, preview.shape[1] // 2]
    assert corner[0] > corner[1] + 60  # the masked top-left cell is tinted red ...
    assert tuple(middle) == tuple(np.asarray(Image.open(io.BytesIO(pg.preview.value)).convert("RGB"))[
        preview.shape[0] // 2, preview.shape[1] // 2])  # ... the rest is the picture
    pg.n_images.value = 2
    assert pg.generate()
    for a, b in zip(pixels(run_code(pg.code, pipe)), pixels(pg.result)):
        np.testing.assert_array_equal(a, b)


def test_dream_is_a_gif_and_reproduces(pg, pipe):
    pg.mode.value, pg.frames.value, pg.seed.value, pg.seed_b.value = "dream", 3, 0, 5
    pg.prompt_b.value = "a green triangle"
    assert pg.generate()
    assert pg.image.format == "gif" and pg.image.value[:6] == b"GIF89a"
    assert len(pg.result) == 3 and "0 to 5" in pg.status.value
    for a, b in zip(pixels(run_code(pg.code, pipe)), pixels(pg.result)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("knob, value, words", [
    ("prompt", "   ", "prompt is empty"),
    ("width", 500, "500"),
    ("height", 0, "height"),
    ("seed", -3, "seed"),
])
def test_bad_input_gets_a_sentence_next_to_its_knob_and_keeps_the_last_result(pg, knob, value, words):
    assert pg.generate()
    good_result, good_png, good_code = pg.result, pg.image.value, pg.code
    setattr(getattr(pg, knob), "value", value)
    start = time.perf_counter()
    assert pg.generate() is False
    assert time.perf_counter() - start < 2  # answered at the door, before any model call
    assert words in pg.messages()[knob] and pg.errors[knob].value  # shown next to the knob
    assert "Not generated" in pg.status.value
    assert (pg.result, pg.image.value, pg.code) == (good_result, good_png, good_code)
    assert list(pg.messages()) == [knob]
    assert all(not label.value for name, label in pg.errors.items() if name != knob)


def test_an_upload_that_is_not_a_picture_and_a_mask_of_the_wrong_size(pg, pipe):
    side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    pg.mode.value, pg.picture.value = "inpaint", "upload"
    assert pg.generate() is False and "No picture uploaded" in pg.messages().get("picture", "")
    text = b"this is not a picture"
    pg.picture_upload.value = ({"name": "notes.txt", "type": "text/plain", "size": len(text),
                                "content": memoryview(text), "last_modified": datetime.datetime.now()},)
    assert pg.generate() is False
    assert "'notes.txt' is not a picture" in pg.messages().get("picture", "")
    pg.picture_upload.value = png_upload(Image.new("RGB", (side, side), (200, 30, 30)), "red.png")
    pg.mask.value = "upload"
    pg.mask_upload.value = png_upload(Image.new("L", (side // 2, side), 255), "half.png")
    assert pg.generate() is False
    assert f"{side // 2}x{side}" in pg.messages().get("mask", "") and not pg.messages().get("picture", "")
    pg.mask_upload.value = png_upload(Image.new("L", (side, side), 255), "full.png")
    assert pg.generate()
    assert "Image.open('red.png')" in pg.code and "Image.open('full.png')" in pg.code


def test_stop_ends_the_loop_at_the_next_step_and_keeps_the_last_result(pg):
    pg.steps.value = 6
    assert pg.generate()
    kept = pg.image.value
    pg.seed.value = 3

    def press_stop(change):
        if change["new"] == 2:
            pg.stop_button.click()

    pg.progress.observe(press_stop, "value")
    assert pg.generate() is False
    assert "Stopped after 2 of 6 steps" in pg.status.value
    assert pg.image.value == kept
    assert not pg.generate_button.disabled and pg.stop_button.disabled


def test_stop_from_another_thread_while_generate_runs_in_the_background(pipe):
    panel = Playground(pipe)  # threaded, as in the notebook
    panel.steps.value = 100
    panel.generate_button.click()
    deadline = time.time() + 60
    while panel.progress.value < 1 and time.time() < deadline:
        time.sleep(0.05)
    assert panel.generate_button.disabled  # no second run while one works
    panel.stop_button.click()
    panel.wait(60)
    assert "Stopped after" in panel.status.value and panel.result == []


def test_the_history_strip_restores_settings_and_new_seed_changes_the_seed(pg):
    pg.seed.value = 11
    assert pg.generate()
    pg.seed.value, pg.prompt.value = 12, "a yellow star"
    assert pg.generate()
    assert len(pg.strip.children) == 2
    pg.strip.children[1].children[1].click()  # the older result
    assert pg.seed.value == 11 and pg.prompt.value == Settings().prompt
    pg.new_seed.click()
    assert pg.seed.value != 11 and 0 <= pg.seed.value < 2**32


def test_an_error_inside_the_run_is_one_sentence(pg, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("out of memory\n  a long second line")

    monkeypatch.setattr(pg_module, "run", broken)
    assert pg.generate() is False
    assert "RuntimeError: out of memory" in pg.status.value and "second line" not in pg.status.value
    assert not pg.generate_button.disabled


def test_problems_and_code_without_widgets():
    assert problems(Settings()) == {}
    assert set(problems(Settings(prompt="", width=500, n_images=5, guidance=-1.0))) == {
        "prompt", "width", "n_images", "guidance"}
    assert set(problems(Settings(mode="dream", frames=1))) == {"frames"}
    code = reproduce_code(Settings(scheduler="euler"), model="'CompVis/stable-diffusion-v1-4'")
    assert "set_scheduler(pipe, 'euler')" in code and "load_pipeline('CompVis/stable-diffusion-v1-4')" in code


def test_model_argument_never_shows_a_local_path(tmp_path, pipe):
    class Fake:
        unet = pipe.unet
        name_or_path = str(tmp_path)

    assert pg_module.model_argument(pipe) == '"mini"'
    assert pg_module.model_argument(Fake()) == ""
    Fake.name_or_path = "CompVis/stable-diffusion-v1-4"
    assert pg_module.model_argument(Fake()) == "'CompVis/stable-diffusion-v1-4'"


def colab_upload(picture, name="upload.png"):
    """What an ipywidgets 7 FileUpload (Colab's front end) holds: {filename: {"metadata": ..., "content": bytes}}."""
    data = png_upload(picture, name)[0]["content"].tobytes()
    return {name: {"metadata": {"name": name, "type": "image/png", "size": len(data), "lastModified": 1700000000000},
                   "content": data}}


def test_uploaded_files_reads_the_values_of_ipywidgets_7_and_8():
    red = Image.new("RGB", (8, 8), (200, 30, 30))
    lab, colab = uploaded_files(png_upload(red, "red.png")), uploaded_files(colab_upload(red, "red.png"))
    assert lab == colab == [{"name": "red.png", "content": png_upload(red)[0]["content"].tobytes()}]
    assert type(lab[0]["content"]) is bytes  # not ipywidgets 8's memoryview
    assert uploaded_files(()) == uploaded_files({}) == []  # nothing uploaded yet, in either version
    with pytest.raises(TypeError, match="FileUpload"):
        uploaded_files("red.png")
    with pytest.raises(TypeError, match="'content'"):
        uploaded_files(({"name": "red.png"},))
    with pytest.raises(TypeError, match="'name'"):
        uploaded_files({"red.png": {"metadata": {}, "content": 3}})


def test_an_upload_from_colabs_ipywidgets_7_is_used(pg, pipe):
    side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    # ipywidgets 8's FileUpload refuses a dict as its value: stand-ins hold what ipywidgets 7's would
    pg.picture_upload = types.SimpleNamespace(value=colab_upload(Image.new("RGB", (side, side), (200, 30, 30)),
                                                                 "red.png"))
    pg.mask_upload = types.SimpleNamespace(value={})
    assert set(pg.uploads()) == {"picture"} and pg.uploads()["picture"]["name"] == "red.png"
    pg.mode.value, pg.picture.value = "img2img", "upload"
    assert pg.generate(), pg.status.value
    assert "Image.open('red.png')" in pg.code


def test_the_panel_displays_without_ipywidgets_8s_repr_mimebundle(pg, monkeypatch):
    import ipywidgets

    lab = pg.panel._repr_mimebundle_()  # what ipywidgets 8 gives for the panel
    monkeypatch.delattr(ipywidgets.Widget, "_repr_mimebundle_")  # as in ipywidgets 7 (Colab)
    bundle = pg._repr_mimebundle_()
    view = "application/vnd.jupyter.widget-view+json"
    assert bundle[view] == lab[view] and bundle[view]["model_id"] == pg.panel.model_id
    assert bundle["text/plain"].startswith("Playground panel")


def test_the_result_picture_is_hidden_until_there_is_one(pg):
    # an empty picture widget shown in JupyterLab stayed 0 x 0 px after its first picture arrived
    assert pg.image.layout.display == "none" and not pg.image.value
    side, pg.width.value = pg.width.value, 500
    assert pg.generate() is False and pg.image.layout.display == "none"  # refused: still nothing to show
    pg.width.value = side
    assert pg.generate() and pg.image.layout.display == "" and pg.image.value
