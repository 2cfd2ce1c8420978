#!/usr/bin/env python3
"""aef-lit against an earlier commit of itself, side by side in one run: regressions show.

Checks the earlier commit out into a temporary git worktree (nothing in this checkout
changes), then measures both trees with the same worker (`tools/_bench_step.py`, a fresh
process per row) on the same input: the port's widths (512/256/64 x 6 blocks, one 10-band
source), B = 1, T = 8, 128 x 128 by default. Prints time and peak memory of each and the
ratios (earlier over now: above 1 means this tree is faster or leaner).

    python tools/bench_commit.py HEAD~5
    python tools/bench_commit.py 689213d --tasks train --repeats 5
"""
from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

from _bench_step import run_row  # tools/_bench_step.py

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rev", help="the earlier commit (any git revision: a hash, HEAD~3, a tag)")
    ap.add_argument("--tasks", nargs="+", default=["embed", "train"], choices=["embed", "train"],
                    help="what to measure")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per row after one warm-up")
    ap.add_argument("--size", type=int, default=128, help="tile size H = W in pixels")
    ap.add_argument("--frames", type=int, default=8, help="frames T of the one source")
    ap.add_argument("--threads", type=int, default=2, help="torch threads in every row")
    args = ap.parse_args(argv)
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.rev], capture_output=True,
                         text=True)
    if sha.returncode:
        raise SystemExit(f"not a revision of this repository: {args.rev!r}")
    sha = sha.stdout.strip()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "earlier"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), sha], check=True)
        try:
            for task in args.tasks:
                before, now = run_row("ours", task, tree, args), run_row("ours", task, ROOT, args)
                rows.append((task, before, now))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=True)
    print(f"{sha} against this tree; B=1, T={args.frames}, {args.size}x{args.size}, widths 512/256/64 x 6; "
          f"{args.threads} threads, median of {args.repeats}")
    print(f"{'task':6s} {sha + ' s':>10s} {'now s':>8s} {'speed-up':>9s} {sha + ' MB':>10s} {'now MB':>8s} "
          f"{'memory':>7s}")
    for task, b, n in rows:
        print(f"{task:6s} {b['median_s']:10.2f} {n['median_s']:8.2f} {b['median_s'] / n['median_s']:8.2f}x "
              f"{b['peak_rss_mb']:10.0f} {n['peak_rss_mb']:8.0f} {n['peak_rss_mb'] / b['peak_rss_mb']:6.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
