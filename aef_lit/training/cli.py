# generated from notebooks/22_release.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

from __future__ import annotations

import argparse
import inspect
import logging
import os
import re
import typing
from dataclasses import fields
from typing import Sequence

import torch.distributed as dist

from aef_lit.training.config import TrainConfig
from aef_lit.training.loop import NonFiniteLossError, train

log = logging.getLogger("aef_lit.training.cli")


SECTIONS: dict[str, tuple[str, ...]] = {
    "model": ("preset", "model_overrides", "tile"),
    "data": ("data", "sites", "frames", "min_span_days", "targets", "text", "captions", "gain", "occlude", "time_shift",
             "workers"),
    "optimisation": ("batch_size", "grad_accum", "lr", "clip", "seed", "loss_weights"),
    "schedule": ("steps", "warmup_frac"),
    "checkpointing": ("out_dir", "checkpoint_every", "keep_best", "ema", "resume", "init_from"),
    "runtime": ("device", "compile", "bf16", "activation_checkpointing", "progress", "log_every"),
}
"""`TrainConfig`'s fields by the part of a run they set (the CLI's argument groups)."""


def field_help() -> dict[str, str]:
    """{field: its description} from the `Attributes:` section of `TrainConfig`'s docstring."""
    doc = inspect.cleandoc(TrainConfig.__doc__ or "")
    out: dict[str, str] = {}
    name = None
    for line in doc.split("Attributes:", 1)[-1].splitlines():
        m = re.match(r"^    (\w+): (.*)$", line)
        if m:
            name = m.group(1)
            out[name] = m.group(2).strip()
        elif name and line.startswith("        "):
            out[name] += " " + line.strip()
    return out


def build_parser() -> argparse.ArgumentParser:
    """An argparse parser with one flag per `TrainConfig` field, grouped by `SECTIONS` (defaults: unset)."""
    ap = argparse.ArgumentParser(prog="aef-train", description="Train AlphaEarth Foundations (aef-lit).")
    ap.add_argument("--config", help="a JSON or YAML file of TrainConfig fields; flags override it")
    ap.add_argument("--log-level", default="INFO", help="logging level of rank 0 (other ranks log warnings only)")
    hints = typing.get_type_hints(TrainConfig)
    by_name = {f.name: f for f in fields(TrainConfig)}
    helps = field_help()
    for section, names in SECTIONS.items():
        group = ap.add_argument_group(section)
        for name in names:
            f, tp = by_name[name], hints[name]
            flags = [f"--{name.replace('_', '-')}"] + ([f"--{name}"] if "_" in name else [])
            help_ = f"{helps[name]} (default: {f.default!r})".replace("%", "%%")
            if tp is bool:
                group.add_argument(*flags, dest=name, action=argparse.BooleanOptionalAction, default=None,
                                   help=help_)
            elif typing.get_origin(tp) is tuple:
                group.add_argument(*flags, dest=name, nargs="+", default=None, help=help_)
            else:
                group.add_argument(*flags, dest=name, type=tp, default=None, help=help_)
    return ap


def config_from_args(argv: Sequence[str] | None = None) -> tuple[TrainConfig, argparse.Namespace]:
    """Parse flags (and `--config`) into a `TrainConfig`."""
    args = build_parser().parse_args(argv)
    over = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name) is not None}
    over = {k: tuple(v) if isinstance(v, list) else v for k, v in over.items()}
    cfg = TrainConfig.from_file(args.config, **over) if args.config else TrainConfig(**over)
    return cfg, args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `aef-train` and `python -m aef_lit.training`."""
    cfg, args = config_from_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    level = getattr(logging, str(args.log_level).upper(), logging.INFO) if rank == 0 else logging.WARNING
    logging.basicConfig(level=level,
                        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s")
    try:
        res = train(cfg)
        log.info("finished at step %d in %.1f s; run folder %s", res.step, res.seconds, res.out_dir)
        return 0
    except NonFiniteLossError as err:
        log.error("%s", err)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
