"""An SD 3.5 transformer from its own file (--component): diffusers key layout and GGUF Q8_0."""

from __future__ import annotations

import shutil

import numpy as np

from codex_core import get_engine
from codex_diffusers.testing import loaded_family, pixels, run_json, tiny_model_dir
from codex_diffusers.testing.checkpoint_writers import write_gguf_q8

REQUEST = {"prompt": "a fox", "width": 32, "height": 32, "seed": 3, "steps": 2, "max_sequence_length": 16}


def test_a_transformer_file_gives_the_folders_pixels_and_gguf_stays_close(tmp_path):
    base = tiny_model_dir("sd35")
    single = shutil.copy(base / "transformer" / "diffusion_pytorch_model.safetensors",
                         tmp_path / "sd35-transformer.safetensors")
    engine = get_engine("sd35")
    assert engine.component_problem("transformer", single, None) is None
    assert "not a sd35 transformer" in engine.component_problem(
        "transformer", tiny_model_dir("flux") / "transformer" / "diffusion_pytorch_model.safetensors", None)
    reference = run_json("sd35", "txt2img", REQUEST, tmp_path / "a", str(base))
    ours = run_json("sd35", "txt2img", REQUEST, tmp_path / "b", str(base), "--component", f"transformer={single}")
    assert np.array_equal(pixels(reference["files"][0]), pixels(ours["files"][0]))
    gguf = run_json("sd35", "txt2img", REQUEST, tmp_path / "c", str(base), "--component",
                    f"transformer={write_gguf_q8(base, tmp_path / 'sd35-Q8_0.gguf')}")
    assert any(type(p).__name__ == "GGUFParameter" for p in loaded_family("sd35").base.transformer.parameters())
    assert np.abs(pixels(gguf["files"][0]) - pixels(reference["files"][0])).max() <= 8
