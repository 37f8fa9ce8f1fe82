#!/usr/bin/env bash
# Build the codex-core and codex-sd wheels, install them (not editable) into a fresh venv, and check
# the installed CLI from a folder outside the source tree, so nothing can come from the checkout.
#
# Run from the repository root: `make check-wheels` (or `bash tests/check_wheels.sh`).
# Honours TORCH_SPEC / TORCH_INDEX like the Makefile, and PYTHON for the interpreter of the new venv.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_python=${BUILD_PYTHON:-$repo/.venv/bin/python}
torch_spec=${TORCH_SPEC:-torch==2.13.0}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/codex-check-wheels.XXXXXX")
trap 'echo "== removing $tmp"; rm -rf "$tmp"' EXIT
started=$SECONDS
failures=0

step() { echo "== $* ($((SECONDS - started))s)"; }
die() { echo "FAIL: $*"; exit 1; }
# Runs a setup command with its output in a log, shown only when it fails.
quietly() {
  local log=$tmp/setup.log
  "$@" >"$log" 2>&1 || { sed 's/^/    | /' "$log" | tail -n 40; return 1; }
}

# Runs one check: `check NAME COMMAND...`; the command's output is shown only when it fails. The
# command runs under `set -e` (bash ignores -e inside an `if` or `||`, hence the set +e around it).
check() {
  local name=$1 rc; shift
  set +e
  (set -e; "$@") >"$tmp/check.log" 2>&1
  rc=$?
  set -e
  if [[ $rc -eq 0 ]]; then
    echo "PASS: $name"
  else
    echo "FAIL: $name"
    sed 's/^/    | /' "$tmp/check.log" | tail -n 40
    failures=$((failures + 1))
  fi
}

step "building wheels into $tmp/wheels"
(cd "$repo" && quietly "$build_python" -m pip wheel -q --no-deps --no-build-isolation -w "$tmp/wheels" . plugins/codex-sd) \
  || die "building the wheels"
core_whl=$(ls "$tmp"/wheels/codex_core-*.whl)
sd_whl=$(ls "$tmp"/wheels/codex_sd-*.whl)

wheel_carries_presets() {
  "$build_python" - "$sd_whl" "$repo/presets" <<'EOF'
import sys, zipfile
from pathlib import Path

wheel, presets = zipfile.ZipFile(sys.argv[1]), Path(sys.argv[2])
names = set(wheel.namelist())
for engine in ("sd15", "sdxl"):
    sources = sorted((presets / engine).glob("*.yaml"))
    assert sources, f"no presets in {presets / engine}"
    for source in sources:
        member = f"codex_sd/presets/{engine}/{source.name}"
        assert member in names, f"{member} missing from {sys.argv[1]}"
        assert wheel.read(member) == source.read_bytes(), f"{member} differs from {source}"
        print("ok", member)
EOF
}
check "codex-sd wheel carries presets/sd15 and presets/sdxl" wheel_carries_presets

step "creating a fresh venv in $tmp/venv"
quietly "${PYTHON:-python3}" -m venv "$tmp/venv" || die "creating the venv"
py=$tmp/venv/bin/python
codex=$tmp/venv/bin/codex

step "installing $torch_spec"
quietly "$py" -m pip install -q --disable-pip-version-check "$torch_spec" ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} \
  || die "installing $torch_spec"
step "installing $(basename "$core_whl") and $(basename "$sd_whl") with their dependencies"
quietly "$py" -m pip install -q --disable-pip-version-check "$core_whl" "$sd_whl" || die "installing the wheels"

# From here on: outside the source tree, with nothing of the checkout or the user's setup in reach.
cd "$tmp"
unset PYTHONPATH CODEX_PRESETS_DIR CODEX_LOAD_PLUGINS CODEX_DISABLE_PLUGINS CODEX_DEBUG
for name in $(compgen -e | grep '^CODEX_MODEL_' || true); do unset "$name"; done
export CODEX_CACHE_DIR=$tmp/cache CODEX_MODELS_DIR=$tmp/models HF_HOME=$tmp/hf HF_HUB_OFFLINE=1
site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
step "checking the installed CLI from $tmp (site-packages: $site)"

