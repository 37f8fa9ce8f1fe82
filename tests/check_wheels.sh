#!/usr/bin/env bash
# Build the wheels of codex-core, the codex-diffusers kit and every engine plugin, and show that each
# plugin installs and works alone: in one fresh venv (torch installed once), each plugin in turn is
# installed from its wheel with codex-core and the kit, everything it does not require is removed, and
# the installed CLI is checked from a folder outside the source tree, so nothing can come from the
# checkout. Then the plugin is uninstalled before the next one. codex-core alone is checked first,
# before torch, and then with a torch-free third-party engine (tests/example_engine). Last, the
# engine template: `codex new-engine` from the kit's wheel, built as a wheel, installed, and its own
# conformance tests run.
#
# Run from the repository root: `make check-wheels` (or `bash tests/check_wheels.sh`).
# Honours TORCH_SPEC / TORCH_INDEX like the Makefile, and PYTHON for the interpreter of the new venv.
set -euo pipefail

# One row per plugin: the folder plugins/codex-<NAME> and distribution codex-<NAME> (package
# codex_<NAME>); the engines it must register, exactly (each with its presets/<engine>/ folder);
# and one cheap tiny-model run: engine, task, output format, request. The run must write one file of
# that format with the request's width x height (and num_frames frames for a video), after `steps`
# steps. {init} in a request is an RGB image made here with Pillow.
PLUGINS=(
  # name  | engines                              | engine        | task    | format | request
  'sd      | sd15 sdxl sd35                       | sd15          | txt2img | png | {"prompt":"x","seed":1,"width":64,"height":64,"steps":2}'
  'flux    | flux                                 | flux          | txt2img | png | {"prompt":"x","seed":1,"width":32,"height":32,"steps":2,"max_sequence_length":16}'
  'flux2   | flux2 flux2_klein                    | flux2_klein   | txt2img | png | {"prompt":"x","seed":1,"width":32,"height":32,"steps":2,"max_sequence_length":32}'
  'wan     | wan_ti2v_5b wan_t2v_14b wan_i2v_14b wan_vace wan_animate | wan_ti2v_5b | img2vid | mp4 | {"prompt":"x","init_image":"{init}","seed":1,"width":32,"height":32,"num_frames":5,"steps":2}'
  'hunyuan | hunyuan_video hunyuan_video_15       | hunyuan_video | txt2vid | mp4 | {"prompt":"x","seed":1,"width":32,"height":16,"num_frames":5,"steps":2}'
  'svd     | svd                                  | svd           | img2vid | mp4 | {"init_image":"{init}","seed":1,"width":32,"height":32,"num_frames":3,"steps":2}'
  'ltx     | ltx_video ltx2                       | ltx2          | txt2vid | mp4 | {"prompt":"x","seed":1,"width":64,"height":64,"num_frames":9,"steps":2,"max_sequence_length":128,"modality_scale":1.0}'
  'qwen    | qwen_image                           | qwen_image    | txt2img | png | {"prompt":"x","seed":1,"width":32,"height":32,"steps":2,"max_sequence_length":16}'
  'zimage  | z_image                              | z_image       | txt2img | png | {"prompt":"x","seed":1,"width":32,"height":32,"steps":2,"max_sequence_length":16}'
  'chroma  | chroma                               | chroma        | txt2img | png | {"prompt":"x","seed":1,"width":32,"height":32,"steps":2,"max_sequence_length":16}'
  'krea    | krea2                                | krea2         | txt2img | png | {"prompt":"x","seed":1,"width":32,"height":32,"steps":2,"max_sequence_length":16}'
)
# Packages under plugins/ that are not engine plugins: the kit every plugin depends on, the web UI
# (checked on its own below), and the template.
KIT=codex-diffusers
UI=codex-ui
NOT_PLUGINS=("$KIT" "$UI" _template)

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_python=${BUILD_PYTHON:-$repo/.venv/bin/python}
torch_spec=${TORCH_SPEC:-torch==2.13.0}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/codex-check-wheels.XXXXXX")
trap 'echo "== removing $tmp"; rm -rf "$tmp"' EXIT
started=$SECONDS
failures=0

