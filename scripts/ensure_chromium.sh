#!/usr/bin/env bash
# Make sure Debian's headless Chromium and its WebDriver are installed: the console's browser test
# (tests/integration/test_console_browser.py) drives them with Selenium.
# Quiet and idempotent when they are there; without root it only says what is missing
# (that test then skips).
set -euo pipefail

have() {
    command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1
}

if have; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
else
    echo "ensure_chromium: chromium or chromedriver missing and no root: the console browser test will skip" >&2
    echo "ensure_chromium: install them with 'apt-get install chromium chromium-driver'" >&2
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_chromium: apt-get is unavailable; install chromium and chromium-driver yourself" >&2
    exit 0
fi

echo "ensure_chromium: installing chromium and chromium-driver from the Debian archive"
${as_root[@]+"${as_root[@]}"} apt-get update -qq
${as_root[@]+"${as_root[@]}"} env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
