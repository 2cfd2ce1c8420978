"""Execute every notebook ONCE (papermill, tiny defaults) and render the book from the copies.

Run alone with `pytest -m notebooks`, or skip with `-m "not notebooks"` for a quick unit run.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
pytestmark = pytest.mark.notebooks

_spec = importlib.util.spec_from_file_location("aef_book_tool", ROOT / "tools" / "book.py")
book = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(book)
_results: dict[str, bool] = {}


@pytest.mark.parametrize("py", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(py):
    """Each notebook runs end to end with its default parameters; its asserts are the checks.

    Every chapter teaches with at least one figure, so the executed copy must hold a PNG.
    """
    _results[py.stem] = False
    seconds = book.execute_one(py, {})
    out = json.loads((book.EXECUTED / f"{py.stem}.ipynb").read_text())
    pngs = sum("image/png" in o.get("data", {}) for c in out["cells"] for o in c.get("outputs", []))
    assert pngs, f"{py.stem} produced no figure (is MPLBACKEND forcing a non-inline backend?)"
    _results[py.stem] = True
    timings = book.EXECUTED / "timings.json"
    data = json.loads(timings.read_text()) if timings.exists() else {}
    data[py.stem] = round(seconds, 1)
    timings.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def test_book_builds_from_the_executed_notebooks():
    """Jupyter Book 1 renders with -W (warnings are errors), offline, from the executed copies."""
    if len(_results) != len(NOTEBOOKS) or not all(_results.values()):
        pytest.skip("not every notebook executed in this session (see their failures)")
    book.cmd_build()
    html = ROOT / "_build" / "_build" / "html"
    for py in NOTEBOOKS:
        page = html / "notebooks" / f"{py.stem}.html"
        assert page.exists(), page
        # a figure is an output image copied into _images/ (not the launch buttons' logos)
        figures = re.findall(r'<img[^>]+src="\.\./_images/[^"]+\.png"', page.read_text())
        assert figures, f"{py.stem} renders no figure"
    assert "brown2025alphaearth" in (html / "book" / "intro.html").read_text() or \
        "Brown" in (html / "book" / "intro.html").read_text()


def test_nbval_runs_a_committed_notebook():
    """The committed, output-free .ipynb files are what nbval runs (one, to keep CI short)."""
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
         "--nbval-current-env", "-o", "addopts=", "notebooks/01_conventions.ipynb"],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "MPLBACKEND": "Agg"},
    )
    assert res.returncode == 0, res.stdout[-3000:]
    assert " passed" in res.stdout


def test_widgets_render_offline_in_a_headless_browser(tmp_path):
    """Chapter 31's explorers: the built page holds the widget state and loads the widget manager
    from the book's own static files (no CDN); in Chromium with no network, the widgets render,
    and with the vendored manager removed they do not (so the check can fail)."""
    import shutil

    cw_spec = importlib.util.spec_from_file_location("check_widgets", ROOT / "tools" / "check_widgets.py")
    cw = importlib.util.module_from_spec(cw_spec)
    cw_spec.loader.exec_module(cw)
    html = ROOT / "_build" / "_build" / "html"
    page = html / "notebooks" / "32_explorers.html"
    if not page.exists() or not _results.get("32_explorers"):
        pytest.skip("the book was not built from this session's notebooks")
    refs = cw.page_references(page.read_text())
    assert all(refs.values()), refs
    exe = cw.browser()
    if exe is None:
        pytest.skip("no headless browser (Debian: apt-get install chromium)")
    counts = cw.rendered_widgets(cw.rendered_dom(page, exe))
    assert counts["widget elements"] > 0 and counts["sliders"] > 0, counts
    (tmp_path / "notebooks").mkdir()
    shutil.copy(page, tmp_path / "notebooks" / page.name)
    shutil.copytree(html / "_static", tmp_path / "_static", ignore=shutil.ignore_patterns("embed-amd.js"))
    bare = cw.rendered_widgets(cw.rendered_dom(tmp_path / "notebooks" / page.name, exe))
    assert bare["widget elements"] == 0 and bare["sliders"] == 0, bare
