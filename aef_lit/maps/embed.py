# generated from notebooks/28_embedding_maps.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from aef_lit.conventions import to_days
from aef_lit.data import DataError, Grid
from aef_lit.maps.aef_format import AEFWriter, dequantise, quantise
from aef_lit.maps.raster import RasterStack, _day_str
from aef_lit.maps.tiling import Chunk, Tiling, chunks_of, map_tile

log = logging.getLogger("aef_lit.maps.embed")


_MODEL_CACHE: dict = {}


def _model_key(folder: str | Path, device: str) -> tuple:
    """What identifies a model folder's weights in this process: path, modification time and size."""
    p = Path(folder).resolve()
    st = os.stat(p / "model.safetensors")
    return str(p), st.st_mtime_ns, st.st_size, device


def _resolve_model(model, device: str):
    """A model object on `device`, or a model folder loaded once per process (on a Dask worker: once per worker)."""
    import torch

    from aef_lit.conventions import select_device

    if isinstance(model, (str, Path)):
        key = _model_key(model, device)
        if key not in _MODEL_CACHE:
            from aef_lit.training import load_pretrained

            _MODEL_CACHE[key] = load_pretrained(model, device=select_device(device))[0]
        return _MODEL_CACHE[key]
    dev = select_device(device)
    if next(model.parameters()).device != torch.device(dev):
        model.to(dev)  # in place
    return model


def embed_chunk(model, stacks: Sequence[RasterStack], tiling: Tiling, chunk: Chunk,
                period: tuple[float, float], *, batch_size: int = 16, min_valid: float = 0.05,
                device: str = "auto", threads: int | None = None) -> np.ndarray:
    """`E h w` float32 unit vectors (NaN = nodata) of one chunk, from the tiles that touch it."""
    import torch

    from aef_lit.conventions import SourceBatch
    from aef_lit.data import Sample
    from aef_lit.data.preprocess import collate
    from aef_lit.model import embed

    if threads:
        torch.set_num_threads(threads)
    model = _resolve_model(model, device)
    n, m = tiling.tile, tiling.trim
    rows = tiling.origins(chunk.row, chunk.row + chunk.height)
    cols = tiling.origins(chunk.col, chunk.col + chunk.width)
    r0, c0 = rows[0], cols[0]
    H, W = rows[-1] + n - r0, cols[-1] + n - c0
    grid = stacks[0].grid
    sources, specs = {}, {}
    for st in stacks:
        fr = st.read(r0, c0, H, W, period)
        if fr is not None:
            sources[st.spec.name], specs[st.spec.name] = fr, st.spec
    E = model.cfg.embed_dim
    out = np.full((E, chunk.height, chunk.width), np.nan, np.float32)
    if not sources:
        return out
    win = Grid(grid.crs, (grid.transform[0], grid.transform[1], grid.transform[2] + c0 * grid.transform[0],
                          grid.transform[3], grid.transform[4], grid.transform[5] + r0 * grid.transform[4]), H, W)
    sample = Sample("window", win, sources, specs)
    batch = collate([sample], list(specs.values()))
    seen = np.zeros((H, W), bool)
    for fr in sources.values():
        seen |= fr.valid.any(0)
    places = [(r, c) for r in rows for c in cols]
    tiles = []
    for r, c in places:
        frames = {}
        for k, v in batch.items():
            w = v.weight[0, :, r - r0:r - r0 + n, c - c0:c - c0 + n]
            clear = v.frame_mask[0] & (w.mean((-2, -1)) >= min_valid)
            frames[k] = (v.x[0, :, :, r - r0:r - r0 + n, c - c0:c - c0 + n], v.t[0], clear, w)
        if any(bool(f[2].any()) for f in frames.values()):
            tiles.append(((r, c), frames))
    acc = np.zeros((E, chunk.height, chunk.width), np.float64)
    wsum = np.zeros((chunk.height, chunk.width), np.float64)
    wt = tiling.weights()
    per = torch.tensor([period], dtype=torch.float64)
    for s0 in range(0, len(tiles), batch_size):
        part = tiles[s0:s0 + batch_size]
        b = {k: SourceBatch(x=torch.stack([f[k][0] for _, f in part]), t=torch.stack([f[k][1] for _, f in part]),
                            frame_mask=torch.stack([f[k][2] for _, f in part]),
                            weight=torch.stack([f[k][3] for _, f in part])) for k in batch}
        mu = embed(model, b, per.repeat(len(part), 1)).float().cpu().numpy()
        for ((r, c), _), e in zip(part, mu):
            # the kept pixels of this tile that fall inside the chunk
            ra, rb = max(r + m, chunk.row), min(r + n - m, chunk.row + chunk.height)
            ca, cb = max(c + m, chunk.col), min(c + n - m, chunk.col + chunk.width)
            if ra >= rb or ca >= cb:
                continue
            w = wt[ra - r:rb - r, ca - c:cb - c]
            into = np.s_[ra - chunk.row:rb - chunk.row, ca - chunk.col:cb - chunk.col]
            acc[:, into[0], into[1]] += w * e[:, ra - r:rb - r, ca - c:cb - c]
            wsum[into] += w
    norm = np.linalg.norm(acc, axis=0)
    ok = (wsum > 0) & (norm > 0) & seen[chunk.row - r0:chunk.row - r0 + chunk.height,
                                        chunk.col - c0:chunk.col - c0 + chunk.width]
    out[:, ok] = (acc[:, ok] / norm[ok]).astype(np.float32)
    return out


