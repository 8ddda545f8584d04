#!/usr/bin/env bash
# What the test suite needs beyond the Python packages: Debian's Chromium for the browser tests
# (never a test tool's own browser download) and the extension's pinned npm tools (web-ext).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x /usr/lib/chromium/chromium ] && [ -z "${UNMASK_SKIP_BROWSER:-}" ]; then
  echo "test-deps: installing Debian's chromium"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "test-deps: run as root or 'sudo apt-get install chromium' (or set UNMASK_SKIP_BROWSER=1)" >&2
  fi
fi
if command -v npm >/dev/null && [ ! -d extension/node_modules ]; then
  npm ci --prefix extension --no-audit --no-fund --loglevel=error
fi
mkdir -p artifacts
