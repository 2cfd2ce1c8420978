"""Maps (chapters 27-29): Google's AEF file format and embedding maps of any raster.

Hand-written: the part's public API, re-exported from the generated modules.
"""
from aef_lit.maps.cli import build_embed_parser, main  # noqa: F401
from aef_lit.maps.display import pca_rgb, true_colour  # noqa: F401
from aef_lit.maps.embed import embed_chunk, embed_raster, parse_period  # noqa: F401
from aef_lit.maps.raster import DATE_TAGS, Acquisition, Layer, RasterStack, acquisition_day, band_key  # noqa: F401
from aef_lit.maps.tiling import Chunk, Tiling, chunks_of, map_tile  # noqa: F401
