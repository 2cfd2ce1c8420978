# generated from notebooks/02_data.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from aef_lit.conventions import WORLDCOVER_CLASSES

CONVENTION_CLASS_NAMES: dict[str, str] = {
    "tree": "tree cover", "shrub": "shrubland", "grassland": "grassland", "cropland": "cropland",
    "built-up": "built-up area", "bare": "bare or sparse vegetation", "water": "open water",
    "wetland": "herbaceous wetland",
}
"""Caption phrases of `conventions.WORLDCOVER_CLASSES` (the `landcover` source's class ids)."""


def _join(words: Sequence[str]) -> str:
    words = list(words)
    return "".join(words) if len(words) <= 1 else ", ".join(words[:-1]) + " and " + words[-1]


def make_caption(place: str, year: int | str | None = None, classes: Iterable[str] = ()) -> str:
    """'<classes> in <place>, <year>' (e.g. 'winter wheat parcel in Flanders, Belgium, 2021')."""
    names = [str(c).replace("_", " ").strip() for c in classes if str(c).strip()]
    caption = f"{_join(names) if names else 'land'} in {place}"
    return f"{caption}, {year}" if year is not None else caption


def caption_of(labels: dict, max_classes: int = 3) -> str:
    """The caption of a site from its labels: classes by area, place and year."""
    classes = [CONVENTION_CLASS_NAMES.get(c, c) for c in list(labels.get("classes", []))[:max_classes]]
    return make_caption(labels.get("place", "an unnamed place"), labels.get("year"), classes)


def landcover_labels(ids: np.ndarray, ok: np.ndarray) -> dict:
    """`classes` (covering >= 5 %, by area) and `class_fractions` of a land-cover id map."""
    counts = np.bincount(ids[ok].astype(int), minlength=len(WORLDCOVER_CLASSES))
    frac = counts / max(counts.sum(), 1)
    order = np.argsort(-frac)
    return {"classes": [WORLDCOVER_CLASSES[i] for i in order if frac[i] >= 0.05],
            "class_fractions": {WORLDCOVER_CLASSES[i]: round(float(frac[i]), 3) for i in order if frac[i] > 0}}
