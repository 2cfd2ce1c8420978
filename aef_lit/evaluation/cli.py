# generated from notebooks/26_representations.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

from aef_lit.conventions import find_eo_real
from aef_lit.evaluation import baselines as _bl
from aef_lit.evaluation import probes as _pr
from aef_lit.evaluation.methods import Method
from aef_lit.evaluation.networks import default_methods
from aef_lit.evaluation.protocol import EvalResult, evaluate
from aef_lit.evaluation.rasters import RasterMethod, labels_task
from aef_lit.evaluation.tasks import DEFAULT_INPUTS, TASKS


def build_eval_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aef-eval", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Score embeddings with the sparse-label protocol of AlphaEarth Foundations (chapter 25): "
                    "kNN and linear probes at 1, 10 and max samples per class over random spatial folds, "
                    "against designed baselines and untrained networks, on the real tasks of eo_real/.")
    p.add_argument("--model", default=None, help="a model folder (model.safetensors + config.json); "
                   "default: the shipped model, unless --embeddings is given")
    p.add_argument("--embeddings", default=None, help="an embedding GeoTIFF to score (float bands, or the AEF "
                   "int8 format: -128 nodata); warped onto each task's grid")
    p.add_argument("--labels", default=None, help="a label GeoTIFF (band 1, nodata = unlabelled) to score "
                   "--embeddings on, instead of the built-in tasks")
    p.add_argument("--kind", choices=("classification", "regression"), default=None,
                   help="the kind of --labels (default: integer labels are classes)")
    p.add_argument("--tasks", nargs="+", default=["all"], help=f"'all' or task names: {', '.join(TASKS)}")
    p.add_argument("--baselines", nargs="*", default=list(_bl.BASELINES),
                   help="designed baselines to score beside the embeddings (none: give the flag alone)")
    p.add_argument("--untrained-seeds", nargs="*", type=int, default=[0, 1],
                   help="seeds of untrained networks of the model's architecture (none: give the flag alone)")
    p.add_argument("--folds", type=int, default=20, help="random folds per trial (the protocol: at least 20)")
    p.add_argument("--shots", nargs="+", default=None, help="training samples per class, e.g. 1 10 max "
                   "(default: 1 10 max; regressions 10 100 max)")
    p.add_argument("--probes", nargs="+", default=None, help="probes: knn1 knn3 linear (default: all three)")
    p.add_argument("--split", choices=_pr.SPLITS, default=None,
                   help="override every task's split (e.g. pixels, to see how much it flatters)")
    p.add_argument("--table-probe", default="knn3", help="the probe whose results the printed table shows")
    p.add_argument("--tile", type=int, default=None, help="tile size the model embeds in (default: its training "
                   "tile; 0 = the whole site in one pass)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, mps or xla")
    p.add_argument("--seed", type=int, default=0, help="seed of the folds (the same for every method)")
    p.add_argument("--out", default="aef-eval.json", help="where the JSON of every fold and the summary goes")
    p.add_argument("--cache", default=None, help="a folder to cache features in (embeddings are reused on reruns)")
    p.add_argument("--eo-real", default=None, help="the eo_real/ folder (default: $AEF_EO_REAL or ../shared/eo_real)")
    p.add_argument("--update-card", action="store_true",
                   help="write the probe table into the model folder's config.json and MODEL_CARD.md")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _parse_shots(values):
    if values is None:
        return None
    out = []
    for v in values:
        if v == "max":
            out.append("max")
        elif v.isdigit() and int(v) > 0:
            out.append(int(v))
        else:
            raise SystemExit(f"aef-eval: --shots takes positive integers or 'max', got {v!r}")
    return out


