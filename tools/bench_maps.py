"""Benchmark embedding maps (chapter 28): km²/s and peak memory against raster area.

Each measurement runs in a fresh process (peak RSS is per process): `embed_raster` (tiled,
chunked, written to an AEF COG) at each size, beside one `embed()` pass over the whole raster
(the way the model is called in training), on the same synthetic 3-date Sentinel-2 stack.

    python tools/bench_maps.py [--sizes 512 1024 2048] [--single-max 1024] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
import numpy as np, torch
torch.set_num_threads(int(sys.argv[4]))
import aef_lit.maps as maps
from aef_lit.data import GREENEARTHNET_S2
from aef_lit.training import load_pretrained
mode, folder, size = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
model, cfg = load_pretrained(device=sys.argv[5])
st = maps.RasterStack.from_files(sorted(folder.glob("*.tif")), GREENEARTHNET_S2)
period = maps.parse_period("2021-01-01", "2022-01-01")
t0 = time.perf_counter()
if mode == "tiled":
    maps.embed_raster(st, folder / "out" / "map.tif", period, model, device=sys.argv[5], progress=False)
else:
    from aef_lit.data import Sample
    from aef_lit.model import embed
    from aef_lit.data.preprocess import collate
    fr = st.read(0, 0, size, size)
    batch = collate([Sample("bench", st.grid, {"s2": fr}, {"s2": GREENEARTHNET_S2})], [GREENEARTHNET_S2])
    embed(model, batch, torch.tensor([period], dtype=torch.float64))
secs = time.perf_counter() - t0
print(json.dumps({"seconds": secs, "rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""


def write_stack(folder: Path, size: int) -> None:
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(0)
    for i, d in enumerate(("2021-04-10", "2021-06-20", "2021-08-30")):
        with rasterio.open(folder / f"S2_L2A_{d}.tif", "w", driver="GTiff", height=size, width=size, count=4,
                           dtype="uint16", crs="EPSG:32634", transform=from_origin(500000, 5200000, 10, 10),
                           tiled=True, blockxsize=256, blockysize=256) as dst:
            dst.descriptions = ("B2", "B3", "B4", "B8A")
            for r in range(0, size, 256):  # windowed, so a big raster is never in memory here either
                h = min(256, size - r)
                yy, xx = np.mgrid[r:r + h, 0:size]
                base = 900 + 500 * np.sin(xx / 9.0 + i) * np.cos(yy / 7.0) + rng.normal(0, 40, (h, size))
                data = np.stack([base, base * 1.1, base * 0.9, 2500 + base * 0.5]).clip(1, 10000).astype("uint16")
                dst.write(data, window=((r, r + h), (0, size)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048], help="raster sides in pixels (10 m)")
    p.add_argument("--single-max", type=int, default=1024, help="largest side also run as one embed() pass")
    p.add_argument("--threads", type=int, default=2, help="torch threads per run")
    p.add_argument("--device", default="cpu", help="cpu, cuda, ... (absolute times mean something only on a GPU)")
    args = p.parse_args(argv)
    rows = []
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            write_stack(Path(tmp), size)
            for mode in ("tiled", "single"):
                if mode == "single" and size > args.single_max:
                    continue
                out = subprocess.run([sys.executable, "-c", CHILD, mode, tmp, str(size), str(args.threads),
                                      args.device], capture_output=True, text=True)
                if out.returncode:
                    print(out.stderr[-2000:], file=sys.stderr)
                    return 1
                r = json.loads(out.stdout.strip().splitlines()[-1])
                km2 = size * size * 1e-4
                rows.append((size, mode, r["seconds"], km2 / r["seconds"], r["rss_gb"]))
                print(f"{size:5d}² {mode:7s} {r['seconds']:7.1f} s  {km2 / r['seconds']:6.3f} km²/s  "
                      f"peak RSS {r['rss_gb']:.2f} GB", flush=True)
    print("\n| side | method | s | km²/s | peak RSS GB |\n|---|---|---|---|---|")
    for size, mode, s, k, m in rows:
        print(f"| {size}² | {'embed_raster (tiled)' if mode == 'tiled' else 'one embed() pass'} | {s:.1f} | "
              f"{k:.3f} | {m:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
