#!/usr/bin/env python3
"""Vendor the JavaScript that renders ipywidgets in the built book, so pages work offline.

The book's widget pages load RequireJS and the `@jupyter-widgets/html-manager` embed bundle
from `book/_static/widgets/` (see `nb_ipywidgets_js` in `_config.yml`) instead of a CDN.
This script fetches the pinned npm packages with `npm pack` and copies the two files and
their licences there; the copies are committed, so building the book needs no network.

Usage:
    python tools/vendor_widgets.py          # (re)write book/_static/widgets/
    python tools/vendor_widgets.py --check  # exit 1 if the committed files differ from the packages
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "book" / "_static" / "widgets"
PACKAGES = {  # npm package@version -> {file in the package: name under OUT}
    "@jupyter-widgets/html-manager@1.0.14": {"package/dist/embed-amd.js": "embed-amd.js",
                                             "package/LICENSE": "html-manager.LICENSE"},
    "requirejs@2.3.7": {"package/require.js": "require.js"},  # MIT; the licence is in the file's header
}


def fetch(tmp: Path) -> dict[str, bytes]:
    """{name under OUT: bytes} of every vendored file, from `npm pack` of the pinned packages."""
    if shutil.which("npm") is None:
        raise SystemExit("vendor_widgets: npm is needed (apt-get install npm, or Node.js from nodejs.org)")
    files = {}
    for spec, wanted in PACKAGES.items():
        res = subprocess.run(["npm", "pack", "--silent", spec], cwd=tmp, capture_output=True, text=True)
        if res.returncode:
            raise SystemExit(f"vendor_widgets: npm pack {spec} failed:\n{res.stderr[-2000:]}")
        with tarfile.open(tmp / res.stdout.strip().splitlines()[-1]) as tar:
            for member, name in wanted.items():
                files[name] = tar.extractfile(member).read()
    return files


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="compare the committed files with the packages")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        files = fetch(Path(tmp))
    if args.check:
        bad = [n for n, b in files.items() if not (OUT / n).exists() or (OUT / n).read_bytes() != b]
        print("differ:" if bad else "ok: the vendored widget files match their packages", *bad)
        return 1 if bad else 0
    OUT.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (OUT / name).write_bytes(data)
        print(f"wrote {OUT.relative_to(ROOT) / name} ({len(data):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
