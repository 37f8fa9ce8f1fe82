#!/usr/bin/env bash
# The browser the UI tests drive (plugins/codex-ui/tests): Debian's chromium at /usr/bin/chromium, or
# the one CODEX_CHROMIUM names. Installed with apt when missing and we are root; otherwise says how.
# (Playwright's own browser download needs network access CI does not have.)
set -euo pipefail
browser=${CODEX_CHROMIUM:-/usr/bin/chromium}
if [[ -x $browser ]]; then
  exit 0
fi
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
  echo "== installing chromium with apt (for the UI's browser tests)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends chromium chromium-driver
  [[ -x /usr/bin/chromium ]] && exit 0
fi
echo "The UI's browser tests need Chromium at $browser: run 'sudo apt-get install chromium' (Debian/Ubuntu)," >&2
echo "or set CODEX_CHROMIUM to a Chromium or Chrome binary." >&2
exit 1
