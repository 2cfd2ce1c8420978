"""Prithvi beside AEF (chapters 30-31): a Prithvi-style masked autoencoder, the loader of the
published Prithvi checkpoints, training on our samples and the evaluation method.

Hand-written: the part's public API, re-exported from the generated modules.
"""
from aef_lit.prithvi.checkpoint import load_official, official_key_map, official_layout  # noqa: F401
from aef_lit.prithvi.cli import build_prithvi_parser, main  # noqa: F401
from aef_lit.prithvi.mae import (  # noqa: F401
    HLS_BANDS,
    PRITHVI_PRESETS,
    PrithviConfig,
    PrithviDecoder,
    PrithviEncoder,
    PrithviMAE,
    coord_code,
    count_parameters,
    patchify,
    prithvi_config,
    random_masking,
    sincos_1d,
    sincos_3d,
    unpatchify,
)
from aef_lit.prithvi.method import PrithviMethod, prithvi_features  # noqa: F401
from aef_lit.prithvi.train import (  # noqa: F401
    PRITHVI_SHIPPED,
    cut_stack,
    load_prithvi,
    pick_frames,
    prithvi_card,
    prithvi_source,
    random_stack,
    ship_prithvi,
    train_prithvi,
)
