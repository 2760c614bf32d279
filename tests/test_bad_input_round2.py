"""Bad input, second round: the attention formula and store, the stability limits, the course pictures.

Each case is an input a careful tester tried. It must get one sentence naming the argument (a ``TypeError``
or ``ValueError`` raised at the door), never a traceback from inside torch or numpy, never a hang and never a
result computed from nonsense. The training recipe's and the commands' cases live beside their other tests
(``test_train.py``, ``test_evaluate.py``, ``test_standin.py``, ``test_assignments.py``).
"""
import math

import numpy as np
import pytest
import torch

import sdcourse
from sdcourse import attention as at
from sdcourse import course_data, stiffness
from sdcourse.shapes import Scene


@pytest.fixture(scope="module")
def unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(sdcourse.MINI_MODEL_DIR, subfolder="unet").eval()


@pytest.fixture(scope="module")
def attn(unet):
    return unet.get_submodule(at.cross_attention_layers(unet)[0]["name"])


def _good(attn):
    c, d = attn.to_q.in_features, attn.to_k.in_features
    return torch.zeros(1, 64, c), torch.zeros(1, 77, d)


# ---------------------------------------------------------------- attention_by_formula
FORMULA_CASES = [  # (what to change, error, words in the message)
    (dict(attn=None), TypeError, "attn must be a diffusers Attention layer"),
    (dict(attn="attn2"), TypeError, "attn must be"),
    (dict(attn=torch.nn.Linear(4, 4)), TypeError, "attn must be"),
    (dict(hidden_states=None), TypeError, "hidden_states must be a torch.Tensor"),
    (dict(hidden_states=np.zeros((1, 64, 32), dtype=np.float32)), TypeError, "torch.from_numpy"),
    (dict(hidden_states=torch.zeros(64, 32)), ValueError, "hidden_states must have 3 dimensions"),
    (dict(hidden_states=torch.zeros(1, 1, 64, 32)), ValueError, "hidden_states must have 3 dimensions"),
    (dict(hidden_states=torch.zeros(1, 64, 31)), ValueError, "hidden_states must be (batch, pixels"),
    (dict(hidden_states=torch.zeros(1, 64, 32, dtype=torch.long)), TypeError, "floating-point"),
    (dict(hidden_states=torch.full((1, 64, 32), float("nan"))), ValueError, "hidden_states"),
    (dict(hidden_states=torch.zeros(1, 0, 32)), ValueError, "empty"),
    (dict(text=None), TypeError, "text must be a torch.Tensor"),
    (dict(text=torch.zeros(77, 128)), ValueError, "text must have 3 dimensions"),
    (dict(text=torch.zeros(1, 77, 127)), ValueError, "text must be (batch, 77"),
    (dict(text=torch.zeros(2, 77, 128)), ValueError, "same batch size"),
    (dict(text=torch.full((1, 77, 128), float("inf"))), ValueError, "text"),
    (dict(text=torch.zeros(1, 77, 128, dtype=torch.int32)), TypeError, "floating-point"),
    (dict(text="a red circle"), TypeError, "text must be a torch.Tensor"),
]


@pytest.mark.parametrize("change, error, words", FORMULA_CASES)
def test_attention_by_formula_checks_its_inputs(attn, change, error, words):
    hidden, text = _good(attn)
    assert (hidden.shape[-1], text.shape[-1]) == (32, 128)  # the cases are written for this layer's sizes
    args = {"attn": attn, "hidden_states": hidden, "text": text, **change}
    with pytest.raises(error, match=words.replace("(", r"\(")):
        at.attention_by_formula(args["attn"], args["hidden_states"], args["text"])


def test_attention_by_formula_still_matches_the_layer(attn):
    hidden, text = torch.randn(2, 64, attn.to_q.in_features), torch.randn(2, 77, attn.to_k.in_features)
    out, probs = at.attention_by_formula(attn, hidden, text)
    assert torch.allclose(out, attn(hidden, encoder_hidden_states=text), atol=1e-5)
    assert torch.allclose(probs.sum(-1), torch.ones(1), atol=1e-5)


