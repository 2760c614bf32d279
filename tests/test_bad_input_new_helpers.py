"""Hostile inputs to the playground, the cross-attention helpers and the grader.

Each input is the exact one a probe tried. It gets one sentence naming the argument and its value
(checked at the door, before any model call or large allocation, so well within a second), or a
documented result. No test here runs nbgrader or a real generation except where noted (one step).
"""
import io
import re
import struct
import zlib
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import fast
from sdcourse import attention as at
from sdcourse import grading
from sdcourse import playground as pg
from sdcourse.playground import Settings, problems
from sdcourse.shapes import Scene
from sdcourse.validate import check_list_of

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def png(size=(1, 1)):
    buffer = io.BytesIO()
    Image.new("RGB", size).save(buffer, format="PNG")
    return buffer.getvalue()


def png_claiming(width, height):
    """A 1x1 PNG whose header claims ``width x height`` pixels (a "decompression bomb")."""
    data = bytearray(png())
    header = data[12:29]
    header[4:12] = struct.pack(">II", width, height)
    data[12:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(header)))
    return bytes(data)


# --------------------------------------------------------------------------- playground: the knobs
@pytest.mark.parametrize("kwargs, knob, words", [
    (dict(prompt=None), "prompt", "prompt must be a string such as 'a red circle'; got None"),
    (dict(prompt=123), "prompt", "prompt must be a string .*got 123"),
    (dict(n_images=2.5), "n_images", r"n_images \(the number of pictures\) must be a whole number .*got 2.5"),
    (dict(n_images="2"), "n_images", "n_images .*must be a whole number .*got '2'"),
    (dict(scheduler="DDIM"), "scheduler", r"'ddim' \(DDIM\).*got 'DDIM'"),
    (dict(negative=5), "negative", "negative must be a string .*got 5"),
    (dict(mode="dream", prompt_b=5), "prompt_b", "prompt_b must be a string .*got 5"),
    (dict(mode="inpaint", mask="scene"), "mask", "mask must be one of 'mask_center', 'mask_top_left', 'upload'; got 'scene'"),
    (dict(mode="inpaint", picture="mask_center"), "picture", "picture must be one of 'scene', 'sketch', 'upload'; "
                                                              "got 'mask_center'"),
    (dict(mode="img2img", picture="nowhere"), "picture", "got 'nowhere'"),
    # good before: kept as they were
    (dict(mode="txt2img2"), "mode", "mode must be one of .*got 'txt2img2'"),
    (dict(n_images=0), "n_images", "must be from 1 to 4, got 0"),
    (dict(guidance=float("nan")), "guidance", "guidance_scale must be from 0 to 100.*got nan"),
    (dict(seed=2**64), "seed", "got 18446744073709551616"),
    (dict(width=60), "width", "width must be a positive multiple of 8.*got 60"),
    (dict(mode="dream", frames=33), "frames", "at most 32 frames.*got 33"),
])
def test_a_bad_knob_gets_one_sentence_under_its_name(kwargs, knob, words):
    with fast():
        found = problems(Settings(**kwargs))
    assert list(found) == [knob], found
    assert re.search(words, found[knob]), found[knob]


def test_numpy_whole_numbers_are_good_knob_values():
    assert problems(Settings(n_images=np.int64(2), steps=np.int64(3), seed=np.int64(5))) == {}


def test_settings_of_the_wrong_kind():
    with fast(), pytest.raises(TypeError, match="settings must be a playground Settings.*got str 'txt2img'"):
        problems("txt2img")


@pytest.mark.parametrize("upload, words", [
    ({"name": "a.png"}, r"the uploaded picture must be a dict with 'name' \(str\) and 'content' \(bytes\); got \['name'\]"),
    ({"name": "bomb.png", "content": png_claiming(100000, 100000)}, "'bomb.png' is far too large"),
    ({"name": "wide.png", "content": png_claiming(100, 5000)}, "'wide.png' is 100x5000 pixels; use one of at most 4096"),
    ({"name": "x.png", "content": b""}, "'x.png' is not a picture"),  # good before
])
def test_bad_uploads_are_refused_before_their_pixels_are_decoded(upload, words):
    with fast():
        found = problems(Settings(mode="img2img", picture="upload"), {"picture": upload})
    assert list(found) == ["picture"] and re.search(words, found["picture"]), found


def test_a_tiny_upload_is_resized_as_documented():
    assert problems(Settings(mode="img2img", picture="upload"), {"picture": {"name": "a.png", "content": png()}}) == {}


