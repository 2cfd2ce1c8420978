#!/usr/bin/env bash
# The main job: install into .venv, execute every notebook once (papermill), build the book.
#   bash tools/main.sh [extra args for `tools/book.py all`, e.g. -p preset small]
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_venv.sh
"${AEF_VENV:-.venv}/bin/python" tools/book.py all "$@"
