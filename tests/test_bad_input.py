"""Hostile inputs: each one gets one sentence naming the argument and its value, quickly, or a documented result.

The inputs are the exact ones a new user tried. Each check runs before any large allocation, so
every case here answers well within a second (asserted with a generous bound).
"""
import json
import time
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import sdcourse
from conftest import fast
from sdcourse.course_data import draw_picture, load_picture
from sdcourse.img2img import img2img
from sdcourse.images import latents_to_pil, show, tensor_to_pil
from sdcourse.interp import render_frames, slerp, slerp_frames
from sdcourse.loop import denoise, encode_prompt, generate
from sdcourse.metrics import psnr
from sdcourse.schedulers import set_scheduler
from sdcourse.validate import check_guidance, check_size, check_steps
from sdcourse.video import write_gif, write_mp4


def lat(pipe, channels=None, dtype=None):
    c = pipe.unet.config.in_channels if channels is None else channels
    s = pipe.unet.config.sample_size
    return torch.randn(1, c, s, s, dtype=dtype or pipe.unet.dtype)


def emb(pipe):
    return encode_prompt(pipe.tokenizer, pipe.text_encoder, "a red circle")


def frames(n=2, size=64):
    return [Image.new("RGB", (size, size), (i * 40, 0, 0)) for i in range(n)]


# --------------------------------------------------------------------------- the worst five
@pytest.mark.parametrize("kwargs", [dict(height=100000), dict(height=100000, width=100000)])
def test_huge_size_refused_at_once(pipe, kwargs):
    with fast(), pytest.raises(ValueError, match="height must be at most 2048 pixels.*got 100000"):
        generate(pipe, "a red circle", steps=2, **kwargs)


def test_huge_course_picture_refused():
    with fast(), pytest.raises(ValueError, match="size must be a multiple of 64 pixels from 64 to 2048.*64000"):
        load_picture("scene", 64000)


@pytest.mark.parametrize("sampler", ["euler", "klms", "pndm", "dpm++"])
def test_ten_thousand_steps_refused(pipe, sampler):
    scheduler = sdcourse.make_scheduler(sampler, pipe.scheduler.config)
    with fast(), pytest.raises(ValueError, match="num_inference_steps must be from 1 to 1000, got 10000"):
        generate(pipe, "a red circle", steps=10000, scheduler=scheduler)


def test_slerp_of_opposite_vectors_refused():
    a = torch.randn(4, 8, 8)
    with pytest.raises(ValueError, match="opposite directions"):
        slerp(0.5, a, -a)
    with pytest.raises(ValueError, match="opposite directions"):
        slerp_frames(a, -a, 5)


def test_psnr_of_float_pictures_in_0_1_matches_uint8():
    rng = np.random.default_rng(0)
    a8 = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    b8 = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    expected = psnr(a8, b8)
    assert expected < 10  # random pictures are far apart
    assert psnr(a8 / 255.0, b8 / 255.0) == pytest.approx(expected)
    with pytest.raises(ValueError, match="a is a float array with values from 0 to 2"):
        psnr(a8.astype(np.float32), b8.astype(np.float32))


def test_nan_and_inf_refused_not_drawn_black(pipe):
    bad = lat(pipe, channels=pipe.vae.config.latent_channels)
    bad[0, 0, 0, 0] = float("nan")
    with fast(), pytest.raises(ValueError, match="latents holds 1 NaN or infinite value"):
        latents_to_pil(pipe.vae, bad)
    pixels = torch.zeros(1, 3, 8, 8)
    pixels[..., 0] = float("inf")
    with pytest.raises(ValueError, match="pixels holds 24 NaN or infinite"):
        tensor_to_pil(pixels)
    x, e = lat(pipe), emb(pipe)
    x[0, 0] = float("nan")
    with fast(), pytest.raises(ValueError, match="latents holds"):
        denoise(pipe.unet, pipe.scheduler, e, x, 7.5, 2, progress=False)


def test_guidance_1e30_refused():
    with pytest.raises(ValueError, match=r"guidance_scale must be from 0 to 100 .*, got 1e\+30"):
        check_guidance(1e30)


# --------------------------------------------------------------------------- also
def test_cuda_generator_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="device 'cuda' was asked for"):
        sdcourse.make_generator(0, device="cuda")


