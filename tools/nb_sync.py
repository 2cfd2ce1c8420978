#!/usr/bin/env python3
"""Write each `notebooks/NN_topic.py` (source of truth) to its paired `.ipynb`.

The `.ipynb` is committed with no outputs (Colab opens it, nbval and papermill run it).
Cell ids are derived from the cell's position and text, so regenerating an unchanged
notebook gives byte-identical JSON (plain `jupytext --to ipynb` draws random ids).

Usage:
    python tools/nb_sync.py            # rewrite every .ipynb from its .py
    python tools/nb_sync.py --check    # exit 1 when a pair disagrees or an .ipynb has outputs
    python tools/nb_sync.py notebooks/07_time.py
We never sync in the other direction: `jupytext --sync` trusts modification times and
has silently overwritten edits in the `.py` (see TOOLCHAIN.md).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from _venv import reexec_in_venv  # tools/_venv.py (this script's folder is on sys.path)

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


def notebook_from_py(py: Path):
    import jupytext

    nb = jupytext.read(py, fmt="py:percent")
    nb.metadata.pop("jupytext", None)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["jupytext"] = {"formats": "ipynb,py:percent"}
    seen: set[str] = set()
    for i, cell in enumerate(nb.cells):
        h = hashlib.sha1(f"{i}\0{cell.cell_type}\0{cell.source}".encode()).hexdigest()[:12]
        while h in seen:
            h = hashlib.sha1(h.encode()).hexdigest()[:12]
        seen.add(h)
        cell["id"] = h
        if cell.cell_type == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    return nb


def ipynb_text(py: Path) -> str:
    import nbformat

    nb = notebook_from_py(py)
    return json.dumps(nbformat.from_dict(nb), indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def compare(py: Path, ipynb: Path) -> list[str]:
    """Problems of one pair: cell types, sources and tags must agree; no outputs stored."""
    import jupytext

    if not ipynb.exists():
        return [f"{ipynb.name}: missing (run tools/nb_sync.py)"]
    a = jupytext.read(py, fmt="py:percent")
    b = json.loads(ipynb.read_text())
    problems = []
    cells_b = b.get("cells", [])
    if len(a.cells) != len(cells_b):
        problems.append(f"{py.name}: {len(a.cells)} cells in .py, {len(cells_b)} in .ipynb")
    for i, (ca, cb) in enumerate(zip(a.cells, cells_b)):
        src_b = cb["source"] if isinstance(cb["source"], str) else "".join(cb["source"])
        if ca.cell_type != cb["cell_type"] or ca.source != src_b:
            problems.append(f"{py.name}: cell {i} differs between .py and .ipynb")
        tags_a = list(ca.metadata.get("tags", []))
        tags_b = list(cb.get("metadata", {}).get("tags", []))
        if tags_a != tags_b:
            problems.append(f"{py.name}: cell {i} tags {tags_a} in .py but {tags_b} in .ipynb")
        if cb["cell_type"] == "code" and (cb.get("outputs") or cb.get("execution_count") is not None):
            problems.append(f"{ipynb.name}: cell {i} carries outputs; commit it stripped")
    if b.get("metadata", {}).get("kernelspec", {}).get("name") != "python3":
        problems.append(f"{ipynb.name}: kernelspec python3 missing")
    return problems


def main(argv: list[str] | None = None) -> int:
    reexec_in_venv()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="*")
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    pys = [Path(p).resolve() for p in args.notebooks] or sorted(NB_DIR.glob("[0-9][0-9]_*.py"))
    problems: list[str] = []
    for py in pys:
        ipynb = py.with_suffix(".ipynb")
        if args.check:
            problems += compare(py, ipynb)
        else:
            text = ipynb_text(py)
            if not ipynb.exists() or ipynb.read_text() != text:
                ipynb.write_text(text)
                print(f"wrote {ipynb.relative_to(ROOT)}")
    if args.check and not args.notebooks:
        for ipynb in sorted(NB_DIR.glob("*.ipynb")):
            if not ipynb.with_suffix(".py").exists():
                problems.append(f"{ipynb.name}: no paired .py")
    if problems:
        print("notebook pairs out of sync:", *problems, sep="\n  ", file=sys.stderr)
        return 1
    if args.check:
        print(f"ok: {len(pys)} notebook pairs agree")
    return 0


if __name__ == "__main__":
    sys.exit(main())
