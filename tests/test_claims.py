"""The claims that chapters check on the mini model's results: tested there, only named with another model."""
import types

import pytest

import sdcourse
from sdcourse.claims import CLAIMS, check_claim
from sdcourse.schedulers import klms_guidance


@pytest.fixture(scope="module")
def mini():
    return sdcourse.load_pipeline("mini", device="cpu")


OTHER = types.SimpleNamespace(name_or_path="CompVis/stable-diffusion-v1-4", config={})

GOOD = {"attention.gathers": dict(first=0.05, last=0.3, area=0.1),
        "attention.lifts": dict(shape_lift=1.5, colour_lift=1.2, lifted=0.9, background_mass=0.7, background_lift=0.95),
        "attention.reweight": dict(zero=0.156, one=0.156, three=0.157),
        "attention.swap": dict(kept=0.81, own=0.84)}
BAD = {"attention.gathers": dict(first=0.3, last=0.2, area=0.1),
       "attention.lifts": dict(shape_lift=1.1, colour_lift=1.2, lifted=0.9, background_mass=0.7, background_lift=0.95),
       "attention.reweight": dict(zero=0.05, one=0.156, three=0.157),
       "attention.swap": dict(kept=0.5, own=0.84)}


def test_every_claim_has_a_case_that_holds_and_one_that_fails():
    assert set(GOOD) == set(CLAIMS) == set(BAD)


@pytest.mark.parametrize("name", sorted(CLAIMS))
def test_a_claim_is_tested_with_the_mini_model(mini, name):
    assert check_claim(mini, name, **GOOD[name]).endswith(": holds")
    with pytest.raises(AssertionError, match="no longer shows what the text says"):
        check_claim(mini, name, **BAD[name])


@pytest.mark.parametrize("name", sorted(CLAIMS))
def test_with_another_model_a_claim_is_only_named(name):
    line = check_claim(OTHER, name, **BAD[name])
    assert line.startswith("not tested with this model") and CLAIMS[name].sentence in line


def test_bad_claim_calls_are_refused_in_one_sentence(mini):
    with pytest.raises(ValueError, match="unknown claim"):
        check_claim(mini, "attention.nothing")
    with pytest.raises(TypeError, match="needs the values"):
        check_claim(mini, "attention.swap", kept=0.8)


def test_klms_guidance_is_sds_default_except_for_the_mini_model(mini):
    assert klms_guidance(mini) == 2.0 and klms_guidance(OTHER) == 7.5
