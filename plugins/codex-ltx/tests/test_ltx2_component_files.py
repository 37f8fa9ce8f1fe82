"""An LTX-2 transformer from its own file (--component): diffusers key layout (pixel-equal) and GGUF Q8_0 (close).

The original / ComfyUI layout is recognised by its key names (``codex models``); loading one is diffusers'
converter's business and needs the full-size model's keys, so it is not run at tiny size here."""

from __future__ import annotations

import shutil

import numpy as np

from codex_core import get_engine
from codex_diffusers.testing import loaded_family, pixels, run_json, tiny_model_dir
from codex_diffusers.testing.checkpoint_writers import write_gguf_q8

REQUEST = {"prompt": "a fox", "width": 64, "height": 64, "num_frames": 9, "seed": 3, "steps": 2,
           "max_sequence_length": 128, "modality_scale": 1.0}
FORMATS = ("--format", "frames")


def frames(result):
    return [pixels(f) for f in sorted(f for f in result["files"] if "/frames/" in f)]


def test_a_transformer_file_in_diffusers_layout_gives_the_folders_pixels_and_gguf_stays_close(tmp_path):
    base = tiny_model_dir("ltx2")
    single = tmp_path / "ltx-2-transformer.safetensors"
    shutil.copy(base / "transformer" / "diffusion_pytorch_model.safetensors", single)
    reference = run_json("ltx2", "txt2vid", REQUEST, tmp_path / "a", str(base), *FORMATS)
    ours = run_json("ltx2", "txt2vid", REQUEST, tmp_path / "b", str(base), *FORMATS,
                    "--component", f"transformer={single}")
    assert all(np.array_equal(a, b) for a, b in zip(frames(reference), frames(ours), strict=True))
    gguf = run_json("ltx2", "txt2vid", REQUEST, tmp_path / "c", str(base), *FORMATS, "--component",
                    f"transformer={write_gguf_q8(base, tmp_path / 'ltx-2-Q8_0.gguf')}")
    assert any(type(p).__name__ == "GGUFParameter" for p in loaded_family("ltx2").base.transformer.parameters())
    assert max(np.abs(a - b).max() for a, b in zip(frames(gguf), frames(reference), strict=True)) <= 8


def test_transformer_files_are_told_apart_by_their_keys(tmp_path):
    from safetensors.torch import save_file
    import torch

    engine = get_engine("ltx2")
    comfy = tmp_path / "ltx-2-19b-dev.safetensors"  # the original / ComfyUI names
    save_file({"model.diffusion_model.av_ca_a2v_gate_adaln_single.emb.timestep_embedder.linear_1.weight":
               torch.zeros(2, 2)}, comfy)
    assert engine.component_problem("transformer", comfy, None) is None
    other = tmp_path / "ltxv-2b.safetensors"  # LTX-Video's transformer: no audio stream
    save_file({"model.diffusion_model.transformer_blocks.0.attn1.to_q.weight": torch.zeros(2, 2)}, other)
    assert "not a ltx2 transformer" in engine.component_problem("transformer", other, None)
