# generated from notebooks/28_embedding_maps.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tiling:
    """Where tiles go: size `tile`, buffer `buffer` on each side, `trim` pixels cut after inference."""

    tile: int
    buffer: int
    trim: int

    def __post_init__(self):
        if self.tile <= 0 or self.tile % 16:
            raise ValueError(f"the tile must be a positive multiple of 16 (the model's coarsest grid is "
                             f"L/16), got {self.tile}")
        if not 0 <= self.trim <= self.buffer or 2 * self.buffer >= self.tile:
            raise ValueError(f"need 0 <= trim <= buffer < tile/2, got tile {self.tile}, buffer {self.buffer}, "
                             f"trim {self.trim}")

    @classmethod
    def paper(cls, tile: int) -> "Tiling":
        """The paper's ratios (160 m buffer and 80 m trim on 1.28 km tiles) scaled to `tile` pixels."""
        return cls(tile, tile // 8, tile // 16)

    @classmethod
    def plain(cls, tile: int) -> "Tiling":
        """Abutting tiles, no buffer, no blending (to see the seams the paper's tiling removes)."""
        return cls(tile, 0, 0)

    @property
    def stride(self) -> int:
        return self.tile - 2 * self.buffer

    @property
    def overlap(self) -> int:
        return 2 * (self.buffer - self.trim)

    def weights(self) -> np.ndarray:
        """`tile x tile` blending weights: 0 in the trimmed margin, linear ramps over the overlaps, 1 inside."""
        n, m, o = self.tile, self.trim, self.overlap
        w = np.zeros(n, np.float64)
        w[m:n - m] = 1.0
        if o:
            ramp = (np.arange(o) + 0.5) / o
            w[m:m + o] = ramp
            w[n - m - o:n - m] = ramp[::-1]
        return np.outer(w, w)

    def origins(self, lo: int, hi: int) -> list[int]:
        """Tile origins (first row or column) of the tiles whose kept pixels touch [lo, hi)."""
        s, b, m, n = self.stride, self.buffer, self.trim, self.tile
        first = max(0, math.floor((lo - (n - m - b)) / s))
        out, i = [], first
        while i * s - b + m < hi:
            if i * s - b + n - m > lo:
                out.append(i * s - b)
            i += 1
        return out


def map_tile(cfg) -> int:
    """The default tile of a map: the model's training tile, at least 64 pixels (chapter 29 shows why)."""
    t = cfg.tile or 16
    return max(t, -(-64 // t) * t)


@dataclass(frozen=True)
class Chunk:
    row: int
    col: int
    height: int
    width: int

    @property
    def name(self) -> str:
        return f"r{self.row:06d}_c{self.col:06d}"


def chunks_of(height: int, width: int, tiling: Tiling, size: int = 256) -> list[Chunk]:
    """The raster cut into chunks of about `size` pixels (a multiple of the tiling's stride)."""
    k = max(1, round(size / tiling.stride)) * tiling.stride
    return [Chunk(r, c, min(k, height - r), min(k, width - c))
            for r in range(0, height, k) for c in range(0, width, k)]
