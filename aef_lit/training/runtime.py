# generated from notebooks/22_release.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

from __future__ import annotations

import hashlib
import os
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from aef_lit.conventions import autocast_dtype, select_device
from aef_lit.training.checkpoint import unwrap


def autocast_context(device: torch.device, bf16: bool = True):
    """bf16 autocast on accelerators when asked, a no-op context otherwise."""
    dtype = autocast_dtype(device) if bf16 else None
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def enable_activation_checkpointing(model: nn.Module) -> int:
    """Recompute every block of each `ModuleList` named `blocks` in the backward pass.

    Returns the number of wrapped blocks.
    """
    from torch.utils.checkpoint import checkpoint

    n = 0
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and name.split(".")[-1] == "blocks":
            for blk in mod:
                plain = blk.forward

                def wrapped(*args, _f=plain, **kwargs):
                    return checkpoint(_f, *args, use_reentrant=False, **kwargs)

                blk.forward = wrapped
                n += 1
    return n


def xla_sync(device: torch.device) -> None:
    """End an XLA step (a no-op elsewhere)."""
    if device.type == "xla":  # pragma: no cover - no TPU here
        import torch_xla

        torch_xla.sync()


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a (possibly one-process) job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group that `torchrun` describes in the environment (gloo or NCCL)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(),
                    local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(name: str, info: DistInfo | None = None) -> torch.device:
    """`select_device`, with one CUDA device per local rank under torchrun."""
    dev = select_device(name)
    local = int(os.environ.get("LOCAL_RANK", "0")) if info is None else info.local_rank
    if dev.type == "cuda" and dev.index is None:  # pragma: no cover - no GPU in CI
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    return dev


class TrainStep(nn.Module):
    """Model and objective as one module: `forward(batch) -> loss terms` (what DDP wraps)."""

    def __init__(self, model: nn.Module, objective: nn.Module):
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, batch, captions: Sequence[str] | None = None,
                generator: torch.Generator | None = None) -> dict[str, Tensor]:
        return self.objective(self.model, batch, captions=captions, generator=generator)


def step_generator(seed: int, step: int, micro: int = 0, rank: int = 0) -> torch.Generator:
    """A CPU generator for one micro-step's draws, a pure function of (seed, step, micro, rank)."""
    h = hashlib.blake2b(f"aef-train/{seed}/{step}/{micro}/{rank}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(h, "little") & (2**63 - 1))


def params_digest(model: nn.Module) -> str:
    """A hash of every parameter and buffer: equal digests mean bitwise-equal replicas."""
    h = hashlib.sha256()
    for k, v in sorted(unwrap(model).state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()




def unwrap_ddp(m: nn.Module) -> nn.Module:
    """The DDP module under a `torch.compile` wrapper (for `no_sync`)."""
    return m._orig_mod if hasattr(m, "_orig_mod") else m


def reduce_mean(x: Tensor, info: DistInfo) -> Tensor:
    """The mean of `x` over the job's processes (`x` itself in a one-process job)."""
    if info.distributed:
        x = x.clone()
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        x = x / info.world_size
    return x