def update_card(folder: str | Path, result: EvalResult, probe: str = "knn3") -> None:
    """Put the probe table of `result` into a model folder's config.json (`probes`) and its card."""
    from aef_lit.training import TrainConfig, model_card, model_config_from_json

    folder = Path(folder)
    meta = json.loads((folder / "config.json").read_text())
    meta["probes"] = {"table": result.markdown(probe), "probe": probe, "settings": result.settings,
                      "tasks": {t: {k: v for k, v in f.items() if not k.endswith("_seconds")}
                                for t, f in result.tasks.items()},
                      "reproduce": f"aef-eval --model {folder} --tasks all --update-card"}
    (folder / "config.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
    if meta.get("train_config"):
        cfg = model_config_from_json(meta["model_config"])
        card = model_card(cfg, TrainConfig.from_dict(meta["train_config"]), meta)
        (folder / "MODEL_CARD.md").write_text(card)


def main(argv: Sequence[str] | None = None) -> int:
    """The `aef-eval` command line."""
    args = build_eval_parser().parse_args(argv)
    shots = _parse_shots(args.shots)
    for p in args.probes or ():
        if not (p == "linear" or (p.startswith("knn") and p[3:].isdigit() and int(p[3:]) > 0)):
            raise SystemExit(f"aef-eval: unknown probe {p!r} (knn1, knn3, linear)")
    unknown = [b for b in args.baselines if b not in _bl.BASELINES]
    if unknown:
        raise SystemExit(f"aef-eval: unknown baseline(s) {unknown}; choose from {', '.join(_bl.BASELINES)}")
    if args.folds < 2:
        raise SystemExit("aef-eval: --folds must be at least 2 (an interval needs two folds)")
    if args.labels and not args.embeddings:
        raise SystemExit("aef-eval: --labels scores an --embeddings raster; give both")
    for f in (args.embeddings, args.labels):
        if f and not Path(f).exists():
            raise SystemExit(f"aef-eval: no such file: {f}")
    tasks = list(TASKS) if args.tasks == ["all"] else args.tasks
    bad = [t for t in tasks if t not in TASKS]
    if bad and not args.labels:
        raise SystemExit(f"aef-eval: unknown task(s) {bad}; choose from {', '.join(TASKS)} or all")
    if args.update_card and (args.labels or not (args.model or not args.embeddings)):
        raise SystemExit("aef-eval: --update-card needs a model folder (--model, or the shipped one)")
    from aef_lit.conventions import select_device
    from aef_lit.training import PRETRAINED, load_pretrained

    dev = select_device(args.device)
    model = meta = None
    methods: dict[str, Method] = {}
    folder = Path(args.model) if args.model else (None if args.embeddings else PRETRAINED)
    if folder is not None:
        if not (folder / "config.json").exists():
            raise SystemExit(f"aef-eval: {folder} is not a model folder (no config.json)")
        model, cfg = load_pretrained(folder, device=dev)
        meta = json.loads((folder / "config.json").read_text())
    if args.embeddings:
        methods[Path(args.embeddings).stem] = RasterMethod(args.embeddings)
    arch = model.cfg if model is not None else None
    if arch is None and PRETRAINED.exists() and not args.labels:
        arch = load_pretrained(PRETRAINED)[1]  # untrained networks of the shipped architecture
    baselines = ["xy"] if args.labels and args.baselines else args.baselines
    seeds = args.untrained_seeds if not args.labels else ()
    methods.update(default_methods(model, folder.name if folder else "model", seeds, baselines, arch, str(dev),
                                   args.tile))
    specs = model.cfg.input_sources if model is not None else DEFAULT_INPUTS
    task_list = [labels_task(args.labels, args.kind)] if args.labels else tasks
    root = args.eo_real
    if root is None and not args.labels and find_eo_real(required=False) is None:
        raise SystemExit("aef-eval: the real samples (eo_real/) were not found; set $AEF_EO_REAL or --eo-real")
    result = evaluate(methods, task_list, folds=args.folds, seed=args.seed, split=args.split, shots=shots,
                      probes=args.probes, specs=specs, root=root, model_meta=meta, cache_dir=args.cache,
                      progress=not args.no_progress)
    out = result.to_json(args.out)
    print(result.markdown(args.table_probe))
    print(f"wrote {out}")
    if args.update_card:
        update_card(folder, result, args.table_probe)
        print(f"updated {folder / 'MODEL_CARD.md'}")
    return 0
