#!/usr/bin/env bash
# Create the virtual environment ($AEF_VENV, default .venv) and install aef-lit with its
# dev and text extras. torch is pinned by constraints.txt (a CPU wheel on the project's
# machines). Re-running is cheap: it reinstalls only when pyproject/constraints change.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${AEF_VENV:-.venv}
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.aef-installed"
want=$(cat pyproject.toml constraints.txt | sha1sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -c constraints.txt -e ".[dev,text]"
  "$VENV/bin/python" -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (ipykernel)" >/dev/null
  echo "$want" > "$stamp"
fi
