"""Transformer-only files for Wan (--component): original Wan-AI key layout and GGUF Q8_0, with a base
folder for the other components; Wan LoRAs in the original layout through the request's loras."""

from __future__ import annotations

import json

import numpy as np
import pytest

from codex_diffusers.testing.checkpoint_writers import write_gguf_q8, write_wan_lora, write_wan_transformer_original
from codex_diffusers.testing import cli_run, loaded_family, pixels, run_json, tiny_model_dir

pytestmark = pytest.mark.slow

REQUEST = {"prompt": "waves", "seed": 2, "width": 32, "height": 32, "num_frames": 5, "steps": 2}


def frames(result) -> list[np.ndarray]:
    folder = result["run_dir"] + "/frames"
    return [pixels(f"{folder}/{index:04d}.png") for index in range(REQUEST["num_frames"])]


@pytest.fixture(scope="module")
def base():
    return tiny_model_dir("wan_ti2v_5b")


def run(tmp_path, name, *extra, request=REQUEST, model=None, base_dir=None):
    return run_json("wan_ti2v_5b", "txt2vid", request, tmp_path / name, str(model or base_dir), "--format", "frames",
                    *extra)


def test_an_original_layout_transformer_file_gives_the_folders_pixels(base, tmp_path):
    original = write_wan_transformer_original(base, tmp_path / "wan_transformer.safetensors")
    ours = run(tmp_path, "a", "--component", f"transformer={original}", model=base)
    reference = run(tmp_path, "b", model=base)
    assert all(np.array_equal(a, b) for a, b in zip(frames(ours), frames(reference)))
    files = ours["info"]["model"]["files"]
    assert files["component:transformer"]["path"] == str(original)
    assert ours["info"]["model"]["components"] == {"transformer": str(original)}


def test_a_gguf_q8_transformer_loads_quantised_and_stays_close(base, tmp_path):
    gguf = write_gguf_q8(base, tmp_path / "wan-Q8_0.gguf")
    reference = run(tmp_path, "b", model=base)
    ours = run(tmp_path, "a", "--component", f"transformer={gguf}", model=base)
    quantised = [type(p).__name__ for p in loaded_family("wan_ti2v_5b").base.transformer.parameters()]
    assert "GGUFParameter" in quantised  # the weights stay 8-bit, dequantised per layer as they run
    diff = max(np.abs(a - b).max() for a, b in zip(frames(ours), frames(reference)))
    assert diff <= 8, diff  # 8-bit weights: close to the float model, not equal
    assert ours["info"]["model"]["files"]["component:transformer"]["bytes"] == gguf.stat().st_size


def test_a_component_by_name_from_the_diffusion_models_folder(base, tmp_path, monkeypatch):
    models = tmp_path / "models"
    write_wan_transformer_original(base, models / "diffusion_models" / "wan22_5b_tiny.safetensors")
    monkeypatch.setenv("CODEX_MODELS_DIR", str(models))
    ours = run(tmp_path, "a", "--component", "transformer=wan22_5b_tiny", model=base)
    assert ours["info"]["model"]["components"]["transformer"].endswith("diffusion_models/wan22_5b_tiny.safetensors")
    rows = {row["name"]: row for row in json.loads(cli_run(["models", "--json", "--no-hash"]).stdout)}
    assert set(rows["wan22_5b_tiny"]["engines"]) >= {"wan_ti2v_5b"}


@pytest.mark.parametrize("component, message", [
    ("unet=x.safetensors", "has no replaceable component 'unet'; allowed: transformer"),
    ("transformer", "expected NAME=FILE"),
    ("transformer=nowhere", "no diffusion_models file named 'nowhere'"),
])
def test_bad_component_options_exit_2(base, component, message, tmp_path):
    result = cli_run(["run", "wan_ti2v_5b", "txt2vid", "--model", str(base), "--component", component,
                      "--json", json.dumps(REQUEST)])
    assert result.exit_code == 2 and message in result.stderr


def test_a_wan_lora_in_the_original_layout_changes_the_output_and_is_undone(base, tmp_path):
    lora = write_wan_lora(base, tmp_path / "wan_lora.safetensors", seed=4)
    plain = run(tmp_path, "a", model=base)
    styled = run(tmp_path, "b", model=base, request={**REQUEST, "loras": [{"path": str(lora), "scale": 1.0}]})
    assert not all(np.array_equal(a, b) for a, b in zip(frames(plain), frames(styled)))
    off = run(tmp_path, "c", model=base, request={**REQUEST, "loras": [{"path": str(lora), "scale": 0.0}]})
    assert all(np.array_equal(a, b) for a, b in zip(frames(plain), frames(off)))
    again = run(tmp_path, "d", model=base)
    assert all(np.array_equal(a, b) for a, b in zip(frames(plain), frames(again)))


def test_an_a14b_lora_goes_into_the_expert_it_names(tmp_path):
    base = tiny_model_dir("wan_t2v_14b")
    lora = write_wan_lora(base, tmp_path / "low_noise.safetensors", seed=6, subfolder="transformer_2")
    request = {"prompt": "waves", "seed": 2, "width": 32, "height": 32, "num_frames": 5, "steps": 4}

    def run_a14b(name, **extra):
        result = run_json("wan_t2v_14b", "txt2vid", {**request, **extra}, tmp_path / name, "tiny", "--format", "frames")
        return [pixels(f"{result['run_dir']}/frames/{index:04d}.png") for index in range(5)]

    plain = run_a14b("plain")
    low = run_a14b("low", loras=[{"path": str(lora), "into": "transformer_2"}])
    high = run_a14b("high", loras=[{"path": str(lora)}])
    assert not all(np.array_equal(a, b) for a, b in zip(plain, low))
    assert not all(np.array_equal(a, b) for a, b in zip(low, high))  # another expert, another output
    transformer_2 = loaded_family("wan_t2v_14b").base.transformer_2
    assert not any("lora" in name for name, _ in transformer_2.named_modules())  # unloaded after the run
    assert all(np.array_equal(a, b) for a, b in zip(plain, run_a14b("again")))
    refused = cli_run(["run", "wan_ti2v_5b", "txt2vid", "--model", "tiny", "--json",
                       json.dumps({**REQUEST, "loras": [{"path": str(lora), "into": "transformer_2"}]})])
    assert refused.exit_code == 2 and "loras.0.into: got 'transformer_2'" in refused.stderr
