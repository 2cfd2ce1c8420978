"""Shared by tools/bench_port.py and tools/bench_commit.py: one measurement in a fresh process.

`python tools/_bench_step.py --impl ours|port --task embed|train [...]` builds one model at the
widths given, makes one seeded input, runs one warm-up call and `--repeats` timed calls, and
prints one JSON line: parameters, median and min seconds, the process's resident memory before
the first call and its peak (ru_maxrss), and their difference (what the calls themselves took).
A fresh process per measurement keeps one model's peak from hiding another's.

`--impl ours` imports `aef_lit` from `--root` (the working tree, or a git worktree of an earlier
commit); `--impl port` imports the port's `alphaearth` package from `--root`/src without running
its `__init__` (which imports its data loaders and their dependencies).
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
import types
from pathlib import Path


def rss_mb() -> float:
    """Current resident set size of this process in MB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    import os
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def run_row(impl: str, task: str, root, args, extra=()) -> dict:
    """One measurement in a fresh process (this script as a worker); its JSON line as a dict."""
    import os
    import subprocess
    cmd = [sys.executable, str(Path(__file__).resolve()), "--impl", impl, "--task", task, "--root", str(root),
           "--repeats", str(args.repeats), "--size", str(args.size), "--frames", str(args.frames),
           "--threads", str(args.threads), *extra]
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if res.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def ours(args):
    """aef-lit at the port's widths: one S2 source (10 bands), its objective without the text term."""
    sys.path.insert(0, str(Path(args.root).resolve()))
    import torch

    from aef_lit.conventions import S2, get_config, random_batch
    from aef_lit.model import build_model, embed
    from aef_lit.objective import AEFObjective

    over = dict(d_space=args.d_space, d_time=args.d_time, d_precision=args.d_precision, n_blocks=args.blocks,
                heads_space=8, heads_time=8, tile=args.size, sources=(S2,))
    over.update(json.loads(args.overrides))
    cfg = get_config("paper", **over)
    torch.manual_seed(0)
    model = build_model(cfg)
    if args.depth:
        from aef_lit.model.encoder import STPEncoder
        model.encoder = STPEncoder(cfg, depth=args.depth)
    if args.no_pack:
        model.encoder.pack_frames = False  # an attribute older commits lack (then no effect)
    if args.recompute:
        from aef_lit.training import enable_activation_checkpointing
        enable_activation_checkpointing(model)
    batch = random_batch(cfg, B=args.batch, T=args.frames, H=args.size, W=args.size, n_padded=0,
                         generator=torch.Generator().manual_seed(0))
    periods = torch.tensor([[18_628.0, 18_993.0]] * args.batch, dtype=torch.float64)
    if args.task == "embed":
        def call():
            embed(model, batch, periods)
    else:
        objective = AEFObjective(cfg)
        model.train()

        def call():
            g = torch.Generator().manual_seed(1)
            out = objective(model, batch, captions=None, generator=g)
            out["total"].backward()
            model.zero_grad(set_to_none=True)
    return model, call


def port(args):
    """The port (Brayden-Zhang/alphaearth-foundations) as its Trainer runs it: teacher, student, decoder, AEFLoss."""
    src = Path(args.root).resolve() / "src"
    if not (src / "alphaearth" / "architecture" / "aef_module.py").exists():
        raise SystemExit(f"no port at {args.root}: expected src/alphaearth/architecture/aef_module.py")
    pkg = types.ModuleType("alphaearth")
    pkg.__path__ = [str(src / "alphaearth")]
    sys.modules["alphaearth"] = pkg
    import torch
    from alphaearth.architecture.aef_module import AlphaEarthFoundations
    from alphaearth.loss_function import AEFLoss
    if (args.d_space, args.d_time, args.d_precision, args.blocks) != (512, 256, 64, 6):
        raise SystemExit("the port's widths are fixed at 512/256/64 x 6 blocks")
    torch.manual_seed(0)
    model = AlphaEarthFoundations(input_sources={"sentinel2": 10})
    g = torch.Generator().manual_seed(0)
    B, T, S = args.batch, args.frames, args.size
    x = torch.randn(B, T, S, S, 10, generator=g)
    day_ms = 86_400_000.0
    ts = 18_628.0 * day_ms + torch.sort(torch.rand(B, T, generator=g, dtype=torch.float64) * 365 * day_ms,
                                        dim=1).values
    ts = ts.float()
    source, stamps = {"sentinel2": x}, {"sentinel2": ts}
    periods = [(18_628.0 * day_ms, 18_993.0 * day_ms)] * B
    if args.task == "embed":
        model.eval()

        def call():
            with torch.no_grad():
                feats = model.encoder(model._stack_inputs(source), ts)
                vp = torch.tensor(periods, dtype=feats.dtype)
                model.summarizer(feats, ts, vp)
    else:
        loss_fn = AEFLoss()
        model.train()

        def call():
            out = model(source, stamps, periods)
            pred = {k: v[:, 0] for k, v in out["reconstructions"].items()}
            # the Trainer's target: the frame nearest the middle of the series (already at full size)
            idx = (ts - ts.mean(dim=1, keepdim=True)).abs().argmin(dim=1)
            target = {"sentinel2": x[torch.arange(B), idx]}
            losses = loss_fn({"embeddings": out["embeddings"], "teacher_embeddings": out["teacher_embeddings"],
                              "student_embeddings": out["student_embeddings"],
                              "image_embeddings": out["image_embeddings"], "predictions": pred,
                              "targets": target, "masks": {k: torch.ones_like(v[..., :1]) for k, v in pred.items()}})
            losses["total"].backward()
            model.zero_grad(set_to_none=True)
    return model, call


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--impl", choices=["ours", "port"], required=True, help="which implementation to measure")
    ap.add_argument("--task", choices=["embed", "train"], required=True,
                    help="embed: encoder + summariser, no gradients; train: forward + backward of the objective")
    ap.add_argument("--root", required=True, help="the tree to import from (aef-lit root, or the port's checkout)")
    ap.add_argument("--size", type=int, default=128, help="tile size H = W in pixels")
    ap.add_argument("--frames", type=int, default=8, help="frames T of the one source")
    ap.add_argument("--batch", type=int, default=1, help="rows B")
    ap.add_argument("--d-space", type=int, default=512, help="width of the Space operator")
    ap.add_argument("--d-time", type=int, default=256, help="width of the Time operator")
    ap.add_argument("--d-precision", type=int, default=64, help="width of the Precision operator")
    ap.add_argument("--blocks", type=int, default=6, help="STP blocks")
    ap.add_argument("--overrides", default="{}", help="JSON of further ModelConfig fields (ours only)")
    ap.add_argument("--depth", type=int, default=0,
                    help="ours: layers per operator per block (0: the default, 2; the port has 1)")
    ap.add_argument("--recompute", action="store_true",
                    help="ours: activation checkpointing of every STP block (--activation-checkpointing)")
    ap.add_argument("--no-pack", action="store_true", help="ours: run the encoder's static path on every frame")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls after one warm-up")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args(argv)
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    model, call = (ours if args.impl == "ours" else port)(args)
    params = sum(p.numel() for p in model.parameters())
    before = rss_mb()
    call()  # warm-up
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    peak = peak_rss_mb()
    print(json.dumps({"impl": args.impl, "task": args.task, "params": params, "median_s": statistics.median(times),
                      "min_s": min(times), "rss_before_mb": before, "peak_rss_mb": peak,
                      "step_mb": peak - before, "threads": torch.get_num_threads()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
