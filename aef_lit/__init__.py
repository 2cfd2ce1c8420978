"""aef-lit: a literate PyTorch re-implementation of AlphaEarth Foundations.

Hand-written (the only package file that is): the public API, re-exported from the
modules that `tools/nb_export.py` generates from `notebooks/NN_topic.py`. Each module is
one chapter of the book; import from it directly for everything else.
"""
from aef_lit.conventions import (  # noqa: F401  (chapter 1)
    EMBED_DIM,
    PRESETS,
    Batch,
    ModelConfig,
    SourceBatch,
    SourceSpec,
    find_eo_real,
    get_config,
    random_batch,
    seed_everything,
    select_device,
    to_days,
)
from aef_lit.data import (  # noqa: F401  (chapter 2)
    DataError,
    Grid,
    Sample,
    SourceFrames,
    load_geotiff_stack,
    load_samples,
    load_xarray_cube,
    model_sources,
    synthetic_sample,
)
from aef_lit.data.preprocess import DEFAULT_STATS, NormStats, collate, fit_stats  # noqa: F401  (chapter 3)
from aef_lit.evaluation import (  # noqa: F401  (chapter 25)
    TASKS,
    CallableMethod,
    EvalResult,
    ModelMethod,
    RasterMethod,
    build_task,
    default_methods,
    evaluate,
)
from aef_lit.evaluation.probes import balanced_accuracy, knn_classify, linear_classify, mean_ci  # noqa: F401  (chapter 23)
from aef_lit.maps import RasterStack, Tiling, embed_raster, parse_period  # noqa: F401  (chapter 28)
from aef_lit.maps.aef_format import AEFWriter, dequantise, quantise, read_aef, write_aef  # noqa: F401  (chapter 27)
from aef_lit.model import AEF, EmbedInputError, Encoded, build_model, check_embed_inputs, embed  # noqa: F401  (chapter 14)
from aef_lit.objective import AEFObjective, LossWeights  # noqa: F401  (chapter 19)

__version__ = "0.1.0"
