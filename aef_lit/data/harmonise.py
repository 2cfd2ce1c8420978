# generated from notebooks/03_preprocess.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

from __future__ import annotations

from typing import Sequence

import numpy as np

from aef_lit.conventions import DEM, LANDCOVER, SourceSpec
from aef_lit.data.containers import DataError, Sample, SourceFrames
from aef_lit.data.preprocess import resample_sample
from aef_lit.data.sites import (
    GREENEARTHNET_S2,
    MULTISITE_SITES,
    load_eolearn_slovenia,
    load_greenearthnet_geotiffs,
    load_greenearthnet_minicube,
    load_real_sample,
    load_worldcereal_belgium,
    resolve_data,
)
from aef_lit.data.synthetic import synthetic_sample

BAND_ALIASES: dict[str, tuple[str, ...]] = {"B8A": ("B08",)}
"""Stand-ins for a band a sensor product lacks: B08 (842 nm) for B8A (865 nm), both NIR."""

MULTISITE_RES = 10.0
"""The grid of every `multisite` site, in metres: the paper's 10 m (see the text above)."""


def read_site(name: str) -> Sample:
    """One site by short name (`MULTISITE_SITES`) as its reader returns it (Slovenia with its S2 scenes)."""
    if name not in MULTISITE_SITES:
        raise ValueError(f"unknown multisite site {name!r}; choose from {', '.join(MULTISITE_SITES)}")
    if name == "slovenia":  # its default sample is NDVI only; the 13-band scenes are opt-in
        return load_eolearn_slovenia(reference_scenes=True)
    return load_real_sample(MULTISITE_SITES[name])


def harmonise(sample: Sample, spec: SourceSpec = GREENEARTHNET_S2, res: float | None = MULTISITE_RES,
              keep: Sequence[str] = ("dem", "landcover"),
              aliases: dict[str, tuple[str, ...]] = BAND_ALIASES) -> Sample:
    """`sample` in the layout of `spec`: its `spec.name` source cut to `spec.bands` (or their
    `aliases`), the target sources in `keep` (others dropped), and on a `res`-metre UTM grid
    (bilinear; nearest for classes) unless it is on one already (`res=None`: grid kept)."""
    if spec.name not in sample.sources:
        raise DataError(f"{sample.site} has no {spec.name!r} source (it has {sorted(sample.sources)})")
    have = sample.specs[spec.name].bands
    index = []
    for band in spec.bands:
        found = [have.index(b) for b in (band, *aliases.get(band, ())) if b in have]
        if not found:
            raise DataError(f"{sample.site}: {spec.name!r} has no band {band} "
                            f"(nor {', '.join(aliases.get(band, ())) or 'a stand-in'}); it has {', '.join(have)}")
        index.append(found[0])
    fr = sample.sources[spec.name]
    cv = None if fr.cloud_values is None else fr.cloud_values[:, index]
    sources = {spec.name: SourceFrames(fr.values[:, index], fr.times, fr.valid, fr.meta, fr.name, cv)}
    sources |= {n: f for n, f in sample.sources.items() if n in keep and n != spec.name}
    specs = {n: spec if n == spec.name else sample.specs[n] for n in sources}
    out = Sample(sample.site, sample.grid, sources, specs, labels=sample.labels, captions=sample.captions)
    g = sample.grid
    if res is not None and (g.rio_crs.is_geographic or not np.allclose(g.res, res, rtol=0.01)):
        out = resample_sample(out, res=res)
    return out


def load_sites(data: str = "auto", sites: Sequence[str] = ("portugal", "hungary"), seed: int = 0,
               synthetic_size: int = 96) -> list[Sample]:
    """The whole-site `Sample`s a model works on (see the text above for the `data` values)."""
    data = resolve_data(data)
    if data in ("real", "greenearthnet"):
        unknown = [s for s in sites if s not in MULTISITE_SITES]
        if unknown:
            raise ValueError(f"unknown site(s) {unknown}; choose from {', '.join(MULTISITE_SITES)}")
        if data == "greenearthnet":
            return [load_greenearthnet_minicube(s) for s in sites]
        return [load_real_sample(MULTISITE_SITES[s]) for s in sites]
    if data == "greenearthnet_geotiff":
        return [load_greenearthnet_geotiffs(s) for s in sites]
    if data == "worldcereal":
        return [load_worldcereal_belgium()]
    if data == "multisite":
        return [harmonise(read_site(s)) for s in sites]
    if data == "synthetic":
        specs = (GREENEARTHNET_S2, DEM, LANDCOVER)
        return [synthetic_sample(specs, height=synthetic_size, width=synthetic_size, seed=seed + i,
                                 n_frames={"s2": 24}, site=f"synthetic_{name}")
                for i, name in enumerate(sites or ("a", "b"))]
    raise ValueError(f"unknown data {data!r}: auto, real, greenearthnet, greenearthnet_geotiff, worldcereal, "
                     "multisite, synthetic")
