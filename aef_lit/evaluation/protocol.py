# generated from notebooks/25_evaluation.py by tools/nb_export.py: do not edit.
# Edit the notebook, then run `python tools/nb_export.py`.

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from aef_lit.conventions import SourceSpec
from aef_lit.evaluation import baselines as _bl
from aef_lit.evaluation import probes as _pr
from aef_lit.evaluation.methods import Method
from aef_lit.evaluation.pixels import PixelTable, feature_matrix, pixel_table, split_function
from aef_lit.evaluation.report import results_markdown
from aef_lit.evaluation.tasks import DEFAULT_INPUTS, TASKS, Task, build_task

log = logging.getLogger("aef_lit.evaluation.protocol")

SITE_TARGETS = {
    "greenearthnet": ("dem", "landcover"), "greenearthnet_geotiff": (), "belgium": ("dem",),
    "slovenia": ("dem", "landcover"),
}
"""Target sources each kind of training site carries (chapters 2 and 20)."""


def training_targets(meta: Mapping[str, Any] | None) -> dict[str, set[str]]:
    """place -> the model targets it was trained to decode there, from a model's config.json."""
    if not meta or not meta.get("train_config"):
        return {}
    tc = meta["train_config"]
    targets = {s["name"] for s in (meta.get("model_config") or {}).get("sources", []) if s.get("role") == "target"}
    data, sites = tc.get("data", ""), list(tc.get("sites") or ())
    out: dict[str, set[str]] = {}
    for site in sites:
        if data in ("greenearthnet", "auto"):
            place, kind = site, "greenearthnet"
        elif data == "greenearthnet_geotiff":
            place, kind = site, "greenearthnet_geotiff"
        elif data == "multisite":
            place = site.removesuffix("_geotiff")
            kind = ("greenearthnet_geotiff" if site.endswith("_geotiff") else
                    site if site in ("belgium", "slovenia") else "greenearthnet")
        else:
            continue
        out.setdefault(place, set()).update(set(SITE_TARGETS[kind]) & targets)
    if data == "worldcereal":
        out.setdefault("belgium", set()).update(set(SITE_TARGETS["belgium"]) & targets)
    return out


def leak_reason(task: Task, meta: Mapping[str, Any] | None) -> str:
    """Why `task` leaks for the model of `meta` ("" when it does not)."""
    if not task.label_source:
        return ""
    seen = training_targets(meta)
    hit = sorted(p for p in set(task.groups) if task.label_source in seen.get(p, ()))
    return f"{task.label_source} was a training target at {', '.join(hit)}" if hit else ""


@dataclass
class EvalResult:
    """Rows (one per task, method, probe, shots and fold), their summary, and facts per task."""

    rows: list[dict]
    tasks: dict[str, dict]
    settings: dict = field(default_factory=dict)

    @property
    def summary(self):
        """Mean and 95 % t-interval half-width per task, split, method, probe and shots."""
        return _pr.summarise(self.rows, by=("task", "split", "method", "probe", "shots"))

    def to_json(self, path: str | Path) -> Path:
        """Write settings, task facts, the summary and every fold's row as JSON."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        summ = json.loads(self.summary.to_json(orient="records"))
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_text(json.dumps({"settings": self.settings, "tasks": self.tasks, "summary": summ,
                                   "rows": self.rows}, indent=1, default=float))
        tmp.replace(p)  # never a half-written file under the final name
        return p

    @classmethod
    def from_json(cls, path: str | Path) -> "EvalResult":
        """Read back what `to_json` wrote."""
        d = json.loads(Path(path).read_text())
        return cls(d["rows"], d["tasks"], d.get("settings", {}))

    def markdown(self, probe: str = "knn3", methods: Sequence[str] | None = None) -> str:
        """Markdown tables (classification, then regression) of one probe: rows task x method,
        columns shots, cells `mean ± CI`; the best mean per task and shots in bold; leaked
        tasks marked †, pseudo-labels ‡ (with a note under the table)."""
        return results_markdown(self.summary, self.tasks, probe, methods)


def method_features(method: Method, task: Task, cache_dir: str | Path | None = None) -> list[np.ndarray]:
    """`method`'s `F H W` features of every sample of `task`, read from (or written to) `cache_dir`."""
    if not cache_dir:
        return method(task.samples, task.periods)
    h = hashlib.sha1(json.dumps([method.key(), task.name, len(task.samples), task.periods,
                                 [s.grid.transform for s in task.samples[:3]]], default=str).encode()).hexdigest()[:20]
    f = Path(cache_dir) / f"{task.name}-{method.name}-{h}.npz"
    if f.exists():
        with np.load(f) as z:
            return [z[f"a{i}"] for i in range(len(z.files))]
    feats = method(task.samples, task.periods)
    f.parent.mkdir(parents=True, exist_ok=True)
    tmp = f.with_name(f.name + ".tmp.npz")
    np.savez(tmp, **{f"a{i}": a for i, a in enumerate(feats)})
    tmp.replace(f)
    return feats


