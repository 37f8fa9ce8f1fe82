"""qwen_image with ControlNets on the tiny Qwen-Image: each task equals diffusers' ControlNet pipeline call on
the same tiny ControlNet and control image, to the pixel; two stacked controls equal the multi-ControlNet call;
what does not fit exits 2 naming the field."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import (
    QwenImageControlNetInpaintPipeline,
    QwenImageControlNetModel,
    QwenImageControlNetPipeline,
    QwenImageMultiControlNetModel,
    QwenImagePipeline,
    QwenImageTransformer2DModel,
)
from PIL import Image

from codex_diffusers.testing import pixels, refused_run, run_json, tiny_model_dir, write_test_image

# the request both sides run: real CFG (a blank negative prompt) so the ControlNet steers both passes
BASE = {"prompt": "a lighthouse", "width": 32, "height": 32, "steps": 2, "seed": 11, "cfg": 3.0,
        "max_sequence_length": 16, "sampler": "Euler"}


def _with_random_outputs(controlnet: QwenImageControlNetModel) -> QwenImageControlNetModel:
    """The zero-initialised layers (the control's embedding and each block's output) filled with small random
    values, so the control changes the image."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in controlnet.named_parameters():
            if name.startswith(("controlnet_blocks.", "controlnet_x_embedder.")):
                parameter.copy_(torch.normal(0.0, 0.2, parameter.shape, generator=generator))
    return controlnet


@pytest.fixture(scope="session")
def controlnets(tmp_path_factory) -> dict[str, Path]:
    """Tiny ControlNets from the tiny transformer (diffusers' from_transformer): one block, the transformer's
    width; "inpaint" reads the mask too (one channel, packed 2x2: extra_condition_channels 4); "narrow" has
    another text width, so it does not fit."""
    root = tmp_path_factory.mktemp("qwen_controlnets")
    transformer = QwenImageTransformer2DModel.from_pretrained(tiny_model_dir("qwen_image"), subfolder="transformer")
    folders = {}
    for name, extra in (("control", 0), ("inpaint", 4)):
        torch.manual_seed(0)
        controlnet = QwenImageControlNetModel.from_transformer(transformer, num_layers=1, attention_head_dim=16,
                                                               num_attention_heads=2, extra_condition_channels=extra)
        _with_random_outputs(controlnet).save_pretrained(root / name)
        folders[name] = root / name
    torch.manual_seed(0)
    QwenImageControlNetModel(in_channels=16, out_channels=4, num_layers=1, attention_head_dim=16,
                             num_attention_heads=2, joint_attention_dim=16, axes_dims_rope=(4, 6, 6)
                             ).save_pretrained(root / "narrow")
    folders["narrow"] = root / "narrow"
    # an SD ControlNet's folder: only its config is read before anything loads
    (root / "sd").mkdir()
    (root / "sd" / "config.json").write_text(json.dumps({"_class_name": "ControlNetModel"}))
    folders["sd"] = root / "sd"
    return folders


