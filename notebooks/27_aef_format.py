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
# # 25. The AEF product format
#
# The model of the earlier chapters turns a year of satellite frames into a 64-d unit
# vector per 10 m pixel. Google publishes those vectors for the whole land surface as
# the layer `GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL` (Earth Engine, and mirrored as
# Cloud-Optimised GeoTIFFs): one image per year, 10 m pixels, 64 bands named `A00` …
# `A63`, stored as **int8** with **−128 as no data**, licensed CC-BY 4.0
# (`AEF_NOTES.md` §9, paper §S8.1) {cite}`brown2025alphaearth`. The int8 code is not a
# linear scaling:
#
# $$ q = \mathrm{clip}\big(\mathrm{round}(\operatorname{sign}(x)\,\sqrt{|x|}\cdot 127.5),\,-127,\,127\big),
#    \qquad x = \operatorname{sign}(q)\,\Big(\frac{q}{127.5}\Big)^2, $$
#
# and −128 means "no data" in **all 64 bands at once**. After correct de-quantisation
# every vector has length ≈ 1; the overviews of the COGs are means of the vectors,
# re-normalised to unit length.
#
# This chapter implements that format exactly, so that embeddings from our model (or any
# other) can be written as files that every tool built for Google's layer reads, and so
# that Google's files can be read without the mistakes users make with them
# (`../shared/USERS.md`, listed at the end). Everything here is exported to
# `aef_lit.maps.aef_format`: `quantise`, `dequantise`, `AEFWriter`, `write_aef`, `read_aef`.

# %% tags=["parameters"]
# Parameters (papermill injects values here). Defaults are sized for a 2-core CPU.
preset = "tiny"  # unused: this chapter needs no model
device = "auto"  # unused: numpy and GDAL only
seed = 0
data = "auto"  # unused: the fields are synthetic (smooth random unit-vector fields)
n_vectors = 20_000  # random unit vectors for the statistics of the code
height, width = 300, 520  # the example raster (pixels)
blocksize = 64  # COG tile size of the example (GDAL's default is 512, ours 256)

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

# %%
#| default_exp maps.aef_format
# %% [markdown]
# ## Why a square-root code
#
# A 64-d unit vector has 64 components whose squares sum to 1, so a typical component is
# small: for vectors spread over the sphere (which the uniformity loss of chapter 16
# pushes the embeddings towards) each component is close to $\mathcal{N}(0, 1/64)$, a
# standard deviation of $0.125$. A linear int8 code (`round(127 x)`) spends its 255 codes
# evenly on $[-1, 1]$, so only about 64 of them fall within two standard deviations of
# zero. The square-root code puts code $k$ at $x = (k/127.5)^2$: the spacing is
# $2k/127.5^2$, finest near zero, where the components are. The histogram below shows
# the components of random unit vectors with the boundaries between codes drawn on top.

# %%
import math
import shutil
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

rng = np.random.default_rng(seed)
E = 64
vectors = rng.standard_normal((n_vectors, E))
vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)  # uniform on S^63
comp = vectors.ravel()

edges_sqrt = ((np.arange(0, 127) + 0.5) / 127.5) ** 2  # x where the sqrt code steps k -> k+1
edges_lin = (np.arange(0, 127) + 0.5) / 127  # x where round(127 x) steps
within = lambda e: 2 * int((e < 2 * comp.std()).sum())  # noqa: E731  (both signs)
print(f"component std {comp.std():.4f} (1/sqrt(64) = {1 / 8:.4f})")
print(f"codes within +-2 std: sqrt code {within(edges_sqrt)}, linear code {within(edges_lin)}")
assert within(edges_sqrt) >= 1.8 * within(edges_lin)

fig, ax = plt.subplots(figsize=(10, 3.6))
ax.hist(comp, bins=300, range=(-0.5, 0.5), density=True, color="0.75", label="components")
for e in edges_sqrt[edges_sqrt < 0.5]:  # one tick per code boundary: a rug along the bottom
    ax.plot([e, e, np.nan, -e, -e], [0, 0.25, np.nan, 0, 0.25], color="C0", lw=0.5)
for e in edges_lin[edges_lin < 0.5]:
    ax.plot([e, e, np.nan, -e, -e], [0.35, 0.6, np.nan, 0.35, 0.6], color="C3", lw=0.5)
grid = np.linspace(-0.5, 0.5, 1001)
twin = ax.twinx()
twin.plot(grid, 0.01 * 127.5 / (2 * np.sqrt(np.abs(grid) + 1e-9)), color="C0", label="sqrt code (AEF)")
twin.plot(grid, np.full_like(grid, 0.01 * 127), color="C3", label="linear code round(127 x)")
twin.set(ylim=(0, 12), ylabel="codes per 0.01 of $x$")
twin.legend(loc="upper right", fontsize=8)
ax.set(xlim=(-0.5, 0.5), xlabel="component value $x$", ylabel="density of components",
       title="components of random unit vectors in 64-d, and where the codes are (ticks: code boundaries)")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## The code
#
# `quantise` and `dequantise` work along one axis (`axis=0` for the `E H W` layout of a
# raster block, `axis=-1` for `N E` tables), take numpy arrays or torch tensors, and
# return numpy arrays. Two details the formula leaves to the implementer:
#
# - **Rounding.** We round half away from zero (`floor(v + 0.5)` on the magnitude), as
#   C's `round` does. A tie needs $\sqrt{|x|}\cdot127.5$ to be exactly $k + \frac12$, so the
#   choice never matters in practice.
# - **No data is per vector.** A vector with any non-finite component is written as −128
#   in every band; a vector with −128 in any band reads back as NaN in every band. A
#   file can therefore never hold "half a vector", and `isnan(x[0])` is a complete mask.
#
# De-quantisation refuses float input (an already de-quantised array, de-quantised twice,
# is a silent error otherwise) and codes outside $[-128, 127]$ (an int8 file read as
# uint8 turns −1 into 255).

