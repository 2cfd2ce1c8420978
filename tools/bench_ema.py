#!/usr/bin/env python3
"""Benchmark the weight average's update: one fused foreach lerp over cached tensor lists
(aef_lit.training.WeightAverage) against the walk over `state_dict()` tensor by tensor that
it replaced, side by side in one process on one model. Prints the median of each and the ratio.

    python tools/bench_ema.py [--preset paper] [--repeats 20] [--threads 2]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from _venv import reexec_in_venv  # tools/_venv.py


def walk_update(shadow: dict, model, decay: float) -> None:
    """The previous update: every state_dict() tensor in turn."""
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                shadow[k].lerp_(v.detach(), 1.0 - decay)
            else:
                shadow[k].copy_(v)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="paper", help="model preset (tiny, small, paper)")
    ap.add_argument("--repeats", type=int, default=20, help="timed updates per method")
    ap.add_argument("--threads", type=int, default=None, help="torch threads")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from aef_lit.model import build_model
    from aef_lit.training import WeightAverage

    model = build_model(args.preset)
    n = sum(p.numel() for p in model.parameters())
    tensors = len(model.state_dict())
    fused = WeightAverage(model, 0.999)
    shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}
    times = {"state_dict walk": [], "foreach (cached)": []}
    for _ in range(args.repeats + 2):  # interleaved, the first two dropped as warm-up
        t = time.perf_counter()
        walk_update(shadow, model, 0.999)
        times["state_dict walk"].append(time.perf_counter() - t)
        t = time.perf_counter()
        fused.update(model)
        times["foreach (cached)"].append(time.perf_counter() - t)
    med = {k: statistics.median(v[2:]) for k, v in times.items()}
    print(f"preset {args.preset}: {n / 1e6:.1f}M parameters in {tensors} tensors, {torch.get_num_threads()} threads")
    for k, v in med.items():
        print(f"  {k:18s} {v * 1e3:8.2f} ms per update (median of {args.repeats})")
    print(f"  ratio walk / foreach: {med['state_dict walk'] / med['foreach (cached)']:.2f}x")
    return 0


if __name__ == "__main__":
    reexec_in_venv()
    raise SystemExit(main())