# ---------------------------------------------------------------- AttentionStore
STORE_CASES = [  # keyword arguments of AttentionStore, error, words
    (dict(latent_hw=8), TypeError, "latent_hw must be the latent grid"),
    (dict(latent_hw=(8,)), TypeError, "latent_hw must be the latent grid"),
    (dict(latent_hw=(8, 8, 8)), TypeError, "latent_hw must be the latent grid"),
    (dict(latent_hw="8x8"), TypeError, "latent_hw must be the latent grid"),
    (dict(latent_hw=(0, 8)), ValueError, "latent_hw must be from 1"),
    (dict(latent_hw=(8, -8)), ValueError, "latent_hw must be from 1"),
    (dict(latent_hw=(8.5, 8)), TypeError, "latent_hw must be a whole number"),
    (dict(latent_hw=(8, 100000)), ValueError, "latent_hw"),
    (dict(batch=0), ValueError, "batch must be from 1"),
    (dict(batch=-1), ValueError, "batch"),
    (dict(batch=1.5), TypeError, "batch must be a whole number"),
    (dict(batch="1"), TypeError, "batch must be a whole number"),
    (dict(guided="yes"), TypeError, "guided must be True or False"),
    (dict(guided=1), TypeError, "guided must be True or False"),
    (dict(share_maps="no"), TypeError, "share_maps must be True or False"),
    (dict(keep_steps=None), TypeError, "keep_steps must be True or False"),
    (dict(share_steps=-1), ValueError, "share_steps"),
    (dict(share_steps=2.5), TypeError, "share_steps"),
    (dict(weights=[2, 3.0]), TypeError, "weights must be a dict"),
    (dict(weights={2: "strong"}), TypeError, "weights: factor"),
    (dict(weights={2: -1.0}), ValueError, "weights: factor"),
    (dict(weights={2: float("nan")}), ValueError, "weights: factor"),
    (dict(weights={2: 1e9}), ValueError, "weights: factor"),
    (dict(weights={0: 2.0}), ValueError, "token index must be a word"),
    (dict(weights={76: 2.0}), ValueError, "token index must be a word"),
    (dict(weights={77: 2.0}), ValueError, "token index must be a word"),
    (dict(weights={500: 2.0}), ValueError, "token index must be a word"),
    (dict(weights={-1: 2.0}), ValueError, "token index must be a word"),
    (dict(weights={"red": 2.0}), TypeError, "token index must be a whole number"),
    (dict(weights={2.5: 2.0}), TypeError, "token index must be a whole number"),
]


@pytest.mark.parametrize("kwargs, error, words", STORE_CASES)
def test_attention_store_checks_its_settings(kwargs, error, words):
    args = {"latent_hw": (8, 8), "batch": 1, "guided": True, **kwargs}
    with pytest.raises(error, match=words):
        at.AttentionStore(args.pop("latent_hw"), args.pop("batch"), args.pop("guided"), **args)


@pytest.mark.parametrize("latent_hw, batch, guided, words", [
    ((16, 16), 1, True, "does not match this run"),  # the run's grid is 8 x 8
    ((8, 9), 1, True, "does not match this run"),
    ((3, 3), 1, True, "does not match this run"),
    ((1, 1), 1, True, "does not match this run"),
    ((8, 8), 2, True, "expects 4 rows per UNet call, but the UNet ran with 2"),
    ((8, 8), 1, False, "expects 1 rows per UNet call, but the UNet ran with 2"),
    ((8, 8), 3, False, "expects 3 rows"),
])
def test_a_store_that_does_not_match_the_run_says_so(unet, latent_hw, batch, guided, words):
    store = at.AttentionStore(latent_hw, batch, guided)
    with at.cross_attention(unet, store), pytest.raises(ValueError, match=words):
        unet(torch.zeros(2, 4, 8, 8), 500, encoder_hidden_states=torch.zeros(2, 77, 128))
    assert not any(type(p).__name__ == "RecordingProcessor" for p in unet.attn_processors.values())


# ---------------------------------------------------------------- stability limits
@pytest.mark.parametrize("tolerance, error", [
    (0, ValueError), (0.0, ValueError), (-1e-9, ValueError), (1.0, ValueError), (float("nan"), ValueError),
    (float("inf"), ValueError), ("small", TypeError), (None, TypeError), (True, TypeError), (1e-30, ValueError),
])
def test_stability_limit_refuses_tolerances_that_never_end_or_mean_nothing(tolerance, error):
    with pytest.raises(error, match="tolerance"):
        stiffness.stability_limit(4, tolerance=tolerance)


