"""flux ControlNets and FLUX.1 Redux on tiny models: each equals diffusers' own pipelines on the same inputs.

The tiny ControlNets are FluxControlNetModel.from_transformer of the tiny FLUX.1 transformer (one block of each
kind); their zero-initialised output layers get small random values, so a control changes the image. The
reference pipelines are built here from the tiny model folder (not the conformance suite's cached ones: a
ControlNet is set on them).
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
    FluxControlNetImg2ImgPipeline,
    FluxControlNetInpaintPipeline,
    FluxControlNetModel,
    FluxControlNetPipeline,
    FluxMultiControlNetModel,
    FluxPipeline,
    FluxPriorReduxPipeline,
)
from diffusers.pipelines.flux.modeling_flux import ReduxImageEncoder
from PIL import Image
from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

from codex_diffusers.testing import pixels, refused_run, run_json, tiny_model_dir, write_test_image

ZERO_INITIALISED = ("controlnet_blocks", "controlnet_single_blocks", "controlnet_x_embedder")
BASE = {"prompt": "a red fox", "steps": 2, "seed": 11, "cfg": 3.5, "max_sequence_length": 16, "sampler": "Euler"}


def _controlnet(transformer, seed: int, num_mode: int | None = None) -> FluxControlNetModel:
    torch.manual_seed(seed)
    config = transformer.config
    controlnet = FluxControlNetModel.from_transformer(
        transformer, num_layers=1, num_single_layers=1, attention_head_dim=config.attention_head_dim,
        num_attention_heads=config.num_attention_heads)
    if num_mode is not None:  # a union model: the same class with a mode embedding (InstantX's num_mode is 10)
        config = {k: v for k, v in controlnet.config.items() if k != "_use_default_values"}  # else num_mode stays None
        union = FluxControlNetModel.from_config({**config, "num_mode": num_mode})
        union.load_state_dict(controlnet.state_dict(), strict=False)
        controlnet = union
    with torch.no_grad():
        for name, parameter in controlnet.named_parameters():
            if name.startswith(ZERO_INITIALISED):
                parameter.normal_(0, 0.2)
    return controlnet.eval()


def _redux(dest: Path, text_width: int) -> None:
    torch.manual_seed(0)
    encoder = SiglipVisionModel(SiglipVisionConfig(hidden_size=16, intermediate_size=24, num_hidden_layers=1,
                                                   num_attention_heads=2, image_size=32, patch_size=8)).eval()
    processor = SiglipImageProcessor(size={"height": 32, "width": 32})
    embedder = ReduxImageEncoder(redux_dim=16, txt_in_features=text_width)
    FluxPriorReduxPipeline(image_encoder=encoder, feature_extractor=processor, image_embedder=embedder).save_pretrained(dest)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The tiny flux folder, tiny ControlNets (two single-mode, one union), a Redux folder and config-only
    folders of ControlNets that do not fit (only their config.json is read before loading)."""
    root = tmp_path_factory.mktemp("flux-controls")
    folder = tiny_model_dir("flux")
    transformer = FluxPipeline.from_pretrained(folder).transformer
    paths = {"base": folder}
    for name, seed, num_mode in (("canny", 1, None), ("depth", 2, None), ("union", 3, 10)):
        _controlnet(transformer, seed, num_mode).save_pretrained(root / name)
        paths[name] = root / name
    _redux(root / "redux", transformer.config.joint_attention_dim)
    _redux(root / "redux_wide", 64)
    paths.update(redux=root / "redux", redux_wide=root / "redux_wide")
    for name, config in {"sd15": {"_class_name": "ControlNetModel", "cross_attention_dim": 768},
                         "wide": {**_controlnet(transformer, 0).config, "_class_name": "FluxControlNetModel",
                                  "joint_attention_dim": 64},
                         "union3": {**_controlnet(transformer, 0).config, "_class_name": "FluxControlNetModel",
                                    "num_mode": 3}}.items():
        (root / name).mkdir()
        (root / name / "config.json").write_text(json.dumps(dict(config)))
        # weights in place (never loaded: the config is refused first), so that the config is what is checked
        shutil.copy(root / "canny" / "diffusion_pytorch_model.safetensors", root / name)
        paths[name] = root / name
    return paths


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("flux-control-inputs")
    return {"control": write_test_image(root / "control.png", (32, 32), seed=3),
            "control2": write_test_image(root / "control2.png", (32, 32), seed=4),
            "init": write_test_image(root / "init.png", (32, 32), seed=5),
            "mask": write_test_image(root / "mask.png", (32, 32), mode="L"),
            "reference": write_test_image(root / "reference.png", (40, 24), seed=6),
            "broken": str((root / "broken.png").write_bytes(b"not a png") or root / "broken.png")}


@pytest.fixture(scope="module")
def base_pipe(models):
    pipe = FluxPipeline.from_pretrained(models["base"])
    pipe.set_progress_bar_config(disable=True)
    return pipe


