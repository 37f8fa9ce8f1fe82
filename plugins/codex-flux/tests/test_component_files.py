"""A FLUX.1 transformer from its own file (--component): diffusers key layout and GGUF Q8_0.

The original BFL layout is not tested: diffusers' converter for it hard-codes the full width (3072)."""

from __future__ import annotations

import shutil

import numpy as np

from codex_diffusers.testing.checkpoint_writers import write_gguf_q8
from codex_diffusers.testing import loaded_family, pixels, run_json, tiny_model_dir

REQUEST = {"prompt": "a fox", "width": 32, "height": 32, "seed": 3, "steps": 2}


def test_a_transformer_file_in_diffusers_layout_gives_the_folders_pixels_and_gguf_stays_close(tmp_path):
    base = tiny_model_dir("flux")
    single = tmp_path / "flux-transformer.safetensors"
    shutil.copy(base / "transformer" / "diffusion_pytorch_model.safetensors", single)
    reference = run_json("flux", "txt2img", REQUEST, tmp_path / "a", str(base))
    ours = run_json("flux", "txt2img", REQUEST, tmp_path / "b", str(base), "--component", f"transformer={single}")
    assert np.array_equal(pixels(reference["files"][0]), pixels(ours["files"][0]))
    gguf = run_json("flux", "txt2img", REQUEST, tmp_path / "c", str(base), "--component",
                    f"transformer={write_gguf_q8(base, tmp_path / 'flux-Q8_0.gguf')}")
    assert any(type(p).__name__ == "GGUFParameter" for p in loaded_family("flux").base.transformer.parameters())
    assert np.abs(pixels(gguf["files"][0]) - pixels(reference["files"][0])).max() <= 8


def test_a_kontext_transformer_file_runs_edit_on_a_flux1_folder(tmp_path):
    """ComfyUI users keep FLUX.1 Kontext as one transformer file: with a FLUX.1 folder's other components it edits,
    equal to the folder's own transformer (the same file here)."""
    from codex_core.testing import write_test_image

    base = tiny_model_dir("flux")
    single = tmp_path / "flux1-kontext-dev.safetensors"
    shutil.copy(base / "transformer" / "diffusion_pytorch_model.safetensors", single)
    request = {"prompt": "x", "images": [str(write_test_image(tmp_path / "ref.png", (48, 32), seed=2))],
               "width": 32, "height": 32, "seed": 3, "steps": 2, "max_sequence_length": 8}
    ours = run_json("flux", "edit", request, tmp_path / "a", str(base), "--component", f"transformer={single}")
    reference = run_json("flux", "edit", request, tmp_path / "b", "tiny")
    assert np.array_equal(pixels(reference["files"][0]), pixels(ours["files"][0]))
