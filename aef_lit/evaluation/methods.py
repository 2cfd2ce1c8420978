# generated from notebooks/25_evaluation.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from aef_lit.data import Sample
from aef_lit.evaluation import baselines as _bl
from aef_lit.evaluation.tasks import Period


class Method:
    """Base class: `__call__(samples, periods) -> list of F H W float32 arrays`."""

    name: str = "method"
    standardise: bool = False
    embedding: bool = True  # an embedding defines its own nodata: pixels it leaves NaN are dropped for all

    def key(self) -> str:
        """What identifies this method's output, for the embedding cache."""
        return self.name

    def __call__(self, samples: Sequence[Sample], periods: Sequence[Period]) -> list[np.ndarray]:
        raise NotImplementedError


class BaselineMethod(Method):
    """A chapter-24 baseline by name."""

    standardise = True
    embedding = False

    def __init__(self, name: str):
        if name.partition("_")[0] not in ("composite", "harmonic", "xy", "mosaiks"):
            raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(_bl.BASELINES)}")
        self.name = name

    def __call__(self, samples, periods):
        if self.name.endswith("_5x5") and all(s.grid.shape == (1, 1) for s in samples):
            raise _bl.NotApplicable("a 5x5 neighbourhood of a lone labelled pixel does not exist")
        return [_bl.baseline_features(self.name, s, p) for s, p in zip(samples, periods)]


class CallableMethod(Method):
    """Any `fn(sample, period) -> F H W` array (your own embedding function)."""

    def __init__(self, fn: Callable[[Sample, Period], np.ndarray], name: str, standardise: bool = False):
        self.fn, self.name, self.standardise = fn, name, standardise

    def __call__(self, samples, periods):
        return [np.asarray(self.fn(s, p), np.float32) for s, p in zip(samples, periods)]