def _model_fingerprint(model) -> str:
    if isinstance(model, (str, Path)):
        p = Path(model) / "model.safetensors"
        return hashlib.sha1(p.read_bytes()).hexdigest()
    h = hashlib.sha1()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _write_part(folder: Path, chunk: Chunk, values: np.ndarray, float32: bool) -> None:
    tmp = folder / f".{chunk.name}.{os.getpid()}.tmp.npy"
    np.save(tmp, values.astype(np.float32) if float32 else quantise(values))
    os.replace(tmp, folder / f"{chunk.name}.npy")


def _chunk_task(model, stacks, tiling, chunk, period, folder, batch_size, min_valid, device, threads, float32):
    values = embed_chunk(model, stacks, tiling, chunk, period, batch_size=batch_size, min_valid=min_valid,
                         device=device, threads=threads)
    _write_part(Path(folder), chunk, values, float32)
    return chunk.name


def parse_period(start: str | float, end: str | float) -> tuple[float, float]:
    """`[t_s, t_e)` in days since 1970 from dates (YYYY-MM-DD) or day numbers; clear errors for bad ones."""
    def day(v, what):
        if isinstance(v, (int, float, np.floating)):
            d = float(v)
        else:
            try:
                d = float(to_days([str(v)])[0])
            except Exception as err:
                raise ValueError(f"the period's {what} {v!r} is not a date (YYYY-MM-DD)") from err
        if not math.isfinite(d):
            raise ValueError(f"the period's {what} is not finite: {v!r}")
        if abs(d) > 1e6:
            raise ValueError(f"the period's {what} {d:g} looks like seconds, not days since 1970: divide by 86400")
        return d

    ts, te = day(start, "start"), day(end, "end")
    if te <= ts:
        raise ValueError(f"the period is empty or reversed: start {start} is not before end {end}")
    return ts, te