def direct(cls, base_pipe, controlnet, **kwargs) -> Image.Image:
    """diffusers' own call: a control pipeline of its own from the base's modules, the checkpoint's scheduler."""
    pipe = cls.from_pipe(base_pipe, controlnet=controlnet)
    pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(base_pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe(prompt=BASE["prompt"], num_inference_steps=BASE["steps"], guidance_scale=BASE["cfg"],
                max_sequence_length=BASE["max_sequence_length"], generator=torch.Generator("cpu").manual_seed(BASE["seed"]),
                **kwargs).images[0]


def ours(task: str, request: dict, out: Path) -> tuple[np.ndarray, dict]:
    info = run_json("flux", task, {**BASE, **request}, out)["info"]
    return pixels(info["outputs"][0]), info


def control(models, inputs, name="canny", **fields) -> dict:
    return {"model": str(models[name]), "image": inputs["control"], "scale": 0.7, "start": 0.0, "end": 0.8, **fields}


def test_txt2img_control_equals_diffusers(models, inputs, base_pipe, tmp_path):
    got, info = ours("txt2img", {"width": 32, "height": 32, "controls": [control(models, inputs)]}, tmp_path)
    expected = direct(FluxControlNetPipeline, base_pipe, FluxControlNetModel.from_pretrained(models["canny"]),
                      control_image=Image.open(inputs["control"]).convert("RGB"), width=32, height=32,
                      controlnet_conditioning_scale=0.7, control_guidance_start=0.0, control_guidance_end=0.8)
    assert np.array_equal(got, pixels(expected))
    assert info["notes"]["controls"][0]["scale"] == 0.7
    assert info["model"]["files"]["controlnet:0"]["class"] == "FluxControlNetModel"
    plain, _ = ours("txt2img", {"width": 32, "height": 32}, tmp_path / "plain")
    assert not np.array_equal(got, plain)  # the control steered the image
    # and left the cached pipeline as it was: the next run without controls is the plain pipeline's
    pipe = FluxPipeline.from_pipe(base_pipe)
    pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(base_pipe.scheduler.config)
    expected_plain = pipe(prompt=BASE["prompt"], num_inference_steps=BASE["steps"], guidance_scale=BASE["cfg"],
                          max_sequence_length=BASE["max_sequence_length"], width=32, height=32,
                          generator=torch.Generator("cpu").manual_seed(BASE["seed"])).images[0]
    assert np.array_equal(plain, pixels(expected_plain))


@pytest.mark.parametrize("task", ["img2img", "inpaint"])
def test_init_image_tasks_with_a_control_equal_diffusers(task, models, inputs, base_pipe, tmp_path):
    request = {"init_image": inputs["init"], "strength": 0.9, "controls": [control(models, inputs, scale=1.2)]}
    kwargs = {"image": Image.open(inputs["init"]).convert("RGB"), "strength": 0.9, "width": 32, "height": 32,
              "control_image": Image.open(inputs["control"]).convert("RGB"), "controlnet_conditioning_scale": 1.2,
              "control_guidance_start": 0.0, "control_guidance_end": 0.8}
    cls = FluxControlNetImg2ImgPipeline
    if task == "inpaint":
        request["mask_image"] = inputs["mask"]
        kwargs["mask_image"] = Image.open(inputs["mask"]).convert("L")
        cls = FluxControlNetInpaintPipeline
    got, _ = ours(task, request, tmp_path)
    expected = direct(cls, base_pipe, FluxControlNetModel.from_pretrained(models["canny"]), **kwargs)
    assert np.array_equal(got, pixels(expected))


def test_two_stacked_controls_equal_the_multi_controlnet_call(models, inputs, base_pipe, tmp_path):
    """A single-mode ControlNet stacked with a union one: lists, and the union's mode (None for the other)."""
    controls = [control(models, inputs, scale=0.6, end=1.0),
                control(models, inputs, "union", image=inputs["control2"], type="depth", scale=0.9, start=0.5)]
    got, info = ours("txt2img", {"width": 32, "height": 32, "controls": controls}, tmp_path)
    multi = FluxMultiControlNetModel([FluxControlNetModel.from_pretrained(models["canny"]),
                                      FluxControlNetModel.from_pretrained(models["union"])])
    expected = direct(FluxControlNetPipeline, base_pipe, multi, width=32, height=32,
                      control_image=[Image.open(inputs["control"]).convert("RGB"),
                                     Image.open(inputs["control2"]).convert("RGB")],
                      controlnet_conditioning_scale=[0.6, 0.9], control_guidance_start=[0.0, 0.5],
                      control_guidance_end=[1.0, 0.8], control_mode=[None, 2])
    assert np.array_equal(got, pixels(expected))
    assert [c["type"] for c in info["notes"]["controls"]] == [None, "depth"]


def test_a_union_mode_reaches_the_call(models, inputs, base_pipe, tmp_path):
    """type "pose" is the model card's mode 4 (control_mode); another mode gives another image."""
    got, _ = ours("txt2img", {"width": 32, "height": 32, "controls": [control(models, inputs, "union", type="pose")]},
                  tmp_path)
    expected = direct(FluxControlNetPipeline, base_pipe, FluxControlNetModel.from_pretrained(models["union"]),
                      control_image=Image.open(inputs["control"]).convert("RGB"), width=32, height=32,
                      controlnet_conditioning_scale=0.7, control_guidance_start=0.0, control_guidance_end=0.8,
                      control_mode=4)
    assert np.array_equal(got, pixels(expected))
    other, _ = ours("txt2img", {"width": 32, "height": 32,
                                "controls": [control(models, inputs, "union", type="canny")]}, tmp_path / "canny")
    assert not np.array_equal(got, other)


def test_redux_equals_the_documented_two_step_call(models, inputs, base_pipe, tmp_path):
    """FluxPriorReduxPipeline (given the flux model's text encoders, so the prompt's tokens come first), then the
    flux pipeline with its prompt_embeds and pooled_prompt_embeds; two images weighted by their scales."""
    refs = [{"image": inputs["reference"], "scale": 0.8, "model": str(models["redux"])},
            {"image": inputs["control"], "scale": 0.4, "model": str(models["redux"])}]
    got, info = ours("txt2img", {"width": 32, "height": 32, "reference_images": refs}, tmp_path)
    prior = FluxPriorReduxPipeline.from_pretrained(models["redux"], text_encoder=base_pipe.text_encoder,
                                                   tokenizer=base_pipe.tokenizer, text_encoder_2=base_pipe.text_encoder_2,
                                                   tokenizer_2=base_pipe.tokenizer_2)
    prior_output = prior(image=[Image.open(inputs["reference"]).convert("RGB"), Image.open(inputs["control"]).convert("RGB")],
                         prompt=BASE["prompt"], prompt_embeds_scale=[0.8, 0.4])
    pipe = FluxPipeline.from_pipe(base_pipe)
    pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(base_pipe.scheduler.config)
    expected = pipe(num_inference_steps=BASE["steps"], guidance_scale=BASE["cfg"], width=32, height=32,
                    generator=torch.Generator("cpu").manual_seed(BASE["seed"]), **prior_output).images[0]
    assert np.array_equal(got, pixels(expected))
    assert [ref["scale"] for ref in info["notes"]["reference_images"]] == [0.8, 0.4]
    assert set(info["inputs"]) >= {"reference_images.0.image", "reference_images.1.image"}


@pytest.mark.parametrize("case, task, change, expected", [
    ("sd_controlnet", "txt2img", {"model": "sd15"}, "controls.0.model: sd15 is a ControlNetModel ControlNet; engine "
                                                    "flux takes FluxControlNetModel"),
    ("other_width", "txt2img", {"model": "wide"}, "controls.0.model: wide: its joint_attention_dim is 64, this flux "
                                                  "model's transformer has 32"),
    ("image_does_not_open", "txt2img", {"image": "broken"}, "controls.0.image"),
    ("start_after_end", "txt2img", {"start": 0.9, "end": 0.5}, "controls.0.start: got 0.9: 0.9 is after end (0.5)"),
    ("union_without_type", "txt2img", {"model": "union"}, "controls.0.type: union is a union ControlNet"),
    ("type_on_single_mode", "txt2img", {"type": "canny"}, "controls.0.type: canny is a single-mode ControlNet"),
    ("unknown_mode", "txt2img", {"model": "union", "type": "normal"}, "controls.0.type: got 'normal'"),
    ("mode_beyond_num_mode", "txt2img", {"model": "union3", "type": "pose"},
     "controls.0.type: got 'pose'; union3 has modes canny, tile, depth"),
    ("true_cfg_img2img", "img2img", {}, "true_cfg: got 2.0: diffusers' FluxControlNetImg2ImgPipeline has no true"),
])
def test_bad_controls_exit_2_before_loading(case, task, change, expected, models, inputs, tmp_path):
    spec = control(models, inputs)
    spec.update({k: str(models[v]) if k == "model" else inputs[v] if k == "image" else v for k, v in change.items()})
    request = {**BASE, "controls": [spec]}
    if task == "img2img":
        request.update(init_image=inputs["init"], true_cfg=2.0, negative_prompt="blurry")
    else:
        request.update(width=32, height=32)
    assert expected in refused_run("flux", task, request, tmp_path)


@pytest.mark.parametrize("model, expected", [
    ("redux_wide", "reference_images.0.model: redux_wide gives tokens of width 64 (image_embedder txt_in_features); "
                   "this flux model's text tokens are 32 wide"),
    ("canny", "reference_images.0.model: 'CANNY' is not a diffusers pipeline folder"),
    ("missing", "reference_images.0.model: no such folder"),
])
def test_bad_reference_images_exit_2_before_loading(model, expected, models, inputs, tmp_path):
    path = str(models[model]) if model in models else str(tmp_path / model)
    request = {**BASE, "width": 32, "height": 32, "reference_images": [{"image": inputs["reference"], "model": path}]}
    assert expected.replace("CANNY", path) in refused_run("flux", "txt2img", request, tmp_path)
