"""A LoRA loaded for one run leaves the shared modules exactly as the checkpoint loaded them."""

from __future__ import annotations

import pytest
import torch

from codex_diffusers.lora import lora_for_run
from codex_diffusers.pipelines import pipeline_class
from codex_diffusers.testing import direct_pipe, make_unet_lora, pixels, tiny_model_dir

ENGINES = {"sd15": ("StableDiffusionPipeline", {"safety_checker": None, "requires_safety_checker": False}),
           "sdxl": ("StableDiffusionXLPipeline", {})}


def snapshot(pipe) -> dict:
    """Everything of the LoRA-loadable modules a later call could depend on."""
    state = {}
    for name in pipe._lora_loadable_modules:
        module = getattr(pipe, name, None)
        if not isinstance(module, torch.nn.Module):
            continue
        state[name] = {
            "tensors": {key: value.clone() for key, value in module.state_dict().items()},
            "requires_grad": {key: param.requires_grad for key, param in module.named_parameters()},
            "classes": {key: type(sub).__name__ for key, sub in module.named_modules()},
            "processors": ({key: type(p).__name__ for key, p in module.attn_processors.items()}
                           if hasattr(module, "attn_processors") else {}),
        }
    return state


def assert_same(before: dict, after: dict) -> None:
    assert before.keys() == after.keys()
    for name in before:
        for part in ("requires_grad", "classes", "processors"):
            assert before[name][part] == after[name][part], f"{name}: {part} changed"
        assert before[name]["tensors"].keys() == after[name]["tensors"].keys()
        for key, value in before[name]["tensors"].items():
            assert torch.equal(value, after[name]["tensors"][key]), f"{name}.{key} changed"


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_a_run_lora_is_undone_exactly(engine, tmp_path):
    name, overrides = ENGINES[engine]
    pipe, _ = direct_pipe(pipeline_class(name), tiny_model_dir(engine), **overrides)
    lora = make_unet_lora(engine, tmp_path)
    call = dict(prompt="a fox", width=32, height=32, num_inference_steps=2, guidance_scale=5.0)
    plain = pipe(**call, generator=torch.Generator("cpu").manual_seed(1)).images[0]
    before = snapshot(pipe)
    notes = {}
    for _ in range(2):
        with lora_for_run(pipe, str(lora), 1.0, notes):
            with_lora = pipe(**call, generator=torch.Generator("cpu").manual_seed(1)).images[0]
    assert notes == {"unloaded_after_run": True}
    assert not (pixels(plain) == pixels(with_lora)).all()  # the LoRA did something
    assert_same(before, snapshot(pipe))
    again = pipe(**call, generator=torch.Generator("cpu").manual_seed(1)).images[0]
    assert (pixels(plain) == pixels(again)).all()


def test_a_failed_load_leaves_nothing_behind(tmp_path):
    pipe, _ = direct_pipe(pipeline_class("StableDiffusionPipeline"), tiny_model_dir("sd15"),
                          **ENGINES["sd15"][1])
    before = snapshot(pipe)
    (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(Exception):
        with lora_for_run(pipe, str(tmp_path / "broken.safetensors"), 1.0):
            pass
    assert_same(before, snapshot(pipe))
