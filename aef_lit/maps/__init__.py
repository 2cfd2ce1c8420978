"""Maps (chapters 27-28): Google's AEF file format and embedding maps of any raster.

Hand-written: the part's public API, re-exported from the generated modules.
"""
from aef_lit.maps.core import (  # noqa: F401
    Acquisition,
    Chunk,
    DATE_TAGS,
    Layer,
    RasterStack,
    Tiling,
    acquisition_day,
    band_key,
    build_embed_parser,
    chunks_of,
    embed_chunk,
    embed_raster,
    main,
    map_tile,
    parse_period,
    pca_rgb,
    true_colour,
)
