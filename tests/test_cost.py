"""The Colab-cost line and the UNet call counter behind it."""
import pytest

import sdcourse
from sdcourse import cost


def test_the_per_call_time_is_the_published_t4_figure():
    assert cost.T4_ITERATIONS_PER_S == 6.9 and "T4" in cost.T4_SOURCE and "6.9" in cost.T4_SOURCE
    assert cost.T4_SECONDS_PER_CALL == pytest.approx(0.145, abs=1e-3)


def test_colab_cost_line():
    line = sdcourse.colab_cost(400)
    assert "400 UNet calls" in line and "58 s" in line and "1.0 min" in line
    assert cost.declared_calls == 400
    for bad in (-1, 2.5, "10", True):
        with pytest.raises(ValueError, match="unet_calls"):
            sdcourse.colab_cost(bad)


def test_counter_counts_guided_and_unguided_calls():
    pipe = sdcourse.load_pipeline("mini", device="cpu")
    with cost.count_unet_calls() as counter:
        pipe("a red circle", num_inference_steps=3, generator=sdcourse.make_generator(0), output_type="latent")
        pipe(["a", "b"], num_inference_steps=2, guidance_scale=1.0, output_type="latent")
    # 3 guided steps of one picture (2 rows each) + 2 unguided steps of two pictures (2 rows each)
    assert counter.forwards == 5 and counter.rows == 3 * 2 + 2 * 2 and counter.calls == 3 + 2 * 2
    with cost.count_unet_calls() as alone:
        pipe("a red circle", num_inference_steps=2, guidance_scale=1.0, output_type="latent")
    assert (alone.forwards, alone.rows, alone.calls) == (2, 2, 2)  # an unguided 2-step picture: 2 UNet calls
    before = counter.forwards
    pipe("a", num_inference_steps=1, output_type="latent")  # not counted any more
    assert counter.forwards == before


def test_counting_twice_at_once_is_refused():
    with cost.count_unet_calls():
        with pytest.raises(RuntimeError, match="already"):
            cost.start_counting()


def test_every_notebook_states_its_colab_cost_near_the_top():
    import json
    from pathlib import Path

    for path in sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        code = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        where = [i for i, c in enumerate(code) if "sdcourse.colab_cost(" in "".join(c["source"])]
        assert where and where[0] < 8, f"{path.name}: print(sdcourse.colab_cost(N)) belongs in its first code cells"
