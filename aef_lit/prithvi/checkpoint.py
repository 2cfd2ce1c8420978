# generated from notebooks/30_prithvi.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from aef_lit.prithvi.mae import PrithviConfig, PrithviMAE

_BLOCK = {"norm1": "norm1", "attn.qkv": "qkv", "attn.proj": "out", "norm2": "norm2",
          "mlp.fc1": "mlp.net.0", "mlp.fc2": "mlp.net.2"}
_V1_TOP = {"patch_embed.proj": "encoder.patch_embed", "cls_token": "encoder.cls_token",
           "pos_embed": "encoder.pos_embed", "norm": "encoder.norm", "decoder_embed": "decoder.embed",
           "mask_token": "decoder.mask_token", "decoder_pos_embed": "decoder.pos_embed",
           "decoder_norm": "decoder.norm", "decoder_pred": "decoder.pred"}
_V2_TOP = {"encoder." + k if not k.startswith(("decoder", "mask")) else "decoder." + k: v
           for k, v in _V1_TOP.items()}
_V2_TOP.update({"encoder.temporal_embed_enc.scale": "encoder.coord_scale.time",
                "encoder.location_embed_enc.scale": "encoder.coord_scale.location"})
_IGNORED = ("decoder.temporal_embed_dec.scale", "decoder.location_embed_dec.scale")


def _rename(key: str) -> str | None:
    """Our name of an official key (None: a key we do not hold)."""
    if key.startswith(("module.", "model.")):
        key = key.split(".", 1)[1]
    if key in _IGNORED:
        return None
    m = re.fullmatch(r"(encoder\.)?(decoder\.)?(blocks|decoder_blocks)\.(\d+)\.(.+)\.(weight|bias)", key)
    if m:
        part = "decoder" if m.group(3) == "decoder_blocks" else "encoder"
        inner = _BLOCK.get(m.group(5))
        return None if inner is None else f"{part}.blocks.{m.group(4)}.{inner}.{m.group(6)}"
    stem, dot, leaf = key.rpartition(".")
    for table in (_V2_TOP, _V1_TOP):
        if key in table:
            return table[key]
        if leaf in ("weight", "bias") and stem in table:
            return f"{table[stem]}.{leaf}"
    return None


def official_key_map(keys) -> dict[str, str]:
    """{official key: our key} for the keys of a published Prithvi state dict."""
    return {k: n for k in keys if (n := _rename(k)) is not None}


def official_layout(cfg: PrithviConfig, v2: bool = False) -> list[tuple[str, tuple[int, ...]]]:
    """(key, shape) of every tensor in a published Prithvi state dict of configuration `cfg`: the
    flat 1.0 layout (`Prithvi_100M.pt`) or, with `v2`, Prithvi-EO-2.0's `encoder.`/`decoder.` layout."""
    D, Dd, P = cfg.dim, cfg.decoder_dim, cfg.tubelet * cfg.patch ** 2 * cfg.in_chans
    n = int(np.prod(cfg.grid)) + 1
    e, d = ("encoder.", "decoder.") if v2 else ("", "")

    def block(prefix, w):
        return [(f"{prefix}.norm1.weight", (w,)), (f"{prefix}.norm1.bias", (w,)),
                (f"{prefix}.attn.qkv.weight", (3 * w, w)), (f"{prefix}.attn.qkv.bias", (3 * w,)),
                (f"{prefix}.attn.proj.weight", (w, w)), (f"{prefix}.attn.proj.bias", (w,)),
                (f"{prefix}.norm2.weight", (w,)), (f"{prefix}.norm2.bias", (w,)),
                (f"{prefix}.mlp.fc1.weight", (4 * w, w)), (f"{prefix}.mlp.fc1.bias", (4 * w,)),
                (f"{prefix}.mlp.fc2.weight", (w, 4 * w)), (f"{prefix}.mlp.fc2.bias", (w,))]

    keys = [(f"{e}cls_token", (1, 1, D)), (f"{e}pos_embed", (1, n, D)),
            (f"{e}patch_embed.proj.weight", (D, cfg.in_chans, cfg.tubelet, cfg.patch, cfg.patch)),
            (f"{e}patch_embed.proj.bias", (D,)), (f"{e}norm.weight", (D,)), (f"{e}norm.bias", (D,)),
            (f"{d}decoder_embed.weight", (Dd, D)), (f"{d}decoder_embed.bias", (Dd,)), (f"{d}mask_token", (1, 1, Dd)),
            (f"{d}decoder_pos_embed", (1, n, Dd)), (f"{d}decoder_norm.weight", (Dd,)),
            (f"{d}decoder_norm.bias", (Dd,)), (f"{d}decoder_pred.weight", (P, Dd)), (f"{d}decoder_pred.bias", (P,))]
    for i in range(cfg.depth):
        keys += block(f"{e}blocks.{i}", D)
    for i in range(cfg.decoder_depth):
        keys += block(f"{d}decoder_blocks.{i}", Dd)
    if v2:  # the date / location encoders exist only when configured; their scales are saved
        codes = [name for c, name in (("time", "temporal"), ("location", "location")) if c in cfg.coords]
        keys += [(f"encoder.{c}_embed_enc.scale", (1,)) for c in codes]
        keys += [(f"decoder.{c}_embed_dec.scale", (1,)) for c in codes]
    return keys


def load_official(state: dict | str | Path, cfg: PrithviConfig, strict: bool = True) -> PrithviMAE:
    """A `PrithviMAE` of `cfg` holding the weights of a published checkpoint (a state dict or its
    file: Prithvi_100M.pt, Prithvi_EO_V2_*.pt). Raises, naming keys, when names or shapes disagree."""
    if not isinstance(state, dict):
        state = torch.load(Path(state), map_location="cpu", weights_only=True)
        state = state.get("model", state.get("state_dict", state)) if isinstance(state, dict) else state
    model = PrithviMAE(cfg)
    ours = model.state_dict()
    renamed = {}
    for k, v in state.items():
        n = _rename(k)
        if n is None:
            if strict and k not in _IGNORED:
                raise KeyError(f"the checkpoint key {k!r} has no place in this implementation")
            continue
        if n not in ours:
            raise KeyError(f"{k!r} maps to {n!r}, which a model of this configuration lacks "
                           f"(depth {cfg.depth}/{cfg.decoder_depth}, coords {cfg.coords})")
        v = torch.as_tensor(v)
        if n.startswith("encoder.coord_scale"):
            v = v.reshape(1)
        if v.shape != ours[n].shape:
            raise ValueError(f"{k!r} has shape {tuple(v.shape)}, this configuration needs {tuple(ours[n].shape)} "
                             f"(bands {cfg.in_chans}, frames {cfg.frames}, {cfg.img_size} px, dim {cfg.dim})")
        renamed[n] = v
    missing = sorted(set(ours) - set(renamed))
    if strict and missing:
        raise KeyError(f"the checkpoint lacks {len(missing)} weights of this configuration, e.g. {missing[:4]}")
    model.load_state_dict(renamed, strict=False)
    return model