step() { echo "== $* ($((SECONDS - started))s)"; }
die() { echo "FAIL: $*"; echo "FAIL: check-wheels"; exit 1; }
# Runs a setup command with its output in a log, shown only when it fails.
quietly() {
  local log=$tmp/setup.log
  "$@" >"$log" 2>&1 || { sed 's/^/    | /' "$log" | tail -n 40; return 1; }
}
trim() { local s=$1; s=${s#"${s%%[![:space:]]*}"}; echo "${s%"${s##*[![:space:]]}"}"; }

# Runs one check: `check NAME COMMAND...`; the command's output is shown only when it fails. The
# command runs under `set -e` (bash ignores -e inside an `if` or `||`, hence the set +e around it).
check() {
  local title=$1 rc; shift
  set +e
  (set -e; "$@") >"$tmp/check.log" 2>&1
  rc=$?
  set -e
  if [[ $rc -eq 0 ]]; then
    echo "PASS: $title"
  else
    echo "FAIL: $title"
    sed 's/^/    | /' "$tmp/check.log" | tail -n 40
    failures=$((failures + 1))
  fi
}

# The table, parsed: names in order, and per name its engines, run engine, task, format, request.
declare -a names=()
declare -A engines_of=() run_engine=() run_task=() run_format=() run_request=() package_of=()
for row in "${PLUGINS[@]}"; do
  IFS='|' read -r name engines engine task format request <<<"$row"
  name=$(trim "$name")
  names+=("$name")
  engines_of[$name]=$(trim "$engines")
  run_engine[$name]=$(trim "$engine") run_task[$name]=$(trim "$task")
  run_format[$name]=$(trim "$format") run_request[$name]=$(trim "$request")
  for key in ${engines_of[$name]}; do package_of[$key]=codex-$name; done
done

table_covers_the_plugins() {
  local found listed
  found=$(cd "$repo/plugins" && ls -d */pyproject.toml | sed 's|/pyproject.toml$||' \
    | grep -vxF -f <(printf '%s\n' "${NOT_PLUGINS[@]}") | sort | tr '\n' ' ')
  listed=$(printf 'codex-%s\n' "${names[@]}" | sort | tr '\n' ' ')
  echo "plugins/: $found"
  echo "table:    $listed"
  [[ $found == "$listed" ]]
}
check "[table] one row per folder under plugins/" table_covers_the_plugins

step "building wheels into $tmp/wheels"
(cd "$repo" && quietly "$build_python" -m pip wheel -q --no-deps --no-build-isolation -w "$tmp/wheels" \
  . "plugins/$KIT" "plugins/$UI" tests/example_engine $(printf 'plugins/codex-%s ' "${names[@]}")) \
  || die "building the wheels"
core_whl=$(ls "$tmp"/wheels/codex_core-*.whl)
kit_whl=$(ls "$tmp"/wheels/codex_diffusers-*.whl)
example_whl=$(ls "$tmp"/wheels/codex_example_engine-*.whl)
ui_whl=$(ls "$tmp"/wheels/codex_ui-*.whl)
declare -A wheel_of=()
for name in "${names[@]}"; do wheel_of[$name]=$(ls "$tmp"/wheels/codex_"$name"-*.whl); done

step "creating a fresh venv in $tmp/venv"
quietly "${PYTHON:-python3}" -m venv "$tmp/venv" || die "creating the venv"
py=$tmp/venv/bin/python
codex=$tmp/venv/bin/codex
pip_install() { quietly "$py" -m pip install -q --disable-pip-version-check "$@"; }
pip_uninstall() { quietly "$py" -m pip uninstall -y -q --disable-pip-version-check "$@"; }

# From here on: outside the source tree, with nothing of the checkout or the user's setup in reach.
cd "$tmp"
unset PYTHONPATH CODEX_PRESETS_DIR CODEX_LOAD_PLUGINS CODEX_DISABLE_PLUGINS CODEX_DEBUG
for var in $(compgen -e | grep '^CODEX_MODEL_' || true); do unset "$var"; done
export CODEX_CACHE_DIR=$tmp/cache CODEX_MODELS_DIR=$tmp/models HF_HOME=$tmp/hf HF_HUB_OFFLINE=1
site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# What the bare venv holds (pip, setuptools): kept when pruning the environment down to one plugin.
baseline=$("$py" -c 'from importlib.metadata import distributions as d; print(*sorted({x.metadata["Name"] for x in d()}))')

# `missing_engine_hint ENGINE TASK PACKAGE`: running an engine that is not installed exits 2 and
# names the package to install.
missing_engine_hint() {
  local engine=$1 task=$2 package=$3 rc=0
  "$codex" run "$engine" "$task" --json '{"prompt":"x"}' >"$tmp/missing.out" 2>"$tmp/missing.err" || rc=$?
  cat "$tmp/missing.err"
  [[ $rc -eq 2 ]] || { echo "exit status $rc, expected 2"; return 1; }
  grep -qF "pip install $package" "$tmp/missing.err" || { echo "stderr lacks 'pip install $package'"; return 1; }
}

# ---- codex-core alone (no torch, no plugin) ----
step "installing $(basename "$core_whl") alone"
pip_install "$core_whl" || die "installing codex-core"

core_alone() {
  "$codex" engines --json >"$tmp/engines.json"
  "$py" - "$tmp/engines.json" "$site" <<'EOF'
import json, sys
from importlib.util import find_spec
from pathlib import Path

import codex_core

print("engines:", json.load(open(sys.argv[1])))
assert json.load(open(sys.argv[1])) == [], "engines registered without any plugin"
where = Path(codex_core.__file__).resolve()
assert where.is_relative_to(Path(sys.argv[2]).resolve()), f"codex_core imported from {where}"
assert find_spec("torch") is None, "torch is installed with codex-core alone"
EOF
}
check "[core] codex-core alone: from site-packages, no torch, codex engines --json lists none" core_alone

table_matches_the_catalog() {
  local pairs
  pairs=$(for key in "${!package_of[@]}"; do echo "$key=${package_of[$key]}"; done)
  "$py" - $pairs <<'EOF'
import sys
from codex_core.registry import known_engine_packages

table = dict(arg.split("=", 1) for arg in sys.argv[1:])
print("table:  ", sorted(table.items()))
print("catalog:", sorted(known_engine_packages().items()))
assert table == known_engine_packages()
EOF
}
check "[core] the table's engines and packages are the wheel's engine catalog (install hints)" table_matches_the_catalog
first=${names[0]}
check "[core] (d) ${run_engine[$first]} exits 2 with 'pip install codex-$first'" \
  missing_engine_hint "${run_engine[$first]}" "${run_task[$first]}" "codex-$first"

step "installing $(basename "$example_whl") (a torch-free third-party engine) with codex-core"
pip_install "$example_whl" || die "installing the example engine"

core_with_a_torch_free_engine() {
  "$codex" engines --json >"$tmp/engines.json"
  "$codex" schema example_gradient txt2img >"$tmp/schema.json"
  "$codex" presets example_gradient >"$tmp/presets.json"
  "$codex" run example_gradient txt2img --model tiny -q --out "$tmp/out-example" \
    --json '{"prompt":"x","seed":1,"width":24,"height":16}' >"$tmp/run.json"
  "$py" - "$tmp" <<'EOF'
import json, sys
from importlib.util import find_spec
from pathlib import Path

tmp = Path(sys.argv[1])
engines = json.loads((tmp / "engines.json").read_text())
print("engines:", [(e["engine"], e["distribution"]) for e in engines])
assert [e["engine"] for e in engines] == ["example_gradient"]
schema = json.loads((tmp / "schema.json").read_text())
assert schema["title"] == "example_gradient txt2img request" and schema["required"] == ["prompt"], schema
presets = json.loads((tmp / "presets.json").read_text())
assert presets["txt2img"]["values"]["steps"], presets
run = json.loads((tmp / "run.json").read_text())
assert run["info"]["engine"] == "example_gradient" and Path(run["files"][0]).is_file(), run
assert find_spec("torch") is None and find_spec("numpy") is None, "torch or numpy is installed"
EOF
}
check "[core] codex-core + a torch-free engine: engines, schema, presets and a run work without torch or numpy" \
  core_with_a_torch_free_engine
pip_uninstall codex-example-engine || die "uninstalling the example engine"

# ---- the web UI with codex-core alone: its command is there, and says what it lacks ----
step "installing $(basename "$ui_whl") with codex-core (no engine, no torch)"
pip_install "$core_whl" "$ui_whl" || die "installing codex-ui"
ui_alone() {
  "$codex" ui --help >"$tmp/ui-help.txt"
  grep -q "Run the web UI" "$tmp/ui-help.txt" || { cat "$tmp/ui-help.txt"; return 1; }
  "$codex" plugins --json | "$py" -c 'import json, sys; rows = json.load(sys.stdin); print(rows); assert any(r["name"] == "ui" and r["distribution"] == "codex-ui" and "error" not in r for r in rows)'
  local rc=0
  "$codex" ui --port 0 --state-dir "$tmp/ui-state" >"$tmp/ui.out" 2>"$tmp/ui.err" || rc=$?
  cat "$tmp/ui.err"
  [[ $rc -eq 2 ]] && grep -q "no engines installed" "$tmp/ui.err"
  "$py" -c 'from importlib.util import find_spec; assert find_spec("torch") is None, "torch came with codex-ui"'
}
check "[ui] codex-ui with codex-core alone: codex ui --help works; without an engine it exits 2 saying so" ui_alone
pip_uninstall codex-ui || die "uninstalling codex-ui"

step "installing $torch_spec"
pip_install "$torch_spec" ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} || die "installing $torch_spec"

# ---- each plugin alone ----
"$py" -c 'from PIL import Image; Image.new("RGB", (48, 40), (200, 120, 40)).save("init.png")'

# Prints, one a line, what is installed but neither the baseline nor required (recursively, extras
# and markers included) by distribution $1: what a fresh `pip install $1` would not have brought.
not_required_by() {
  "$py" - "$1" $baseline <<'EOF'
import sys
from importlib.metadata import distributions

try:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
except ImportError:  # the same code pip resolves with
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name

installed = {canonicalize_name(d.metadata["Name"]): d for d in distributions()}
needed, seen, todo = set(), set(), [(canonicalize_name(sys.argv[1]), "")]
while todo:
    name, extra = todo.pop()
    if (name, extra) in seen:
        continue
    seen.add((name, extra))
    needed.add(name)
    for text in (installed[name].requires or []) if name in installed else []:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({"extra": extra}):
            todo += [(canonicalize_name(req.name), e) for e in ("", *req.extras)]
for name in sorted(set(installed) - needed - {canonicalize_name(n) for n in sys.argv[2:]}):
    print(name)
EOF
}

environment_is_consistent() {
  "$py" -m pip check --disable-pip-version-check
  local extra
  extra=$(not_required_by "$dist")
  [[ -z $extra ]] || { echo "installed but not required by $dist:" $extra; return 1; }
}

imports_from_site() {
  "$py" - "$site" "codex_$name" <<'EOF'
import importlib, sys
from pathlib import Path

site = Path(sys.argv[1]).resolve()
for module in ("codex_core", sys.argv[2]):
    where = Path(importlib.import_module(module).__file__).resolve()
    print(module, where)
    assert where.is_relative_to(site), f"{module} imported from {where}, not from {site}"
EOF
}

engines_exactly() {
  "$codex" engines --json >"$tmp/engines.json"
  "$codex" plugins --json >"$tmp/plugins.json"
  "$py" - "$tmp/engines.json" "$tmp/plugins.json" "$dist" ${engines_of[$name]} <<'EOF'
import json, sys

rows, plugins = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
dist, expected = sys.argv[3], sorted(sys.argv[4:])
keys = sorted(row["engine"] for row in rows)
print("engines:", keys, "from", sorted({row["distribution"] for row in rows}))
assert keys == expected, f"{keys} != {expected}"
assert {row["distribution"] for row in rows} == {dist}, rows
errors = [row for row in plugins if "error" in row]
assert not errors, f"plugins failed to load: {errors}"
EOF
}

wheel_carries_presets() {
  "$py" - "${wheel_of[$name]}" "codex_$name" "$repo/presets" ${engines_of[$name]} <<'EOF'
import sys, zipfile
from pathlib import Path

wheel, package, presets = zipfile.ZipFile(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
names = wheel.namelist()
for engine in sys.argv[4:]:
    folder = presets / engine
    sources = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}
    assert sources, f"no presets in {folder}"
    prefix = f"{package}/presets/{engine}/"
    members = {n[len(prefix):] for n in names if n.startswith(prefix) and not n.endswith("/")}
    assert members == set(sources), (f"{prefix}: missing {sorted(set(sources) - members)}, "
                                     f"extra {sorted(members - set(sources))}")
    for rel, source in sorted(sources.items()):
        assert wheel.read(prefix + rel) == source.read_bytes(), f"{prefix + rel} differs from {source}"
        print("ok", prefix + rel)
EOF
}

# `codex presets` finds every preset file of presets/<engine>/ (variants, modes and profiles
# included), each one in site-packages and byte-identical to the source; base presets' values are
# the file's.
presets_from_site() {
  "$py" - "$codex" "$site" "$repo/presets" ${engines_of[$name]} <<'EOF'
import json, subprocess, sys
from pathlib import Path

import yaml

codex, site, presets = sys.argv[1], Path(sys.argv[2]).resolve(), Path(sys.argv[3])
for engine in sys.argv[4:]:
    folder = presets / engine
    sources = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*.yaml")}
    calls = [[]]  # `codex presets ENGINE`: every task and variant, base files
    for rel in sources:
        *variant, file = rel.split("/")
        task, at, profile = file.removesuffix(".yaml").partition("@")
        task, dot, mode = task.partition(".")
        if at or dot:
            calls.append([task, *(["--variant", *variant] if variant else []),
                          *(["--mode", mode] if dot else []), *(["--preset", profile] if at else [])])
    found = {}
    for args in calls:
        shown = subprocess.run([codex, "presets", engine, *args], capture_output=True, text=True)
        assert shown.returncode == 0, f"codex presets {engine} {' '.join(args)}: {shown.stderr}"
        for key, entry in json.loads(shown.stdout).items():
            assert entry["files"], f"codex presets {engine} {' '.join(args)}: no file for {key}"
            for name in entry["files"]:
                path = Path(name).resolve()
                assert path.is_relative_to(site), f"{name} is not inside {site}"
                rel = path.as_posix().split(f"/presets/{engine}/", 1)[1]
                found[rel] = path
                print(f"{engine} {' '.join(args)} [{key}]: {rel} -> {path}")
            if not args:  # base presets: one file each, whose values they are
                assert len(entry["files"]) == 1, entry["files"]
                expected = yaml.safe_load(sources[rel].read_text())
                assert entry["values"] == expected, f"{key}: values {entry['values']} != {expected}"
    assert set(found) == set(sources), (f"{engine}: not shown {sorted(set(sources) - set(found))}, "
                                        f"unknown {sorted(set(found) - set(sources))}")
    for rel, path in found.items():
        assert path.read_bytes() == sources[rel].read_bytes(), f"{path} differs from {sources[rel]}"
EOF
}

tiny_run() {
  local request=${run_request[$name]//\{init\}/$tmp/init.png}
  "$codex" run "${run_engine[$name]}" "${run_task[$name]}" --model tiny --json "$request" \
    --format "${run_format[$name]}" --out "$tmp/out-$name" -q >"$tmp/run.json"
  "$py" - "$tmp/run.json" "$tmp/out-$name" "${run_format[$name]}" "$request" <<'EOF'
import json, sys
from pathlib import Path

result, out, fmt, request = json.load(open(sys.argv[1])), Path(sys.argv[2]).resolve(), sys.argv[3], json.loads(sys.argv[4])
size = (request["width"], request["height"])
files = [Path(f) for f in result["files"] if f.endswith("." + fmt)]
print("files:", result["files"])
assert len(files) == 1 and files[0].is_file(), result["files"]
assert files[0].resolve().is_relative_to(out), files[0]
if fmt == "png":
    from PIL import Image

    with Image.open(files[0]) as image:
        assert image.format == "PNG" and image.size == size, (image.format, image.size)
else:  # decode the whole video with ffmpeg: what a player sees
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(files[0]))
    meta = next(reader)
    frames = sum(1 for _ in reader)
    print("video:", meta["codec"], meta["size"], frames, "frames")
    assert tuple(meta["size"]) == size and frames == request["num_frames"], (meta["size"], frames)
assert result["info"]["steps_done"] == request["steps"], result["info"]["steps_done"]
EOF
}

for i in "${!names[@]}"; do
  name=${names[$i]} dist=codex-${names[$i]}
  other=${names[$(((i + 1) % ${#names[@]}))]}
  step "[$name] installing $(basename "${wheel_of[$name]}") with codex-core, the kit and their dependencies"
  pip_install "$core_whl" "$kit_whl" "${wheel_of[$name]}" || die "installing $dist"
  pruned=$(not_required_by "$dist" | tr '\n' ' ')
  if [[ -n $pruned ]]; then
    step "[$name] removing what $dist does not require: $pruned"
    pip_uninstall $pruned || die "removing $pruned"
  fi
  check "[$name] only $dist's requirements are installed, and pip check passes" environment_is_consistent
  check "[$name] codex_core and codex_$name import from the venv's site-packages" imports_from_site
  check "[$name] (a) codex engines --json lists exactly ${engines_of[$name]// /, } from $dist" engines_exactly
  check "[$name] (b) the wheel carries every file of presets/{${engines_of[$name]// /,}}/, byte-identical" \
    wheel_carries_presets
  check "[$name] (b) codex presets shows each of those files, read from site-packages" presets_from_site
  expect="one ${run_format[$name]}"
  [[ ${run_request[$name]} =~ \"width\":([0-9]+) ]] && expect+=" ${BASH_REMATCH[1]}"
  [[ ${run_request[$name]} =~ \"height\":([0-9]+) ]] && expect+="x${BASH_REMATCH[1]}"
  [[ ${run_request[$name]} =~ \"num_frames\":([0-9]+) ]] && expect+=" of ${BASH_REMATCH[1]} frames"
  check "[$name] (c) tiny ${run_engine[$name]} ${run_task[$name]} run exits 0 and writes $expect" tiny_run
  check "[$name] (d) ${run_engine[$other]} (not installed) exits 2 with 'pip install codex-$other'" \
    missing_engine_hint "${run_engine[$other]}" "${run_task[$other]}" "codex-$other"
  pip_uninstall "$dist" || die "uninstalling $dist"
done

# ---- the engine template, from the kit's wheel ----
step "[template] codex new-engine from $(basename "$kit_whl"), built as a wheel and installed"
pip_install "$core_whl" "$kit_whl[testing]" || die "installing the kit"
template_engine() {
  local folder
  folder=$("$codex" new-engine wheel_pix --dest "$tmp/new") || return 1
  "$build_python" -m pip wheel -q --no-deps --no-build-isolation --disable-pip-version-check \
    -w "$tmp/template-wheel" "$folder" || return 1
  pip_install "$tmp"/template-wheel/codex_wheel_pix-*.whl || return 1
  "$codex" engines --json | "$py" -c 'import json, sys; keys = [r["engine"] for r in json.load(sys.stdin)]; print(keys); assert "wheel_pix" in keys'
  (cd "$folder" && "$py" -m pytest -q -p no:randomly tests)
}
check "[template] the new engine installs from its wheel, is listed, and passes its conformance tests" template_engine

echo "== done in $((SECONDS - started))s: $failures check(s) failed"
[[ $failures -eq 0 ]] && echo "PASS: check-wheels" || { echo "FAIL: check-wheels"; exit 1; }
