#!/usr/bin/env bash
# Make Debian's chromium available for the dashboard's browser test (tests/app/test_dashboard.py,
# driven by Playwright with executable_path; no `playwright install` download). Installs the
# `chromium` package with apt-get when it is missing and this runs as root; otherwise warns, and
# the browser test skips and says why. Never fails the CI run by itself.
set -uo pipefail

if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
  echo "warning: chromium is not installed and this is not a root Debian shell (apt-get install chromium);" \
       "the dashboard's browser test will be skipped" >&2
  exit 0
fi
echo "chromium.sh: installing Debian's chromium for the dashboard's browser test" >&2
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -q chromium >/dev/null 2>&1; then
  apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1
fi
if ! command -v chromium >/dev/null 2>&1; then
  echo "warning: apt-get could not install chromium; the dashboard's browser test will be skipped" >&2
fi
