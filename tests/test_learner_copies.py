"""What a learner opens (chapters/, solutions/) is made from the instructor sources (notebooks/) and kept in step:
no solution or hidden test in it, every teaching cell's committed outputs kept, the badges opening it."""
import json
import re

import nbformat
import pytest

from conftest import ROOT
from sdcourse import grading

INSTRUCTOR = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
LEARNER = ROOT / "chapters"
SOLUTIONS = ROOT / "solutions"


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("learner")
    grading.make_learner_copies(ROOT / "notebooks", tmp / "chapters", tmp / "solutions")
    return tmp


def test_there_is_a_learner_copy_and_a_solutions_page_per_chapter():
    assert INSTRUCTOR and [p.name for p in sorted(LEARNER.glob("*.ipynb"))] == [p.name for p in INSTRUCTOR]
    assert sorted(p.name for p in SOLUTIONS.glob("*.md")) == [p.stem + ".md" for p in INSTRUCTOR]


@pytest.mark.parametrize("path", INSTRUCTOR, ids=lambda p: p.name)
def test_the_committed_copies_are_made_from_the_instructor_sources(path, regenerated):
    """Edit notebooks/, then run scripts/build_notebooks.py --inplace on it (or python -m sdcourse.grading
    learner): the committed copies must be exactly what that makes."""
    fresh = json.loads((regenerated / "chapters" / path.name).read_text())
    committed = json.loads((LEARNER / path.name).read_text())
    assert committed == fresh, f"chapters/{path.name} is not made from notebooks/{path.name}: rebuild it"
    page = (SOLUTIONS / (path.stem + ".md")).read_text()
    assert page == (regenerated / "solutions" / (path.stem + ".md")).read_text(), f"solutions/{path.stem}.md"


@pytest.mark.parametrize("path", INSTRUCTOR, ids=lambda p: p.name)
def test_no_answer_in_what_a_learner_opens_and_every_teaching_output_kept(path):
    source = nbformat.read(path, as_version=4)
    copy = nbformat.read(LEARNER / path.name, as_version=4)
    text = (LEARNER / path.name).read_text()
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"):
        assert marker not in text, f"chapters/{path.name} still holds {marker!r}"
    by_id = {c.id: c for c in source.cells}
    graded = 0
    for cell in copy.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution") or meta.get("grade"):
            graded += 1
            assert cell.get("outputs", []) == []
            if meta.get("solution"):
                assert "# YOUR CODE HERE" in cell.source and "raise NotImplementedError()" in cell.source
        elif cell.cell_type == "code":
            assert cell.outputs == by_id[cell.id].outputs, f"{path.name}: a teaching cell lost its outputs"
    assert graded >= 4  # at least two exercises, each an answer and a check
    # the hidden tests' lines are nowhere in the copy
    sources = "\n".join(c.source for c in copy.cells)
    hidden_block = re.compile(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS", re.S)
    public = "\n".join(hidden_block.sub("", c.source) for c in source.cells)  # what may be in the copy
    for cell in source.cells:
        for hidden in hidden_block.findall(cell.source):
            for line in filter(str.strip, hidden.splitlines()):
                if line not in public:  # a line such as "try:" can be in a public check too
                    assert line not in sources, f"chapters/{path.name} holds the hidden test line {line!r}"


@pytest.mark.parametrize("path", INSTRUCTOR, ids=lambda p: p.name)
def test_badges_open_the_learners_copy_and_the_solutions_are_one_link_away(path):
    copy = nbformat.read(LEARNER / path.name, as_version=4)
    assert f"/blob/main/chapters/{path.name})" in copy.cells[0].source
    assert "/blob/main/notebooks/" not in (LEARNER / path.name).read_text()
    heading = next(c for c in copy.cells if c.cell_type == "markdown" and c.source.startswith("## Graded exercises"))
    assert f"/blob/main/solutions/{path.stem}.md)" in heading.source
    page = (SOLUTIONS / (path.stem + ".md")).read_text()
    assert "HIDDEN" not in page and "BEGIN SOLUTION" not in page
    answers = [c for c in nbformat.read(path, as_version=4).cells if c.metadata.get("nbgrader", {}).get("solution")]
    assert page.count("```python") == len(answers) >= 2


def test_readme_and_badges_point_learners_at_chapters():
    readme = (ROOT / "README.md").read_text()
    rows = [line for line in readme.splitlines() if re.match(r"^\| \d\d \| \[", line)]
    assert len(rows) == len(INSTRUCTOR)
    assert all("](chapters/" in row and "/blob/main/chapters/" in row and "notebooks/" not in row for row in rows)


def test_a_teacher_can_make_class_copies_without_the_solutions_link(tmp_path):
    source = ROOT / "notebooks" / "08_dream.ipynb"
    written = grading.make_learner_copies(notebooks=[source], out_dir=tmp_path / "class", solutions_dir=None)
    assert [p.name for p in written] == [source.name] and not (tmp_path / "solutions").exists()
    text = (tmp_path / "class" / source.name).read_text()
    assert "solutions/" not in text and "BEGIN SOLUTION" not in text and "HIDDEN" not in text



def test_the_command_line_asks_for_class_copies_with_no_solutions(monkeypatch, tmp_path):
    asked = []
    monkeypatch.setattr(grading, "make_learner_copies", lambda *args: asked.append(args) or [])
    assert grading.main(["learner", "--out", str(tmp_path / "class"), "--no-solutions"]) == 0
    assert grading.main(["learner", "--out", str(tmp_path / "class")]) == 0
    assert asked == [("notebooks", str(tmp_path / "class"), None), ("notebooks", str(tmp_path / "class"), "solutions")]