# --------------------------------------------------------------------------- playground: functions without widgets
@pytest.mark.parametrize("kwargs, words", [
    (dict(mode="bogus"), "Settings.mode='bogus': mode must be one of"),
    (dict(guidance=float("nan")), "Settings.guidance=nan: guidance_scale must be from 0 to 100"),
])
def test_reproduce_code_refuses_settings_it_cannot_write(kwargs, words):
    with fast(), pytest.raises(ValueError, match=words):
        pg.reproduce_code(Settings(**kwargs))


def test_reproduce_code_needs_the_model_as_python_source():
    with fast(), pytest.raises(ValueError, match="""model must be Python source of a string such as "mini".*got 'mini'"""):
        pg.reproduce_code(Settings(), model="mini")
    code = pg.reproduce_code(Settings(prompt="it's \"q\"\nx"))  # good before: quotes and newlines stay Python
    compile(code, "reproduce", "exec")
    assert "load_pipeline(\"mini\")" in code


@pytest.mark.parametrize("kwargs, words", [
    (dict(mode="bogus", steps=1, frames=2), "Settings.mode='bogus'"),  # ran dream before
    (dict(n_images=0, steps=1), r"Settings.n_images=0: n_images \(the number of pictures\) must be from 1 to 4"),
    (dict(steps=0), "Settings.steps=0: num_inference_steps must be from 1 to 1000, got 0"),
])
def test_run_checks_the_settings_first(pipe, kwargs, words):
    with fast(), pytest.raises(ValueError, match=words):
        pg.run(pipe, Settings(**kwargs))


def test_expected_steps_checks_the_settings(pipe):
    with fast(), pytest.raises(ValueError, match="Settings.steps=0"):
        pg.expected_steps(pipe, Settings(steps=0))


@pytest.mark.parametrize("call", [
    lambda: pg.run(None, Settings()),
    lambda: pg.default_size(None),
    lambda: pg.Playground(None),
])
def test_no_pipeline(call):
    with fast(), pytest.raises(TypeError, match=r'pipe must be a Stable Diffusion pipeline such as '
                                                r'sdcourse.load_pipeline\("mini"\); got None'):
        call()


def test_result_png_and_mask_overlay():
    with fast(), pytest.raises(ValueError, match="images is an empty list; result_png needs at least one picture"):
        pg.result_png([])
    with fast(), pytest.raises(TypeError, match=r"images\[0\] is a str"):  # good before
        pg.result_png(["x"])
    with fast(), pytest.raises(ValueError, match="picture and mask must have the same size; got 64x64 and 32x32"):
        pg.mask_overlay(Image.new("RGB", (64, 64)), Image.new("L", (32, 32), 255))


def test_restore_refuses_settings_the_knobs_cannot_take(pipe):
    panel = pg.Playground(pipe, threaded=False)
    with fast(), pytest.raises(ValueError, match="Settings.mode='bogus'"):
        panel.restore(Settings(mode="bogus"))
    with fast(), pytest.raises(TypeError, match="settings must be a playground Settings"):
        panel.restore("txt2img")
    panel.seed.value = 2**70  # good before: the sentence shows next to the knob
    assert panel.generate() is False and "got 1180591620717411303424" in panel.messages()["seed"]


# --------------------------------------------------------------------------- cross-attention
@pytest.fixture(scope="module")
def result(pipe):
    return at.generate_with_maps(pipe, "a red circle", steps=2, progress=False)


def heat():
    return torch.rand(8, 8)


@pytest.mark.parametrize("kwargs", [dict(weights={np.int64(2): 2.0}), dict(weights={2: np.float32(2.0)}),
                                    dict(share_steps=np.int64(1))])
def test_numpy_numbers_in_weights_and_share_steps_are_accepted(pipe, kwargs):
    out = at.generate_with_maps(pipe, "a red circle", steps=1, progress=False, **kwargs)  # one real step
    assert out.maps.shape[:2] == (1, 77)


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(weights={"red": 2}), TypeError, "weights: token index must be a whole number such as 2; got 'red'"),
    (dict(weights={2: 1e30}), ValueError, "weights: factor for token 2 must be from 0 to 100, got 1e\\+30"),
    (dict(weights={2: -1}), ValueError, "factor for token 2 must be from 0 to 100, got -1"),
    (dict(weights={0: 2.0}), ValueError, "token index must be a word of the prompt, 1 to 3"),
    (dict(share_steps=-1), ValueError, "share_steps must be from 0 to 20 .*got -1"),
    (dict(steps=0), ValueError, "num_inference_steps must be from 1 to 1000, got 0"),  # good before
    (dict(seed=-1), ValueError, "seed must be between 0 and 2\\*\\*64 - 1; got -1"),  # good before
])
def test_generate_with_maps_bad_arguments(pipe, kwargs, error, words):
    with fast(), pytest.raises(error, match=words):
        at.generate_with_maps(pipe, "a red circle", **kwargs)


