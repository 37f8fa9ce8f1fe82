"""A Krea 2 transformer from its own file (--component): diffusers layout, Krea's original layout, GGUF Q8_0."""

from __future__ import annotations

import shutil

import numpy as np
from safetensors.torch import load_file, save_file

from codex_core import get_engine
from codex_diffusers.testing import loaded_family, pixels, run_json, tiny_model_dir
from codex_diffusers.testing.checkpoint_writers import write_gguf_q8

REQUEST = {"prompt": "a fox", "width": 32, "height": 32, "seed": 3, "steps": 2, "max_sequence_length": 16}

# diffusers' convert_krea2_transformer_checkpoint_to_diffusers, read backwards: diffusers name -> Krea's
PREFIXES = {"img_in.": "first.", "time_embed.linear_1.": "tmlp.0.", "time_embed.linear_2.": "tmlp.2.",
            "time_mod_proj.": "tproj.1.", "txt_in.norm.weight": "txtmlp.0.scale", "txt_in.linear_1.": "txtmlp.1.",
            "txt_in.linear_2.": "txtmlp.3.", "text_fusion.": "txtfusion.", "transformer_blocks.": "blocks.",
            "final_layer.linear.": "last.linear.", "final_layer.norm.weight": "last.norm.scale",
            "final_layer.scale_shift_table": "last.modulation.lin"}
IN_BLOCKS = {".attn.to_q.": ".attn.wq.", ".attn.to_k.": ".attn.wk.", ".attn.to_v.": ".attn.wv.",
             ".attn.to_out.0.": ".attn.wo.", ".attn.to_gate.": ".attn.gate.", ".attn.norm_q.weight":
             ".attn.qknorm.qnorm.scale", ".attn.norm_k.weight": ".attn.qknorm.knorm.scale", ".ff.": ".mlp.",
             ".norm1.weight": ".prenorm.scale", ".norm2.weight": ".postnorm.scale", ".scale_shift_table": ".mod.lin"}


def write_original(source, dest):
    """The tiny transformer as ComfyUI's Krea 2 files hold it: Krea's names under model.diffusion_model., each
    block's six modulation vectors flattened into one."""
    original = {}
    for key, value in load_file(source).items():
        name = next((new + key[len(old):] for old, new in PREFIXES.items() if key.startswith(old)), key)
        for old, new in IN_BLOCKS.items():
            name = name.replace(old, new)
        if key.startswith("transformer_blocks.") and key.endswith(".scale_shift_table"):
            value = value.reshape(-1)
        original["model.diffusion_model." + name] = value.contiguous()
    save_file(original, dest)
    return dest


def test_transformer_files_give_the_folders_pixels_and_gguf_stays_close(tmp_path):
    base = tiny_model_dir("krea2")
    weights = base / "transformer" / "diffusion_pytorch_model.safetensors"
    single = shutil.copy(weights, tmp_path / "krea2-transformer.safetensors")
    original = write_original(weights, tmp_path / "krea2_turbo_comfy.safetensors")
    engine = get_engine("krea2")
    for path in (single, original):  # codex models attributes both layouts to krea2's transformer
        assert engine.component_problem("transformer", path, None) is None
    assert "not a krea2 transformer" in engine.component_problem(
        "transformer", tiny_model_dir("flux") / "transformer" / "diffusion_pytorch_model.safetensors", None)
    reference = run_json("krea2", "txt2img", REQUEST, tmp_path / "a", str(base))
    for path, out in ((single, "b"), (original, "c")):
        ours = run_json("krea2", "txt2img", REQUEST, tmp_path / out, str(base), "--component", f"transformer={path}")
        assert np.array_equal(pixels(reference["files"][0]), pixels(ours["files"][0])), path.name
    gguf = run_json("krea2", "txt2img", REQUEST, tmp_path / "d", str(base), "--component",
                    f"transformer={write_gguf_q8(base, tmp_path / 'krea2-Q8_0.gguf')}")
    assert any(type(p).__name__ == "GGUFParameter" for p in loaded_family("krea2").base.transformer.parameters())
    assert np.abs(pixels(gguf["files"][0]) - pixels(reference["files"][0])).max() <= 8
