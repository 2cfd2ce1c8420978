"""Using embedding fields (chapter 32): similarity search, clusters, change between periods,
few-click maps and any period from one encoder pass, on model embeddings or AEF files.

Hand-written: the part's public API, re-exported from the generated modules.
"""
from aef_lit.applications.fields import (  # noqa: F401
    PeriodSummariser,
    as_field,
    change_map,
    few_click_map,
    kmeans_map,
    otsu_threshold,
    similarity,
    threshold_from_labels,
    top_k,
)