def test_words_and_prompts_must_be_strings(pipe):
    with fast(), pytest.raises(TypeError, match="prompt must be a string such as 'a red circle'; got None"):
        at.prompt_tokens(pipe.tokenizer, None)
    with fast(), pytest.raises(TypeError, match="word must be a string such as 'red'; got 3"):
        at.token_index(pipe.tokenizer, "a red circle", 3)
    with pytest.raises(ValueError, match=r"word 'Red' is not one of the prompt's tokens \['a', 'red', 'circle'\]"):
        at.token_index(pipe.tokenizer, "a red circle", "Red")  # good before
    assert at.prompt_tokens(pipe.tokenizer, "") == ["<|startoftext|>", "<|endoftext|>"]  # good before


def test_reading_maps_of_a_prompt_that_is_not_there(result):
    with fast(), pytest.raises(ValueError, match=r"index must be from -1 to 0 \(there are 1 prompts\), got 5"):
        at.word_maps(result, 5)
    with fast(), pytest.raises(ValueError, match="index must be from -1 to 0.*got 3"):
        at.token_shares(result, 3)
    with fast(), pytest.raises(TypeError, match="result must be what generate_with_maps returns; got str 'res'"):
        at.word_maps("res")
    assert [w for w, _ in at.word_maps(result, -1)] == ["a", "red", "circle"]  # Python's negative index


@pytest.mark.parametrize("call, error, words", [
    (lambda: at.upsample(heat(), 0), ValueError, "size must be from 1 to 2048, got 0"),
    (lambda: at.upsample(heat(), 100000), ValueError, "size must be from 1 to 2048, got 100000"),  # was 40 GB
    (lambda: at.upsample(heat(), -5), ValueError, "size must be from 1 to 2048, got -5"),
    (lambda: at.upsample(np.zeros((8, 8)), 64), TypeError, "heat must be a torch.Tensor; got ndarray"),
    (lambda: at.upsample(torch.rand(2, 8, 8), 64), ValueError, r"heat must have 2 dimensions; got shape \(2, 8, 8\)"),
    (lambda: at.colour_mask("picture.png", "red"), TypeError, "image must be a PIL picture, got str"),
    (lambda: at.mass_inside(heat(), np.ones((64, 64))), TypeError, "mask must be a 2-D numpy array of True/False.*float64"),
    (lambda: at.mass_inside(heat(), np.zeros((0, 0), bool)), ValueError, "mask side must be from 1 to 2048, got 0"),
    (lambda: at.overlay(Image.new("RGB", (64, 64)), heat(), alpha=2), ValueError, "alpha must be from 0 to 1, got 2"),
    (lambda: at.overlay(Image.new("RGB", (64, 64)), torch.full((8, 8), float("nan"))), ValueError,
     "heat holds 64 NaN or infinite value"),
    (lambda: at.placement(None, [], progress=False), TypeError, "pipe must be a Stable Diffusion pipeline"),
    (lambda: at.placement(type("P", (), dict(unet=1, vae=1, tokenizer=1, text_encoder=1, scheduler=1))(), "abc"),
     TypeError, "scenes must be a list, each item a sdcourse.shapes.Scene; got str 'abc'"),
    (lambda: at.colour_mask(Image.new("RGB", (8, 8)), "Red"), ValueError, "colour must be one of"),  # good before
])
def test_map_helpers_bad_arguments(call, error, words):
    with fast(), pytest.raises(error, match=words):
        call()


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(cell=0), ValueError, "cell must be from 16 to 1024, got 0"),
    (dict(cell=100000), ValueError, "cell must be from 16 to 1024, got 100000"),  # was an out-of-memory crash
    (dict(title=123), TypeError, "title must be a string .*got 123"),
    (dict(cols=0), ValueError, "cols must be from 1 to 64, got 0"),
])
def test_map_grid_bad_arguments(result, kwargs, error, words):
    with fast(), pytest.raises(error, match=words):
        at.map_grid(result.images[0], at.word_maps(result), **kwargs)


def test_map_grid_accepts_numpy_cols_and_no_words(result):
    assert at.map_grid(result.images[0], at.word_maps(result), cols=np.int64(3)).size == (480, 372)
    assert at.map_grid(result.images[0], []).size == (160, 186)  # good before: the picture alone


