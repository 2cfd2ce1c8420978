#!/usr/bin/env python3
"""Wall time of one full evaluation (chapter 25): every task, the shipped model, two untrained
networks and the six baselines, 20 folds, three probes, 1/10/max shots.

    python tools/bench_eval.py                      # the shipped model, 2 torch threads
    python tools/bench_eval.py --model DIR --folds 20 --threads 2

Three phases, timed one after the other in one process:
  1. building the tasks (reading eo_real/);
  2. every method's features, written to a fresh cache (the networks embed here);
  3. the whole evaluation again from the warm cache: probes, splits and intervals only.
The target (<= 5 min on a 2-core CPU) is about phase 3 plus the baselines, i.e.
everything but the embeddings of the networks; the script prints every phase so that the
claim can be checked, and the seconds each method's features took per task.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aef_lit import evaluation as E  # noqa: E402
from aef_lit.evaluation.baselines import BASELINES  # noqa: E402
from aef_lit.training import PRETRAINED, load_pretrained  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(PRETRAINED), help="model folder to evaluate (default: the shipped one)")
    ap.add_argument("--folds", type=int, default=20, help="folds per trial")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (the CI machine has 2 cores)")
    ap.add_argument("--tasks", nargs="+", default=["all"], help="tasks ('all' or names)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, cfg = load_pretrained(args.model)
    meta = json.loads((Path(args.model) / "config.json").read_text())
    names = list(E.TASKS) if args.tasks == ["all"] else args.tasks

    t0 = time.perf_counter()
    tasks = [E.build_task(n, cfg.input_sources) for n in names]
    t_build = time.perf_counter() - t0
    methods = E.default_methods(model, "shipped")
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        first = E.evaluate(methods, tasks, folds=1, model_meta=meta, cache_dir=cache, progress=False)
        t_feat = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = E.evaluate(methods, tasks, folds=args.folds, model_meta=meta, cache_dir=cache, progress=False)
        t_eval = time.perf_counter() - t0
    per_method: dict[str, float] = {}
    for f in first.tasks.values():
        for m, s in f["feature_seconds"].items():
            per_method[m] = per_method.get(m, 0.0) + s
    nets = sum(v for k, v in per_method.items() if k == "shipped" or k.startswith("untrained"))
    print(f"machine: {platform.machine()} {platform.processor() or ''}, torch {torch.__version__}, "
          f"{args.threads} threads")
    print(f"tasks: {len(tasks)}, methods: {len(methods)}, folds: {args.folds}, fold scores: {len(res.rows)}")
    print(f"{'phase':52s} seconds")
    print(f"{'1. build tasks (read eo_real/)':52s} {t_build:7.1f}")
    print(f"{'2. features into a cold cache (incl. 1-fold probes)':52s} {t_feat:7.1f}")
    print(f"{'   of which the three networks embed':52s} {nets:7.1f}")
    base_s = sum(v for k, v in per_method.items() if k in BASELINES)
    print(f"{'   of which the six baselines':52s} {t_feat and base_s:7.1f}")
    print(f"{'3. full evaluation from the warm cache':52s} {t_eval:7.1f}")
    print(f"{'target measure: 1 + baselines + 3 (no network embedding)':52s} "
          f"{t_build + t_eval + sum(v for k, v in per_method.items() if k in BASELINES):7.1f}")
    print("features seconds per method (all tasks):", {k: round(v, 1) for k, v in per_method.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
