#!/usr/bin/env bash
# The tests: install into .venv, lint (ruff: pyflakes, pycodestyle, import order; config in
# pyproject.toml), then pytest (unit tests, export/pair checks, every notebook executed once
# with papermill, the book rendered from those executed copies).
#   bash tools/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_venv.sh
"${AEF_VENV:-.venv}/bin/ruff" check .
"${AEF_VENV:-.venv}/bin/python" -m pytest "$@"
