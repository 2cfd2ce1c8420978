# generated from notebooks/25_evaluation.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from aef_lit.evaluation import probes as _pr


def _cell(m: float, h: float, bold: bool) -> str:
    if not np.isfinite(m):
        return "n/a"
    s = f"{m:.3f} ± {h:.3f}" if np.isfinite(h) else f"{m:.3f}"
    return f"**{s}**" if bold else s


def results_markdown(summary, tasks: Mapping[str, dict], probe: str = "knn3",
                     methods: Sequence[str] | None = None) -> str:
    """See `EvalResult.markdown`."""
    out = []
    for kind, metric in (("classification", "balanced_accuracy"), ("regression", "r2")):
        sub = summary[(summary["probe"] == probe) & summary["task"].map(lambda t: tasks[t]["kind"] == kind)]
        if methods is not None:
            sub = sub[sub["method"].isin(methods)]
        if sub.empty:
            continue
        shots = list(dict.fromkeys(sub["shots"]))
        what = "balanced accuracy" if kind == "classification" else "R²"
        out.append(f"{what}, {probe} probe, mean ± 95 % CI over folds "
                   f"({'samples per class' if kind == 'classification' else 'training samples'} in the header)\n")
        out.append("| task | split | method | " + " | ".join(shots) + " |")
        out.append("|---|---|---|" + "---|" * len(shots))
        notes = []
        for task, g in sub.groupby("task", sort=False):
            info = tasks[task]
            mark = ("†" if info.get("leak") else "") + ("‡" if info.get("pseudo") else "")
            if info.get("leak"):
                notes.append(f"† {task}: leak, {info['leak']} (not a measure of mapping from few labels)")
            if info.get("pseudo"):
                notes.append(f"‡ {task}: pseudo-labels (a model's output, not ground truth)")
            best = {s: g[g["shots"] == s][metric].max() for s in shots}
            for method, gm in g.groupby("method", sort=False):
                cells = []
                for s in shots:
                    r = gm[gm["shots"] == s]
                    m = float(r[metric].iloc[0]) if len(r) else float("nan")
                    h = float(r[metric + "_ci"].iloc[0]) if len(r) else float("nan")
                    cells.append(_cell(m, h, np.isfinite(m) and m == best[s]))
                out.append(f"| {task}{mark} | {gm['split'].iloc[0]} | {method} | " + " | ".join(cells) + " |")
            for method in info.get("not_applicable", {}):
                if methods is None or method in methods:
                    na = " | ".join(["n/a"] * len(shots))
                    out.append(f"| {task}{mark} | {info['split']} | {method} | {na} |")
        out += [""] + [n + "  " for n in notes] + ([""] if notes else [])
    return "\n".join(out)


def compare(result, method: str, probe: str = "knn3", shots: str = "10",
            against: Sequence[str] | None = None, level: float = 0.95):
    """Per task: `method` against the best of `against` (default: every other method) at one probe
    and shot count, with the paired per-fold difference and its interval, and a verdict
    (`better` / `worse` when the interval excludes 0, else `tie`)."""
    import pandas as pd

    summ = result.summary
    out = []
    for task, info in result.tasks.items():
        metric = "balanced_accuracy" if info["kind"] == "classification" else "r2"
        shot = shots if info["kind"] == "classification" or shots != "10" else "100"
        sub = summ[(summ["task"] == task) & (summ["probe"] == probe) & (summ["shots"] == shot)]
        if method not in set(sub["method"]):
            continue
        others = sub[sub["method"] != method]
        if against is not None:
            others = others[others["method"].isin(against)]
        if others.empty:
            continue
        best = others.sort_values(metric).iloc[-1]
        d, h = _pr.paired_difference([r for r in result.rows if r["task"] == task], method, best["method"], metric,
                                     level, probe=probe, shots=shot)
        verdict = "better" if d - h > 0 else "worse" if d + h < 0 else "tie"
        mine = float(sub[sub["method"] == method][metric].iloc[0])
        out.append({"task": task, "metric": metric, "shots": shot, method: mine,
                    "best other": best["method"], "its score": float(best[metric]), "difference": d, "ci": h,
                    "verdict": verdict, "leak": info["leak"], "pseudo": info["pseudo"]})
    return pd.DataFrame(out)
