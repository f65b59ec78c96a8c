#!/usr/bin/env bash
# System packages the browser tests need (Debian's chromium; never a downloaded browser).
# Installs only what is missing; without root it says what to install and the browser tests skip.
set -uo pipefail
if [ -x /usr/bin/chromium ]; then exit 0; fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "==> installing chromium (Debian package) for the browser tests"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: could not install chromium; browser tests will report it" >&2
else
  echo "note: /usr/bin/chromium missing; run 'sudo apt-get install -y chromium' for the browser tests" >&2
fi
exit 0
