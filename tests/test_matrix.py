"""The preset matrix (engine x task x mode) and the generated docs/param-matrix.md."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import copy

from codex_core import matrix, registry
from codex_core.testing import cli_run

SPECS = matrix.first_party_specs()
MODES = matrix.modes_of(SPECS)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.key)
def test_every_honoured_mode_has_a_preset_and_every_other_mode_a_reason(spec):
    rows = matrix.mode_matrix([spec])
    assert [(r["task"], r["mode"]) for r in rows] == [(t, m) for t in spec.tasks for m in MODES]
    missing = [f"{r['engine']} {r['task']} {r['mode']}: {r['reason']}" for r in rows if r["status"] == "missing"]
    assert not missing, "an honoured engine x task x mode needs presets/<engine>/[<variant>/]<task>.<mode>.yaml"
    for row in rows:
        if row["mode"] in ("normal", *spec.modes):
            assert row["status"] == "preset" and row["files"]
            assert len(row["files"]) == max(1, len(spec.variants))  # in every variant folder
        else:
            assert row["status"] == "unsupported" and row["reason"]


def test_a_missing_mode_preset_is_reported(tmp_path):
    (tmp_path / "txt2img.yaml").write_text("# x\nsteps: 1\n")
    spec = copy.copy(registry.get_engine("sdxl"))
    spec.presets_dir = tmp_path
    rows = {(r["task"], r["mode"]): r for r in matrix.mode_matrix([spec])}
    assert rows[("txt2img", "normal")]["status"] == "preset"
    assert rows[("txt2img", "lcm")]["status"] == "missing"
    assert "sdxl/txt2img.lcm.yaml" in rows[("txt2img", "lcm")]["reason"]


def test_sd_modes_are_declared():
    assert registry.get_engine("sd15").all_modes == ("normal", "lcm", "turbo")
    assert registry.get_engine("sdxl").all_modes == tuple(MODES) == ("normal", "lcm", "turbo", "lightning")
    assert "SDXL" in registry.get_engine("sd15").unsupported_reason("lightning")
    assert registry.get_engine("sdxl").unsupported_reason("lcm") is None


def test_presets_matrix_command_table_and_json():
    result = cli_run(["presets", "--matrix"])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["engine", "task", *MODES]
    assert "sd15 lightning: SDXL-Lightning exists only for SDXL" in result.stdout
    sd15 = next(line.split() for line in lines if line.startswith("sd15 ") and "txt2img" in line)
    assert sd15 == ["sd15", "txt2img", "preset", "preset", "preset", "unsupported"]
    rows = json.loads(cli_run(["presets", "sdxl", "txt2img", "--matrix", "--json"]).stdout)
    assert [(r["mode"], r["status"], r["files"]) for r in rows] == [
        ("normal", "preset", ["sdxl/txt2img.yaml"]), ("lcm", "preset", ["sdxl/txt2img.lcm.yaml"]),
        ("turbo", "preset", ["sdxl/txt2img.turbo.yaml"]), ("lightning", "preset", ["sdxl/txt2img.lightning.yaml"])]
    assert cli_run(["presets"]).exit_code == 2


def test_checked_in_param_matrix_is_up_to_date():
    expected = matrix.param_matrix_markdown()
    assert matrix.DOC_PATH.read_text(encoding="utf-8") == expected, (
        "docs/param-matrix.md is stale: regenerate it with `python -m codex_core.matrix --write` "
        "(or `codex docs param-matrix > docs/param-matrix.md`)")
    assert cli_run(["docs", "param-matrix"]).stdout == expected


def test_param_matrix_is_deterministic_and_torch_free():
    script = ("import sys; from codex_core.matrix import param_matrix_markdown as m; a = m(); "
              "assert a == m(); heavy = [x for x in ('torch', 'diffusers', 'transformers') if x in sys.modules]; "
              "assert not heavy, heavy; sys.stdout.write(a)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out == matrix.DOC_PATH.read_text(encoding="utf-8")
    assert "/work/" not in out and "0.1.0" not in out  # no paths or versions that differ between machines


def test_param_matrix_lists_fields_with_types_ranges_and_presets():
    text = matrix.DOC_PATH.read_text(encoding="utf-8")
    assert [line.removeprefix("## ") for line in text.splitlines() if line.startswith("## ") and
            line != "## Speed modes"] == [s.key for s in SPECS]
    assert "| `steps` | preset fills | integer | >= 1 and <= 1000 |  | 25, lcm: 4, turbo: 1 |" in text
    assert "| `cfg` | preset fills | number | >= 0.0 and <= 50.0 |  | dev: 3.5, schnell: 0.0 |" in text


def test_checked_in_engine_catalog_is_up_to_date():
    """Install hints for engines that are not installed come from this generated file, not from core code."""
    assert matrix.CATALOG_PATH.read_text(encoding="utf-8") == matrix.engine_catalog_json(), (
        "codex_core/engine_catalog.json is stale: regenerate it with `python -m codex_core.matrix --write-catalog`")
    assert cli_run(["docs", "engine-catalog"]).stdout == matrix.engine_catalog_json()
