#!/usr/bin/env bash
# System packages the test suite needs. Idempotent: each package is installed only when missing.
set -euo pipefail

# Headless browser for the approvals-page tests (playwright drives it via executable_path;
# never `playwright install`, which downloads browsers).
if [ ! -x /usr/bin/chromium ]; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium
fi
