#!/usr/bin/env python3
"""Training throughput of aef-lit: steps/s and tiles/s of the real loop, presets side by side.

Runs `aef_lit.training.train` (sampler, model, the full objective, Adam, clipping; no
checkpoint inside the timed window) for a few steps per preset and prints a table. The
first `--warmup` steps (allocator, caches, the text model's first captions) are not timed.

    python tools/bench_train.py                       # tiny and small on this machine
    python tools/bench_train.py --presets tiny --steps 20 --batch-size 8 --device cpu

For comparison (AEF_NOTES.md §8): the paper's run processed about 0.25 sequences/s per TPU
v4 chip (256 sequences of 103 frames at L = 128, 100k steps, 56 h, 512 chips).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path


def bench(preset: str, steps: int, warmup: int, batch_size: int, frames: int, device: str, data: str,
          tile: int, text: bool) -> dict:
    from aef_lit.conventions import get_config
    from aef_lit.training import TrainConfig, read_metrics, train

    tile = tile or get_config(preset).tile
    with tempfile.TemporaryDirectory() as d:
        cfg = TrainConfig(preset=preset, steps=warmup + steps, batch_size=batch_size, frames=frames, tile=tile,
                          device=device, data=data, lr=1e-4, checkpoint_every=10**9, out_dir=d,
                          progress=False, resume=False, text=text)
        res = train(cfg)
        rows = read_metrics(Path(d) / "metrics.csv")[warmup:]
        params = sum(p.numel() for p in res.model.parameters())
    sec = [batch_size / float(r["tiles_per_s"]) for r in rows]
    s_per_step = statistics.median(sec)
    return {"preset": preset, "tile": tile, "frames": frames, "batch": batch_size, "params_M": params / 1e6,
            "s_per_step": s_per_step, "steps_per_s": 1 / s_per_step, "tiles_per_s": batch_size / s_per_step,
            "device": str(res.model.parameters().__next__().device)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["tiny", "small"])
    ap.add_argument("--steps", type=int, default=10, help="timed steps per preset")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--tile", type=int, default=0, help="0 = each preset's own tile size")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--data", default="auto")
    ap.add_argument("--text", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args(argv)

    import torch

    rows = [bench(p, args.steps, args.warmup, args.batch_size, args.frames, args.device, args.data, args.tile,
                  args.text) for p in args.presets]
    print(f"# aef-lit training throughput: torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs visible, {torch.get_num_threads()} torch threads")
    print(f"{'preset':8s} {'params':>8s} {'tile':>5s} {'frames':>6s} {'batch':>5s} {'s/step':>8s} "
          f"{'steps/s':>8s} {'tiles/s':>8s}  device")
    for r in rows:
        print(f"{r['preset']:8s} {r['params_M']:7.2f}M {r['tile']:5d} {r['frames']:6d} {r['batch']:5d} "
              f"{r['s_per_step']:8.3f} {r['steps_per_s']:8.2f} {r['tiles_per_s']:8.1f}  {r['device']}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
