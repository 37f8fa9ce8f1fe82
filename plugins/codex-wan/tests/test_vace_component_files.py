"""VACE transformer files for wan_vace (--component): diffusers layout (pixel-equal to the folder) and GGUF Q8_0
(close), attributed to wan_vace by their VACE keys; a plain Wan transformer file is not a VACE one. Wan LoRAs
(original layout) load through diffusers' Wan LoRA loader, which WanVACEPipeline has."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from codex_diffusers.testing import cli_run, loaded_family, pixels, run_json, tiny_model_dir
from codex_diffusers.testing.checkpoint_writers import write_gguf_q8, write_wan_lora, write_wan_transformer_original

pytestmark = pytest.mark.slow

REQUEST = {"prompt": "waves", "seed": 2, "width": 32, "height": 32, "num_frames": 5, "steps": 2}


def frames(result) -> list[np.ndarray]:
    return [pixels(f"{result['run_dir']}/frames/{index:04d}.png") for index in range(REQUEST["num_frames"])]


def run(tmp_path, name, base, *extra):
    return run_json("wan_vace", "txt2vid", REQUEST, tmp_path / name, str(base), "--format", "frames", *extra)


def test_vace_transformer_files_diffusers_layout_and_gguf(tmp_path, monkeypatch):
    base = tiny_model_dir("wan_vace")
    models = tmp_path / "models"
    (models / "diffusion_models").mkdir(parents=True)
    file = models / "diffusion_models" / "vace_tiny.safetensors"
    shutil.copy(base / "transformer" / "diffusion_pytorch_model.safetensors", file)
    reference = run(tmp_path, "folder", base)
    ours = run(tmp_path, "file", base, "--component", f"transformer={file}")
    assert all(np.array_equal(a, b) for a, b in zip(frames(ours), frames(reference)))
    assert ours["info"]["model"]["components"] == {"transformer": str(file)}

    gguf = write_gguf_q8(base, tmp_path / "vace-Q8_0.gguf")
    quantised = run(tmp_path, "gguf", base, "--component", f"transformer={gguf}")
    assert "GGUFParameter" in {type(p).__name__ for p in loaded_family("wan_vace").base.transformer.parameters()}
    diff = max(np.abs(a - b).max() for a, b in zip(frames(quantised), frames(reference)))
    assert diff <= 8, diff  # 8-bit weights: close to the float model, not equal

    monkeypatch.setenv("CODEX_MODELS_DIR", str(models))
    rows = {row["name"]: row for row in json.loads(cli_run(["models", "--json", "--no-hash"]).stdout)}
    assert "wan_vace" in rows["vace_tiny"]["engines"]


def test_a_vace_transformer_in_the_wan_ai_comfyui_layout_gives_the_folders_pixels(tmp_path):
    """Original key names (vace_blocks.N.before_proj/after_proj, model.diffusion_model. prefix), as Wan-AI and
    ComfyUI ship VACE files: diffusers' single-file loader converts them."""
    base = tiny_model_dir("wan_vace")
    original = write_wan_transformer_original(base, tmp_path / "wan2.1_vace_tiny.safetensors")
    ours = run(tmp_path, "file", base, "--component", f"transformer={original}")
    reference = run(tmp_path, "folder", base)
    assert all(np.array_equal(a, b) for a, b in zip(frames(ours), frames(reference)))


def test_a_plain_wan_transformer_is_not_a_vace_one(tmp_path):
    plain = write_wan_transformer_original(tiny_model_dir("wan_t2v_14b"), tmp_path / "wan_t2v.safetensors")
    result = cli_run(["run", "wan_vace", "txt2vid", "--model", str(tiny_model_dir("wan_vace")), "--component",
                      f"transformer={plain}", "--json", json.dumps(REQUEST)])
    assert result.exit_code == 2, result.stderr
    assert "not a wan_vace transformer" in result.stderr


def test_a_wan_lora_changes_the_vace_output_and_is_undone(tmp_path):
    base = tiny_model_dir("wan_vace")
    lora = write_wan_lora(base, tmp_path / "wan_lora.safetensors", seed=4)

    def run_with(name, scale):
        request = {**REQUEST, "loras": [{"path": str(lora), "scale": scale}]} if scale is not None else REQUEST
        return frames(run_json("wan_vace", "txt2vid", request, tmp_path / name, "tiny", "--format", "frames"))

    plain, styled, off = run_with("plain", None), run_with("styled", 1.0), run_with("off", 0.0)
    assert not all(np.array_equal(a, b) for a, b in zip(plain, styled))
    assert all(np.array_equal(a, b) for a, b in zip(plain, off))
    assert not any("lora" in name for name, _ in loaded_family("wan_vace").base.transformer.named_modules())