def test_where_the_layers_sit_bad_arguments(pipe):
    with fast(), pytest.raises(TypeError, match=r"unet must be a diffusers UNet such as pipe.unet \(pass pipe.unet"):
        at.cross_attention_layers(pipe)
    with fast(), pytest.raises(ValueError, match="height must be from 1 to 256, got -8"):
        at.cross_attention_layers(pipe.unet, height=-8)
    with pytest.raises(RuntimeError, match="no cross-attention was recorded"):  # good before
        at.AttentionStore((8, 8), 1, True).maps()


def test_scenes_may_be_any_sequence_of_scenes_but_nothing_else():
    scene = Scene("circle", "red", "blue")
    assert check_list_of((scene,), "scenes", Scene, "a Scene") == [scene]
    with fast(), pytest.raises(TypeError, match=r"scenes\[1\] must be a sdcourse.shapes.Scene; got str 'x'"):
        at.placement(type("P", (), dict(unet=1, vae=1, tokenizer=1, text_encoder=1, scheduler=1))(), [scene, "x"])


# --------------------------------------------------------------------------- grading (nbgrader never runs here)
def notebook(path, text="{}"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize("layout, words", [
    ({}, "has no student folders"),
    ({"04_klms_loop_by_hand.ipynb": "{}"}, r"it holds notebooks \(04_klms_loop_by_hand.ipynb\) directly"),
    ({".ipynb_checkpoints/x.txt": ""}, "has no student folders"),
])
def test_submissions_without_student_folders(tmp_path, layout, words):
    subs = tmp_path / "subs"
    subs.mkdir()
    for name, text in layout.items():
        notebook(subs / name, text)
    with fast(), pytest.raises(ValueError, match=f"submissions='.*subs' {words}" if "no student" in words else words):
        grading.grade(subs, tmp_path / "out", NOTEBOOKS, progress=False)


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(notebook_timeout=0), ValueError, "notebook_timeout must be from 1 to 86400 seconds, got 0"),
    (dict(cell_timeout=-5), ValueError, "cell_timeout must be from 1 to 86400 seconds, got -5"),
    (dict(cell_timeout="10"), TypeError, "cell_timeout must be a number such as 300; got '10'"),
    (dict(notebook_timeout=float("nan")), ValueError, "notebook_timeout must be from 1 to 86400 seconds, got nan"),
])
def test_bad_time_limits(tmp_path, kwargs, error, words):
    (tmp_path / "subs" / "carol").mkdir(parents=True)
    with fast(), pytest.raises(error, match=words):
        grading.grade(tmp_path / "subs", tmp_path / "out", NOTEBOOKS, progress=False, **kwargs)


def test_an_output_folder_that_cannot_be_written_is_refused_before_grading(tmp_path):
    (tmp_path / "subs" / "carol").mkdir(parents=True)
    (tmp_path / "afile").write_text("x")
    with fast(), pytest.raises(ValueError, match=r"out_dir='.*afile' cannot be written \(File exists\)"):
        grading.grade(tmp_path / "subs", tmp_path / "afile", NOTEBOOKS, progress=False)
    with fast(), pytest.raises(ValueError, match="out_dir='/proc/grades' cannot be written"):
        grading.grade(tmp_path / "subs", "/proc/grades", NOTEBOOKS, progress=False)


def test_source_folders_without_graded_notebooks(tmp_path):
    (tmp_path / "subs" / "dan").mkdir(parents=True)
    (tmp_path / "empty").mkdir()
    with fast(), pytest.raises(ValueError, match="source_dir='.*empty' has no chapter notebook with graded exercises"):
        grading.grade(tmp_path / "subs", tmp_path / "out", tmp_path / "empty", progress=False)
    notebook(tmp_path / "bad" / "99_x.ipynb", "{not json")
    with fast(), pytest.raises(ValueError, match=r"holds 99_x.ipynb, which is not a readable notebook \(NotJSONError\)"):
        grading.grade(tmp_path / "subs", tmp_path / "out", tmp_path / "bad", progress=False)
    with fast(), pytest.raises(ValueError, match="source_dir='.*empty' has no chapter notebook"):
        grading.make_student_versions(tmp_path / "empty", tmp_path / "student")


def test_student_names_that_differ_only_in_case_are_refused(tmp_path):
    for name in ("Alice", "alice"):
        notebook(tmp_path / "subs" / name / "06_img2img.ipynb")
    with fast(), pytest.raises(ValueError, match="has student folders 'Alice' and 'alice', which differ only in case"):
        grading.grade(tmp_path / "subs", tmp_path / "out", NOTEBOOKS, progress=False)


