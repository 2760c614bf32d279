"""Textual inversion and LoRA (sdcourse.personalize): what they train, that a seed repeats them, and that what
they save loads with diffusers' own calls into a fresh pipeline and draws the same pictures."""
import numpy as np
import pytest
import torch

import sdcourse
from sdcourse import personalize, shapes

STEPS = 6  # a few steps: enough to move the weights, and to tell one seed from another


def fresh():
    pipe = sdcourse.load_pipeline("mini", device="cpu", dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def picture(pipe, prompt, seed=0, **kwargs):
    return np.asarray(pipe(prompt, num_inference_steps=4, generator=torch.Generator().manual_seed(seed),
                           **kwargs).images[0], dtype=np.int16)


@pytest.fixture(scope="module")
def teal_pairs():
    return personalize.new_colour_pictures("<teal>", n=6)


@pytest.fixture(scope="module")
def outline_pairs():
    return personalize.outlined_pictures(n=6)


def test_the_pictures_show_what_their_captions_leave_unsaid(teal_pairs, outline_pairs):
    for pic, caption in teal_pairs:
        assert "<teal>" in caption and caption.startswith(("a small <teal> ", "a large <teal> "))
        assert (np.asarray(pic) == personalize.TEAL).all(axis=-1).sum() > 40  # the shape, repainted
    scene = shapes.Scene("square", "red", "white", "center", "large")
    filled = shapes.render(scene)
    assert personalize.hollowness(filled, scene) == 0.0
    assert np.allclose(personalize.shape_colour(filled, scene), shapes.PALETTE["red"])
    for pic, caption in outline_pairs:
        assert not any(word in caption for word in ("outline", "<"))  # a look, not a word
    big = [(p, c) for p, c in personalize.outlined_pictures(n=40) if " large " in c]
    scenes = {s.caption(): s for s in shapes.all_scenes()}
    assert min(personalize.hollowness(p, scenes[c]) for p, c in big) == 1.0


def test_textual_inversion_trains_one_row_repeatably_and_saves_what_diffusers_loads(teal_pairs, tmp_path):
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        pipe = fresh()
        before = pipe.text_encoder.get_input_embeddings().weight.detach().clone()
        record = personalize.train_word(pipe, "<teal>", teal_pairs, steps=STEPS, seed=seed, progress=False)
        table = pipe.text_encoder.get_input_embeddings().weight.detach()
        row = pipe.tokenizer.convert_tokens_to_ids("<teal>")
        assert row == len(before) and len(table) == len(before) + 1
        assert torch.equal(table[:row], before)  # every other word as it was
        assert not torch.equal(table[row], before[pipe.tokenizer.convert_tokens_to_ids("green</w>")])
        assert len(record.losses) == STEPS and record.trained_numbers == table.shape[1]  # one row
        assert not any(p.requires_grad for p in pipe.text_encoder.parameters())
        runs[name] = (pipe, table[row].clone())
    assert torch.equal(runs["a"][1], runs["b"][1]) and not torch.equal(runs["a"][1], runs["c"][1])

    trained = runs["a"][0]
    path = personalize.save_word(trained, "<teal>", tmp_path / "teal.safetensors")
    loaded = fresh()
    loaded.load_textual_inversion(str(path))  # diffusers' own call; the token's name comes from the file
    prompt = "a large <teal> square on a white background"
    assert np.array_equal(picture(trained, prompt), picture(loaded, prompt))
    with pytest.raises(ValueError, match="already in the tokenizer"):
        personalize.add_word(trained, "<teal>", "green")
    with pytest.raises(ValueError, match="one-token word"):
        personalize.add_word(fresh(), "<other>", "bright green")


def test_lora_trains_only_the_adapter_repeatably_and_saves_what_diffusers_loads(outline_pairs, tmp_path):
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        pipe = fresh()
        base = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
        record = personalize.train_lora(pipe, outline_pairs, rank=4, steps=STEPS, seed=seed, progress=False)
        lora = {k: v.detach().clone() for k, v in pipe.unet.named_parameters() if "lora_" in k}
        assert lora and record.trained_numbers == sum(v.numel() for v in lora.values())
        assert record.trained_numbers < 0.05 * sum(v.numel() for v in base.values())
        for key, value in pipe.unet.state_dict().items():  # the UNet's own weights as they were
            if "lora_" not in key:
                assert torch.equal(value, base[key.replace(".base_layer", "")]), key
        runs[name] = (pipe, lora)
    same = all(torch.equal(runs["a"][1][k], runs["b"][1][k]) for k in runs["a"][1])
    assert same and not all(torch.equal(runs["a"][1][k], runs["c"][1][k]) for k in runs["a"][1])

    trained = runs["a"][0]
    folder = personalize.save_lora(trained, tmp_path / "outlines")
    loaded = fresh()
    loaded.load_lora_weights(str(folder))  # diffusers' own call
    prompt = "a large red square on a white background"
    assert np.array_equal(picture(trained, prompt), picture(loaded, prompt))
    plain = fresh()
    assert np.array_equal(picture(loaded, prompt, cross_attention_kwargs={"scale": 0.0}), picture(plain, prompt))
