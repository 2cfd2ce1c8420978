"""Shared by the tools: re-run a tool under the project's venv when jupytext is missing."""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def reexec_in_venv() -> None:
    """Without jupytext here (a bare system python), re-run this script under the venv."""
    try:
        import jupytext  # noqa: F401
    except ImportError:
        venv_py = ROOT / os.environ.get("AEF_VENV", ".venv") / "bin" / "python"
        if venv_py.exists() and Path(sys.prefix).resolve() != venv_py.parent.parent.resolve():
            os.execv(str(venv_py), [str(venv_py), *sys.argv])
        raise SystemExit("jupytext is missing: run `bash tools/setup_venv.sh` first")
