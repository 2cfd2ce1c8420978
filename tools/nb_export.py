#!/usr/bin/env python3
"""Export `#| export` cells of the percent-format notebooks into the `aef_lit` package.

The notebooks in `notebooks/NN_topic.py` are the source of truth. A notebook declares its
module once with a cell line `#| default_exp part.topic` (a dotted name: the module
`aef_lit/part/topic.py` inside the sub-package of its book part); every code cell whose
first line is `#| export` is copied (without that line) into that module, in notebook
order, under a "generated from ..., do not edit" header. A cell whose first line is
`#| export part.other` goes to `aef_lit/part/other.py` instead, so one chapter can build
several modules. Output is a pure function of the notebook text, so re-running the export
never produces a diff by itself. Sub-package `__init__.py` files are hand-written.

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
_EXPORT = re.compile(r"^#\|\s*export(?:\s+([A-Za-z_][A-Za-z0-9_.]*))?\s*$")


def _cells(py_path: Path) -> list[tuple[str, str]]:
    """(cell_type, source) pairs of a percent-format notebook, via jupytext."""
    import jupytext  # imported lazily so `--help` works without it

    nb = jupytext.read(py_path, fmt="py:percent")
    return [(c.cell_type, c.source) for c in nb.cells]


def render(py_path: Path) -> dict[str, str]:
    """{module_name: module_text} for one notebook ({} if it exports nothing)."""
    default = None
    chunks: dict[str | None, list[str]] = {}
    for cell_type, source in _cells(py_path):
        if cell_type != "code":
            continue
        lines = source.splitlines()
        body = []
        target: str | None = None
        exported = False
        for i, line in enumerate(lines):
            m = _DEFAULT_EXP.match(line)
            if m:
                if default is not None and default != m.group(1):
                    raise SystemExit(f"{py_path}: two different default_exp directives")
                default = m.group(1)
                continue
            e = _EXPORT.match(line) if i == 0 else None
            if e:
                exported, target = True, e.group(1)
                continue
            body.append(line)
        if exported:
            text = "\n".join(body).strip("\n")
            if text:
                chunks.setdefault(target, []).append(text)
    if None in chunks:
        if default is None:
            raise SystemExit(f"{py_path}: exported cells but no `#| default_exp` directive")
        chunks.setdefault(default, [])[:0] = chunks.pop(None)
    src = py_path.relative_to(ROOT).as_posix()
    return {mod: HEADER.format(src=src) + "\n" + "\n\n\n".join(parts) + "\n" for mod, parts in chunks.items()}


def module_path(module: str) -> Path:
    return PKG_DIR / (module.replace(".", "/") + ".py")


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
        for module, text in render(py).items():
            if module in owners:
                raise SystemExit(f"module {module} exported by both {owners[module].name} and {py.name}")
            owners[module] = py
            dest = module_path(module)
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
        # a generated module whose notebook is gone (or no longer exports it) is drift too
        produced = {module_path(m) for m in owners}
        for f in sorted(PKG_DIR.rglob("*.py")):
            head = f.read_text().split("\n", 1)[0]
            if head.startswith("# generated from") and f not in produced:
                if args.check:
                    drift.append(f"{f.relative_to(ROOT)}: generated module with no notebook exporting it")
                else:
                    f.unlink()
                    print(f"removed {f.relative_to(ROOT)} (no notebook exports it)")
    if drift:
        print("aef_lit/ is out of sync with notebooks/:", *drift, sep="\n  ", file=sys.stderr)
        return 1 if args.check else 0
    if args.check:
        print(f"ok: {len(owners)} modules match their notebooks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
