"""What the chapters' prose says of the mini model's results, checked where the prose is about that model.

A chapter that measures something prints the measurement, and the sentence beside it states what the mini
model's committed output shows. :func:`check_claim` keeps that sentence true: it tests the measured values against
the claim with the bundled mini model (and stops the notebook with the claim and the values when they disagree),
and with any other model it only says that the claim was measured on the mini model. The thresholds live here,
not in the teaching cells, so a cell reads ``print(check_claim(pipe, "attention.swap", kept=kept, own=own))``.

>>> sorted(CLAIMS)[0]
'attention.gathers'
"""
from __future__ import annotations

from typing import Callable, NamedTuple

from .loader import is_mini_model


class Claim(NamedTuple):
    """A sentence about the mini model's results and the test of the values it is about."""

    sentence: str
    holds: Callable[..., bool]


CLAIMS: dict[str, Claim] = {
    "attention.gathers": Claim(
        "the word's share of attention on the shape grows from the first step to the last and ends above the "
        "share of the picture that the shape covers",
        lambda first, last, area: last > first and last > area),
    "attention.lifts": Claim(
        "the shape word's lift is at least 1.3 and the colour word's at least 1.1 on average, the shape word "
        "gathers on the shape (lift above 1) in at least 75% of the captions, and the background word keeps at "
        "least 65% of its attention on the background without gathering there (lift below 1)",
        lambda shape_lift, colour_lift, lifted, background_mass, background_lift: (
            shape_lift >= 1.3 and colour_lift >= 1.1 and lifted >= 0.75 and background_mass >= 0.65
            and background_lift < 1)),
    "attention.reweight": Claim(
        "re-weighting the colour word by 0 or by 3 changes the share of its colour in the picture by less than "
        "2 points",
        lambda zero, one, three: abs(zero - one) < 0.02 and abs(three - one) < 0.02),
    "attention.swap": Claim(
        "both ways of swapping the word keep the shape's layout, with an overlap of at least 0.7",
        lambda kept, own: kept >= 0.7 and own >= 0.7),
}


def check_claim(pipe, name: str, **values) -> str:
    """Test the claim ``name`` of :data:`CLAIMS` on ``values`` when ``pipe`` is the mini model; return one line.

    With the mini model a claim that fails raises ``AssertionError`` with the sentence and the values; one that
    holds returns "mini model: <sentence>: holds". With another model the values are not tested (the
    sentence is about the mini model's results) and the line says so."""
    if name not in CLAIMS:
        raise ValueError(f"unknown claim {name!r}; the claims are {', '.join(sorted(CLAIMS))}")
    claim = CLAIMS[name]
    if not is_mini_model(pipe):
        return f"not tested with this model (measured with the mini model): {claim.sentence}"
    try:
        holds = bool(claim.holds(**values))
    except TypeError as err:
        raise TypeError(f"claim {name!r} needs the values {claim.holds.__code__.co_varnames}; {err}") from None
    if not holds:
        shown = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
        raise AssertionError(f"the mini model no longer shows what the text says ({claim.sentence}): {shown}")
    return f"mini model: {claim.sentence}: holds"
