# generated from notebooks/31_prithvi_training.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

from __future__ import annotations

import argparse
from typing import Sequence

from aef_lit.prithvi.mae import PRITHVI_PRESETS, prithvi_config
from aef_lit.prithvi.train import ship_prithvi, train_prithvi


def build_prithvi_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m aef_lit.prithvi", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Train a Prithvi-style masked autoencoder (chapters 30-31) on the real sites of eo_real/ and "
                    "optionally ship it as a model folder for the evaluation (chapter 26).")
    p.add_argument("--preset", default="tiny", choices=list(PRITHVI_PRESETS), help="the Prithvi configuration")
    p.add_argument("--data", default="greenearthnet", help="the samples, as for aef-train: greenearthnet, real, "
                   "multisite, synthetic")
    p.add_argument("--sites", nargs="+", default=["portugal", "hungary"], help="training sites (hold the others out)")
    p.add_argument("--steps", type=int, default=28000, help="optimiser steps (the cosine schedule's length)")
    p.add_argument("--minutes", type=float, default=None, help="stop after this much wall time, even before --steps")
    p.add_argument("--batch-size", type=int, default=16, help="stacks per step")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (AdamW)")
    p.add_argument("--warmup", type=int, default=500, help="linear warm-up steps")
    p.add_argument("--seed", type=int, default=5, help="seed of the weights, the stacks and the masks")
    p.add_argument("--out-dir", default="runs/prithvi", help="checkpoint and metrics.csv; a rerun resumes from it")
    p.add_argument("--save-every", type=int, default=500, help="steps between checkpoints")
    p.add_argument("--ship", default=None, help="after training, write the model folder here (weights, config, card)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_prithvi_parser().parse_args(argv)
    if args.steps < 1 or args.batch_size < 1 or (args.minutes is not None and args.minutes <= 0):
        raise SystemExit("prithvi: --steps, --batch-size and --minutes must be positive")
    import platform

    import torch

    from aef_lit.conventions import select_device
    from aef_lit.data import load_sites

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        samples = load_sites(args.data, args.sites)
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"prithvi: {err}") from None
    cfg = prithvi_config(args.preset)
    model, log = train_prithvi(samples, cfg, args.steps, args.batch_size, args.lr, args.warmup, args.minutes,
                               args.seed, args.out_dir, args.save_every, device=select_device(args.device),
                               progress=not args.no_progress)
    print(f"{len(log)} steps, final loss {log[-1]['loss'] if log else float('nan')}")
    if args.ship:
        notes = (f"trained on {args.data} {', '.join(args.sites)}: batch {args.batch_size}, peak lr {args.lr}, "
                 f"{args.warmup} warm-up steps, cosine decay over {args.steps}, seed {args.seed}; "
                 f"{platform.machine()} CPU, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
        out = ship_prithvi(model, log, args.ship, {"name": f"prithvi-{args.preset}-{args.data}", "data": args.data,
                                                   "sites": list(args.sites), "notes": notes})
        print(f"shipped {out}")
    return 0
