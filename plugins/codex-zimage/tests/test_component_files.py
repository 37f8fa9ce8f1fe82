"""A Z-Image transformer from its own file (--component): diffusers layout, the original/ComfyUI layout and
GGUF Q8_0; `codex models` attributes such files to z_image."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from codex_core import get_engine
from codex_diffusers.testing import cli_run, loaded_family, pixels, run_json, tiny_model_dir
from codex_diffusers.testing.checkpoint_writers import write_gguf_q8

REQUEST = {"prompt": "a fox", "width": 32, "height": 32, "seed": 3, "steps": 2, "max_sequence_length": 16}

# diffusers -> original (Tongyi's code, ComfyUI's diffusion_models files): the inverse of diffusers'
# convert_z_image_transformer_checkpoint_to_diffusers
RENAMES = {"all_final_layer.2-1.": "final_layer.", "all_x_embedder.2-1.": "x_embedder.",
           ".attention.to_out.0.": ".attention.out.", ".attention.norm_k.": ".attention.k_norm.",
           ".attention.norm_q.": ".attention.q_norm."}


def write_original_layout(folder: Path, dest: Path) -> Path:
    """The tiny transformer with the original key names and fused q/k/v, as Z-Image files in ComfyUI's layout."""
    state = load_file(folder / "transformer" / "diffusion_pytorch_model.safetensors")
    out = {}
    for key, value in state.items():
        if ".attention.to_k." in key or ".attention.to_v." in key:
            continue
        if ".attention.to_q." in key:
            parts = [state[key.replace("to_q", name)] for name in ("to_q", "to_k", "to_v")]
            out[key.replace(".to_q.", ".qkv.")] = torch.cat(parts, dim=0)
            continue
        for old, new in RENAMES.items():
            key = key.replace(old, new)
        out[key] = value
    save_file(out, dest)
    return dest


def test_a_transformer_file_in_diffusers_or_original_layout_gives_the_folders_pixels_and_gguf_stays_close(tmp_path):
    base = tiny_model_dir("z_image")
    reference = run_json("z_image", "txt2img", REQUEST, tmp_path / "a", str(base))
    single = tmp_path / "z_image-transformer.safetensors"
    shutil.copy(base / "transformer" / "diffusion_pytorch_model.safetensors", single)
    original = write_original_layout(base, tmp_path / "z_image_turbo_comfy.safetensors")
    assert any(".attention.qkv." in key for key in load_file(original))
    for name, path in (("b", single), ("c", original)):
        ours = run_json("z_image", "txt2img", REQUEST, tmp_path / name, str(base), "--component", f"transformer={path}")
        assert np.array_equal(pixels(reference["files"][0]), pixels(ours["files"][0])), path.name
    gguf = run_json("z_image", "txt2img", REQUEST, tmp_path / "d", str(base), "--component",
                    f"transformer={write_gguf_q8(base, tmp_path / 'z_image-Q8_0.gguf')}")
    assert any(type(p).__name__ == "GGUFParameter" for p in loaded_family("z_image").base.transformer.parameters())
    assert np.abs(pixels(gguf["files"][0]) - pixels(reference["files"][0])).max() <= 8


def test_codex_models_attributes_z_image_transformer_files_and_not_others(tmp_path, monkeypatch):
    base = tiny_model_dir("z_image")
    models = tmp_path / "models"
    (models / "diffusion_models").mkdir(parents=True)
    write_original_layout(base, models / "diffusion_models" / "zimage_comfy.safetensors")
    shutil.copy(base / "transformer" / "diffusion_pytorch_model.safetensors",
                models / "diffusion_models" / "zimage_diffusers.safetensors")
    shutil.copy(tiny_model_dir("flux") / "transformer" / "diffusion_pytorch_model.safetensors",
                models / "diffusion_models" / "flux_transformer.safetensors")
    monkeypatch.setenv("CODEX_MODELS_DIR", str(models))
    rows = {row["name"]: row for row in json.loads(cli_run(["models", "--json", "--no-hash"]).stdout)}
    assert "z_image" in rows["zimage_comfy"]["engines"] and "z_image" in rows["zimage_diffusers"]["engines"]
    assert "z_image" not in rows["flux_transformer"]["engines"]
    problem = get_engine("z_image").component_problem("transformer",
                                                      models / "diffusion_models" / "flux_transformer.safetensors", None)
    assert problem and "x_pad_token" in problem
