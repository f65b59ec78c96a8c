#!/usr/bin/env bash
# Command 1 of the README: set up and run the whole graph on the embedded defaults
# (SQLite, local parquet lake, synthetic data, smoke experiment with a small training budget).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
. .venv/bin/activate
exec usdcop demo "$@"