@pytest.fixture(scope="module")
def base_pipe():
    """A Qwen-Image pipeline of this module's own (the control pipelines derive from it with from_pipe and set
    their ControlNet on themselves; the suite's shared direct pipelines are never touched)."""
    pipe = QwenImagePipeline.from_pretrained(tiny_model_dir("qwen_image"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _direct(pipeline_cls, base, controlnet, request: dict, **control) -> np.ndarray:
    pipe = pipeline_cls.from_pipe(base, controlnet=controlnet)
    image = pipe(prompt=request["prompt"], negative_prompt="", true_cfg_scale=request["cfg"],
                 num_inference_steps=request["steps"], width=32, height=32,
                 max_sequence_length=request["max_sequence_length"],
                 generator=torch.Generator("cpu").manual_seed(request["seed"]), **control).images[0]
    return pixels(image)


def _rgb(path) -> Image.Image:
    return Image.open(path).convert("RGB")


def test_txt2img_equals_the_controlnet_pipeline_and_a_plain_run_after_it_equals_the_plain_pipeline(
        controlnets, base_pipe, tmp_path):
    control = write_test_image(tmp_path / "control.png", (32, 32), seed=4)
    request = {**BASE, "controls": [{"model": str(controlnets["control"]), "image": control, "scale": 0.7,
                                     "end": 0.5}]}
    result = run_json("qwen_image", "txt2img", request, tmp_path / "out")
    controlnet = QwenImageControlNetModel.from_pretrained(controlnets["control"])
    expected = _direct(QwenImageControlNetPipeline, base_pipe, controlnet, BASE, control_image=_rgb(control),
                       controlnet_conditioning_scale=0.7, control_guidance_start=0.0, control_guidance_end=0.5)
    ours = pixels(result["files"][0])
    assert np.array_equal(ours, expected)
    info = result["info"]
    assert info["notes"]["controls"] == [{"model": str(controlnets["control"]), "type": None, "scale": 0.7,
                                          "start": 0.0, "end": 0.5}]
    assert info["model"]["files"]["controlnet:0"]["class"] == "QwenImageControlNetModel"

    plain = run_json("qwen_image", "txt2img", BASE, tmp_path / "plain")  # the cached model, no ControlNet now
    without = base_pipe(prompt=BASE["prompt"], negative_prompt="", true_cfg_scale=BASE["cfg"], num_inference_steps=2,
                        width=32, height=32, max_sequence_length=16,
                        generator=torch.Generator("cpu").manual_seed(BASE["seed"])).images[0]
    assert np.array_equal(pixels(plain["files"][0]), pixels(without))
    assert not np.array_equal(ours, pixels(without))  # the control changed the image


def test_two_controls_stack_on_one_controlnet_as_the_multi_controlnet_call(controlnets, base_pipe, tmp_path):
    first = write_test_image(tmp_path / "a.png", (32, 32), seed=5)
    second = write_test_image(tmp_path / "b.png", (32, 32), seed=6)
    model = str(controlnets["control"])
    request = {**BASE, "controls": [{"model": model, "image": first, "scale": 0.5},
                                    {"model": model, "image": second, "scale": 1.2, "start": 0.5}]}
    result = run_json("qwen_image", "txt2img", request, tmp_path / "out")
    multi = QwenImageMultiControlNetModel([QwenImageControlNetModel.from_pretrained(model)])
    expected = _direct(QwenImageControlNetPipeline, base_pipe, multi, BASE, control_image=[_rgb(first), _rgb(second)],
                       controlnet_conditioning_scale=[0.5, 1.2], control_guidance_start=[0.0, 0.5],
                       control_guidance_end=[1.0, 1.0])
    assert np.array_equal(pixels(result["files"][0]), expected)


def test_inpaint_equals_the_controlnet_inpaint_pipeline(controlnets, base_pipe, tmp_path):
    init = write_test_image(tmp_path / "init.png", (32, 32), seed=7)
    mask = write_test_image(tmp_path / "mask.png", (32, 32), mode="L")
    request = {**BASE, "init_image": init, "mask_image": mask, "strength": 1.0,
               "controls": [{"model": str(controlnets["inpaint"]), "image": init, "scale": 0.9}]}
    del request["width"], request["height"]
    result = run_json("qwen_image", "inpaint", request, tmp_path / "out")
    controlnet = QwenImageControlNetModel.from_pretrained(controlnets["inpaint"])
    # the pipeline samples the masked image's latents from torch's global random state (no generator): the
    # engine seeds it with the request's seed for the run, so the direct call does the same
    torch.manual_seed(BASE["seed"])
    expected = _direct(QwenImageControlNetInpaintPipeline, base_pipe, controlnet, BASE, control_image=_rgb(init),
                       control_mask=Image.open(mask).convert("L"), controlnet_conditioning_scale=0.9)
    assert np.array_equal(pixels(result["files"][0]), expected)
    # the seed alone decides the pixels; a copy of the init image (as a front end's upload saves it) is the same
    copy = tmp_path / "copy.png"
    copy.write_bytes(Path(init).read_bytes())
    again = run_json("qwen_image", "inpaint", {**request, "controls": [{**request["controls"][0], "image": str(copy)}]},
                     tmp_path / "again")
    assert np.array_equal(pixels(again["files"][0]), expected)


@pytest.mark.parametrize("case, task, controls, extra, expected", [
    ("other_family", "txt2img", [{"model": "{sd}", "image": "{control}"}], {},
     "controls.0.model: sd is a ControlNetModel ControlNet; engine qwen_image takes QwenImageControlNetModel"),
    ("image_does_not_open", "txt2img", [{"model": "{control_net}", "image": "{broken}"}], {}, "controls.0.image"),
    ("two_controlnets", "txt2img", [{"model": "{control_net}", "image": "{control}"},
                                    {"model": "{inpaint_net}", "image": "{control}"}], {},
     "controls.1.model: inpaint differs from controls.0's"),
    ("union_has_no_type", "txt2img", [{"model": "{control_net}", "image": "{control}", "type": "canny"}], {},
     "controls.0.type"),
    ("inpainting_controlnet_in_txt2img", "txt2img", [{"model": "{inpaint_net}", "image": "{control}"}], {},
     "controls.0.model: inpaint is an inpainting ControlNet"),
    ("plain_controlnet_in_inpaint", "inpaint", [{"model": "{control_net}", "image": "{control}"}], {"strength": 1.0},
     "controls.0.model: control is not an inpainting ControlNet"),
    ("inpaint_strength", "inpaint", [{"model": "{inpaint_net}", "image": "{control}"}], {"strength": 0.6},
     "strength: got 0.6; with controls, inpaint runs QwenImageControlNetInpaintPipeline"),
    ("inpaint_other_image", "inpaint", [{"model": "{inpaint_net}", "image": "{mask}"}], {"strength": 1.0},
     "controls.0.image: got"),
    ("img2img_has_no_controls", "img2img", [{"model": "{control_net}", "image": "{control}"}], {},
     "controls"),
])
def test_what_does_not_fit_exits_2_before_loading(case, task, controls, extra, expected, controlnets, tmp_path):
    names = {"sd": controlnets["sd"], "control_net": controlnets["control"], "inpaint_net": controlnets["inpaint"],
             "control": write_test_image(tmp_path / "control.png", (32, 32), seed=1),
             "mask": write_test_image(tmp_path / "mask.png", (32, 32), mode="L"), "broken": tmp_path / "broken.png"}
    (tmp_path / "broken.png").write_bytes(b"not a png")
    controls = [{key: value.format(**names) if isinstance(value, str) else value for key, value in item.items()}
                for item in controls]
    request = {**BASE, "controls": controls, **extra}
    if task != "txt2img":  # the init image's size
        del request["width"], request["height"]
        request = {"init_image": names["control"], "strength": 0.5, **request}
    if task == "inpaint":
        request["mask_image"] = names["mask"]
    assert expected in refused_run("qwen_image", task, request, tmp_path)


def test_a_controlnet_of_another_width_is_refused_before_the_run(controlnets, tmp_path):
    control = write_test_image(tmp_path / "control.png", (32, 32), seed=1)
    request = {**BASE, "controls": [{"model": str(controlnets["narrow"]), "image": control}]}
    stderr = refused_run("qwen_image", "txt2img", request, tmp_path)
    assert "controls.0.model" in stderr and "joint_attention_dim (text width) 16 differs from the transformer's 32" \
        in stderr
