#!/usr/bin/env python3
"""CPU forward time of the AEF model, presets side by side, one 128x128 tile with 8 frames.

    python tools/bench_forward.py                    # tiny and paper, 8 frames, 128x128
    python tools/bench_forward.py --presets tiny small paper --repeats 5 --threads 2

Each preset: build (seeded), one warm-up `embed`, then the median of `--repeats` timed
`embed` calls (eval mode, no gradients) on one row (B = 1) whose frames are split over the
input sources (8 frames = 3 S2 + 3 S1 + 2 Landsat with the default sources), one period.
Prints parameter counts (per part) and the timings as one table.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aef_lit.conventions import random_batch  # noqa: E402
from aef_lit.model import build_model, embed  # noqa: E402


def split_frames(names: list[str], frames: int) -> dict[str, int]:
    """Spread `frames` over the input sources as evenly as possible, first sources first."""
    base, extra = divmod(frames, len(names))
    return {n: base + (i < extra) for i, n in enumerate(names)}


def bench(preset: str, frames: int, size: int, repeats: int) -> dict:
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = build_model(preset, tile=size).eval()
    build_s = time.perf_counter() - t0
    names = [s.name for s in model.cfg.input_sources]
    per_source = split_frames(names, frames)
    batch = random_batch(model.cfg, B=1, T=per_source, H=size, W=size, n_padded=0,
                         generator=torch.Generator().manual_seed(0))
    periods = torch.tensor([[18_628.0, 18_993.0]], dtype=torch.float64)
    mu = embed(model, batch, periods)  # warm-up
    assert mu.shape == (1, model.cfg.embed_dim, size, size)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        embed(model, batch, periods)
        times.append(time.perf_counter() - t0)
    return {"preset": preset, "params": model.parameter_counts(), "build_s": build_s,
            "median_s": statistics.median(times), "min_s": min(times), "frames": per_source}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["tiny", "paper"])
    ap.add_argument("--frames", type=int, default=8, help="frames in total over the input sources")
    ap.add_argument("--size", type=int, default=128, help="tile size H = W (a multiple of 16)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads; B=1, {args.frames} frames, {args.size}x{args.size}, "
          f"median of {args.repeats} (after one warm-up)")
    rows = [bench(p, args.frames, args.size, args.repeats) for p in args.presets]
    parts = [k for k in rows[0]["params"] if k != "total"]
    head = f"{'preset':8s} {'params':>10s} " + " ".join(f"{p:>11s}" for p in parts) + \
        f" {'build s':>8s} {'fwd median s':>12s} {'fwd min s':>9s}  frames"
    print(head)
    for r in rows:
        print(f"{r['preset']:8s} {r['params']['total'] / 1e6:9.2f}M "
              + " ".join(f"{r['params'][p] / 1e6:10.3f}M" for p in parts)
              + f" {r['build_s']:8.1f} {r['median_s']:12.3f} {r['min_s']:9.3f}  {r['frames']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
