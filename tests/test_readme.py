"""The README tells the truth: its links point at files that exist, its commands are the ones CI runs."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BADGE = "https://colab.research.google.com/github/sdcourse/sdcourse/blob/main/"


def test_local_links_exist():
    links = [link for link in re.findall(r"\]\(([^)]+)\)", README) if not link.startswith(("http", "#"))]
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing, f"README links to missing files: {missing}"


def test_colab_badges_point_at_the_linked_notebooks():
    for number, link, badge in re.findall(r"^\| (\d\d) \| \[[^\]]+\]\(([^)]+)\) \| .*?\]\(([^)]+)\) \|$", README, re.M):
        assert badge == BADGE + link
        assert Path(link).name.startswith(number + "_")


def test_notebook_table_lists_every_chapter_in_order():
    rows = re.findall(r"^\| (\d\d) \|", README, re.M)
    chapters = sorted(p.name[:2] for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert len(chapters) >= 10 and rows == chapters


def test_the_two_commands_exist_and_ci_runs_the_test_command():
    for command in ("bash run_course.sh", "bash run_tests.sh"):
        assert command in README
        assert (ROOT / command.split()[1]).is_file()
    ci = (ROOT / ".ci" / "run").read_text()
    assert ci.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in ci
    assert "export HF_HUB_OFFLINE=1" in ci
    assert re.search(r"^bash run_tests\.sh$", ci, re.M)


def test_mentioned_files_exist():
    for path in re.findall(r"`((?:scripts|tests|sdcourse|\.ci)/[\w./-]+)`", README):
        assert (ROOT / path).exists(), path


def test_every_notebook_is_in_the_table():
    linked = set(re.findall(r"\]\((chapters/\d\d_[\w]+\.ipynb)\)", README))
    existing = {f"chapters/{p.name}" for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")}
    assert existing <= linked, f"notebooks missing from the README table: {sorted(existing - linked)}"


def test_every_module_is_in_the_package_table():
    """The course helpers (sdcourse/*.py) and the mini model's build machinery (sdcourse/mini/*.py)."""
    listed = set(re.findall(r"^\| `sdcourse/((?:mini/)?\w+\.py)` \|", README, re.M))
    modules = {p.relative_to(ROOT / "sdcourse").as_posix() for p in (ROOT / "sdcourse").glob("**/*.py")
               if p.name != "__init__.py"}
    assert modules <= listed, f"modules missing from the README's package table: {sorted(modules - listed)}"