@pytest.mark.parametrize("kwargs, match", [
    (dict(rows=0), "rows must be from 1 to 2, got 0"),
    (dict(cols=0), "cols must be from 1 to 2, got 0"),
    (dict(rows=2.5), "rows must be a whole number; got 2.5"),
])
def test_show_bad_rows_cols(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        show(frames(), **kwargs)


def test_numpy_scalars_accepted():
    assert check_guidance(np.float32(7.5)) == 7.5
    assert check_steps(np.int64(2)) == 2
    assert check_size(np.int64(64), np.int64(64)) == (64, 64)


def test_numpy_scalars_run_generate(pipe):
    out = generate(pipe, "a red circle", steps=np.int64(2), guidance=np.float32(7.5), height=np.int64(64),
                   width=np.int64(64), progress=False)
    ref = generate(pipe, "a red circle", steps=2, guidance=7.5, height=64, width=64, progress=False)
    assert torch.equal(out.latents, ref.latents)


def test_long_prompt_warning_is_short(pipe):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        encode_prompt(pipe.tokenizer, pipe.text_encoder, " ".join(["circle"] * 10000))
    texts = [str(w.message) for w in caught if "cut off" in str(w.message)]
    assert len(texts) == 1 and len(texts[0]) < 400 and "more characters" in texts[0]


@pytest.mark.parametrize("negative, error, match", [
    ([], ValueError, "negative is an empty list"),
    (123, TypeError, "negative must be a string or a list of strings; got 123"),
])
def test_bad_negative_is_named(pipe, negative, error, match):
    with pytest.raises(error, match=match):
        encode_prompt(pipe.tokenizer, pipe.text_encoder, "a red circle", negative)


def test_empty_model_index(tmp_path):
    (tmp_path / "model_index.json").write_text("{}")
    with fast(), pytest.raises(ValueError, match="is not a Stable Diffusion pipeline folder.*no _class_name"):
        sdcourse.load_pipeline(str(tmp_path))


def test_scheduler_name_where_object_expected(pipe):
    with pytest.raises(TypeError, match="scheduler must be a diffusers scheduler object; got 'ddim'.*make_scheduler"):
        generate(pipe, "a red circle", steps=2, scheduler="ddim")


def test_swapped_tokenizer_and_text_encoder(pipe):
    with pytest.raises(TypeError, match="tokenizer and text_encoder swapped"):
        encode_prompt(pipe.text_encoder, pipe.tokenizer, "a red circle")


@pytest.mark.parametrize("which", ["none", "pipe"])
def test_bad_vae(pipe, which):
    vae = None if which == "none" else pipe
    with pytest.raises(TypeError, match="vae must be a VAE such as pipe.vae"):
        latents_to_pil(vae, torch.zeros(1, 4, 8, 8))
    with pytest.raises(TypeError, match="vae must be a VAE"):
        generate({"tokenizer": pipe.tokenizer, "text_encoder": pipe.text_encoder, "unet": pipe.unet,
                  "vae": vae, "scheduler": pipe.scheduler}, "a red circle", steps=2)


def test_zero_size_pictures_latents_pixels(pipe):
    with pytest.raises(ValueError, match=r"images\[0\] is empty: it is 0 x 0 pixels"):
        show(Image.new("RGB", (0, 0)))
    with pytest.raises(ValueError, match="pixels is empty"):
        tensor_to_pil(torch.zeros(1, 3, 0, 0))
    with pytest.raises(ValueError, match="latents is empty"):
        latents_to_pil(pipe.vae, torch.zeros(1, 4, 0, 0))
    with pytest.raises(ValueError, match="the picture is 0x0; both sides must be positive multiples"):
        img2img(pipe, Image.new("RGB", (0, 0)), "a red circle")


def test_numpy_latents_and_embeddings(pipe):
    with pytest.raises(TypeError, match="latents must be a torch.Tensor; got ndarray"):
        denoise(pipe.unet, pipe.scheduler, emb(pipe), lat(pipe).numpy(), 7.5, 2)
    with pytest.raises(TypeError, match="text_embeddings must be a torch.Tensor; got ndarray"):
        denoise(pipe.unet, pipe.scheduler, emb(pipe).numpy(), lat(pipe), 7.5, 2)
    with pytest.raises(TypeError, match=r"latents\[0\] must be a torch.Tensor; got ndarray"):
        render_frames(pipe, [lat(pipe).numpy()], emb(pipe), steps=2)
    with pytest.raises(TypeError, match=r"embeddings\[0\] must be a torch.Tensor; got ndarray"):
        render_frames(pipe, [lat(pipe)], [emb(pipe).numpy()], steps=2)


def test_one_tensor_where_a_list_of_latents_is_expected(pipe):
    with pytest.raises(TypeError, match=r"latents must be a list of \(1, 4, h, w\) tensors.*got a Tensor of shape"):
        render_frames(pipe, lat(pipe), emb(pipe), steps=2)


def test_callback_returning_a_string(pipe):
    sdcourse.loop.prepare_timesteps(pipe.scheduler, 2)  # denoise runs the steps the caller prepared
    with pytest.raises(TypeError, match="callback must return None or a tensor.*returned str 'done'"):
        denoise(pipe.unet, pipe.scheduler, emb(pipe), lat(pipe), 7.5, 2, progress=False,
                callback=lambda i, t, x: "done")


def test_three_channel_and_float64_latents(pipe):
    with pytest.raises(ValueError, match="latents must have 4 channels"):
        denoise(pipe.unet, pipe.scheduler, emb(pipe), lat(pipe, channels=3), 7.5, 2)
    with pytest.raises(TypeError, match="latents are torch.float64 but the UNet runs in torch.float32"):
        denoise(pipe.unet, pipe.scheduler, emb(pipe), lat(pipe, dtype=torch.float64), 7.5, 2)


def test_animate_string_seed_and_too_large_seed(pipe):
    picture = Image.new("RGB", (64, 64))
    with pytest.raises(TypeError, match="seed must be a whole number.*got '0'"):
        sdcourse.animate(pipe, picture, "a red circle", num_frames=2, seed="0")
    with pytest.raises(ValueError, match=f"seed {2**64 - 1} is too large"):
        sdcourse.animate(pipe, picture, "a red circle", num_frames=2, seed=2**64 - 1)


def test_mp4_to_unwritable_path(tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    with fast(), pytest.raises(PermissionError, match="cannot write the MP4 file .*a.mp4"):
        write_mp4(frames(size=64), tmp_path / "a_file" / "a.mp4")


@pytest.mark.parametrize("call, error, match", [
    (lambda p: write_gif(frames(), None), TypeError, "path must be a file name such as 'out.gif'; got None"),
    (lambda p: write_mp4(frames(), None), TypeError, "path must be a file name such as 'out.mp4'; got None"),
    (lambda p: write_mp4(frames(), p / "a.mp4", quality=100), ValueError, "quality must be from 0 to 10, got 100"),
    (lambda p: write_mp4(frames(), p / "a.mp4", quality="high"), TypeError, "quality must be a number.*'high'"),
])
def test_video_writer_arguments(tmp_path, call, error, match):
    with pytest.raises(error, match=match):
        call(tmp_path)


def test_set_scheduler_on_none():
    with pytest.raises(TypeError, match="set_scheduler needs a pipeline.*got NoneType"):
        set_scheduler(None, "klms")


def test_psnr_bad_region_and_nan():
    a = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(TypeError, match="region must be an H x W boolean array, tensor or picture; got 'all'"):
        psnr(a, a, region="all")
    with pytest.raises(ValueError, match="a holds NaN"):
        psnr(np.full((8, 8, 3), np.nan), np.zeros((8, 8, 3)))


def test_course_data_with_a_list():
    with pytest.raises(TypeError, match=r"name must be the name of one course picture.*got \['scene'\]"):
        draw_picture(["scene"], 64)


def test_img2img_strength_too_small_warns(pipe):
    picture = load_picture("scene", pipe.unet.config.sample_size * pipe.vae_scale_factor)
    with pytest.warns(UserWarning, match=r"strength 0.1 with 4 steps runs no step.*at least 0.25 or steps to at least 10"):
        img2img(pipe, picture, "a red circle", strength=0.1, steps=4)


def test_single_nan_in_slerp_input():
    a, b = torch.randn(4, 8, 8), torch.randn(4, 8, 8)
    a[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="v0 holds 1 NaN or infinite value"):
        slerp_frames(a, b, 3)


def test_psnr_channel_mismatch_message():
    with pytest.raises(ValueError, match=r"a is \(8, 8, 3\), b is \(8, 8, 4\)"):
        psnr(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 4), np.uint8))