@pytest.mark.parametrize("order, error", [(0, ValueError), (-1, ValueError), (99, ValueError), (2.5, TypeError),
                                          ("4", TypeError), (None, TypeError)])
def test_stability_limit_refuses_bad_orders(order, error):
    with pytest.raises(error, match="order"):
        stiffness.stability_limit(order)


def test_stability_limit_at_the_coarsest_tolerance_is_close():
    assert math.isclose(stiffness.stability_limit(4, tolerance=1e-3), 0.3, abs_tol=1e-3)


# ---------------------------------------------------------------- course pictures
@pytest.mark.parametrize("name, size, error", [
    ("../../etc/passwd", 64, ValueError), ("../sketch", 64, ValueError), ("/etc/passwd", 64, ValueError),
    ("sketch/../../x", 64, ValueError), ("", 64, ValueError), ("sketch ", 64, ValueError), ("SKETCH", 64, ValueError),
    (None, 64, TypeError), (3, 64, TypeError), (b"sketch", 64, TypeError),
    ("sketch", 0, ValueError), ("sketch", 63, ValueError), ("sketch", -64, ValueError), ("sketch", 64.0, ValueError),
    ("sketch", "64", ValueError), ("sketch", True, ValueError), ("sketch", 10**6, ValueError),
    ("sketch", "../64", ValueError),
])
def test_data_file_names_only_course_pictures_inside_data(name, size, error):
    with pytest.raises(error):
        course_data.data_file(name, size)


def test_data_file_is_inside_data_for_every_picture():
    for name in course_data.PICTURES:
        path = course_data.data_file(name, 64)
        assert path.parent == course_data.DATA_DIR and path.name == f"{name}_64.png"


# ---------------------------------------------------------------- the playground's knobs, set from code
@pytest.fixture(scope="module")
def panel():
    from sdcourse import playground as pg

    return pg.Playground(sdcourse.load_pipeline("mini", device="cpu"), threaded=False)


KNOB_CASES = [  # (knob, value): a value that no knob may quietly turn into another one
    *[("steps", v) for v in (0, -1, 101, 500, 1000, 2.5, "20", None, True, float("nan"))],
    *[("n_images", v) for v in (0, 5, 100, -2, 1.5, "4")],
    *[("guidance", v) for v in (-3, -0.5, 20.5, 100, 1e9, float("nan"), float("inf"), "7.5", None)],
    *[("strength", v) for v in (-0.1, 1.5, 2, float("nan"), "0.5")],
    *[("frames", v) for v in (1, 0, 33, 100, 2.5, "8")],
    *[("seed", v) for v in (1.7, "7", None, 2.0, True)],
    *[("seed_b", v) for v in (0.5, "1")],
    *[("width", v) for v in (64.5, "64", None)],
    *[("height", v) for v in (63.9, "64")],
]


@pytest.mark.parametrize("knob, value", KNOB_CASES)
def test_a_knob_set_from_code_out_of_its_range_raises_and_keeps_its_value(panel, knob, value):
    from sdcourse.playground import KnobError

    widget = getattr(panel, knob)
    before = widget.value
    with pytest.raises(KnobError, match=knob.replace("n_images", "pictures").replace("seed_b", "seed B")):
        widget.value = value
    assert widget.value == before


@pytest.mark.parametrize("knob, value", [("steps", 100), ("steps", 1), ("guidance", 0), ("guidance", 20),
                                         ("strength", 1), ("frames", 32), ("n_images", 4), ("seed", 2**40),
                                         ("width", 64), ("guidance", 7)])
def test_values_inside_the_range_are_kept_exactly(panel, knob, value):
    widget = getattr(panel, knob)
    before = widget.value
    widget.value = value
    assert widget.value == value
    widget.value = before


@pytest.mark.parametrize("change", [dict(steps=500), dict(steps=101), dict(guidance=25.0), dict(guidance=50.0),
                                    dict(n_images=5), dict(frames=40)])
def test_restore_refuses_settings_that_the_knobs_cannot_show_and_changes_nothing(panel, change):
    from dataclasses import asdict, replace

    from sdcourse.playground import Settings

    before = panel.settings()
    with pytest.raises(ValueError, match="nothing was restored|Settings"):
        panel.restore(replace(Settings(), seed=123, **change))
    assert asdict(panel.settings()) == asdict(before)


# ---------------------------------------------------------------- the ideal denoiser
TWO = np.array([[-1.0], [1.0]])