def evaluate(methods: Mapping[str, Method], tasks: Sequence[str | Task] | str = "all", folds: int = 20,
             seed: int = 0, split: str | None = None, shots: Sequence[int | str] | None = None,
             probes: Sequence[str] | None = None, specs: Sequence[SourceSpec] = DEFAULT_INPUTS, root=None,
             model_meta: Mapping[str, Any] | None = None, cache_dir: str | Path | None = None,
             progress: bool = True) -> EvalResult:
    """The sparse-label protocol for every task and method (see the chapter).

    Args:
        methods: name -> Method (see `default_methods`).
        tasks: "all", task names (see TASKS) or built `Task`s.
        split: override every task's split (e.g. "pixels" to measure how much it flatters).
        specs: the input sources tasks are built for (the evaluated model's `input_sources`).
        model_meta: the evaluated model's config.json, to flag leaked tasks.
        cache_dir: a folder for method features (embeddings), keyed by method and task.
    """
    from tqdm.auto import tqdm

    names = list(TASKS) if tasks == "all" else [tasks] if isinstance(tasks, (str, Task)) else list(tasks)
    for t in names:
        if isinstance(t, str) and t not in TASKS:
            raise ValueError(f"unknown task {t!r}; choose from {', '.join(TASKS)} (or 'all')")
    if not methods:
        raise ValueError("no methods to evaluate")
    rows: list[dict] = []
    facts: dict[str, dict] = {}
    bar = tqdm(total=len(names) * (len(methods) + folds), desc="evaluation", disable=not progress)
    for t in names:
        task = t if isinstance(t, Task) else build_task(t, specs, root)
        table = pixel_table(task)
        feats, n_a, seconds = {}, {}, {}
        for mname, method in methods.items():
            bar.set_postfix_str(f"{task.name}: {mname}")
            t0 = time.perf_counter()
            try:
                feats[mname] = method_features(method, task, cache_dir)
            except _bl.NotApplicable as e:
                n_a[mname] = str(e)
            seconds[mname] = round(time.perf_counter() - t0, 3)
            bar.update(1)
        keep = np.ones(len(table), bool)  # pixels every embedding covers
        for mname, f in feats.items():
            if methods[mname].embedding:
                x = np.stack([f[s][:, r, c] for s, r, c in zip(table.sample, table.row, table.col)])
                keep &= np.isfinite(x).all(1)
        if not keep.all():
            log.warning("%s: %d of %d pixels have no embedding from some method; left out for all",
                        task.name, int((~keep).sum()), len(table))
            table = PixelTable(*(getattr(table, k)[keep] if k != "group_names" else table.group_names
                                 for k in ("y", "xy", "group", "group_names", "sample", "row", "col")))
        X = {m: feature_matrix(f, table, methods[m].standardise) for m, f in feats.items()}
        fold_bar = lambda: bar.update(1)  # noqa: E731
        t_probe = time.perf_counter()
        task_rows = _pr.run_trials(X, table.y, split_function(task, table, split), task.kind, shots, probes, folds,
                                   seed, progress=fold_bar) if X else []
        for r in task_rows:
            r["task"] = task.name
        rows += task_rows
        present = np.unique(table.y) if task.kind == "classification" else []
        facts[task.name] = {
            "kind": task.kind, "split": split or task.split, "pixels": int(len(table)),
            "sites": list(table.group_names), "classes": [task.classes[int(c)] for c in present],
            "units": task.units, "pseudo": task.pseudo, "leak": leak_reason(task, model_meta),
            "description": task.description, "not_applicable": n_a, "feature_seconds": seconds,
            "features": {m: int(x.shape[1]) for m, x in X.items()},
            "probe_seconds": round(time.perf_counter() - t_probe, 1),
        }
    bar.close()
    settings = {"folds": folds, "seed": seed, "split": split or "per task", "probes": list(probes or ()),
                "shots": [str(s) for s in (shots or ())], "methods": list(methods),
                "specs": [s.name + ":" + "/".join(s.bands) for s in specs],
                "interval": "95 % Student t over folds"}
    return EvalResult(rows, facts, settings)
