"""Foundations (chapters 2, 2b and 3): containers, readers and the one site registry for
multi-source time series, a synthetic stand-in, preprocessing, harmonisation and training rows.

Hand-written: the part's public API, re-exported from the generated modules.
"""
from aef_lit.data.captions import (  # noqa: F401
    CONVENTION_CLASS_NAMES,
    caption_of,
    landcover_labels,
    make_caption,
)
from aef_lit.data.containers import (  # noqa: F401
    TIMELESS,
    DataError,
    Grid,
    Sample,
    SourceFrames,
    model_sources,
)
from aef_lit.data.harmonise import (  # noqa: F401
    BAND_ALIASES,
    MULTISITE_RES,
    harmonise,
    load_sites,
    read_site,
)
from aef_lit.data.preprocess import (  # noqa: F401
    DEFAULT_STATS,
    NormStats,
    collate,
    denormalise,
    fit_stats,
    from_db,
    normalise_frames,
    resample_sample,
    resample_to_grid,
    to_db,
    utm_grid_for,
)
from aef_lit.data.readers import (  # noqa: F401
    _band_key,
    band_key,
    grid_of,
    load_geotiff_stack,
    load_xarray_cube,
    open_checked,
)
from aef_lit.data.rows import cut_row, cut_rows, row_generator  # noqa: F401
from aef_lit.data.sites import (  # noqa: F401
    DEFAULT_REAL,
    GREENEARTHNET_S2,
    GREENEARTHNET_SITES,
    MULTISITE_SITES,
    REAL_SAMPLES,
    SCL_VALID,
    SITE_PLACES,
    SITES,
    SLOVENIA_NDVI,
    SLOVENIA_S2,
    WORLDCEREAL_NODATA,
    WORLDCEREAL_S1,
    WORLDCEREAL_S2,
    WORLDCOVER_CODES,
    Site,
    captions_for,
    list_real_samples,
    load_eolearn_slovenia,
    load_greenearthnet_geotiffs,
    load_greenearthnet_minicube,
    load_real_sample,
    load_samples,
    load_worldcereal_belgium,
    resolve_data,
    site_labels,
    site_path,
    worldcereal_s1_to_db,
    worldcover_to_ids,
)
from aef_lit.data.synthetic import synthetic_sample, vegetation_fraction  # noqa: F401
