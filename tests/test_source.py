"""sdcourse.source: a helper's source as a chapter prints it, the algorithm without its argument checks."""
import ast
import builtins
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
    assert "# (3 checks left out; inspect.getsource shows them)" in text
    assert len(text.splitlines()) == 10


def test_a_function_without_checks_prints_as_written():
    assert source(no_checks) == inspect.getsource(no_checks).rstrip("\n")
    assert "'''First paragraph. ...'''" in source(single_quoted)
    ast.parse(source(single_quoted))


def binds_new_names(x, sizes):
    """A check whose result gets names of its own stays: the code after it uses them."""
    w, h = check_size(sizes)
    x, y = check_size(x), check_size(sizes)
    x, sizes = check_size(x), check_size(sizes)
    check_size(x), check_size(sizes)
    return x * w * h * y


def test_a_check_that_names_its_result_stays_and_tuples_of_checks_go():
    text = source(binds_new_names)
    ast.parse(text)
    assert "w, h = check_size(sizes)" in text and "x, y = check_size(x), check_size(sizes)" in text
    assert "x, sizes = " not in text and "    check_size(x), check_size(sizes)" not in text
    assert "# (2 checks left out" in text


@pytest.mark.parametrize("name, note", [("sdcourse.loader.load_pipeline", True), ("sdcourse.loop.denoise", True),
                                        ("sdcourse.loop.encode_prompt", True), ("sdcourse.img2img.img2img", False),
                                        ("sdcourse.interp.slerp", True), ("sdcourse.images.image_grid", False)])
def test_the_course_helpers_print_shorter_and_still_parse(name, note):
    module, attr = name.rsplit(".", 1)
    fn = getattr(importlib.import_module(module), attr)
    text = source(fn)
    tree = ast.parse(text)
    assert len(text.splitlines()) < len(inspect.getsource(fn).splitlines())
    assert ("checks left out" in text or "check left out" in text) == note
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    bound = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    args = {a.arg for a in ast.walk(tree) if isinstance(a, ast.arg)}
    local_unbound = {name for name in used - bound - args if name in inspect.getsource(fn) and
                     name not in vars(importlib.import_module(module)) and name not in vars(builtins)}
    assert not local_unbound, f"the printed source uses names it never sets: {local_unbound}"
