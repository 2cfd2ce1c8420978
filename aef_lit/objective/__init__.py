"""Learning signals (chapters 15-19): reconstruction, uniformity, consistency, text, the combined objective.

Hand-written: the part's public API, re-exported from the generated modules.
"""
from aef_lit.objective.loss import (  # noqa: F401
    AEFObjective,
    LossWeights,
)
