"""sd35 ControlNets on tiny models: each equals diffusers' own SD3 ControlNet pipelines on the same inputs.

Three tiny SD3ControlNetModels of the tiny SD 3.5 transformer's widths, one block each: InstantX's kind (its own
position embedding, text states, zero pooled projection), SD 3.5 Large's own kind (no position embedding of its
own: it shares the transformer's; no text states; the pooled projection), and an inpainting one (a mask channel).
Their zero-initialised layers get small random values, so the control changes the image.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import (
    FlowMatchEulerDiscreteScheduler,
    SD3ControlNetModel,
    SD3MultiControlNetModel,
    StableDiffusion3ControlNetInpaintingPipeline,
    StableDiffusion3ControlNetPipeline,
    StableDiffusion3Pipeline,
)
from PIL import Image

from codex_diffusers.testing import pixels, refused_run, run_json, tiny_model_dir, write_test_image

BASE = {"prompt": "a lighthouse", "steps": 2, "seed": 21, "cfg": 3.5, "max_sequence_length": 16, "sampler": "Euler"}
ZERO_INITIALISED = ("controlnet_blocks", "pos_embed_input")
KINDS = {
    "instantx": {},
    "sd35": {"joint_attention_dim": None, "use_pos_embed": False, "pos_embed_type": None,
             "force_zeros_for_pooled_projection": False},
    "inpaint": {"extra_conditioning_channels": 1},
    "instantx2": {},
}


def _controlnet(transformer_config: dict, seed: int, **changes) -> SD3ControlNetModel:
    config = {name: transformer_config[name] for name in (
        "sample_size", "patch_size", "in_channels", "out_channels", "attention_head_dim", "num_attention_heads",
        "caption_projection_dim", "joint_attention_dim", "pooled_projection_dim", "pos_embed_max_size", "qk_norm")}
    torch.manual_seed(seed)
    controlnet = SD3ControlNetModel(**{**config, "num_layers": 1, **changes})
    with torch.no_grad():
        for name, parameter in controlnet.named_parameters():
            if name.startswith(ZERO_INITIALISED):
                parameter.normal_(0, 0.2)
    return controlnet.eval()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd35-controls")
    folder = tiny_model_dir("sd35")
    config = json.loads((folder / "transformer" / "config.json").read_text())
    paths = {"base": folder}
    for seed, (name, changes) in enumerate(KINDS.items()):
        _controlnet(config, seed, **changes).save_pretrained(root / name)
        paths[name] = root / name
    for name, other in {"flux": {"_class_name": "FluxControlNetModel"},
                        "wide": {**json.loads((root / "instantx" / "config.json").read_text()),
                                 "pooled_projection_dim": 2048}}.items():
        (root / name).mkdir()
        (root / name / "config.json").write_text(json.dumps(other))
        # weights in place (never loaded: the config is refused first), so that the config is what is checked
        shutil.copy(root / "instantx" / "diffusion_pytorch_model.safetensors", root / name)
        paths[name] = root / name
    return paths


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd35-control-inputs")
    return {"control": write_test_image(root / "control.png", (32, 32), seed=7),
            "control2": write_test_image(root / "control2.png", (32, 32), seed=8),
            "init": write_test_image(root / "init.png", (32, 32), seed=9),
            "mask": write_test_image(root / "mask.png", (32, 32), mode="L")}


@pytest.fixture(scope="module")
def base_pipe(models):
    pipe = StableDiffusion3Pipeline.from_pretrained(models["base"])
    pipe.set_progress_bar_config(disable=True)
    return pipe


def direct(cls, base_pipe, controlnet, **kwargs) -> Image.Image:
    """diffusers' own call on a control pipeline of its own, built from the base's modules."""
    pipe = cls.from_pipe(base_pipe, controlnet=controlnet)
    pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(base_pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    torch.manual_seed(BASE["seed"])  # the pipeline VAE-encodes the control image with the global random state
    return pipe(prompt=BASE["prompt"], num_inference_steps=BASE["steps"], guidance_scale=BASE["cfg"],
                max_sequence_length=BASE["max_sequence_length"], width=32, height=32,
                generator=torch.Generator("cpu").manual_seed(BASE["seed"]), **kwargs).images[0]


def ours(task: str, request: dict, out: Path) -> tuple[np.ndarray, dict]:
    info = run_json("sd35", task, {**BASE, **request}, out)["info"]
    return pixels(info["outputs"][0]), info


def control(models, inputs, name="instantx", **fields) -> dict:
    return {"model": str(models[name]), "image": inputs["control"], "scale": 0.8, "start": 0.0, "end": 0.5, **fields}


@pytest.mark.parametrize("kind", ["instantx", "sd35"])
def test_txt2img_control_equals_diffusers(kind, models, inputs, base_pipe, tmp_path):
    got, info = ours("txt2img", {"width": 32, "height": 32, "controls": [control(models, inputs, kind)]}, tmp_path)
    expected = direct(StableDiffusion3ControlNetPipeline, base_pipe, SD3ControlNetModel.from_pretrained(models[kind]),
                      control_image=Image.open(inputs["control"]).convert("RGB"), controlnet_conditioning_scale=0.8,
                      control_guidance_start=0.0, control_guidance_end=0.5)
    assert np.array_equal(got, pixels(expected))
    assert info["model"]["files"]["controlnet:0"]["class"] == "SD3ControlNetModel"
    plain, _ = ours("txt2img", {"width": 32, "height": 32}, tmp_path / "plain")
    assert not np.array_equal(got, plain)  # the control steered the image
    # and left the cached pipeline as it was: the next run without controls is the plain pipeline's
    pipe = StableDiffusion3Pipeline.from_pipe(base_pipe)
    pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(base_pipe.scheduler.config)
    expected_plain = pipe(prompt=BASE["prompt"], num_inference_steps=BASE["steps"], guidance_scale=BASE["cfg"],
                          max_sequence_length=BASE["max_sequence_length"], width=32, height=32,
                          generator=torch.Generator("cpu").manual_seed(BASE["seed"])).images[0]
    assert np.array_equal(plain, pixels(expected_plain))


def test_two_stacked_controls_equal_the_multi_controlnet_call(models, inputs, base_pipe, tmp_path):
    controls = [control(models, inputs), control(models, inputs, "instantx2", image=inputs["control2"], scale=0.5, end=1.0)]
    got, _ = ours("txt2img", {"width": 32, "height": 32, "controls": controls}, tmp_path)
    multi = SD3MultiControlNetModel([SD3ControlNetModel.from_pretrained(models["instantx"]),
                                     SD3ControlNetModel.from_pretrained(models["instantx2"])])
    expected = direct(StableDiffusion3ControlNetPipeline, base_pipe, multi,
                      control_image=[Image.open(inputs["control"]).convert("RGB"),
                                     Image.open(inputs["control2"]).convert("RGB")],
                      controlnet_conditioning_scale=[0.8, 0.5], control_guidance_start=[0.0, 0.0],
                      control_guidance_end=[0.5, 1.0])
    assert np.array_equal(got, pixels(expected))


def test_inpaint_control_equals_diffusers(models, inputs, base_pipe, tmp_path):
    """The inpainting ControlNet sees the init image masked by mask_image and the mask (control_image /
    control_mask); the pipeline denoises from noise."""
    request = {"init_image": inputs["init"], "mask_image": inputs["mask"],
               "controls": [control(models, inputs, "inpaint", image=inputs["init"])]}
    got, info = ours("inpaint", request, tmp_path)
    expected = direct(StableDiffusion3ControlNetInpaintingPipeline, base_pipe,
                      SD3ControlNetModel.from_pretrained(models["inpaint"]),
                      control_image=Image.open(inputs["init"]).convert("RGB"),
                      control_mask=Image.open(inputs["mask"]).convert("L"), controlnet_conditioning_scale=0.8,
                      control_guidance_start=0.0, control_guidance_end=0.5)
    assert np.array_equal(got, pixels(expected))
    assert "strength is not used" in info["notes"]["controls_inpaint"]


@pytest.mark.parametrize("case, task, change, expected", [
    ("flux_controlnet", "txt2img", {"model": "flux"}, "controls.0.model: flux is a FluxControlNetModel ControlNet; "
                                                      "engine sd35 takes SD3ControlNetModel"),
    ("other_width", "txt2img", {"model": "wide"}, "controls.0.model: wide: its pooled_projection_dim is 2048, this "
                                                  "SD 3.5 model's transformer has 48"),
    ("inpainting_controlnet_on_txt2img", "txt2img", {"model": "inpaint"},
     "controls.0.model: inpaint is an inpainting ControlNet (a mask channel): use it with the inpaint task"),
    ("plain_controlnet_on_inpaint", "inpaint", {"image": "init"}, "controls.0.model: instantx is not an inpainting "
                                                                  "ControlNet"),
    ("inpaint_control_image_not_the_init_image", "inpaint", {"model": "inpaint"},
     "controls.0.image: an SD3 inpainting ControlNet repaints its control image under mask_image"),
    ("stacked_kinds_differ", "txt2img", {"stack": "sd35"}, "controls.1.model: diffusers' SD3 ControlNet pipelines "
                                                           "give every stacked ControlNet what the first takes"),
    ("start_after_end", "txt2img", {"start": 0.8, "end": 0.2}, "controls.0.start: got 0.8: 0.8 is after end (0.2)"),
    ("img2img_has_no_control_pipeline", "img2img", {}, "controls: unknown field"),
])
def test_bad_controls_exit_2_before_loading(case, task, change, expected, models, inputs, tmp_path):
    spec = control(models, inputs)
    change = dict(change)
    stack = change.pop("stack", None)
    spec.update({k: str(models[v]) if k == "model" else inputs[v] if k == "image" else v for k, v in change.items()})
    request = {**BASE, "controls": [spec] + ([control(models, inputs, stack)] if stack else [])}
    if task == "txt2img":
        request.update(width=32, height=32)
    else:
        request.update(init_image=inputs["init"], **({"mask_image": inputs["mask"]} if task == "inpaint" else {}))
    assert expected in refused_run("sd35", task, request, tmp_path)