@pytest.mark.parametrize("points, x, sigma, log_prior, error", [
    (np.array([[np.nan], [1.0]]), np.zeros(1), 1.0, None, ValueError),
    (np.array([[np.inf], [1.0]]), np.zeros(1), 1.0, None, ValueError),
    (TWO, np.array([np.nan]), 1.0, None, ValueError),
    (TWO, np.zeros(2), 1.0, None, ValueError),
    (TWO, np.zeros((1, 1)), 1.0, None, ValueError),
    (np.zeros((0, 1)), np.zeros(1), 1.0, None, ValueError),
    (np.zeros(3), np.zeros(1), 1.0, None, ValueError),
    ("points", np.zeros(1), 1.0, None, TypeError),
    ([["a"], ["b"]], np.zeros(1), 1.0, None, TypeError),
    (TWO, "x", 1.0, None, TypeError),
    (TWO, np.zeros(1), 0.0, None, ValueError),
    (TWO, np.zeros(1), -1.0, None, ValueError),
    (TWO, np.zeros(1), float("nan"), None, ValueError),
    (TWO, np.zeros(1), "1", None, TypeError),
    (TWO, np.zeros(1), 1.0, np.array([np.nan, 0.0]), ValueError),
    (TWO, np.zeros(1), 1.0, np.array([np.inf, 0.0]), ValueError),
    (TWO, np.zeros(1), 1.0, np.array([-np.inf, -np.inf]), ValueError),
    (TWO, np.zeros(1), 1.0, np.array([0.0]), ValueError),
    (TWO, np.zeros(1), 1.0, np.array([0.0, 0.0, 0.0]), ValueError),
    (TWO, np.zeros(1), 1.0, "uniform", TypeError),
])
def test_ideal_jacobian_refuses_what_would_give_nan(points, x, sigma, log_prior, error):
    with pytest.raises(error):
        stiffness.ideal_jacobian(points, x, sigma, log_prior)


def test_ideal_jacobian_keeps_ruling_out_points_with_minus_inf():
    assert float(stiffness.ideal_jacobian(TWO, np.zeros(1), 1.0, np.array([0.0, -np.inf]))[0, 0]) == 0.0


@pytest.mark.parametrize("argv, words", [
    (["--guidance", "nan"], "--guidance must be from 0 to 100"),
    (["--guidance=-5"], "got -5"),
    (["--guidance", "1e9"], "--guidance"),
    (["--sigma", "0"], "--sigma must be from"),
    (["--sigma=-1"], "--sigma"),
    (["--sigma", "inf"], "--sigma"),
    (["--seed=-1"], "seed must be between 0"),
    (["--iterations", "0"], "--iterations must be from 1"),
    (["--iterations", "100000"], "--iterations"),
    (["--prompt"], "expected at least one argument"),
    (["--seed", "x"], "invalid int value"),
])
def test_the_stiffness_command_refuses_bad_values_in_one_line_before_loading(argv, words, capsys, monkeypatch):
    import sdcourse.loader

    monkeypatch.setattr(sdcourse.loader, "load_pipeline", lambda *a, **k: pytest.fail("loaded a model first"))
    with pytest.raises(SystemExit) as stop:
        stiffness.main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "Traceback" not in err and words in err.strip().splitlines()[-1]


# ---------------------------------------------------------------- the other attention helpers
@pytest.fixture(scope="module")
def mini():
    return sdcourse.load_pipeline("mini", device="cpu")


