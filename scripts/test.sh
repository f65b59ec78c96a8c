#!/usr/bin/env bash
# Command 2 of the README: set up and run the whole test suite.
# Tests needing PostgreSQL (127.0.0.1:5432) or Redis (127.0.0.1:6379) skip with a reason when those
# are absent; USDCOP_REQUIRE_SERVICES=1 (set by .ci/run) turns such a skip into a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
bash scripts/system-deps.sh
. .venv/bin/activate
set +e
python -m pytest -n "${USDCOP_TEST_WORKERS:-2}" "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "no tests were collected" >&2; exit 1; fi
exit "$rc"
