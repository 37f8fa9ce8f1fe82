"""A Chroma transformer from its own file (--component): diffusers key layout and GGUF Q8_0; `codex models`
attributes such files to chroma.

The original (lodestones/ComfyUI) layout is not run: diffusers' converter for it hard-codes the full width
(3072), so it cannot be exercised at tiny size; its keys carry the same marker (distilled_guidance_layer.)."""

from __future__ import annotations

import json
import shutil

import numpy as np

from codex_core import get_engine
from codex_diffusers.testing import cli_run, loaded_family, pixels, run_json, tiny_model_dir
from codex_diffusers.testing.checkpoint_writers import write_gguf_q8

REQUEST = {"prompt": "a fox", "width": 32, "height": 32, "seed": 3, "steps": 2, "max_sequence_length": 16}


def test_a_transformer_file_in_diffusers_layout_gives_the_folders_pixels_and_gguf_stays_close(tmp_path):
    base = tiny_model_dir("chroma")
    single = tmp_path / "chroma-transformer.safetensors"
    shutil.copy(base / "transformer" / "diffusion_pytorch_model.safetensors", single)
    reference = run_json("chroma", "txt2img", REQUEST, tmp_path / "a", str(base))
    ours = run_json("chroma", "txt2img", REQUEST, tmp_path / "b", str(base), "--component", f"transformer={single}")
    assert np.array_equal(pixels(reference["files"][0]), pixels(ours["files"][0]))
    gguf = run_json("chroma", "txt2img", REQUEST, tmp_path / "c", str(base), "--component",
                    f"transformer={write_gguf_q8(base, tmp_path / 'chroma-Q8_0.gguf')}")
    assert any(type(p).__name__ == "GGUFParameter" for p in loaded_family("chroma").base.transformer.parameters())
    assert np.abs(pixels(gguf["files"][0]) - pixels(reference["files"][0])).max() <= 8


def test_codex_models_attributes_chroma_transformer_files_and_not_flux_ones(tmp_path, monkeypatch):
    models = tmp_path / "models"
    (models / "diffusion_models").mkdir(parents=True)
    shutil.copy(tiny_model_dir("chroma") / "transformer" / "diffusion_pytorch_model.safetensors",
                models / "diffusion_models" / "chroma_tiny.safetensors")
    shutil.copy(tiny_model_dir("flux") / "transformer" / "diffusion_pytorch_model.safetensors",
                models / "diffusion_models" / "flux_transformer.safetensors")
    monkeypatch.setenv("CODEX_MODELS_DIR", str(models))
    rows = {row["name"]: row for row in json.loads(cli_run(["models", "--json", "--no-hash"]).stdout)}
    assert "chroma" in rows["chroma_tiny"]["engines"]
    assert "chroma" not in rows["flux_transformer"]["engines"]
    problem = get_engine("chroma").component_problem("transformer",
                                                     models / "diffusion_models" / "flux_transformer.safetensors", None)
    assert problem and "distilled_guidance_layer." in problem
