"""sdcourse.first_look: the noising and the model's guesses, column by column, for the pipeline's own picture."""
import numpy as np
import pytest

import sdcourse
from sdcourse.first_look import first_look

PROMPT = "a large red circle in the center on a blue background"


def test_the_picture_is_the_pipelines_own_and_the_last_guess_is_it(pipe):
    grid, picture = first_look(pipe, PROMPT, seed=2, steps=10, shown=4)
    own = pipe(PROMPT, num_inference_steps=10, generator=sdcourse.make_generator(2)).images[0]
    assert np.array_equal(np.asarray(picture), np.asarray(own))
    side = picture.width
    assert grid.width > 4 * side and 2 * side < grid.height < 3 * side  # four columns, two rows, their labels
    pixels = np.asarray(grid.convert("RGB"), dtype=float)
    top_first = pixels[grid.height - 2 * side: grid.height - side, grid.width - 4 * side: grid.width - 3 * side]
    bottom_last = pixels[grid.height - side:, grid.width - side:]
    assert np.abs(bottom_last - np.asarray(picture, dtype=float)).mean() < 8  # the last guess is the picture
    assert np.abs(top_first - np.asarray(picture, dtype=float)).mean() > 40  # the first column is mostly noise


@pytest.mark.parametrize("shown", [1, 11, 2.5])
def test_a_bad_column_count_is_one_sentence(pipe, shown):
    with pytest.raises(ValueError, match="shown must be a whole number from 2 to steps"):
        first_look(pipe, PROMPT, steps=10, shown=shown)
