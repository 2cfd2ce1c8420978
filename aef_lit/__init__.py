"""aef-lit: a literate PyTorch re-implementation of AlphaEarth Foundations.

Hand-written (the only package file that is): the public API, re-exported from the
modules that `tools/nb_export.py` generates from `notebooks/NN_topic.py`.
"""
from aef_lit.conventions import (  # noqa: F401
    EMBED_DIM,
    PRESETS,
    Batch,
    ModelConfig,
    SourceBatch,
    SourceSpec,
    find_eo_real,
    random_batch,
    get_config,
    seed_everything,
    select_device,
    to_days,
)

__version__ = "0.1.0"
