"""Presets fill only what a request leaves out, and every preset is valid for its engine."""

from pathlib import Path

import pytest

from codex_core import presets, registry
from codex_core.orchestrator import prepare
from codex_core.testing import write_test_image

REPO_PRESETS = Path(__file__).resolve().parents[1] / "presets"


def test_fill_only_never_changes_a_given_field_and_patch_lists_exactly_the_rest():
    spec = registry.get_engine("sd15")
    request = {"prompt": "x", "steps": 3, "cfg": 1.5}
    filled = presets.fill(spec, "txt2img", request)
    preset = presets.load_preset(spec.presets_dir / "txt2img.yaml")
    assert filled.request["steps"] == 3 and filled.request["cfg"] == 1.5
    assert filled.patch == {k: v for k, v in preset.items() if k not in request}
    assert filled.files == [str(spec.presets_dir / "txt2img.yaml")]


def test_a_requested_sampler_does_not_get_the_presets_schedule_type():
    spec = registry.get_engine("sd15")
    filled = presets.fill(spec, "txt2img", {"prompt": "x", "sampler": "Euler a"})
    assert "scheduler" not in filled.patch and "sampler" not in filled.patch


def test_engine_presets_are_the_repository_presets():
    assert registry.get_engine("sd15").presets_dir.resolve() == REPO_PRESETS / "sd15"


@pytest.mark.parametrize("preset", sorted(REPO_PRESETS.glob("*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_preset_validates_against_its_engine_schema(preset, tmp_path):
    engine, task = preset.parent.name, preset.name.split(".")[0]
    spec = registry.get_engine(engine)
    assert task in spec.tasks
    first_line = preset.read_text().splitlines()[0]
    assert first_line.startswith("#"), "each preset says where its values come from"
    inputs = {"init_image": write_test_image(tmp_path / "i.png", (64, 64)),
              "mask_image": write_test_image(tmp_path / "m.png", (64, 64), mode="L")}
    fields = spec.params_model(task).model_fields
    request = {"prompt": "x", **{k: v for k, v in inputs.items() if k in fields}}
    prepared = prepare(engine, task, request)  # raises on any preset value the schema rejects
    assert set(presets.load_preset(preset)) <= set(prepared.params.model_dump())
