"""Evaluation (chapters 23-26): probes, baselines, the sparse-label protocol, the networks'
representations and the `aef-eval` command line.

Hand-written: the part's public API, re-exported from the generated modules.
"""
from aef_lit.evaluation.cli import build_eval_parser, main, update_card  # noqa: F401
from aef_lit.evaluation.methods import BaselineMethod, CallableMethod, Method  # noqa: F401
from aef_lit.evaluation.networks import (  # noqa: F401
    ModelMethod,
    default_methods,
    embed_pixels,
    embed_sample,
    untrained_model,
)
from aef_lit.evaluation.pixels import PixelTable, feature_matrix, observed, pixel_table, split_function  # noqa: F401
from aef_lit.evaluation.protocol import (  # noqa: F401
    SITE_TARGETS,
    EvalResult,
    evaluate,
    leak_reason,
    method_features,
    training_targets,
)
from aef_lit.evaluation.rasters import (  # noqa: F401
    AEF_NODATA,
    RasterMethod,
    dequantise_aef,
    labels_task,
    read_embedding_raster,
    warp_to,
)
from aef_lit.evaluation.report import compare, results_markdown  # noqa: F401
from aef_lit.evaluation.representations import neighbour_overlap, representation_stats  # noqa: F401
from aef_lit.evaluation.tasks import (  # noqa: F401
    DEFAULT_INPUTS,
    FLANDERS_CLASSES,
    GREENEARTHNET_PLACES,
    MIN_CLASS_PIXELS,
    MIN_CLASS_POINTS,
    SOUTH_SUDAN_CLASSES,
    TASKS,
    WORLDCEREAL_SCALE,
    Period,
    Task,
    belgium_cropland_task,
    belgium_slope_task,
    build_task,
    calendar_period,
    flanders_task,
    select_inputs,
    slovenia_task,
    south_sudan_task,
    worldcover_sites_task,
    worldcover_task,
)
