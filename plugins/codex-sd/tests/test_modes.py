"""Speed modes on sd15/sdxl: LCM checkpoints are recognised, accelerator LoRAs apply for a mode and are
unloaded after it, and a mode the checkpoint cannot honour runs as normal with the normal presets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import LCMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

from codex_core import RunOptions, get_engine, prepare
from codex_core.testing import unload_models_from
from codex_diffusers.testing import (cli_run, loaded_family, make_unet_lora, pixels, run_json, write_test_image)
from codex_sd import tiny


def detect_modes(folder: Path) -> set[str]:
    return get_engine("sdxl").checkpoint_modes(folder)

PRESETS = Path(__file__).resolve().parents[3] / "presets"
BUILDERS = {"sd15": (tiny.build_sd15, StableDiffusionPipeline, {"safety_checker": None,
                                                                "requires_safety_checker": False}),
            "sdxl": (tiny.build_sdxl, StableDiffusionXLPipeline, {})}


@pytest.fixture(scope="module")
def lcm_models(tmp_path_factory):
    """Tiny SD 1.5 and SDXL whose UNets embed the guidance scale, as LCM-distilled UNets do."""
    root = tmp_path_factory.mktemp("lcm")
    for engine, (build, _, _) in BUILDERS.items():
        build(root / engine, time_cond_proj_dim=32)
    yield root
    unload_models_from(root)  # other tests look up the tiny one


@pytest.mark.parametrize("engine", ["sd15", "sdxl"])
def test_lcm_checkpoint_is_recognised_and_equals_diffusers_with_lcm_scheduler(engine, lcm_models, tmp_path):
    folder = lcm_models / engine
    assert json.loads((folder / "unet" / "config.json").read_text())["time_cond_proj_dim"] == 32
    assert detect_modes(folder) == {"lcm"}
    request = {"prompt": "a red fox", "width": 32, "height": 32, "seed": 3, "mode": "lcm"}
    info = run_json(engine, "txt2img", request, tmp_path / "out", str(folder))["info"]
    assert info["mode"] == "lcm" and info["mode_ignored_reason"] is None
    assert info["preset_files"] == [str(PRESETS / engine / "txt2img.lcm.yaml"), str(PRESETS / engine / "txt2img.yaml")]
    assert info["scheduler_effective"]["class"] == "LCMScheduler"
    assert (info["request"]["steps"], info["request"]["cfg"]) == (4, 1.5)
    assert info["steps_done"] == 4

    _, pipeline_cls, overrides = BUILDERS[engine]
    pipe = pipeline_cls.from_pretrained(folder, **overrides)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    direct = pipe(prompt="a red fox", negative_prompt=None, num_inference_steps=4, guidance_scale=1.5, width=32,
                  height=32, num_images_per_prompt=1, generator=torch.Generator("cpu").manual_seed(3)).images[0]
    assert np.array_equal(pixels(info["outputs"][0]), pixels(direct))


@pytest.fixture(scope="module")
def loras(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lora")
    return {engine: make_unet_lora(engine, folder) for engine in BUILDERS}


@pytest.fixture(scope="module")
def lora_file(loras):
    return loras["sd15"]


def _unet_has_lora(engine: str) -> bool:
    return any("lora" in name for name, _ in loaded_family(engine).base.unet.named_modules())


@pytest.mark.parametrize("engine, task", [("sd15", "txt2img"), ("sdxl", "txt2img"), ("sd15", "img2img")])
def test_mode_lora_changes_the_output_scale_zero_does_not_and_it_is_unloaded(engine, task, loras, tmp_path):
    lora = str(loras[engine])
    base = {"prompt": "a red fox", "seed": 5}
    if task == "txt2img":
        base.update(width=32, height=32)
    else:
        base.update(init_image=write_test_image(tmp_path / "init.png", (32, 32), seed=2))
    # what the lcm preset fills, asked for explicitly in normal mode
    normal = {**base, "steps": 4, "cfg": 1.5, "sampler": "LCM", "scheduler": "Automatic"}
    plain = run_json(engine, task, normal, tmp_path / "a")
    with_lora = run_json(engine, task, {**base, "mode": "lcm", "mode_lora": {"path": lora, "scale": 1.0}},
                         tmp_path / "b")
    info = with_lora["info"]
    assert info["mode"] == "lcm" and info["mode_ignored_reason"] is None
    assert info["scheduler_effective"]["class"] == "LCMScheduler" and info["request"]["steps"] == 4
    assert info["notes"]["mode_lora"] == {"path": lora, "scale": 1.0, "mode": "lcm", "unloaded_after_run": True}
    assert not np.array_equal(pixels(plain["files"][0]), pixels(with_lora["files"][0]))
    assert not _unet_has_lora(engine)  # the cached pipeline is clean for the next request

    off = run_json(engine, task, {**base, "mode": "lcm", "mode_lora": {"path": lora, "scale": 0.0}}, tmp_path / "c")
    assert np.array_equal(pixels(plain["files"][0]), pixels(off["files"][0]))
    again = run_json(engine, task, normal, tmp_path / "d")
    assert np.array_equal(pixels(plain["files"][0]), pixels(again["files"][0]))


@pytest.mark.parametrize("mode_lora, message", [
    ({"path": "{tmp}/x.bin"}, "not a .safetensors file"),
    ({"path": "{tmp}/missing.safetensors"}, "no such file"),
    ({"path": "{lora}", "weight": 1.0}, "weight"),
    ({"path": "{lora}", "scale": "1"}, "scale"),
    ("{lora}", "mode_lora"),
])
def test_mode_lora_is_strict(mode_lora, message, lora_file, tmp_path):
    (tmp_path / "x.bin").write_bytes(b"")
    text = json.dumps(mode_lora).replace("{tmp}", str(tmp_path)).replace("{lora}", str(lora_file))
    request = f'{{"prompt": "x", "mode": "lcm", "mode_lora": {text}}}'
    result = cli_run(["run", "sd15", "txt2img", "--model", "tiny", "-q", "--out", str(tmp_path / "out"),
                      "--json", request])
    assert result.exit_code == 2 and message in result.stderr
    assert not (tmp_path / "out").exists()


def test_mode_lora_needs_a_mode(lora_file, tmp_path):
    result = cli_run(["run", "sd15", "txt2img", "--model", "tiny", "-q", "--json",
                      json.dumps({"prompt": "x", "mode_lora": {"path": str(lora_file)}})])
    assert result.exit_code == 2 and "needs a speed mode" in result.stderr


def test_unsupported_mode_is_ignored_with_reason_and_normal_presets(tmp_path):
    result = cli_run(["run", "sd15", "txt2img", "--model", "tiny", "--out", str(tmp_path / "out"), "--json",
                      json.dumps({"prompt": "x", "width": 32, "height": 32, "seed": 1, "mode": "lcm"})])
    assert result.exit_code == 0, result.stderr
    info = json.loads(result.stdout)["info"]
    assert info["mode"] == "normal" and info["mode_requested"] == "lcm"
    reason = info["mode_ignored_reason"]
    assert "not supported by the checkpoint tiny" in reason and "mode_lora" in reason and "LCM checkpoint" in reason
    assert f"codex: warning: {reason}" in result.stderr
    assert info["preset_files"] == [str(PRESETS / "sd15" / "txt2img.yaml")]  # the normal presets
    assert (info["request"]["steps"], info["request"]["cfg"], info["request"]["sampler"]) == (25, 7.0, "DPM++ 2M")
    assert info["scheduler_effective"]["class"] == "DPMSolverMultistepScheduler"


def test_mode_the_engine_does_not_honour_is_ignored_with_reason():
    prepared = prepare("sd15", "txt2img", {"prompt": "x", "mode": "lightning"}, RunOptions(model="tiny"))
    assert prepared.params.mode == "normal" and prepared.plan.info["mode_requested"] == "lightning"
    assert "SDXL-Lightning exists only for SDXL" in prepared.plan.info["mode_ignored_reason"]
    assert prepared.params.steps == 25 and prepared.params.sampler == "DPM++ 2M"


def _fake_checkpoint(folder: Path, scheduler: dict, unet: dict) -> Path:
    (folder / "unet").mkdir(parents=True)
    (folder / "scheduler").mkdir()
    (folder / "model_index.json").write_text('{"_class_name": "StableDiffusionXLPipeline"}')
    (folder / "unet" / "config.json").write_text(json.dumps(unet))
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler))
    return folder


@pytest.mark.parametrize("mode, steps, sampler, schedule", [("turbo", 1, "Euler a", "Simple"),
                                                            ("lightning", 4, "Euler", "Simple")])
def test_trailing_spacing_checkpoint_gets_the_mode_presets_at_prepare_time(tmp_path, mode, steps, sampler,
                                                                           schedule):
    """A Turbo/Lightning folder (trailing timesteps in its scheduler config) is recognised without loading."""
    folder = _fake_checkpoint(tmp_path / "turbo", {"_class_name": "EulerAncestralDiscreteScheduler",
                                                   "timestep_spacing": "trailing"}, {"time_cond_proj_dim": None})
    assert detect_modes(folder) == {"turbo", "lightning"}
    prepared = prepare("sdxl", "txt2img", {"prompt": "x", "mode": mode}, RunOptions(model=str(folder)))
    assert prepared.plan.info["mode_ignored_reason"] is None and prepared.params.mode == mode
    assert (prepared.params.steps, prepared.params.cfg, prepared.params.sampler, prepared.params.scheduler) == (
        steps, 0.0, sampler, schedule)
    assert prepared.scheduler.flags["timestep_spacing"] == "trailing"
    assert prepared.source.path == folder.resolve()  # resolved once, reused by execute
    # a request's own steps win over the mode preset
    assert prepare("sdxl", "txt2img", {"prompt": "x", "mode": mode, "steps": 2},
                   RunOptions(model=str(folder))).params.steps == 2


def test_base_checkpoint_supports_no_mode_by_itself(tmp_path):
    folder = _fake_checkpoint(tmp_path / "base", {"_class_name": "EulerDiscreteScheduler",
                                                  "timestep_spacing": "leading"}, {"time_cond_proj_dim": None})
    assert detect_modes(folder) == set()
    assert detect_modes(tmp_path / "nothing-here") == set()
    prepared = prepare("sdxl", "txt2img", {"prompt": "x", "mode": "turbo"}, RunOptions(model=str(folder)))
    assert prepared.params.mode == "normal" and "SD-Turbo / SDXL-Turbo checkpoint" in prepared.plan.info["mode_ignored_reason"]
    assert prepared.params.steps == 30 and prepared.params.cfg == 6.0


def test_sd_engines_have_a_hint_for_every_mode():
    for key in ("sd15", "sdxl"):
        engine = get_engine(key)
        assert set(engine.mode_hints) >= set(engine.modes)
