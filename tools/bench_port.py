#!/usr/bin/env python3
"""aef-lit beside the seed's PyTorch port of AEF, side by side in one run: time and peak memory.

The port (github.com/Brayden-Zhang/alphaearth-foundations) has no licence file, so it is not
vendored: clone it anywhere and pass `--port`, or let the tool export it from a local git mirror.

    git clone https://github.com/Brayden-Zhang/alphaearth-foundations /tmp/aef-port
    python tools/bench_port.py --port /tmp/aef-port
    python tools/bench_port.py --port /tmp/aef-port --tasks embed --repeats 5

Both models get the port's widths (Space 512, Time 256, Precision 64, 6 blocks, 8 heads) and
one source of 10 bands, B = 1, T = 8 frames, 128 x 128. `embed`: encoder + summariser, no
gradients. `train`: forward and backward of each objective (the port: teacher, student,
decoder and its AEFLoss as its Trainer runs them; ours: teacher with held-out targets over
P + 1 periods, decoders, student, uniformity and consistency; no text term, no optimiser).
Every row is a fresh process (`tools/_bench_step.py`), median of `--repeats` after a
warm-up; memory is the process's peak resident set. Rows of aef-lit: as it runs by default,
with activation checkpointing (`--activation-checkpointing` in training), with the
encoder's static path (no frame packing), and with one layer per operator per block (the
port's layer count; ours has two by default). Ratios are the port's value over ours.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

from _bench_step import run_row  # tools/_bench_step.py

ROOT = Path(__file__).resolve().parents[1]
MIRROR = ROOT.parent / ".mirror" / "Brayden-Zhang+alphaearth-foundations" / "repo"

VARIANTS = {
    "aef-lit": [],
    "aef-lit, activation checkpointing": ["--recompute"],
    "aef-lit, static path (no packing)": ["--no-pack"],
    "aef-lit, 1 layer per operator": ["--depth", "1"],
}


def port_tree(arg: str | None, tmp: str) -> Path:
    """A directory holding the port's `src/alphaearth`: `--port`, or exported from the mirror."""
    if arg:
        root = Path(arg)
        if not (root / "src" / "alphaearth").is_dir():
            raise SystemExit(f"--port {arg}: no src/alphaearth there (clone the port's repository)")
        return root
    if MIRROR.is_dir():
        out = Path(tmp) / "port"
        out.mkdir()
        archive = subprocess.run(["git", f"--git-dir={MIRROR}", "archive", "HEAD", "src"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
        return out
    raise SystemExit("no port: clone https://github.com/Brayden-Zhang/alphaearth-foundations and pass --port DIR")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", help="a checkout of the port (default: exported from ../.mirror if present)")
    ap.add_argument("--tasks", nargs="+", default=["embed", "train"], choices=["embed", "train"],
                    help="what to measure")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), metavar="NAME",
                    help=f"aef-lit rows to measure, of {list(VARIANTS)}")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per row after one warm-up")
    ap.add_argument("--size", type=int, default=128, help="tile size H = W in pixels")
    ap.add_argument("--frames", type=int, default=8, help="frames T of the one source")
    ap.add_argument("--threads", type=int, default=2, help="torch threads in every row")
    ap.add_argument("--json", help="also write the rows to this JSON file")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        port = port_tree(args.port, tmp)
        for task in args.tasks:
            base = run_row("port", task, port, args)
            rows.append({"name": "port", **base})
            for name in args.variants:
                if task == "embed" and VARIANTS[name] == ["--recompute"]:
                    continue  # no backward pass: nothing to recompute
                r = run_row("ours", task, ROOT, args, VARIANTS[name])
                r["speed_x"] = base["median_s"] / r["median_s"]
                r["memory_x"] = r["peak_rss_mb"] / base["peak_rss_mb"]
                rows.append({"name": name, **r})
    print(f"B=1, T={args.frames}, {args.size}x{args.size}, widths 512/256/64 x 6, one 10-band source; "
          f"{args.threads} threads, median of {args.repeats}")
    print(f"{'task':6s} {'implementation':36s} {'params':>8s} {'s':>7s} {'peak MB':>8s} {'step MB':>8s} "
          f"{'speed vs port':>13s} {'memory vs port':>14s}")
    for r in rows:
        speed = f"{r['speed_x']:.2f}x" if "speed_x" in r else ""
        mem = f"{r['memory_x']:.2f}x" if "memory_x" in r else ""
        print(f"{r['task']:6s} {r['name']:36s} {r['params'] / 1e6:7.1f}M {r['median_s']:7.2f} "
              f"{r['peak_rss_mb']:8.0f} {r['step_mb']:8.0f} {speed:>13s} {mem:>14s}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