def _attention_cases():
    from PIL import Image

    img, heat = Image.new("RGB", (64, 64)), torch.rand(8, 8)
    return {
        "cross_attention(None)": lambda pipe: at.cross_attention(None, at.AttentionStore((8,8),1,True)).__enter__(),
        "cross_attention(unet, None)": lambda pipe: at.cross_attention(pipe.unet, None).__enter__(),
        "cross_attention_layers(None)": lambda pipe: at.cross_attention_layers(None),
        "cross_attention_layers(h=0)": lambda pipe: at.cross_attention_layers(pipe.unet, 0, 8),
        "prompt_tokens(None, p)": lambda pipe: at.prompt_tokens(None, "a red circle"),
        "prompt_tokens(tok, None)": lambda pipe: at.prompt_tokens(pipe.tokenizer, None),
        "prompt_tokens(tok, 3)": lambda pipe: at.prompt_tokens(pipe.tokenizer, 3),
        "prompt_tokens(tok, list)": lambda pipe: at.prompt_tokens(pipe.tokenizer, ["a", "b"]),
        "token_index(word missing)": lambda pipe: at.token_index(pipe.tokenizer, "a red circle", "blue"),
        "token_index(word None)": lambda pipe: at.token_index(pipe.tokenizer, "a red circle", None),
        "token_index(word '')": lambda pipe: at.token_index(pipe.tokenizer, "a red circle", ""),
        "token_index(two words)": lambda pipe: at.token_index(pipe.tokenizer, "a red circle", "red circle"),
        "token_index(tok None)": lambda pipe: at.token_index(None, "a red circle", "red"),
        "word_maps(None)": lambda pipe: at.word_maps(None),
        "token_shares(dict)": lambda pipe: at.token_shares({}),
        "upsample(heat, 0)": lambda pipe: at.upsample(heat, 0),
        "upsample(heat, -5)": lambda pipe: at.upsample(heat, -5),
        "upsample(heat, (8,))": lambda pipe: at.upsample(heat, (8,)),
        "upsample(heat 3d)": lambda pipe: at.upsample(torch.rand(1,8,8), 64),
        "upsample(nan)": lambda pipe: at.upsample(torch.full((8,8), float('nan')), 64),
        "upsample(np)": lambda pipe: at.upsample(np.zeros((8,8)), 64),
        "colour_mask(img, 'teal')": lambda pipe: at.colour_mask(img, "teal"),
        "colour_mask(img, None)": lambda pipe: at.colour_mask(img, None),
        "colour_mask(None, 'red')": lambda pipe: at.colour_mask(None, "red"),
        "colour_mask(array)": lambda pipe: at.colour_mask(np.zeros((64,64,3)), "red"),
        "mass_inside(mask float)": lambda pipe: at.mass_inside(heat, np.zeros((8,8))),
        "heat_colours(None)": lambda pipe: at.heat_colours(None),
        "heat_colours(nan)": lambda pipe: at.heat_colours(np.array([np.nan])),
        "heat_colours(str)": lambda pipe: at.heat_colours("x"),
        "overlay(alpha 2)": lambda pipe: at.overlay(img, heat, 2),
        "overlay(heat 3d)": lambda pipe: at.overlay(img, torch.rand(1,8,8)),
        "overlay(img None)": lambda pipe: at.overlay(None, heat),
        "map_grid(words None)": lambda pipe: at.map_grid(img, None),
        "map_grid(words bad)": lambda pipe: at.map_grid(img, [("red",)]),
        "map_grid(words str heat)": lambda pipe: at.map_grid(img, [("red", "x")]),
        "map_grid(words nonstr)": lambda pipe: at.map_grid(img, [(3, heat)]),
        "map_grid(cell 0)": lambda pipe: at.map_grid(img, [("red", heat)], cell=0),
        "map_grid(title 3)": lambda pipe: at.map_grid(img, [("red", heat)], title=3),
        "generate_with_maps(pipe None)": lambda pipe: at.generate_with_maps(None, "a"),
        "generate_with_maps(prompts [])": lambda pipe: at.generate_with_maps(pipe, []),
        "generate_with_maps(steps 0)": lambda pipe: at.generate_with_maps(pipe, "a", steps=0),
        "generate_with_maps(guidance nan)": lambda pipe: at.generate_with_maps(pipe, "a", guidance=float('nan')),
        "generate_with_maps(weights bad)": lambda pipe: at.generate_with_maps(pipe, "a red", weights={5: 2.0}),
        "generate_with_maps(share_steps 99)": lambda pipe: at.generate_with_maps(pipe, ["a", "b"], share_maps=True, share_steps=99, steps=2),
        "generate_with_maps(height 63)": lambda pipe: at.generate_with_maps(pipe, "a", height=63),
        "placement(scenes str)": lambda pipe: at.placement(pipe, "a red circle"),
        "placement(batch 0)": lambda pipe: at.placement(pipe, [Scene("circle", "red", "blue", "center", "large")], batch=0),
    }


ATTENTION_CASES = list(_attention_cases())


@pytest.mark.parametrize("case", ATTENTION_CASES)
def test_attention_helpers_refuse_bad_input_in_one_sentence(mini, case):
    with pytest.raises((TypeError, ValueError)):
        _attention_cases()[case](mini)
