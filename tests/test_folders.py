"""Damaged model folders: one sentence that names the file, from check_model_folder and from load_pipeline."""
import re
import shutil
import time

import pytest

import sdcourse
from sdcourse import MINI_MODEL_DIR
from sdcourse.folders import DamagedModelError, check_model_folder


@pytest.fixture
def copy(tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(MINI_MODEL_DIR, folder, ignore=shutil.ignore_patterns("*.png", "README.md"))
    return folder


def cut(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[:keep])


DAMAGES = {
    "no vocab.json": (lambda f: (f / "tokenizer" / "vocab.json").unlink(), "tokenizer/vocab.json is missing"),
    "no tokenizer folder": (lambda f: shutil.rmtree(f / "tokenizer"), "tokenizer is missing, but model_index.json"),
    "config.json not JSON": (lambda f: (f / "unet" / "config.json").write_text('{"sample_size": 8,'),
                             "unet/config.json is not valid JSON"),
    "config.json a list": (lambda f: (f / "vae" / "config.json").write_text("[1, 2]"),
                           "vae/config.json holds a JSON list"),
    "no model_index.json": (lambda f: (f / "model_index.json").unlink(), "model_index.json is missing"),
    "model_index.json not JSON": (lambda f: (f / "model_index.json").write_text("unet: yes"),
                                  "model_index.json is not valid JSON"),
    "weights cut short": (lambda f: cut(f / "unet" / "diffusion_pytorch_model.safetensors", 100_000),
                          "unet/diffusion_pytorch_model.safetensors is cut short: 100,000 bytes"),
    "weights header damaged": (lambda f: cut(f / "vae" / "diffusion_pytorch_model.safetensors", 12),
                               "vae/diffusion_pytorch_model.safetensors is not a readable safetensors file"),
    "no weights": (lambda f: (f / "text_encoder" / "model.safetensors").unlink(), "text_encoder has no weight file"),
    "VAE weights in the UNet's file": (
        lambda f: shutil.copy(f / "vae" / "diffusion_pytorch_model.safetensors",
                              f / "unet" / "diffusion_pytorch_model.safetensors"),
        "unet/diffusion_pytorch_model.safetensors does not hold UNet2DConditionModel weights (they look like "
        "AutoencoderKL weights)"),
    "UNet weights in the text encoder's file": (
        lambda f: shutil.copy(f / "unet" / "diffusion_pytorch_model.safetensors", f / "text_encoder" / "model.safetensors"),
        "text_encoder/model.safetensors does not hold CLIPTextModel weights (they look like UNet2DConditionModel weights)"),
    "no scheduler config": (lambda f: (f / "scheduler" / "scheduler_config.json").write_bytes(b"\xff\xfe"),
                            "scheduler/scheduler_config.json is not valid JSON"),
}


def test_the_bundled_model_is_whole():
    assert check_model_folder(MINI_MODEL_DIR) == MINI_MODEL_DIR


@pytest.mark.parametrize("damage", DAMAGES, ids=list(DAMAGES))
def test_a_damaged_folder_gets_one_sentence_naming_the_file(copy, damage):
    do, expected = DAMAGES[damage]
    do(copy)
    start = time.perf_counter()
    with pytest.raises(DamagedModelError) as caught:
        check_model_folder(copy)
    message = str(caught.value)
    assert expected in message and "copy the folder again" in message
    assert "\n" not in message and time.perf_counter() - start < 1.0
    # load_pipeline names the same file, before any library reads the folder (its own model_index.json checks
    # come first and raise ValueError)
    with pytest.raises((OSError, ValueError), match=re.escape(expected.split()[0])):
        sdcourse.load_pipeline(str(copy))


def test_a_tokenizer_saved_as_tokenizer_json_is_whole(copy):
    """transformers 5 saves a CLIP tokenizer as tokenizer.json; either spelling is a whole tokenizer."""
    from transformers import CLIPTokenizer

    shutil.rmtree(copy / "tokenizer")
    CLIPTokenizer.from_pretrained(MINI_MODEL_DIR / "tokenizer").save_pretrained(copy / "tokenizer")
    (copy / "tokenizer" / "vocab.json").unlink(missing_ok=True)
    (copy / "tokenizer" / "merges.txt").unlink(missing_ok=True)
    assert (copy / "tokenizer" / "tokenizer.json").is_file()
    assert check_model_folder(copy) == copy
