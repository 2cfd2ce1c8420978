#!/usr/bin/env python3
"""Where a training step's memory goes: the tensors autograd keeps for the backward pass, by part.

One forward pass of the objective (teacher, held-out decoding, student) at the port's widths (or
any preset), with a `saved_tensors_hooks` pack hook that charges each saved tensor's storage,
once, to the innermost module running when it was saved, grouped by part (projection, each
operator, the pyramid exchange, summariser, decoders) and by pass (teacher or student). These
bytes are what the step holds at its peak besides parameters, gradients and transient buffers.

    python tools/profile_memory.py                          # 512/256/64 x 6, one S2 source, B1 T8 128^2
    python tools/profile_memory.py --overrides '{"checkpoint_blocks": true}'
    python tools/profile_memory.py --preset paper --frames 16 --size 64 --port-widths=false
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aef_lit.conventions import S2, get_config, random_batch  # noqa: E402
from aef_lit.model import build_model  # noqa: E402
from aef_lit.objective import AEFObjective  # noqa: E402


def part_of(name: str) -> str:
    """A module's qualified name -> the part of the model it belongs to."""
    if not name:
        return "objective (outside modules)"
    name = re.sub(r"\.\d+", "", name)
    for key, part in (("encoder.blocks.space", "space operator"), ("encoder.blocks.time", "time operator"),
                      ("encoder.blocks.precision", "precision operator"),
                      ("encoder.blocks.exchange", "pyramid exchange"), ("encoder.init", "encoder entry"),
                      ("encoder.final", "final resample"), ("projection", "input projection"),
                      ("summariser", "summariser"), ("decoders", "decoders"), ("bottleneck", "vMF sample")):
        if name.startswith(key):
            return part
    return name.split(".")[0]


def profile(model, objective, batch) -> dict[tuple[str, str], int]:
    stack: list[str] = []
    names = {m: n for n, m in model.named_modules()}
    passes = {"n": 0}
    seen: set[int] = set()
    charged: dict[tuple[str, str], int] = defaultdict(int)

    def pre(mod, _args):
        stack.append(names[mod])

    def post(mod, _args, _out):
        stack.pop()

    def enc_pre(_mod, _args):
        passes["n"] += 1

    handles = [m.register_forward_pre_hook(pre) for m in model.modules()]
    handles += [m.register_forward_hook(post) for m in model.modules()]
    handles.append(model.projection.register_forward_pre_hook(enc_pre))

    def pack(t):
        st = t.untyped_storage()
        key = st.data_ptr()
        if key not in seen:
            seen.add(key)
            who = "teacher" if passes["n"] <= 1 else "student"
            charged[(who, part_of(stack[-1] if stack else ""))] += st.nbytes()
        return t

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen |= params
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = objective(model, batch, captions=None, generator=torch.Generator().manual_seed(1))
    finally:
        for h in handles:
            h.remove()
    del out
    return dict(charged)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="paper", help="model preset whose other fields fill in")
    ap.add_argument("--port-widths", default="true", choices=["true", "false"],
                    help="512/256/64 x 6 blocks, 8 heads, one S2 source (the port's model)")
    ap.add_argument("--overrides", default="{}", help="JSON of further ModelConfig fields")
    ap.add_argument("--size", type=int, default=128, help="tile size H = W")
    ap.add_argument("--frames", type=int, default=8, help="frames of each input source")
    ap.add_argument("--batch", type=int, default=1, help="rows B")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    over = dict(tile=args.size)
    if args.port_widths == "true":
        over.update(d_space=512, d_time=256, d_precision=64, n_blocks=6, heads_space=8, heads_time=8, sources=(S2,))
    over.update(json.loads(args.overrides))
    cfg = get_config(args.preset, **over)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    batch = random_batch(cfg, B=args.batch, T=args.frames, H=args.size, W=args.size, n_padded=0,
                         generator=torch.Generator().manual_seed(0))
    charged = profile(model, AEFObjective(cfg), batch)
    total = sum(charged.values())
    print(f"saved for backward: {total / 2**20:,.0f} MB  (B={args.batch}, T={args.frames}, {args.size}^2, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters)")
    print(f"{'pass':8s} {'part':28s} {'MB':>8s} {'share':>6s}")
    for (who, part), n in sorted(charged.items(), key=lambda kv: -kv[1]):
        print(f"{who:8s} {part:28s} {n / 2**20:8.1f} {n / total:6.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
