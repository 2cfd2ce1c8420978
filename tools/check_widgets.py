#!/usr/bin/env python3
"""Check that a built book page renders its ipywidgets offline, in a real headless browser.

Loads the page from disk in Chromium with every host name unresolvable (no network), lets
its scripts run, and looks in the resulting DOM for the widgets' rendered elements (the
widget manager replaces each widget's placeholder with `jupyter-widgets` elements). With
`--screenshot`, also writes a PNG of the page.

Usage:
    python tools/check_widgets.py _build/_build/html/notebooks/32_explorers.html [--screenshot out.png]
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
OFFLINE = ["--headless", "--no-sandbox", "--disable-gpu", "--host-resolver-rules=MAP * ~NOTFOUND",
           "--virtual-time-budget=20000", "--run-all-compositor-stages-before-draw"]


def browser() -> str | None:
    return next((b for b in map(shutil.which, BROWSERS) if b), None)


def page_references(html: str) -> dict[str, bool]:
    """What a built widget page must hold without any browser: the state, the local scripts, no CDN."""
    return {"widget state": "application/vnd.jupyter.widget-state+json" in html,
            "widget views": "application/vnd.jupyter.widget-view+json" in html,
            "local require.js": bool(re.search(r'src="[^"]*_static/widgets/require\.js[?"]', html)),
            "local embed-amd.js": bool(re.search(r'src="[^"]*_static/widgets/embed-amd\.js[?"]', html)),
            "no widget CDN": not re.search(r'src="https?://[^"]*(html-manager|require\.min\.js)', html)}


def rendered_dom(page: Path, exe: str, timeout: float = 120) -> str:
    res = subprocess.run([exe, *OFFLINE, "--dump-dom", page.resolve().as_uri()], capture_output=True,
                         text=True, timeout=timeout)
    if res.returncode:
        raise RuntimeError(f"{exe} failed ({res.returncode}): {res.stderr[-1500:]}")
    return res.stdout


def rendered_widgets(dom: str) -> dict[str, int]:
    """Counts of rendered widget elements in a DOM (0 everywhere = nothing rendered)."""
    return {"widget elements": len(re.findall(r'class="[^"]*\bjupyter-widgets\b', dom)),
            "sliders": len(re.findall(r'class="[^"]*\bwidget-(?:hslider|slider|int-slider)\b', dom)),
            "tabs": len(re.findall(r'class="[^"]*\b(?:widget-tab|jupyter-widget-tab|lm-TabBar)\b', dom))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("page", type=Path, help="a built HTML page with widgets")
    ap.add_argument("--screenshot", type=Path, default=None, help="also write a PNG of the page here")
    args = ap.parse_args(argv)
    refs = page_references(args.page.read_text())
    print("page:", refs)
    exe = browser()
    if exe is None:
        print("no headless browser found (apt-get install chromium)")
        return 2
    counts = rendered_widgets(rendered_dom(args.page, exe))
    print("rendered offline:", counts)
    if args.screenshot:
        subprocess.run([exe, *OFFLINE, "--window-size=1200,2400", f"--screenshot={args.screenshot.resolve()}",
                        args.page.resolve().as_uri()], capture_output=True, timeout=120, check=True)
        print("screenshot:", args.screenshot)
    return 0 if all(refs.values()) and counts["widget elements"] and counts["sliders"] else 1


if __name__ == "__main__":
    sys.exit(main())
