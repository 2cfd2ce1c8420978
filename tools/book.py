#!/usr/bin/env python3
"""Execute every notebook ONCE with papermill, then render the book from those copies.

    python tools/book.py execute [--only 07_time] [-p preset tiny -p device cpu ...]
    python tools/book.py build          # render _build/executed/*.ipynb into _build/html
    python tools/book.py all            # execute + build (the README's main command)

Executed notebooks land in `_build/executed/NN_topic.ipynb`; each notebook runs in the
`notebooks/` folder (as nbval and Colab run it). The book is rendered from a staged copy
(`_build/book_src/`) whose notebooks are those executed copies, with Jupyter Book's own
execution switched off, so a CI run executes each notebook exactly once. Timings go to
`_build/executed/timings.json`.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
BUILD = ROOT / "_build"
EXECUTED = BUILD / "executed"
STAGE = BUILD / "book_src"


def notebooks(only: list[str] | None = None) -> list[Path]:
    pys = sorted(NB_DIR.glob("[0-9][0-9]_*.py"))
    if only:
        pys = [p for p in pys if any(p.stem.startswith(o) or p.stem == o for o in only)]
        if not pys:
            raise SystemExit(f"no notebook matches {only}")
    return pys


def execute_one(py: Path, params: dict[str, str], out_dir: Path = EXECUTED) -> float:
    """Run one percent notebook with papermill; raise CalledProcessError on a failing cell."""
    import jupytext
    import papermill as pm

    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / (py.stem + ".ipynb")
    nb = jupytext.read(py, fmt="py:percent")
    src = out_dir / (py.stem + ".input.ipynb")
    jupytext.write(nb, src, fmt="ipynb")
    # Kernels inherit the environment: a non-inline MPLBACKEND (e.g. Agg, common in CI)
    # would silently drop every figure from the executed notebooks and hence the book.
    backend = os.environ.get("MPLBACKEND")
    if backend and "inline" not in backend:
        os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    t0 = time.perf_counter()
    try:
        pm.execute_notebook(
            str(src), str(out), parameters=params, cwd=str(NB_DIR), kernel_name="python3",
            progress_bar=False, log_output=False,
        )
    finally:
        src.unlink(missing_ok=True)
        if backend is not None:
            os.environ["MPLBACKEND"] = backend
    return time.perf_counter() - t0


def _parse_params(pairs: list[list[str]]) -> dict:
    params = {}
    for k, v in pairs or []:
        try:
            params[k] = json.loads(v)
        except json.JSONDecodeError:
            params[k] = v
    return params


def cmd_execute(only: list[str] | None, params: dict) -> None:
    timings = {}
    path = EXECUTED / "timings.json"
    if path.exists() and only:
        timings = json.loads(path.read_text())
    for py in notebooks(only):
        print(f"executing {py.name} ...", flush=True)
        dt = execute_one(py, params)
        timings[py.stem] = round(dt, 1)
        print(f"  {py.name}: {dt:.1f} s", flush=True)
    path.write_text(json.dumps(timings, indent=1, sort_keys=True) + "\n")
    print(f"executed {len(timings)} notebooks in {sum(timings.values()):.0f} s total")


def stage() -> Path:
    """Copy the book sources and the executed notebooks into _build/book_src."""
    import yaml

    if STAGE.exists():
        shutil.rmtree(STAGE)
    (STAGE / "notebooks").mkdir(parents=True)
    shutil.copytree(ROOT / "book", STAGE / "book")
    shutil.copy(ROOT / "_toc.yml", STAGE / "_toc.yml")
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    cfg.setdefault("execute", {})["execute_notebooks"] = "off"
    cfg["exclude_patterns"] = [p for p in cfg.get("exclude_patterns", []) if "ipynb" not in p]
    cfg["exclude_patterns"].append("notebooks/*.py")
    (STAGE / "_config.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    missing = []
    for py in notebooks():
        ex = EXECUTED / (py.stem + ".ipynb")
        if not ex.exists():
            missing.append(py.stem)
            continue
        shutil.copy(ex, STAGE / "notebooks" / ex.name)
    if missing:
        raise SystemExit(f"not executed yet: {missing}; run `python tools/book.py execute` first")
    return STAGE


def cmd_build() -> None:
    src = stage()
    out = BUILD
    cmd = [sys.executable, "-m", "jupyter_book", "build", "-W", "-n", "--keep-going",
           "--path-output", str(out), str(src)]
    jb = shutil.which("jupyter-book", path=str(Path(sys.executable).parent)) or shutil.which("jupyter-book")
    if jb:
        cmd = [jb] + cmd[3:]
    print(" ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env={**os.environ, "PYDEVD_DISABLE_FILE_VALIDATION": "1"})
    print(f"book: {out / '_build' / 'html' / 'index.html'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["execute", "build", "all"])
    ap.add_argument("--only", nargs="*", help="notebook stems or prefixes, e.g. 07 or 07_time")
    ap.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                    help="papermill parameter (JSON or string)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    if args.what in ("execute", "all"):
        cmd_execute(args.only, _parse_params(args.param))
    if args.what in ("build", "all"):
        cmd_build()
    print(f"done in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
