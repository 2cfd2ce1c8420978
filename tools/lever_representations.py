"""Label-free diagnostics of trained models' embeddings beside their untrained twin (lab notes).

For each model folder, on one task's labelled pixels (default: the Swedish WorldCover map):
effective rank, top-5 variance share, mean |cos| between pixels, mean per-dimension variance
(chapter 26's `representation_stats`), and the share of 10 nearest neighbours it has in common
with an untrained network of the same architecture and with the composite baseline.

    python tools/lever_representations.py data/models/aef-tiny-greenearthnet runs/models/lever-*
"""
from __future__ import annotations

import argparse
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="model folders (model.safetensors + config.json)")
    p.add_argument("--task", default="worldcover_sweden", help="the task whose labelled pixels are described")
    p.add_argument("--cache", default="", help="a feature cache folder shared with aef-eval (optional)")
    args = p.parse_args(argv)

    from aef_lit import evaluation as E
    from aef_lit.evaluation.pixels import feature_matrix, pixel_table
    from aef_lit.evaluation.protocol import method_features
    from aef_lit.evaluation.representations import neighbour_overlap, representation_stats
    from aef_lit.training import load_pretrained

    rows, task, ref = [], None, {}
    for folder in args.models:
        model, cfg = load_pretrained(folder)
        if task is None:
            task = E.build_task(args.task, cfg.input_sources)
            table = pixel_table(task)
            for name, m in E.default_methods(None, arch=cfg, untrained_seeds=(0,), baselines=("composite",)).items():
                ref[name] = feature_matrix(method_features(m, task, args.cache or None), table, m.standardise)
        m = E.ModelMethod(model, Path(folder).name)
        x = feature_matrix(method_features(m, task, args.cache or None), table, m.standardise)
        st = representation_stats(x)
        rows.append({"model": Path(folder).name, **{k: round(v, 3) for k, v in st.items() if k != "dims"},
                     "dim variance": round(float(x.var(0).mean()), 4),
                     "overlap untrained_0": round(neighbour_overlap(x, ref["untrained_0"]), 3),
                     "overlap composite": round(neighbour_overlap(x, ref["composite"]), 3)})
    for name, x in ref.items():
        st = representation_stats(x)
        rows.append({"model": name, **{k: round(v, 3) for k, v in st.items() if k != "dims"},
                     "dim variance": round(float(x.var(0).mean()), 4),
                     "overlap untrained_0": round(neighbour_overlap(x, ref["untrained_0"]), 3),
                     "overlap composite": round(neighbour_overlap(x, ref["composite"]), 3)})
    cols = list(rows[0])
    print(f"{args.task}, {len(table.y)} labelled pixels")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
