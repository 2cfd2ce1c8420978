"""Tabulate training levers with the evaluation (the lab notes' lever tables).

Each model JSON is an `aef-eval` result of one trained model (run with `--baselines`
`--untrained-seeds` empty, same seed and folds); the base JSON holds the baselines and the
untrained networks on the same folds. Prints, per task, each model's 10-shot kNN-3 score and
its paired difference to the best designed baseline and to the better untrained network.

    python tools/lever_table.py --base runs/eval_shipped.json runs/eval_A.json runs/eval_C.json
"""
from __future__ import annotations

import argparse

from aef_lit.evaluation import EvalResult
from aef_lit.evaluation.probes import paired_difference


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="aef-eval JSONs of the models to compare")
    p.add_argument("--base", required=True, help="aef-eval JSON with the baselines and untrained networks")
    p.add_argument("--probe", default="knn3", help="probe (knn1, knn3, linear)")
    p.add_argument("--shots", default="10", help="shots per class (regressions: samples)")
    p.add_argument("--wide", action="store_true",
                   help="one row per task, one column per model: the score, and its verdict against the best "
                        "designed baseline (+ better, = tie, - worse); † marks a leaked task")
    args = p.parse_args(argv)
    base = EvalResult.from_json(args.base)
    summ = base.summary
    rows = list(base.rows)
    names = sorted({row["method"] for row in rows} - _designed() - {r["method"] for r in rows
                                                                    if r["method"].startswith("untrained")})
    leaks = {(n, t): bool(info.get("leak")) for n in names for t, info in base.tasks.items()}
    for path in args.models:
        r = EvalResult.from_json(path)
        new = sorted({row["method"] for row in r.rows} - {row["method"] for row in rows})
        rows += [row for row in r.rows if row["method"] in new]
        names += new
        for t, info in r.tasks.items():
            for n in new:
                leaks[(n, t)] = bool(info.get("leak"))
    import pandas as pd

    df = pd.DataFrame(rows)
    metric = {t: ("r2" if info.get("kind") == "regression" else "balanced_accuracy") for t, info in base.tasks.items()}
    sel = df[(df.probe == args.probe) & (df.shots.astype(str) == args.shots)]
    baselines = [m for m in summ.method.unique() if not m.startswith("untrained") and m not in names
                 and m in _designed()]
    untrained = [m for m in summ.method.unique() if m.startswith("untrained")]
    if args.wide:
        return _wide(sel, base, names, baselines, untrained, metric, leaks, rows, args)
    print(f"| task | model | {args.probe} @ {args.shots} | − best baseline | − better untrained |")
    print("|---|---|---|---|---|")
    for task in base.tasks:
        if (refs := _references(sel, task, metric, baselines, untrained)) is None:
            continue
        mean, bb, bu = refs
        for n in names:
            if n not in mean:
                continue
            cells = []
            for ref in (bb, bu):
                if ref is None:
                    cells.append("–")
                    continue
                d, h = paired_difference(list(rows), n, ref, metric=metric[task], task=task, probe=args.probe,
                                         shots=args.shots)
                verdict = "better" if d - h > 0 else ("worse" if d + h < 0 else "tie")
                cells.append(f"{d:+.3f} ± {h:.3f} ({ref}, {verdict})")
            mark = "†" if leaks.get((n, task)) else ""
            print(f"| {task}{mark} | {n} | {mean[n]:.3f} | {cells[0]} | {cells[1]} |")
    return 0


def _references(sel, task, metric, baselines, untrained):
    """Per-method mean score on `task`, its best designed baseline and its better untrained network."""
    t = sel[sel.task == task]
    if t.empty:
        return None
    mean = t.groupby("method")[metric[task]].mean()
    bb = max((m for m in baselines if m in mean), key=lambda m: mean[m], default=None)
    bu = max((m for m in untrained if m in mean), key=lambda m: mean[m], default=None)
    return mean, bb, bu


def _wide(sel, base, names, baselines, untrained, metric, leaks, rows, args) -> int:
    """The compact table: tasks down, models across, then the best baseline and untrained network."""
    print("| task | " + " | ".join(names) + " | best baseline | better untrained |")
    print("|---|" + "---|" * (len(names) + 2))
    for task in base.tasks:
        if (refs := _references(sel, task, metric, baselines, untrained)) is None:
            continue
        mean, bb, bu = refs
        cells = []
        for n in names:
            if n not in mean:
                cells.append("–")
                continue
            d, h = paired_difference(list(rows), n, bb, metric=metric[task], task=task, probe=args.probe,
                                     shots=args.shots)
            mark = "+" if d - h > 0 else ("-" if d + h < 0 else "=")
            cells.append(f"{mean[n]:.3f} {mark}" + ("†" if leaks.get((n, task)) else ""))
        ref = [f"{mean[bb]:.3f} ({bb})" if bb else "–", f"{mean[bu]:.3f} ({bu})" if bu else "–"]
        print(f"| {task} | " + " | ".join(cells + ref) + " |")
    return 0


def _designed():
    from aef_lit.evaluation.baselines import BASELINES

    return set(BASELINES)


if __name__ == "__main__":
    raise SystemExit(main())
