"""A FLUX.2 transformer from its own file (--component): diffusers key layout and GGUF Q8_0; which engine a
transformer file is for, from its tensor names (diffusers' and BFL's / ComfyUI's layouts)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from codex_core import get_engine
from codex_diffusers.testing import loaded_family, pixels, run_json, tiny_model_dir
from codex_diffusers.testing.checkpoint_writers import write_gguf_q8

REQUEST = {"prompt": "a fox", "width": 32, "height": 32, "seed": 3, "steps": 2, "max_sequence_length": 32}


def test_a_transformer_file_in_diffusers_layout_gives_the_folders_pixels_and_gguf_stays_close(tmp_path):
    base = tiny_model_dir("flux2_klein")
    single = tmp_path / "flux2-klein-transformer.safetensors"
    shutil.copy(base / "transformer" / "diffusion_pytorch_model.safetensors", single)
    reference = run_json("flux2_klein", "txt2img", REQUEST, tmp_path / "a", str(base))
    ours = run_json("flux2_klein", "txt2img", REQUEST, tmp_path / "b", str(base), "--component",
                    f"transformer={single}")
    assert np.array_equal(pixels(reference["files"][0]), pixels(ours["files"][0]))
    gguf = run_json("flux2_klein", "txt2img", REQUEST, tmp_path / "c", str(base), "--component",
                    f"transformer={write_gguf_q8(base, tmp_path / 'flux2-klein-Q8_0.gguf')}")
    assert any(type(p).__name__ == "GGUFParameter" for p in loaded_family("flux2_klein").base.transformer.parameters())
    assert np.abs(pixels(gguf["files"][0]) - pixels(reference["files"][0])).max() <= 8


def _header_only_file(path, keys):
    save_file({key: torch.zeros(1) for key in keys}, str(path))
    return path


# BFL's layout (the files ComfyUI loads from diffusion_models/): double_blocks / single_blocks, *.lin modulation
BFL_DEV = ["double_stream_modulation_img.lin.weight", "double_blocks.0.img_attn.qkv.weight",
           "single_blocks.0.linear1.weight", "guidance_in.in_layer.weight", "time_in.in_layer.weight"]
DIFFUSERS_KLEIN = ["double_stream_modulation_img.linear.weight", "transformer_blocks.0.attn.to_q.weight",
                   "single_transformer_blocks.0.attn.to_qkv_mlp_proj.weight",
                   "time_guidance_embed.timestep_embedder.linear_1.weight"]
FLUX1 = ["double_blocks.0.img_attn.qkv.weight", "double_blocks.0.img_mod.lin.weight", "single_blocks.0.linear1.weight"]


@pytest.mark.parametrize("keys, prefix, runs_on", [
    (BFL_DEV, "model.diffusion_model.", "flux2"),
    (BFL_DEV, "", "flux2"),
    (DIFFUSERS_KLEIN, "", "flux2_klein"),
    (FLUX1, "", None),  # FLUX.1: no shared modulation layers
])
def test_transformer_files_are_told_apart_by_their_tensor_names(keys, prefix, runs_on, tmp_path):
    path = _header_only_file(tmp_path / "t.safetensors", [prefix + key for key in keys])
    found = {key: get_engine(key).file_problem("diffusion_models", path) for key in ("flux2", "flux2_klein")}
    assert {key for key, problem in found.items() if problem is None} == ({runs_on} if runs_on else set()), found


def _transformer_lora(folder, dest):
    """A PEFT LoRA (diffusers layout: transformer.<module>.lora_A/B) on the tiny transformer's attention and its
    single blocks' fused projection, with random non-zero weights, so that it changes the output."""
    from diffusers import Flux2KleinPipeline, Flux2Transformer2DModel
    from peft import LoraConfig, get_peft_model_state_dict

    transformer = Flux2Transformer2DModel.from_pretrained(folder / "transformer")
    torch.manual_seed(0)
    transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                       target_modules=["to_q", "to_k", "to_v", "to_qkv_mlp_proj"]))
    state = get_peft_model_state_dict(transformer)  # PEFT keys (lora_A/lora_B): what the FLUX.2 loader reads
    assert len(state) == 8  # q, k, v of the double block and the single block's fused projection, A and B
    Flux2KleinPipeline.save_lora_weights(dest, transformer_lora_layers=state,
                                         weight_name="klein_lora.safetensors")
    return dest / "klein_lora.safetensors"


def test_a_lora_changes_the_output_as_diffusers_loads_it_and_is_undone(tmp_path):
    from diffusers import FlowMatchEulerDiscreteScheduler, Flux2KleinPipeline

    base = tiny_model_dir("flux2_klein")
    lora = _transformer_lora(base, tmp_path)
    plain = run_json("flux2_klein", "txt2img", REQUEST, tmp_path / "a", str(base))
    styled = run_json("flux2_klein", "txt2img", {**REQUEST, "loras": [{"path": str(lora)}]}, tmp_path / "b", str(base))
    again = run_json("flux2_klein", "txt2img", REQUEST, tmp_path / "c", str(base))
    assert not np.array_equal(pixels(plain["files"][0]), pixels(styled["files"][0]))
    assert np.array_equal(pixels(plain["files"][0]), pixels(again["files"][0]))  # unloaded after the run
    pipe = Flux2KleinPipeline.from_pretrained(base)
    pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.load_lora_weights(str(lora))
    expected = pipe(prompt=REQUEST["prompt"], width=32, height=32, num_inference_steps=2, guidance_scale=1.0,
                    max_sequence_length=32, generator=torch.Generator("cpu").manual_seed(3)).images[0]
    assert np.array_equal(pixels(styled["files"][0]), pixels(expected))
