#!/usr/bin/env bash
# Idempotent set-up of a fresh machine: a virtualenv in .venv with the package and its test extras.
# torch is installed first with an exact pin so pip takes the CPU build on disk (a looser spec
# would pull a multi-GB CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $PY"
  "$PY" -m venv .venv
fi
. .venv/bin/activate
stamp=.venv/.usdcop-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "==> installing dependencies (first run takes a few minutes)"
  python -m pip install --quiet --upgrade pip
  python -m pip install --quiet "torch==2.13.0"
  python -m pip install --quiet -e ".[test]"
  echo "$want" > "$stamp"
fi