installed_not_editable() {
  "$py" - "$site" <<'EOF'
import sys
from pathlib import Path

import codex_core, codex_sd

site = Path(sys.argv[1]).resolve()
for module in (codex_core, codex_sd):
    where = Path(module.__file__).resolve()
    print(module.__name__, where)
    assert where.is_relative_to(site), f"{module.__name__} imported from {where}, not from {site}"
EOF
}
check "codex_core and codex_sd import from the venv's site-packages" installed_not_editable

engines_exactly_sd() {
  "$codex" engines --json >"$tmp/engines.json"
  "$py" - "$tmp/engines.json" <<'EOF'
import json, sys

rows = json.load(open(sys.argv[1]))
keys = sorted(row["engine"] for row in rows)
print("engines:", keys)
assert keys == ["sd15", "sdxl"], keys
assert {row["distribution"] for row in rows} == {"codex-sd"}, rows
EOF
}
check "(a) codex engines --json lists exactly sd15 and sdxl" engines_exactly_sd

presets_from_wheel() {
  "$codex" presets sd15 txt2img >"$tmp/presets.json"
  "$py" - "$tmp/presets.json" "$site" "$repo/presets/sd15/txt2img.yaml" <<'EOF'
import json, sys
from pathlib import Path

import yaml

shown = json.load(open(sys.argv[1]))["txt2img"]
site, source = Path(sys.argv[2]).resolve(), Path(sys.argv[3])
print(json.dumps(shown, indent=2))
assert shown["files"], "no preset file found"
for name in shown["files"]:
    assert Path(name).resolve().is_relative_to(site), f"{name} is not inside {site}"
expected = yaml.safe_load(source.read_text())
assert shown["values"] == expected, f"values {shown['values']} != {expected} ({source})"
EOF
}
check "(b) codex presets sd15 txt2img: the values, read from the wheel in site-packages" presets_from_wheel

tiny_run() {
  "$codex" run sd15 txt2img --model tiny \
    --json '{"prompt":"x","seed":1,"width":64,"height":64,"steps":2}' --out "$tmp/out" -q >"$tmp/run.json"
  "$py" - "$tmp/run.json" "$tmp/out" <<'EOF'
import json, sys
from pathlib import Path

from PIL import Image

result = json.load(open(sys.argv[1]))
pngs = [Path(f) for f in result["files"] if f.endswith(".png")]
print("files:", result["files"])
assert len(pngs) == 1 and pngs[0].is_file(), result["files"]
assert pngs[0].resolve().is_relative_to(Path(sys.argv[2]).resolve()), pngs[0]
with Image.open(pngs[0]) as image:
    assert image.format == "PNG" and image.size == (64, 64), (image.format, image.size)
assert result["info"]["steps_done"] == 2, result["info"]["steps_done"]
EOF
}
check "(c) tiny sd15 txt2img run writes a 64x64 PNG" tiny_run

missing_engine_hint() {
  local rc=0
  "$codex" run wan_ti2v_5b txt2vid --json '{"prompt":"x"}' >"$tmp/wan.out" 2>"$tmp/wan.err" || rc=$?
  cat "$tmp/wan.err"
  [[ $rc -eq 2 ]] || { echo "exit status $rc, expected 2"; return 1; }
  grep -qF 'pip install codex-wan' "$tmp/wan.err" || { echo "stderr lacks 'pip install codex-wan'"; return 1; }
}
check "(d) an engine that is not installed exits 2 with 'pip install codex-wan'" missing_engine_hint

echo "== done in $((SECONDS - started))s: $failures check(s) failed"
[[ $failures -eq 0 ]] && echo "PASS: check-wheels" || { echo "FAIL: check-wheels"; exit 1; }
