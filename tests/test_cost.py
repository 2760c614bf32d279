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


def test_colab_note_states_the_calls_and_reads_back():
    assert "29 s of UNet time" in cost.colab_note(197) and "(197 UNet calls at SD size" in cost.colab_note(197)
    assert "2.2 min" in cost.colab_note(905) and "(0 UNet calls at SD size)" in cost.colab_note(0)
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# A chapter"),
                                         nbformat.v4.new_markdown_cell("Setup note. " + cost.colab_note(42)),
                                         nbformat.v4.new_code_cell("print(1)"),
                                         nbformat.v4.new_markdown_cell(cost.colab_note(7))])
    assert cost.stated_calls(nb) == 42
    nb.cells.pop(1)  # a count after the first code cell is not the note
    assert cost.stated_calls(nb) is None
    for bad in (-1, 2.5, "10", True):
        with pytest.raises(ValueError, match="unet_calls"):
            cost.colab_note(bad)


def test_every_notebook_states_its_colab_cost_in_its_colab_note():
    from pathlib import Path

    import nbformat

    for path in sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(str(path), as_version=4)
        n = cost.stated_calls(nb)
        assert n is not None, f"{path.name}: its Colab note (before the setup cell) should state sdcourse.cost.colab_note(N)"
        note = next(c for c in nb.cells if cost.NOTE_CALLS.search(c.source))
        assert note.source.startswith("Run this first cell in Google Colab") and cost.colab_note(n) in note.source, \
            f"{path.name}: the note should say colab_note({n}) word for word"
        assert not any("sdcourse.colab_cost(" in c.source for c in nb.cells[:12] if c.cell_type == "code"), \
            f"{path.name}: the cost belongs in the Colab note, not in a cell at the top"