def test_an_empty_student_folder_gets_a_note(tmp_path):
    (tmp_path / "subs" / "carol").mkdir(parents=True)
    rows = grading.grade(tmp_path / "subs", tmp_path / "out", NOTEBOOKS, progress=False)
    assert rows == [grading.Row("carol", "-", "-", 0.0, 0.0, "nothing graded: the folder is empty: no notebook was submitted")]
    feedback = (tmp_path / "out" / "feedback" / "carol.md").read_text()
    assert "no notebook was submitted" in feedback


def test_two_files_for_one_chapter_are_graded_once(tmp_path, monkeypatch):
    graded = []
    monkeypatch.setattr(grading, "_release", lambda course, notebooks: None)
    monkeypatch.setattr(grading, "_grade_one", lambda course, student, path, *rest: graded.append(
        path.read_text()) or [grading.Row(student, "ch06", "ch06-ex-01-check", 2.0, 2.0)])
    notebook(tmp_path / "subs" / "ann" / "old" / "06_img2img.ipynb", '{"old": 1}')
    notebook(tmp_path / "subs" / "ann" / "06_img2img.ipynb", '{"top": 1}')
    rows = grading.grade(tmp_path / "subs", tmp_path / "out", NOTEBOOKS, progress=False)
    assert graded == ['{"top": 1}'] and len(rows) == 1
    assert "old/06_img2img.ipynb: a second file for ch06; ignored" in (tmp_path / "out" / "feedback" / "ann.md").read_text()


def test_a_notebook_of_another_chapter_is_named_as_such(tmp_path):
    other = nbformat.read(str(NOTEBOOKS / "07_inpainting.ipynb"), as_version=4)
    path = tmp_path / "bob" / "06_img2img.ipynb"
    path.parent.mkdir()
    nbformat.write(other, str(path))
    with fast(5):  # answered before nbgrader is started
        rows = grading._grade_one(tmp_path / "course", "bob", path, NOTEBOOKS / "06_img2img.ipynb", 60, 60)
    assert rows and all(r.points == 0 and "ch07-ex-01-check" in r.note and "another chapter's notebook" in r.note
                        for r in rows), rows


def test_student_versions_never_overwrite_the_source(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    (source / "06_img2img.ipynb").write_bytes((NOTEBOOKS / "06_img2img.ipynb").read_bytes())
    with fast(), pytest.raises(ValueError, match="out_dir='.*src' is the folder of 06_img2img.ipynb: the student "
                                                 "versions would overwrite the notebooks with their solutions"):
        grading.make_student_versions(source, source)
    assert (source / "06_img2img.ipynb").read_bytes() == (NOTEBOOKS / "06_img2img.ipynb").read_bytes()


def test_student_versions_bad_paths(tmp_path):
    with fast(), pytest.raises(ValueError, match=r"notebooks\[0\]='.*04_missing.ipynb' is not a file"):
        grading.make_student_versions(out_dir=tmp_path / "st", notebooks=[tmp_path / "04_missing.ipynb"])
    (tmp_path / "afile").write_text("x")
    with fast(), pytest.raises(ValueError, match="out_dir='.*afile' cannot be written"):
        grading.make_student_versions(NOTEBOOKS, tmp_path / "afile", notebooks=[NOTEBOOKS / "06_img2img.ipynb"])
    with fast(), pytest.raises(TypeError, match="name must be a path such as '04_klms_loop_by_hand.ipynb'; got None"):
        grading.chapter_of(None)
    assert grading.summary_table([]) == "student  total"  # good before


@pytest.mark.parametrize("args, words", [
    (["grade", "{tmp}/nowhere"], "grade: error: submissions='.*nowhere' is not a folder"),
    (["student", "--source", "{tmp}/nowhere", "--out", "{tmp}/st"], "student: error: source_dir='.*nowhere' is not a folder"),
    (["grade", "{tmp}/subs", "--timeout", "-1", "--out", "{tmp}/o"], "grade: error: --timeout must be from 1 to 86400 "
                                                                      "seconds, got -1"),
])
def test_the_command_line_answers_bad_arguments_in_one_line(tmp_path, args, words, capsys):
    (tmp_path / "subs" / "carol").mkdir(parents=True)
    with fast(), pytest.raises(SystemExit) as exit_:  # what `python -m sdcourse.grading ...` runs, in this process
        grading.main([a.format(tmp=tmp_path) for a in args])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err, err
    assert re.search(words, err.strip().splitlines()[-1]), err
