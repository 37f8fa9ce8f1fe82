"""The request's `loras` on sd15/sdxl: the same pixels as diffusers' load_lora_weights + set_adapters,
stacked, at scale 0 equal to none, gone after the run, and a LoRA that does not fit refused (exit 2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

from codex_diffusers.testing.checkpoint_writers import write_kohya_sd_lora, write_peft_sd_lora
from codex_diffusers.testing import (cli_run, direct_pipe, loaded_family, make_unet_lora, pixels, run_json,
                                     tiny_model_dir)

REQUEST = {"prompt": "a red fox", "seed": 3, "width": 32, "height": 32, "steps": 2, "cfg": 7.0,
           "sampler": "DPM++ 2M", "scheduler": "Karras"}


@pytest.fixture(scope="module")
def lora_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("loras")
    model = tiny_model_dir("sd15")
    return {"kohya": write_kohya_sd_lora(model, folder / "kohya.safetensors", seed=1, alpha=2.0),
            "peft": write_peft_sd_lora(model, folder / "peft.safetensors", seed=2),
            "sdxl": make_unet_lora("sdxl", folder)}


def direct(adapters: list[tuple[str, float]]) -> np.ndarray:
    """The reference: diffusers' own LoRA loading on a pipeline loaded straight from the folder."""
    pipe, config = direct_pipe(StableDiffusionPipeline, tiny_model_dir("sd15"), safety_checker=None,
                               feature_extractor=None, requires_safety_checker=False)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", solver_order=2,
                                                             use_karras_sigmas=True)
    names = []
    for index, (path, scale) in enumerate(adapters):
        pipe.load_lora_weights(path, adapter_name=f"ref{index}")
        names.append(f"ref{index}")
    try:
        if names:
            pipe.set_adapters(names, adapter_weights=[scale for _, scale in adapters])
        image = pipe(prompt=REQUEST["prompt"], width=32, height=32, num_inference_steps=2, guidance_scale=7.0,
                     generator=torch.Generator("cpu").manual_seed(3)).images[0]
    finally:
        if names:
            pipe.unload_lora_weights()
    return pixels(image)


def ours(tmp_path, loras: list[dict], name: str = "run") -> np.ndarray:
    result = run_json("sd15", "txt2img", {**REQUEST, "loras": loras}, tmp_path / name)
    return pixels(result["files"][0]), result["info"]


@pytest.mark.parametrize("layout", ["kohya", "peft"])
def test_a_lora_gives_diffusers_pixels_at_its_scale(layout, lora_files, tmp_path):
    image, info = ours(tmp_path, [{"path": str(lora_files[layout]), "scale": 0.7}])
    assert np.array_equal(image, direct([(str(lora_files[layout]), 0.7)]))
    assert not np.array_equal(image, direct([]))  # it does change the output
    record = info["model"]["files"][f"lora:{layout}"]
    assert record["scale"] == 0.7 and record["hash"] == record["sha256"][:10]
    assert info["notes"]["loras"] == {"count": 1, "unloaded_after_run": True}


def test_two_loras_stack_and_scale_zero_is_no_lora(lora_files, tmp_path):
    both = [(str(lora_files["kohya"]), 0.8), (str(lora_files["peft"]), 0.5)]
    image, _ = ours(tmp_path, [{"path": path, "scale": scale} for path, scale in both], "both")
    assert np.array_equal(image, direct(both))
    off, _ = ours(tmp_path, [{"path": str(lora_files["kohya"]), "scale": 0.0}], "off")
    assert np.array_equal(off, direct([]))


def test_after_a_lora_run_the_cached_pipeline_is_the_base_bit_for_bit(lora_files, tmp_path):
    base, _ = ours(tmp_path, [], "before")
    ours(tmp_path, [{"path": str(lora_files["kohya"])}], "lora")
    unet = loaded_family("sd15").base.unet
    assert not any("lora" in name for name, _ in unet.named_modules())
    after, _ = ours(tmp_path, [], "after")
    assert np.array_equal(base, after)


def test_a_lora_by_name_from_the_loras_folder(lora_files, tmp_path, monkeypatch):
    models = tmp_path / "models"
    (models / "loras" / "styles").mkdir(parents=True)
    (models / "loras" / "styles" / "fox-style.safetensors").write_bytes(lora_files["kohya"].read_bytes())
    monkeypatch.setenv("CODEX_MODELS_DIR", str(models))
    image, info = ours(tmp_path, [{"name": "fox-style", "scale": 0.7}])
    assert np.array_equal(image, direct([(str(lora_files["kohya"]), 0.7)]))
    assert info["model"]["files"]["lora:fox-style"]["path"].endswith("styles/fox-style.safetensors")


@pytest.mark.parametrize("loras, message", [
    ([{"name": "nowhere"}], "loras.0: got {'name': 'nowhere'}: name: no loras file named 'nowhere'"),
    ([{"path": "x.safetensors", "scale": 5}], "loras.0.scale: got 5"),
    ([{"path": "lora.ckpt"}], "not a .safetensors file"),
    ([{"scale": 1.0}], "give exactly one of name"),
    ([{"path": "x.safetensors"}] * 9, "at most 8 items"),
])
def test_bad_lora_entries_exit_2_before_loading(loras, message, tmp_path):
    result = cli_run(["run", "sd15", "txt2img", "--model", "tiny", "--out", str(tmp_path),
                      "--json", __import__("json").dumps({**REQUEST, "loras": loras})])
    assert result.exit_code == 2, result.stderr
    assert message in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_lora_of_another_family_exits_2_naming_the_field_and_nothing_is_written(lora_files, tmp_path):
    result = cli_run(["run", "sd15", "txt2img", "--model", "tiny", "--out", str(tmp_path), "--json",
                      __import__("json").dumps({**REQUEST, "loras": [{"path": str(lora_files["sdxl"])}]})])
    assert result.exit_code == 2, result.stderr
    assert "loras[0]" in result.stderr and "does not fit this model" in result.stderr
    assert list(tmp_path.iterdir()) == []
    base, _ = ours(tmp_path, [], "clean")  # the failed load left nothing behind
    assert np.array_equal(base, direct([]))
