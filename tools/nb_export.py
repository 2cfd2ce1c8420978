#!/usr/bin/env python3
"""Export `#| export` cells of the percent-format notebooks into the `aef_lit` package.

The notebooks in `notebooks/NN_topic.py` are the source of truth. A notebook declares its
module once with a cell line `#| default_exp topic`; every code cell whose first line is
`#| export` is copied (without that line) into `aef_lit/topic.py`, in notebook order,
under a "generated from ..., do not edit" header. Output is a pure function of the
notebook text, so re-running the export never produces a diff by itself.

Usage:
    python tools/nb_export.py                 # export every notebook
    python tools/nb_export.py notebooks/07_time.py   # export one (or several)
    python tools/nb_export.py --check         # exit 1 if aef_lit/ differs from the notebooks
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from _venv import reexec_in_venv  # tools/_venv.py (this script's folder is on sys.path)

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
PKG_DIR = ROOT / "aef_lit"
HEADER = (
    "# generated from {src} by tools/nb_export.py: do not edit.\n"
    "# Edit the notebook, then run `python tools/nb_export.py`.\n"
)
_DEFAULT_EXP = re.compile(r"^#\|\s*default_exp\s+([A-Za-z_][A-Za-z0-9_.]*)\s*$")
_EXPORT = re.compile(r"^#\|\s*export\s*$")


def _cells(py_path: Path) -> list[tuple[str, str]]:
    """(cell_type, source) pairs of a percent-format notebook, via jupytext."""
    import jupytext  # imported lazily so `--help` works without it

    nb = jupytext.read(py_path, fmt="py:percent")
    return [(c.cell_type, c.source) for c in nb.cells]


def render(py_path: Path) -> tuple[str, str] | None:
    """Return (module_name, module_text) for one notebook, or None if it exports nothing."""
    module = None
    chunks: list[str] = []
    for cell_type, source in _cells(py_path):
        if cell_type != "code":
            continue
        lines = source.splitlines()
        body = []
        exported = False
        for i, line in enumerate(lines):
            m = _DEFAULT_EXP.match(line)
            if m:
                if module is not None and module != m.group(1):
                    raise SystemExit(f"{py_path}: two different default_exp directives")
                module = m.group(1)
                continue
            if i == 0 and _EXPORT.match(line):
                exported = True
                continue
            body.append(line)
        if exported:
            text = "\n".join(body).strip("\n")
            if text:
                chunks.append(text)
    if module is None:
        if chunks:
            raise SystemExit(f"{py_path}: exported cells but no `#| default_exp` directive")
        return None
    src = py_path.relative_to(ROOT).as_posix()
    out = HEADER.format(src=src) + "\n" + "\n\n\n".join(chunks) + "\n"
    return module, out


def _targets(paths: list[str]) -> list[Path]:
    if paths:
        return [Path(p).resolve() for p in paths]
    return sorted(NB_DIR.glob("[0-9][0-9]_*.py"))


def main(argv: list[str] | None = None) -> int:
    reexec_in_venv()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="*", help="notebooks to export (default: all)")
    ap.add_argument("--check", action="store_true", help="report drift, write nothing, exit 1 on drift")
    args = ap.parse_args(argv)

    drift: list[str] = []
    owners: dict[str, Path] = {}
    for py in _targets(args.notebooks):
        res = render(py)
        if res is None:
            continue
        module, text = res
        if module in owners:
            raise SystemExit(f"module {module} exported by both {owners[module].name} and {py.name}")
        owners[module] = py
        dest = PKG_DIR / (module.replace(".", "/") + ".py")
        current = dest.read_text() if dest.exists() else None
        if current == text:
            continue
        if args.check:
            why = "missing" if current is None else "differs from its notebook (hand edit or stale export)"
            drift.append(f"{dest.relative_to(ROOT)}: {why} -> {py.relative_to(ROOT)}")
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(text)
            print(f"wrote {dest.relative_to(ROOT)}")

    if not args.notebooks:
        # a generated module whose notebook is gone is drift too
        for f in sorted(PKG_DIR.glob("*.py")):
            head = f.read_text().split("\n", 1)[0]
            if head.startswith("# generated from") and f.stem not in owners:
                drift.append(f"{f.relative_to(ROOT)}: generated module with no notebook exporting it")
    if drift:
        print("aef_lit/ is out of sync with notebooks/:", *drift, sep="\n  ", file=sys.stderr)
        return 1 if args.check else 0
    if args.check:
        print(f"ok: {len(owners)} modules match their notebooks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
