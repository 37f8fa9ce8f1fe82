"""Speed modes are the engine's vocabulary: an engine declares a mode the kit has never heard of ("hyper").

The engine is registered in-process and nothing is built or loaded: `codex schema`, validation
(``orchestrator.prepare``, which stops before loading) and the preset matrix read only the declaration,
a model_index.json and two preset files.
"""

from __future__ import annotations

import json

import pytest

from codex_core import ParamError, RunOptions, Txt2ImgParams, get_engine, hookimpl, prepare, validate_params
from codex_core.testing import cli_run, registered
from codex_diffusers import DiffusersEngine, SpeedModes, mode_fields


class HyperTxt2Img(Txt2ImgParams, mode_fields("hyper")):
    size_multiple = 8


class HyperEngine(SpeedModes, DiffusersEngine):
    key = "hyper_test"
    family = "hyper-test"
    tasks = {"txt2img": HyperTxt2Img}
    sampler_family = "discrete"
    modes = ("hyper",)
    pipelines = {"txt2img": "StableDiffusionPipeline"}


@pytest.fixture
def hyper(tmp_path):
    """The engine registered by an in-test plugin, with its presets and a checkpoint folder (configs only)."""
    engine = HyperEngine()
    engine.presets_dir = tmp_path / "presets"
    engine.presets_dir.mkdir()
    (engine.presets_dir / "txt2img.yaml").write_text("# normal\nsteps: 20\ncfg: 7.0\nwidth: 64\nheight: 64\n"
                                                     "sampler: Euler\n")
    (engine.presets_dir / "txt2img.hyper.yaml").write_text("# hyper: few steps\nsteps: 4\n")
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))

    class InTestPlugin:
        @hookimpl
        def codex_register_engines(self, register):
            register(engine)

    with registered(InTestPlugin(), "in-test-hyper"):
        assert get_engine("hyper_test") is engine
        yield engine, RunOptions(model=str(checkpoint), out=tmp_path / "out")


def test_the_schema_enum_is_normal_and_the_engines_modes(hyper):
    result = cli_run(["schema", "hyper_test", "txt2img"])
    assert result.exit_code == 0, result.stderr
    properties = json.loads(result.stdout)["properties"]
    assert properties["mode"]["enum"] == ["normal", "hyper"]
    assert "needs mode hyper" in json.dumps(properties["mode_lora"])


def test_the_engines_mode_validates_and_its_preset_layer_applies(hyper):
    _, options = hyper
    prepared = prepare("hyper_test", "txt2img", {"prompt": "x", "mode": "hyper"}, options)
    assert prepared.params.mode == "hyper" and prepared.params.steps == 4
    assert prepared.plan.info == {"mode": "hyper", "mode_requested": "hyper", "mode_ignored_reason": None}
    assert prepare("hyper_test", "txt2img", {"prompt": "x"}, options).params.steps == 20


def test_another_engines_mode_is_refused_naming_the_allowed_ones(hyper):
    _, options = hyper
    with pytest.raises(ParamError) as caught:
        prepare("hyper_test", "txt2img", {"prompt": "x", "mode": "lcm"}, options)
    assert "mode: got 'lcm'" in str(caught.value) and "allowed: one of 'normal', 'hyper'" in str(caught.value)


def test_mode_lora_without_a_mode_names_the_engines_modes(tmp_path):
    pytest.importorskip("peft")  # ModeLora checks it can be loaded
    lora = tmp_path / "hyper_lora.safetensors"
    lora.write_bytes(b"")
    with pytest.raises(ParamError) as caught:
        validate_params(HyperTxt2Img, {"prompt": "x", "steps": 2, "cfg": 1.0, "width": 64, "height": 64,
                                "mode_lora": {"path": str(lora)}}, "hyper_test", "txt2img")
    assert 'mode_lora: needs a speed mode ("mode": "hyper")' in str(caught.value)


def test_the_matrix_has_the_engines_modes(hyper):
    rows = json.loads(cli_run(["presets", "hyper_test", "--matrix", "--json"]).stdout)
    status = {row["mode"]: row["status"] for row in rows}  # every installed engine's modes are columns
    assert (status["normal"], status["hyper"], status["lcm"]) == ("preset", "preset", "unsupported")


def test_params_that_do_not_allow_the_engines_modes_are_a_declaration_problem():
    class Mismatched(HyperEngine):
        key = "mismatched_test"
        mode_unsupported = {"turbo": "no turbo distillation of this model"}

    problems = Mismatched().problems()
    assert problems == ["task 'txt2img': its mode field allows hyper besides normal, the engine knows hyper, turbo "
                        "(modes and mode_unsupported): mix mode_fields('hyper', 'turbo') into its params"]
    assert HyperEngine().problems() == []
