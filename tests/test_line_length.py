"""The package is course material that learners read (notebooks show its source): no line over 120 characters."""
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "sdcourse"
LIMIT = 120


def test_no_line_over_the_limit_in_the_package():
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) > 20, f"found only {len(sources)} modules under {PACKAGE}"
    long_lines = [f"{path.relative_to(PACKAGE.parent)}:{number} ({len(line)} characters)"
                  for path in sources
                  for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
                  if len(line) > LIMIT]
    assert not long_lines, "lines over 120 characters:\n" + "\n".join(long_lines)