def embed_raster(stacks: RasterStack | Sequence[RasterStack], out: str | Path, period: tuple[float, float],
                 model=None, *, tile: int | None = None, tiling: Tiling | None = None, chunk: int = 256,
                 batch_size: int = 16, min_valid: float = 0.05, device: str = "auto", float32: bool = False,
                 threads: int | None = None, scheduler=None, workers: int = 0, resume: bool = True,
                 progress: bool = True, keep_parts: bool = False) -> Path:
    """Embed the stacks' grid over `period` into an AEF Cloud-Optimised GeoTIFF at `out`.

    Args:
        stacks: one `RasterStack` per model source (they must share one grid).
        out: the output file; written under a temporary name, renamed when complete.
        period: `[t_s, t_e)` in days since 1970 (see `parse_period`).
        model: a model object or a model folder (default: the shipped model's folder).
        tile: the tile size (default `map_tile`: the training tile, at least 64); `tiling` sets
            buffer and trim too.
        chunk: output pixels per chunk side (rounded to a multiple of the stride).
        float32: write float32 vectors (NaN nodata) instead of the int8 AEF codes.
        threads: torch threads per process (the same value gives bitwise-identical results).
        scheduler: a Dask scheduler address or `distributed.Client`; `workers`: a LocalCluster of N.
        resume: reuse the part files of an interrupted run with the same settings.
    """
    from tqdm.auto import tqdm

    from aef_lit.training import PRETRAINED

    stacks = [stacks] if isinstance(stacks, RasterStack) else list(stacks)
    if not stacks:
        raise ValueError("embed_raster needs at least one RasterStack")
    grid = stacks[0].grid
    for st in stacks[1:]:
        grid.check_same(st.grid, f"between sources {stacks[0].spec.name} and {st.spec.name}")
    period = parse_period(*period)
    model = PRETRAINED if model is None else model
    mcfg = _model_config(model)
    names = {sp.name for sp in mcfg.input_sources}
    bad = [st.spec.name for st in stacks if st.spec.name not in names]
    if bad:
        raise ValueError(f"source(s) {bad} are not inputs of the model ({sorted(names)})")
    if not any(period[0] <= d < period[1] for st in stacks for d in st.days):
        raise DataError(f"no acquisition inside the period {_day_str(period[0])} .. {_day_str(period[1])}; the "
                        f"inputs span {_day_str(min(st.days.min() for st in stacks))} .. "
                        f"{_day_str(max(st.days.max() for st in stacks))}")
    tiling = tiling or Tiling.paper(tile or map_tile(mcfg))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    folder = out.with_name(out.name + ".parts")
    manifest = {"model": _model_fingerprint(model), "inputs": [st.fingerprint() for st in stacks],
                "period": list(period), "tiling": [tiling.tile, tiling.buffer, tiling.trim], "chunk": chunk,
                "float32": float32, "min_valid": min_valid, "grid": [grid.crs, list(grid.transform), *grid.shape]}
    if folder.exists():
        old = json.loads((folder / "manifest.json").read_text()) if (folder / "manifest.json").exists() else None
        if not resume or old != manifest:
            if resume and old is not None:
                log.warning("%s: settings differ from the interrupted run; starting again", folder)
            shutil.rmtree(folder)
    folder.mkdir(exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    chunks = chunks_of(*grid.shape, tiling, chunk)
    todo = [c for c in chunks if not (folder / f"{c.name}.npy").exists()]
    if len(todo) < len(chunks):
        log.info("resuming: %d of %d chunks already done", len(chunks) - len(todo), len(chunks))
    args = (tiling, period, str(folder), batch_size, min_valid, device, threads, float32)
    if todo and (scheduler is not None or workers):
        _run_on_dask(model, stacks, todo, args, scheduler, workers, progress)
    else:
        for c in tqdm(todo, desc="embedding chunks", disable=not progress, unit="chunk"):
            _chunk_task(model, stacks, tiling, c, period, folder, *args[3:])
    E = mcfg.embed_dim
    with AEFWriter(out, grid.height, grid.width, grid.crs, grid.transform, bands=E, float32=float32) as w:
        for c in tqdm(chunks, desc="writing", disable=not progress, unit="chunk"):
            part = np.load(folder / f"{c.name}.npy")
            w.write(part if float32 else dequantise(part), c.row, c.col)
    if not keep_parts:
        shutil.rmtree(folder)
    return out


def _model_config(model):
    if isinstance(model, (str, Path)):
        from aef_lit.training import model_config_from_json

        p = Path(model) / "config.json"
        if not p.exists():
            raise FileNotFoundError(f"no model folder at {model} (expected config.json and model.safetensors)")
        return model_config_from_json(json.loads(p.read_text())["model_config"])
    return model.cfg


def _run_on_dask(model, stacks, todo, args, scheduler, workers, progress):
    from distributed import Client, LocalCluster, as_completed
    from tqdm.auto import tqdm

    own = None
    if isinstance(scheduler, Client):
        client = scheduler
    elif scheduler is not None:
        client = own = Client(scheduler)
    else:
        client = own = Client(LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                           dashboard_address=None))
    try:
        m = model if isinstance(model, (str, Path)) else client.scatter(model.cpu(), broadcast=True)
        st = client.scatter(list(stacks), broadcast=True)
        tiling, period, *rest = args
        futs = [client.submit(_chunk_task, m, st, tiling, c, period, *rest, pure=False) for c in todo]
        for f in tqdm(as_completed(futs), total=len(futs), desc="embedding chunks (dask)", disable=not progress,
                      unit="chunk"):
            f.result()
    finally:
        if own is not None:
            cluster = own.cluster
            own.close()
            if cluster is not None:
                cluster.close()
