"""Build the compact real-data derivative vendored in ``mmzoo/builtin/real_data/``.

    PYTHONPATH=. python benchmarks/make_real_data.py [--data ../shared/data] [--out mmzoo/builtin/real_data]

- ``icons48.npz``: the tabler *outline* icons, each composited on white (the
  PNGs hold the picture in the alpha channel: gray = 255 - alpha, black strokes
  on white) and reduced from 240x240 to 48x48 (box filter), as a (N, 48, 48)
  uint8 array ``images`` with the icon ``names`` and ``categories`` (sorted by name).
- ``reviews.csv.xz``: the women's clothing reviews, only the columns the
  ``reviews`` tasks use, in the original row order.

The output is deterministic (same input -> same bytes for the CSV; the
arrays are equal), so a rebuild can be checked with ``git diff --stat``.
"""

from __future__ import annotations

import argparse
import csv
import io
import lzma
from pathlib import Path

import numpy as np

from mmzoo.builtin.real_tasks import (ICONS_FILE, REVIEW_CATEGORICAL, REVIEW_NUMERIC, REVIEW_TEXTS, REVIEWS_FILE,
                                      ReviewsTask, read_raw_icons)

ROOT = Path(__file__).resolve().parents[1]
ICON_SIZE = 48
REVIEW_COLUMNS = (*REVIEW_TEXTS, *REVIEW_NUMERIC, *REVIEW_CATEGORICAL, *ReviewsTask.TARGETS)


def build_icons(source: Path, out: Path) -> None:
    images, names, categories = read_raw_icons(source, ICON_SIZE)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, images=images, names=np.array(names), categories=np.array(categories))
    (out / ICONS_FILE).write_bytes(buffer.getvalue())
    print(f"icons: {len(names)} icons, {len(set(categories))} categories -> {out / ICONS_FILE}")


def build_reviews(source: Path, out: Path) -> None:
    with open(source / "reviews.csv", encoding="utf-8", newline="") as f:
        rows = [[row[c] for c in REVIEW_COLUMNS] for row in csv.DictReader(f)]
    text = io.StringIO(newline="")
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(REVIEW_COLUMNS)
    writer.writerows(rows)
    (out / REVIEWS_FILE).write_bytes(lzma.compress(text.getvalue().encode("utf-8"), preset=9))
    print(f"reviews: {len(rows)} rows -> {out / REVIEWS_FILE}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data",
                        help="the raw data folder holding tabler-icons/ and womens-clothing-reviews/ "
                             "(default: ../shared/data next to the checkout)")
    parser.add_argument("--out", type=Path, default=ROOT / "mmzoo" / "builtin" / "real_data")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    build_icons(args.data / "tabler-icons", args.out)
    build_reviews(args.data / "womens-clothing-reviews", args.out)


if __name__ == "__main__":
    main()