# %%
#| export
from __future__ import annotations

import logging
import math
import operator
import os
import shutil
import tempfile
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
from einops import rearrange
from jaxtyping import Float, Int8
from numpy.typing import ArrayLike

log = logging.getLogger("aef_lit.maps.aef_format")

AEF_DIM = 64
AEF_BANDS: tuple[str, ...] = tuple(f"A{i:02d}" for i in range(AEF_DIM))
AEF_NODATA = -128
AEF_SCALE = 127.5  # §S8.1: q = round(sign(x) sqrt|x| 127.5), clipped to +-127
# The public functions take `array | ArrayLike`: torch tensors are welcome, and a wrong dtype or
# rank reaches the function's own checks, whose messages name the mistake.


def _as_numpy(x: Any) -> np.ndarray:
    """A numpy view of an array or a torch tensor (detached, on the CPU)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor; no torch import needed
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":  # numpy has no bfloat16
            x = x.float()
        x = x.numpy()
    return np.asarray(x)


def quantise(x: Float[np.ndarray, "*shape"] | ArrayLike, axis: int = 0) -> Int8[np.ndarray, "*shape"]:
    """AEF int8 code of unit vectors along `axis` (§S8.1); non-finite vectors -> -128 in all bands.

    q = clip(round(sign(x) * sqrt(|x|) * 127.5), -127, 127), rounding half away from zero.
    Accepts numpy arrays or torch tensors; returns a numpy int8 array of the same shape.
    """
    x = _as_numpy(x)
    if x.ndim == 0:
        raise ValueError("quantise expects an array of vectors, got a scalar")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"quantise expects real numbers, got dtype {x.dtype}")
    x = x.astype(np.result_type(x.dtype, np.float32), copy=False)
    finite = np.isfinite(x)
    valid = finite.all(axis=axis, keepdims=True)  # one flag per vector
    x = np.where(finite, x, 0)
    magnitude = np.minimum(np.floor(np.sqrt(np.abs(x)) * AEF_SCALE + 0.5), 127)
    q = (np.sign(x) * magnitude).astype(np.int8)
    return np.where(valid, q, np.int8(AEF_NODATA))


def dequantise(q: Int8[np.ndarray, "*shape"] | ArrayLike, axis: int = 0) -> Float[np.ndarray, "*shape"]:
    """Float32 vectors of AEF int8 codes: sign(q) * (q / 127.5)**2; -128 anywhere -> NaN vector.

    Accepts numpy arrays or torch tensors of integer codes in [-128, 127].
    """
    q = _as_numpy(q)
    if q.ndim == 0:
        raise ValueError("dequantise expects an array of codes, got a scalar")
    if not np.issubdtype(q.dtype, np.integer):
        raise ValueError(
            f"dequantise expects integer (int8) codes, got dtype {q.dtype}: "
            "is the array already de-quantised?")
    if q.size and (q.min() < -128 or q.max() > 127):
        raise ValueError(
            f"AEF codes lie in [-128, 127], got values in [{q.min()}, {q.max()}]: "
            "was an int8 file read as uint8?")
    qf = q.astype(np.float32)
    x = np.sign(qf) * (qf / np.float32(AEF_SCALE)) ** 2
    nodata = (q == AEF_NODATA).any(axis=axis, keepdims=True)
    return np.where(nodata, np.float32(np.nan), x).astype(np.float32, copy=False)


# %% [markdown]
# **Checks.** Random unit vectors survive the round trip with cosine above 0.999 and
# come back with length 1 to within the bound the formula implies: the half step at $x$
# is $\approx\sqrt{|x|}/127.5$, so the error vector is at most
# $\sqrt{\sum_i |x_i|}/127.5 \le \sqrt[4]{64}/127.5 \approx 0.022$ long. No data is all or
# nothing.

# %%
q = quantise(vectors, axis=1)
back = dequantise(q, axis=1)
cos = (back * vectors).sum(1) / np.linalg.norm(back, axis=1)
length = np.linalg.norm(back, axis=1)
bound = math.sqrt(math.sqrt(E)) / AEF_SCALE
print(f"cosine: min {cos.min():.6f}, mean {cos.mean():.6f}")
print(f"length - 1: max |.| {np.abs(length - 1).max():.5f} (bound {bound:.5f}), "
      f"mean {np.mean(length - 1):+.5f}")
assert q.dtype == np.int8 and cos.min() > 0.999
assert np.abs(length - 1).max() < bound

bad = vectors[:3].copy()
bad[1, 17] = np.nan
assert (quantise(bad, axis=1)[1] == AEF_NODATA).all() and (quantise(bad, axis=1)[[0, 2]] > -128).all()
q3 = quantise(vectors[:3], axis=1)
q3[2, 5] = AEF_NODATA
assert np.isnan(dequantise(q3, axis=1)[2]).all() and np.isfinite(dequantise(q3, axis=1)[:2]).all()

# %% [markdown]
# **The common mistake.** De-quantising linearly, `q / 127`, gives vectors of length
# about 2.5 instead of 1 (each $|x_i|$ comes back as $\approx\sqrt{|x_i|}$). A length test
# catches it at once: this is the check to run on any AEF data you are handed.

# %%
def lengths_ok(x, axis=-1, tol=0.03):
    """True where the vector has unit length to within tol (NaN vectors excluded)."""
    n = np.linalg.norm(x, axis=axis)
    return np.abs(n[np.isfinite(n)] - 1) < tol


wrong = q.astype(np.float32) / 127
print(f"q / 127: lengths {np.linalg.norm(wrong, axis=1).mean():.3f} +- {np.linalg.norm(wrong, axis=1).std():.3f}")
print(f"dequantise: lengths {length.mean():.4f} +- {length.std():.4f}")
assert lengths_ok(back).all() and not lengths_ok(wrong).any()

# %% [markdown]
# **Error against value.** The square-root code's error grows like $\sqrt{|x|}$: smaller
# than the linear code's constant $1/254$ wherever $|x| < 0.25$ (about 95 % of the
# components), larger near $\pm 1$, where almost no component of a 64-d unit vector is.
# Per vector, the cosine lost by rounding is below $10^{-4}$ for the square-root code,
# about 2.5× less than for the linear one.

# %%
xs = np.linspace(-1, 1, 20001)
err_sqrt = np.abs(dequantise(quantise(xs)) - xs)
err_lin = np.abs(np.clip(np.round(xs * 127), -127, 127) / 127 - xs)
lin_back = np.clip(np.round(vectors * 127), -127, 127) / 127
lost_sqrt = 1 - cos
lost_lin = 1 - (lin_back * vectors).sum(1) / np.linalg.norm(lin_back, axis=1)
print(f"median cosine lost: sqrt {np.median(lost_sqrt):.2e}, linear {np.median(lost_lin):.2e}")
print(f"share of components with |x| < 0.25: {np.mean(np.abs(comp) < 0.25):.4f}")
assert np.median(lost_sqrt) < np.median(lost_lin)

fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.6))
a1.plot(xs, err_sqrt, lw=0.5, label="sqrt code (AEF)")
a1.plot(xs, err_lin, lw=0.5, label="linear code round(127 x)")
a1.plot(xs, np.sqrt(np.abs(xs)) / AEF_SCALE, "k--", lw=0.8, label=r"$\sqrt{|x|}/127.5$")
a1.set(xlabel="value $x$", ylabel="|error|", title="quantisation error against value")
a1.legend(fontsize=8)
bins = np.geomspace(1e-7, 1e-3, 60)
a2.hist(lost_sqrt, bins=bins, alpha=0.7, label="sqrt code (AEF)")
a2.hist(lost_lin, bins=bins, alpha=0.7, label="linear code")
a2.set(xscale="log", xlabel="1 - cosine(x, dequantised)", ylabel="vectors",
       title=f"cosine lost per vector ({n_vectors:,} random unit vectors)")
a2.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Overviews: means of vectors, not of codes
#
# A Cloud-Optimised GeoTIFF carries reduced-resolution copies (overviews, factors 2, 4,
# …) so that a map zoomed out reads a few tiles instead of the whole file. For AEF the
# paper's rule (§S8.1) is that an overview pixel is the **mean of its children's
# vectors, re-normalised to unit length**: the direction that best summarises the block,
# itself a valid embedding that the same de-quantiser reads.
#
# GDAL cannot build these. Its `average` resampling averages each band's int8 codes, and
# the mean of square-root codes is not the code of the mean: four orthogonal children
# $e_0, e_1, e_2, e_3$ have mean direction $(\frac12, \frac12, \frac12, \frac12)$, code 90
# per band, but the average of their codes is $127/4 \approx 32$, which reads back as
# 0.063: a vector of length 0.13 instead of 1. So we compute each level ourselves, 2×2
# block by 2×2 block from the level below (as stored, i.e. de-quantised from its codes):
# children that are no data are left out of the mean; a parent with no valid child, or
# whose children cancel exactly, is no data. At odd edges the missing children count as
# no data.

# %%
#| export
def downsample_2x2(x: Float[np.ndarray, "E h w"]) -> Float[np.ndarray, "E h2 w2"]:
    """One overview step: the unit-length mean direction of each 2x2 block of vectors.

    NaN vectors (no data) are left out of the mean; a block with none valid (or whose
    vectors cancel) is NaN. Odd sizes: h2 = ceil(h / 2), w2 = ceil(w / 2).
    """
    e, h, w = x.shape
    h2, w2 = -(-h // 2), -(-w // 2)
    if (2 * h2, 2 * w2) != (h, w):  # odd edge: pad with no-data children
        padded = np.full((e, 2 * h2, 2 * w2), np.nan, dtype=np.float32)
        padded[:, :h, :w] = x
        x = padded
    kids = rearrange(x, "e (h a) (w b) -> e h w (a b)", a=2, b=2)
    valid = np.isfinite(kids).all(axis=0)  # h2 w2 4
    total = np.where(valid, kids, 0).sum(axis=-1, dtype=np.float64)  # e h2 w2
    norm = np.sqrt((total**2).sum(axis=0))
    ok = valid.any(axis=-1) & (norm > 1e-12)
    return np.where(ok, total / np.where(ok, norm, 1), np.nan).astype(np.float32)


def overview_shapes(height: int, width: int, blocksize: int) -> list[tuple[int, int]]:
    """Sizes of the overview levels (factors 2, 4, ...) until the smaller side is < blocksize."""
    shapes: list[tuple[int, int]] = []
    h, w = height, width
    while min(h, w) >= blocksize:
        h, w = -(-h // 2), -(-w // 2)
        shapes.append((h, w))
    return shapes


# %% [markdown]
# **Check** on the constructed case: our parent has unit length and equals the
# normalised mean; naive averaging of int8 codes (what GDAL's resampling does) does not.

# %%
kids = np.zeros((E, 2, 2), np.float32)
for i, (r, c) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
    kids[i, r, c] = 1.0  # four orthogonal unit vectors
ours = dequantise(quantise(downsample_2x2(dequantise(quantise(kids)))))[:, 0, 0]
naive = dequantise(np.round(quantise(kids).astype(np.float32).mean(axis=(1, 2))).astype(np.int8))
print(f"ours: {ours[:4].round(3)} |v| = {np.linalg.norm(ours):.4f}")
print(f"naive int8 average: {naive[:4].round(3)} |v| = {np.linalg.norm(naive):.4f}")
assert abs(np.linalg.norm(ours) - 1) < 0.01 and abs(np.linalg.norm(naive) - 1) > 0.5

# %% [markdown]
# ## Writing a COG window by window
#
# An AEF tile is large (8192 × 8192 pixels are 16 GiB as 64 float32 bands, 4 GiB as
# int8), and a model produces it window by window. `AEFWriter` therefore never holds the
# raster: `write(values, row, col)` quantises one float block `E h w` of unit vectors and
# writes it into a temporary level-0 tiled GeoTIFF. `close()` then
#
# 1. builds each overview level as its own temporary tiled GeoTIFF, tile by tile from the
#    level below (`downsample_2x2`, memory of one window);
# 2. writes a small VRT whose bands read level 0 and declare those files as their
#    `<Overview>`s;
# 3. asks GDAL's COG driver to copy the VRT with `OVERVIEWS=FORCE_USE_EXISTING`: it lays
#    out the tiles and our overviews in cloud-optimised order, compressed, without
#    recomputing anything;
# 4. renames the result onto `path` (an atomic `os.replace` in the same folder).
#
# The temporaries live in a hidden folder beside `path`, so the final rename never
# crosses file systems. If anything raises inside `with AEFWriter(...)`, the folder is
# removed and `path` is left as it was: a half-written file never appears under the final
# name (a tile server or a second process could otherwise pick it up).
#
# What we chose where the paper is silent: 256-pixel tiles (GDAL's COG default is 512;
# 256 is the tile size of web maps) and DEFLATE; overview levels until the smaller side
# drops below one tile; `float32=True` writes the vectors unquantised
# with NaN as no data, for checking and for other models' embeddings. Inputs are checked
# before any file is created: the band count, a positive size, the CRS, and a north-up
# transform (a writer must write north-up; `AEF_NOTES.md` §9).

# %%
#| export
_COMPRESS = ("deflate", "lzw", "zstd")


def _positive_int(value: Any, name: str) -> int:
    try:
        n = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if n <= 0:
        raise ValueError(f"{name} must be positive, got {n}")
    return n


def _check_crs(crs: Any):
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    if crs is None or crs == "":
        raise ValueError("crs is required (e.g. 'EPSG:32633'): AEF files are georeferenced")
    try:
        return CRS.from_user_input(crs)
    except (CRSError, TypeError, ValueError) as err:
        raise ValueError(f"bad crs {crs!r}: {err}") from None


def _check_transform(transform: Any, height: int):
    from affine import Affine

    if isinstance(transform, Affine):
        t = transform
    else:
        try:
            vals = [float(v) for v in transform]
        except (TypeError, ValueError):
            raise ValueError(f"transform must be an affine.Affine or 6 numbers, got {transform!r}") from None
        if len(vals) not in (6, 9):
            raise ValueError(f"transform must be an affine.Affine or 6 numbers (a, b, c, d, e, f), got {len(vals)}")
        t = Affine(*vals[:6])
    if not all(math.isfinite(v) for v in t[:6]):
        raise ValueError(f"transform has non-finite entries: {t!r}")
    if t.b != 0 or t.d != 0:
        raise ValueError(f"rotated or sheared transform (b={t.b}, d={t.d}): AEF files are north-up, b = d = 0")
    if t.a <= 0:
        raise ValueError(f"pixel width transform.a must be > 0, got {t.a}")
    if t.e >= 0:
        raise ValueError(
            f"transform.e = {t.e} must be < 0 (north-up, rows from north to south): flip the "
            f"rows of the array and use Affine({t.a}, 0, {t.c}, 0, {-t.e}, {t.f + t.e * height})")
    return t


class AEFWriter:
    """Write a (quantised) AEF embedding raster window by window as a Cloud-Optimised GeoTIFF.

    Memory is bounded by a window, never the raster. Use as a context manager::

        with AEFWriter("emb.tif", H, W, "EPSG:32633", transform) as w:
            w.write(block, row, col)  # float (E, h, w) unit vectors, NaN = no data

    On leaving the block without an error the overviews are built and the COG is renamed
    atomically onto `path`; on an error nothing is written there and the temporaries go.
    """

    def __init__(
        self, path: str | os.PathLike, height: int, width: int, crs: Any, transform: Any, *,
        bands: int = AEF_DIM, float32: bool = False, blocksize: int = 256,
        compress: str = "deflate", overviews: bool = True,
    ):
        import rasterio

        self.path = Path(path)
        self.height = _positive_int(height, "height")
        self.width = _positive_int(width, "width")
        self.bands = _positive_int(bands, "bands")
        self.blocksize = _positive_int(blocksize, "blocksize")
        if self.blocksize % 16:
            raise ValueError(f"blocksize must be a multiple of 16 (GeoTIFF tiles), got {self.blocksize}")
        if not isinstance(compress, str) or compress.lower() not in _COMPRESS:
            raise ValueError(f"compress must be one of {_COMPRESS}, got {compress!r}")
        self.compress = compress.lower()
        self.crs = _check_crs(crs)
        self.transform = _check_transform(transform, self.height)
        if self.path.is_dir():
            raise ValueError(f"{self.path} is a folder; give the path of the .tif to write")
        if not self.path.parent.is_dir():
            raise FileNotFoundError(f"folder {self.path.parent} does not exist")
        self.float32 = bool(float32)
        self.dtype = "float32" if self.float32 else "int8"
        self.nodata = float("nan") if self.float32 else AEF_NODATA
        self.names = tuple(f"A{i:02d}" for i in range(self.bands))
        self.levels = overview_shapes(self.height, self.width, self.blocksize) if overviews else []
        self._warned = False
        # temporaries: a hidden folder beside `path` (same file system: the rename is atomic)
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".aef-tmp",
                                          dir=self.path.parent))
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(self._tmp), True)
        try:
            self._level0 = rasterio.open(self._tmp / "l0.tif", "w", **self._profile(self.height, self.width))
        except BaseException:
            self._cleanup()
            raise
        self._level0.descriptions = self.names
        self.closed = False

    def _profile(self, height: int, width: int) -> dict:
        """Creation options of the temporary levels: tiled like the output, fast compression."""
        return {"driver": "GTiff", "height": height, "width": width, "count": self.bands,
                "dtype": self.dtype, "nodata": self.nodata, "crs": self.crs, "transform": self.transform,
                "tiled": True, "blockxsize": self.blocksize, "blockysize": self.blocksize,
                "compress": "deflate", "zlevel": 1, "interleave": "pixel", "bigtiff": "IF_SAFER"}

    def write(self, values: Float[np.ndarray, "E h w"] | ArrayLike, row: int, col: int) -> None:
        """Write a float block of unit vectors (NaN = no data) with its top-left pixel at (row, col)."""
        from rasterio.windows import Window

        if self.closed:
            raise RuntimeError("AEFWriter is closed")
        v = _as_numpy(values)
        if v.ndim != 3:
            raise ValueError(f"values must be a block (E, h, w), got shape {v.shape}")
        if v.shape[0] != self.bands:
            raise ValueError(f"values have {v.shape[0]} bands, the raster has {self.bands} (E first: (E, h, w))")
        if not np.issubdtype(v.dtype, np.floating):
            raise ValueError(f"values must be float unit vectors, got dtype {v.dtype}: "
                             "de-quantise int8 codes first (dequantise)")
        _, h, w = v.shape
        row, col = operator.index(row), operator.index(col)
        if row < 0 or col < 0 or row + h > self.height or col + w > self.width:
            raise ValueError(f"block rows [{row}, {row + h}) x cols [{col}, {col + w}) lies outside "
                             f"the raster ({self.height} x {self.width})")
        if h == 0 or w == 0:
            return
        if not self._warned:
            n = np.linalg.norm(v, axis=0)
            n = n[np.isfinite(n)]
            if n.size and np.abs(n - 1).max() > 0.05:
                self._warned = True
                log.warning("vector lengths in [%.3g, %.3g]: AEF stores unit vectors", n.min(), n.max())
        if self.float32:
            data = v.astype(np.float32)
            data[:, ~np.isfinite(data).all(axis=0)] = np.nan  # no data in all bands at once
        else:
            data = quantise(v, axis=0)
        self._level0.write(data, window=Window(col, row, w, h))

    def _read_level(self, src, window) -> np.ndarray:
        a = src.read(window=window)
        return a.astype(np.float32) if self.float32 else dequantise(a, axis=0)

    def _build_level(self, below: Path, out: Path, height: int, width: int) -> None:
        """One overview level, tile by tile from the level below."""
        import rasterio
        from affine import Affine
        from rasterio.windows import Window

        b = self.blocksize
        profile = self._profile(height, width)
        t = self.transform  # the same extent, pixels scaled (not used by the COG; for completeness)
        profile["transform"] = Affine(t.a * self.width / width, 0.0, t.c, 0.0, t.e * self.height / height, t.f)
        with rasterio.open(below) as src, rasterio.open(out, "w", **profile) as dst:
            for r in range(0, height, b):
                for c in range(0, width, b):
                    h, w = min(b, height - r), min(b, width - c)
                    kids = Window(2 * c, 2 * r, min(2 * w, src.width - 2 * c), min(2 * h, src.height - 2 * r))
                    parent = downsample_2x2(self._read_level(src, kids))
                    data = parent if self.float32 else quantise(parent, axis=0)
                    dst.write(data, window=Window(c, r, w, h))

    def _vrt(self, files: list[str]) -> str:
        """A VRT of level 0 whose bands declare our overview files as their overviews."""
        dtype = "Float32" if self.float32 else "Int8"
        nodata = "nan" if self.float32 else str(AEF_NODATA)
        geo = ", ".join(repr(float(v)) for v in self.transform.to_gdal())
        bands = []
        for i, name in enumerate(self.names, 1):
            overviews = "".join(
                f'<Overview><SourceFilename relativeToVRT="1">{f}</SourceFilename>'
                f"<SourceBand>{i}</SourceBand></Overview>" for f in files[1:])
            bands.append(
                f'<VRTRasterBand dataType="{dtype}" band="{i}"><NoDataValue>{nodata}</NoDataValue>'
                f"<Description>{escape(name)}</Description><SimpleSource>"
                f'<SourceFilename relativeToVRT="1">{files[0]}</SourceFilename>'
                f"<SourceBand>{i}</SourceBand></SimpleSource>{overviews}</VRTRasterBand>")
        return (f'<VRTDataset rasterXSize="{self.width}" rasterYSize="{self.height}">'
                f"<SRS>{escape(self.crs.to_wkt())}</SRS><GeoTransform>{geo}</GeoTransform>"
                + "\n".join(bands) + "</VRTDataset>\n")

    def close(self) -> Path:
        """Build the overviews, write the COG and rename it onto `path`. Returns `path`."""
        import rasterio.shutil

        if self.closed:
            return self.path
        self.closed = True
        try:
            self._level0.close()
            files = ["l0.tif"]
            for k, (h, w) in enumerate(self.levels, 1):
                files.append(f"o{k}.tif")
                self._build_level(self._tmp / files[-2], self._tmp / files[-1], h, w)
            vrt = self._tmp / "aef.vrt"
            vrt.write_text(self._vrt(files))
            out = self._tmp / "out.tif"
            rasterio.shutil.copy(
                str(vrt), str(out), driver="COG", COMPRESS=self.compress.upper(),
                BLOCKSIZE=self.blocksize, BIGTIFF="IF_SAFER",
                OVERVIEWS="FORCE_USE_EXISTING" if self.levels else "NONE")
            os.replace(out, self.path)
        finally:
            self._cleanup()
        return self.path

    def abort(self) -> None:
        """Drop everything written so far; `path` is left untouched."""
        if not self.closed:
            self.closed = True
            try:
                self._level0.close()
            finally:
                self._cleanup()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_aef(path: str | os.PathLike, values: Float[np.ndarray, "E H W"] | ArrayLike, crs: Any, transform: Any,
              **kw: Any) -> Path:
    """Write an in-memory float (E, H, W) array of unit vectors as an AEF COG (see AEFWriter)."""
    v = _as_numpy(values)
    if v.ndim != 3:
        raise ValueError(f"values must be an (E, H, W) array, got shape {v.shape}")
    _, height, width = v.shape
    with AEFWriter(path, height, width, crs, transform, **kw) as writer:
        for r in range(0, height, writer.blocksize):  # strips of one tile row
            writer.write(v[:, r:r + writer.blocksize], r, 0)
    return Path(path)


# %% [markdown]
# ## Reading, always north-up
#
# `read_aef` returns an `xarray.DataArray` with dims `band, y, x`, float32, de-quantised
# (int8 files) or as stored (float files), NaN at no data, band names `A00` …, pixel-centre
# coordinates, and the CRS and transform attached the rioxarray way (`da.rio.crs`,
# `da.rio.transform()`). Some public mirrors store the COGs **bottom-up**: a positive $y$
# pixel size, the first row being the southernmost. Displayed naively such a tile is upside
# down, and pixel-index arithmetic silently mixes up north and south. The reader detects
# `transform.e > 0`, flips the rows and rewrites the transform, so what it returns is
# north-up whatever the file. `window=` (rows and columns of the north-up raster),
# `bounds=` (left, bottom, right, top in the file's CRS) and `overview_level=` read part of
# a file; bounds that miss the raster raise an error instead of returning zeros (another
# mistake of `USERS.md`).

# %%
#| export
def _north_up(t, height: int):
    """The transform of the same raster with rows ordered north to south."""
    from affine import Affine

    return Affine(t.a, 0.0, t.c, 0.0, -t.e, t.f + t.e * height) if t.e > 0 else t


def read_aef(path: str | os.PathLike, *, window: Any = None,
             bounds: Sequence[float] | None = None, overview_level: int | None = None):
    """Read an AEF GeoTIFF as a north-up xarray.DataArray (band, y, x), float32, NaN = no data.

    int8 files are de-quantised (-128 in any band -> NaN vector); float files are returned
    as stored (their nodata -> NaN). Bottom-up files (transform.e > 0) are flipped.
    `window`: a rasterio Window or (row_off, col_off, height, width) of the north-up raster;
    `bounds`: (left, bottom, right, top) in the file's CRS; `overview_level`: 0 = the first
    overview. CRS and transform are attached with rioxarray (`da.rio.crs`, `da.rio.transform()`).
    """
    import rasterio
    import rioxarray  # noqa: F401  (registers the .rio accessor)
    import xarray as xr
    from affine import Affine
    from rasterio.windows import Window
    from rasterio.windows import from_bounds as _from_bounds

    if window is not None and bounds is not None:
        raise ValueError("give window= or bounds=, not both")
    opts = {} if overview_level is None else {"overview_level": operator.index(overview_level)}
    with rasterio.open(path, **opts) as src:
        t, height, width = src.transform, src.height, src.width
        if t.b != 0 or t.d != 0:
            raise ValueError(f"{path}: rotated or sheared transform {t!r} is not an AEF layout")
        north = _north_up(t, height)
        if bounds is not None:
            if len(bounds) != 4:
                raise ValueError(f"bounds must be (left, bottom, right, top), got {bounds!r}")
            f = _from_bounds(*bounds, transform=north)
            r0 = max(0, math.floor(f.row_off + 1e-9))
            c0 = max(0, math.floor(f.col_off + 1e-9))
            r1 = min(height, math.ceil(f.row_off + f.height - 1e-9))
            c1 = min(width, math.ceil(f.col_off + f.width - 1e-9))
            if r1 <= r0 or c1 <= c0:
                b = src.bounds
                raise ValueError(f"bounds {tuple(bounds)} do not overlap the raster "
                                 f"({b.left}, {b.bottom}, {b.right}, {b.top}) in {src.crs}")
        elif window is not None:
            if not isinstance(window, Window):
                r0, c0, h, w = (operator.index(v) for v in window)
                window = Window(c0, r0, w, h)
            r0, c0 = int(window.row_off), int(window.col_off)
            r1, c1 = r0 + int(window.height), c0 + int(window.width)
            if r0 < 0 or c0 < 0 or r1 > height or c1 > width or r1 <= r0 or c1 <= c0:
                raise ValueError(f"window rows [{r0}, {r1}) x cols [{c0}, {c1}) is empty or outside "
                                 f"the raster ({height} x {width})")
        else:
            r0, c0, r1, c1 = 0, 0, height, width
        h, w = r1 - r0, c1 - c0
        file_row = height - r1 if t.e > 0 else r0  # bottom-up: the window's rows, counted from the top of the file
        a = src.read(window=Window(c0, file_row, w, h))
        if t.e > 0:
            a = a[:, ::-1, :]
        if a.dtype == np.int8:
            values = dequantise(a, axis=0)
        elif np.issubdtype(a.dtype, np.floating):
            values = a.astype(np.float32)
            if src.nodata is not None and not math.isnan(src.nodata):
                values[values == src.nodata] = np.nan
            values[:, ~np.isfinite(values).all(axis=0)] = np.nan  # no data in all bands at once
        else:
            raise ValueError(f"{path}: dtype {a.dtype}; an AEF file is int8 (quantised) or float")
        names = tuple(d or f"A{i:02d}" for i, d in enumerate(src.descriptions))
        crs = src.crs
    wt = Affine(north.a, 0.0, north.c + north.a * c0, 0.0, north.e, north.f + north.e * r0)
    da = xr.DataArray(
        np.ascontiguousarray(values), dims=("band", "y", "x"),
        coords={"band": list(names), "y": wt.f + wt.e * (np.arange(h) + 0.5),
                "x": wt.c + wt.a * (np.arange(w) + 0.5)},
        name="embedding", attrs={"source": str(path)})
    if crs is not None:
        da = da.rio.write_crs(crs)
    da = da.rio.write_transform(wt)
    return da.rio.write_nodata(np.nan, encoded=False)


# %% [markdown]
# ## A worked example
#
# A synthetic embedding field: smooth random fields, one per band, normalised to unit
# length per pixel (a stand-in for a model's output; no model is needed here), with a
# block of no data. We write it in windows, the way an inference loop would, and check
# what a user's tools will see: a valid COG (rio-cogeo's validator), 64 int8 bands named
# `A00` … `A63`, no data −128, tiled, compressed, north-up, with overviews.

# %%
from affine import Affine
from rasterio.crs import CRS
from scipy.ndimage import zoom


def smooth_unit_field(e, h, w, cell, rng):
    """Random smooth (E, h, w) unit-vector field: coarse noise, cubic upsampling, normalised."""
    coarse = rng.standard_normal((e, h // cell + 2, w // cell + 2))
    f = zoom(coarse, (1, cell, cell), order=3)[:, :h, :w]
    return (f / np.linalg.norm(f, axis=0, keepdims=True)).astype(np.float32)


field = smooth_unit_field(E, height, width, 24, rng)
field[:, 40:90, 60:140] = np.nan  # a block of no data (e.g. outside a swath)
crs, transform = CRS.from_epsg(32633), Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 5_200_000.0)

work = Path(tempfile.mkdtemp(prefix="aef25-"))
path = work / "example.tif"
t0 = time.perf_counter()
with AEFWriter(path, height, width, crs, transform, blocksize=blocksize) as writer:
    for r in range(0, height, 100):  # windows of 100 x 130 pixels
        for c in range(0, width, 130):
            writer.write(field[:, r:r + 100, c:c + 130], r, c)
print(f"wrote {path.name} in {time.perf_counter() - t0:.2f} s; folder holds {sorted(p.name for p in work.iterdir())}")

# %%
import rasterio
from rio_cogeo.cogeo import cog_validate

valid, errors, warnings = cog_validate(str(path), quiet=True)
with rasterio.open(path) as src:
    prof = src.profile
    print({k: prof[k] for k in ("driver", "dtype", "count", "nodata", "tiled", "blockxsize", "compress")})
    print("bands", src.descriptions[:3], "…", src.descriptions[-1], "| overviews", src.overviews(1),
          "| pixel height", src.transform.e)
    assert valid and not errors and not warnings, (errors, warnings)
    assert src.count == 64 and src.descriptions == AEF_BANDS and src.dtypes[0] == "int8"
    assert src.nodata == AEF_NODATA and prof["tiled"] and prof["compress"] == "deflate"
    assert src.transform.e < 0 and src.overviews(1) == [2, 4, 8]

da = read_aef(path)
print(da.dims, da.dtype, da.shape, da.rio.crs, "\n", da.rio.transform())
ok = np.isfinite(field).all(0)
cos = ((da.values * field).sum(0) / np.linalg.norm(da.values, axis=0))[ok]
assert da.rio.transform() == transform and (np.isnan(da.values[:, ~ok])).all()
assert cos.min() > 0.999 and lengths_ok(da.values, axis=0).all()

# %% [markdown]
# **The overviews** are unit vectors (the right de-quantiser reads them too) and each one
# is the normalised mean of its four children at the level below, which we recompute here
# with plain numpy slicing (independently of `downsample_2x2`).

# %%
levels = [read_aef(path)] + [read_aef(path, overview_level=k) for k in range(3)]
for k in range(1, len(levels)):
    child, parent = levels[k - 1].values, levels[k].values
    ch, cw = child.shape[1:]
    pad = np.full((E, 2 * parent.shape[1], 2 * parent.shape[2]), np.nan, np.float32)
    pad[:, :ch, :cw] = child
    four = np.stack([pad[:, i::2, j::2] for i in (0, 1) for j in (0, 1)])  # 4 E h w
    four = np.where(np.isnan(four).any(1, keepdims=True), 0, four).sum(0)
    with np.errstate(invalid="ignore"):
        expect = four / np.linalg.norm(four, axis=0)  # NaN where no child is valid
    cos = (parent * expect).sum(0) / np.linalg.norm(parent, axis=0)
    same_nodata = (np.isnan(parent[0]) == np.isnan(expect[0])).all()
    print(f"level {k}: {parent.shape[1:]}, min cos to the mean of children {np.nanmin(cos):.6f}, "
          f"lengths in [{np.nanmin(np.linalg.norm(parent, axis=0)):.4f}, {np.nanmax(np.linalg.norm(parent, axis=0)):.4f}]")
    assert same_nodata and np.nanmin(cos) > 0.999 and lengths_ok(parent, axis=0).all()

# %% [markdown]
# **The pyramid** (bands A00–A02 as red, green, blue, one stretch for all levels): each level
# is a faithful half-size picture of the one before, and the no-data block stays no data.

# %%
lo, hi = np.nanpercentile(levels[0].values[:3], [2, 98])
gap = 20  # pixels between panels; every level is drawn at its true size relative to the others
total = sum(lv.shape[2] for lv in levels) + gap * (len(levels) - 1)
fig = plt.figure(figsize=(12, 12 * (height + 40) / total))
x0 = 0
for k, lv in enumerate(levels):
    h, w = lv.shape[1:]
    ax = fig.add_axes((x0 / total, (height - h) / (height + 40), w / total, h / (height + 40)))
    rgb = np.clip((np.moveaxis(lv.values[:3], 0, -1) - lo) / (hi - lo), 0, 1)
    ax.imshow(np.where(np.isnan(rgb), 1.0, rgb), interpolation="nearest")
    ax.set_title(f"overview 1/{2 ** k}\n{h}×{w}" if k else f"full resolution\n{h}×{w}", fontsize=8)
    ax.set_axis_off()
    x0 += w + gap
plt.show()

# %% [markdown]
# **Bytes.** int8 is a quarter of float32 before compression: 64 bytes per pixel instead of
# 256, about 95 TB instead of 380 TB for one year of the land surface (1.5 × 10¹² pixels
# of 10 m) before compression. The overviews add a third ($\frac14 + \frac1{16} + \dots$);
# DEFLATE wins a little of it back on our noise-like synthetic field (smoother data
# compresses better).

# %%
path32 = write_aef(work / "example_f32.tif", field, crs, transform, float32=True, blocksize=blocksize)
px = height * width
sizes = {"float32, raw": 256 * px, "int8, raw": 64 * px,
         "float32 COG": path32.stat().st_size, "int8 COG": path.stat().st_size}
for k, v in sizes.items():
    print(f"{k:>13}: {v / 1e6:6.2f} MB  ({v / px:6.1f} B/pixel)")
assert sizes["int8 COG"] < sizes["float32 COG"] / 3
r32 = read_aef(path32)
assert np.allclose(r32.values[:, ok], field[:, ok]) and r32.dtype == np.float32

fig, ax = plt.subplots(figsize=(7, 2.6))
ax.barh(list(sizes), [v / px for v in sizes.values()], color=["C3", "C0", "C3", "C0"])
ax.set(xlabel="bytes per pixel (COGs include their overviews)",
       title=f"a {height}×{width} raster of 64-d embeddings")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## The mistakes users make, made impossible
#
# `../shared/USERS.md` gathers how people use the published layer and what goes wrong.
# The ones that concern the file format, and what this module does about each:
#
# | mistake (`USERS.md`) | what happens | here |
# |---|---|---|
# | de-quantising linearly, `q / 127` | vectors of length ≈ 2.5; cosines still work, distances, means and probes do not | `dequantise` / `read_aef` implement §S8.1; the length test above catches it |
# | bottom-up COGs (positive y pixel size) on some mirrors | maps upside down, north and south swapped in index arithmetic | `read_aef` always returns north-up; `AEFWriter` refuses a bottom-up transform |
# | COGs whose overviews are not internally tiled | tile servers break | GDAL's COG driver writes tiled overviews; `cog_validate` passes |
# | all-zero embeddings from bounds that miss the data | silent garbage | `read_aef(bounds=...)` raises when the bounds miss; no data is NaN, never 0 |
# | averaging int8 codes for coarser cells | vectors of the wrong length and direction | overviews are means of de-quantised vectors, re-normalised |
#
# The bottom-up case, concretely: a file written with rows from south to north (the way a
# mirror stores it) reads back identical to the north-up original, window reads included.

# %%
with rasterio.open(path) as src:
    codes, prof = src.read(), src.profile
flipped = work / "bottom_up.tif"
prof.update(driver="GTiff", transform=Affine(10.0, 0.0, 500_000.0, 0.0, 10.0, 5_200_000.0 - 10.0 * height))
with rasterio.open(flipped, "w", **prof) as dst:
    dst.write(codes[:, ::-1, :])  # the first row of the file is the southernmost
with rasterio.open(flipped) as src:
    print("file pixel height", src.transform.e, "(positive: bottom-up)")
up = read_aef(flipped)
assert np.array_equal(up.values, da.values, equal_nan=True) and up.rio.transform() == transform
part = read_aef(flipped, window=(10, 20, 50, 70))
assert np.array_equal(part.values, da.values[:, 10:60, 20:90], equal_nan=True)
box = read_aef(flipped, bounds=(500_200.0, 5_199_400.0, 500_900.0, 5_199_900.0))
assert np.array_equal(box.values, da.values[:, 10:60, 20:90], equal_nan=True)
try:
    read_aef(path, bounds=(0.0, 0.0, 100.0, 100.0))
    raise AssertionError("bounds outside the raster must raise")
except ValueError as err:
    print("ValueError:", err)
shutil.rmtree(work)

# %% [markdown]
# **What is left open.** Google's published COGs are the reference for choices the paper does
# not state (tile size, compression, predictor, the exact number of overview levels); a
# reader does not depend on them, and our writer's output passes the COG validator and
# round-trips through `read_aef` and plain rasterio.
