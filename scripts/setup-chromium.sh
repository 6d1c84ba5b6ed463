#!/usr/bin/env bash
# Headless Chromium for the HTML report's browser test (tests/test_report.py), installed once
# (idempotent). The test drives it over the DevTools protocol on a pipe: no chromium-driver,
# no Python package. LOADLENS_CHROMIUM=/path/to/chromium-or-chrome points the test elsewhere.
# Without root or apt, it says what to install and carries on; the test then fails and says so.
set -u
if [ -n "${LOADLENS_CHROMIUM:-}" ] && [ -x "${LOADLENS_CHROMIUM}" ]; then exit 0; fi
for name in chromium chromium-browser google-chrome; do
  command -v "$name" >/dev/null 2>&1 && exit 0
done
for app in "/Applications/Chromium.app/Contents/MacOS/Chromium" \
           "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome"; do
  [ -x "$app" ] && exit 0
done
if [ "$(uname -s)" != "Linux" ]; then
  echo "note: the report's browser test needs Chromium or Google Chrome" \
       "(e.g. brew install --cask chromium), or LOADLENS_CHROMIUM=/path/to/it" >&2
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "note: the report's browser test needs Chromium: apt-get install chromium (as root)," \
       "or set LOADLENS_CHROMIUM=/path/to/chromium" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 \
  || { apt-get update -q >/dev/null 2>&1 \
       && apt-get install -y -q --no-install-recommends chromium >/dev/null; } \
  || echo "note: could not install chromium; the report's browser test will fail until it is" >&2
exit 0
