"""sdcourse.source: a helper's source as a chapter prints it, the algorithm without its argument checks."""
import ast
import importlib
import inspect

import pytest

import sdcourse
from sdcourse.source import source


def check_size(x):
    return x


def example(steps, picture, strict=True):
    """Blend a picture.

    A second paragraph that the printed source leaves out,
    over two lines.
    """
    steps = check_size(steps)
    check_size(picture)
    if steps < 1:
        raise ValueError("steps must be at least 1")
    elif steps > 1000:
        raise ValueError("too many steps")
    try:
        value = picture * steps  # the idea
    except TypeError:
        if strict:
            raise  # a re-raise is control flow: it stays
        value = None
    return value


def no_checks(x):
    '''One paragraph only.'''
    return x + 1


def single_quoted(x):
    '''First paragraph.

    Second.
    '''
    return x


def test_checks_and_the_docstring_beyond_its_first_paragraph_are_left_out():
    text = source(example)
    ast.parse(text)  # still Python
    assert '"""Blend a picture. ..."""' in text and "second paragraph" not in text
    assert "check_size" not in text and "ValueError" not in text
    assert "value = picture * steps  # the idea" in text and "            raise  # a re-raise" in text
    assert "# (3 argument checks left out; inspect.getsource shows them)" in text
    assert len(text.splitlines()) == 10


def test_a_function_without_checks_prints_as_written():
    assert source(no_checks) == inspect.getsource(no_checks).rstrip("\n")
    assert "'''First paragraph. ...'''" in source(single_quoted)
    ast.parse(source(single_quoted))


@pytest.mark.parametrize("name", ["sdcourse.loader.load_pipeline", "sdcourse.loop.denoise", "sdcourse.loop.encode_prompt",
                                  "sdcourse.img2img.img2img", "sdcourse.interp.slerp", "sdcourse.images.image_grid"])
def test_the_course_helpers_print_shorter_and_still_parse(name):
    module, attr = name.rsplit(".", 1)
    fn = getattr(importlib.import_module(module), attr)
    text = source(fn)
    ast.parse(text)
    assert len(text.splitlines()) < len(inspect.getsource(fn).splitlines())
    assert "argument check" in text
