# generated from notebooks/29_aef_embed.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

from __future__ import annotations

import argparse
from typing import Sequence

import numpy as np

from aef_lit.data import DataError
from aef_lit.maps.embed import _model_config, embed_raster, parse_period
from aef_lit.maps.raster import RasterStack, _day_str


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