# --------------------------------------------------------------------------- the loader
def test_loader_folder_that_is_not_a_pipeline(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    with fast(), pytest.raises(ValueError, match="is not a Stable Diffusion pipeline folder.*FluxPipeline"):
        sdcourse.load_pipeline(str(tmp_path))
    with fast(), pytest.raises(ValueError, match="has no model_index.json"):
        sdcourse.load_pipeline(str(tmp_path.parent))


def test_loader_float16_on_cpu():
    with fast(), pytest.raises(ValueError, match="dtype torch.float16 was asked for on device 'cpu'"):
        sdcourse.load_pipeline("mini", device="cpu", dtype=torch.float16)


def test_loader_size_not_multiple_of_8(pipe):
    with fast(), pytest.raises(ValueError, match="height must be a positive multiple of 8.*got 100"):
        generate(pipe, "a red circle", height=100, width=64)


def test_loader_model_id_not_loadable_offline(monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    pipe = sdcourse.load_pipeline("someone/not-a-model", device="cpu")
    elapsed = time.perf_counter() - start
    line = capsys.readouterr()
    said = line.out + line.err
    assert "someone/not-a-model cannot be loaded" in said and "mini model" in said
    assert sdcourse.is_mini_model(pipe)
    assert elapsed < 10  # it loads the small bundled model instead (about 1 s when the machine is quiet)


def test_psnr_integer_arrays_in_range_and_out_of_range():
    a = np.full((8, 8, 3), 100, np.int64)
    b = np.full((8, 8, 3), 110, np.int64)
    assert psnr(a, b) == pytest.approx(psnr(a.astype(np.uint8), b.astype(np.uint8)))
    with pytest.raises(ValueError, match="a is an integer array with values from -5 to -5"):
        psnr(np.full((8, 8, 3), -5, np.int16), np.zeros((8, 8, 3), np.int16))
