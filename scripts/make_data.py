"""Write the course's input pictures and masks to data/ (drawn by sdcourse.course_data; no downloads).

    python scripts/make_data.py            # writes data/<name>_512.png and data/<name>_64.png
    python scripts/make_data.py --check    # exits 1 if a saved file differs from the drawing
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
from PIL import Image

from sdcourse.course_data import DATA_DIR, PICTURES, SAVED_SIZES, data_file, draw_picture


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare data/ with the drawings instead of writing")
    args = parser.parse_args(argv)
    DATA_DIR.mkdir(exist_ok=True)
    stale = []
    for name, (what, _) in PICTURES.items():
        for size in SAVED_SIZES:
            picture, path = draw_picture(name, size), data_file(name, size)
            if args.check:
                if not path.is_file() or not np.array_equal(np.asarray(Image.open(path)), np.asarray(picture)):
                    stale.append(path.name)
                continue
            picture.save(path, optimize=True)
            print(f"data/{path.name}: {what}")
    if stale:
        print("out of date (run python scripts/make_data.py):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
