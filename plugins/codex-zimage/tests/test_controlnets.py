"""z_image with ControlNets on the tiny Z-Image-Turbo: each task equals diffusers' ControlNet pipeline call on the
same tiny ControlNet and control image, to the pixel; what does not fit exits 2 naming the field."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import (
    ZImageControlNetInpaintPipeline,
    ZImageControlNetModel,
    ZImageControlNetPipeline,
    ZImagePipeline,
)
from PIL import Image

from codex_diffusers.testing import loaded_model, pixels, refused_run, run_json, tiny_model_dir, write_test_image

# real CFG against a negative prompt, so the control runs on both halves of the batch
BASE = {"prompt": "a lighthouse", "negative_prompt": "blurry", "cfg": 2.0, "width": 32, "height": 32, "steps": 2,
        "seed": 11, "max_sequence_length": 32, "sampler": "Euler"}
LATENT_CHANNELS = 4  # the tiny VAE's (codex_zimage.tiny)


def _controlnet(control_in_dim: int, dim: int = 32, heads: int = 2, **options) -> ZImageControlNetModel:
    """A tiny ControlNet of the tiny transformer's width (one control layer at layer 0, one noise refiner), its
    zero-initialised projections (before_proj, after_proj) filled with small random values so it has an effect."""
    torch.manual_seed(0)
    controlnet = ZImageControlNetModel(control_layers_places=[0], control_in_dim=control_in_dim, dim=dim,
                                       n_refiner_layers=1, n_heads=heads, n_kv_heads=heads, **options)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in controlnet.named_parameters():
            if "before_proj" in name or "after_proj" in name:
                parameter.copy_(torch.normal(0.0, 0.2, parameter.shape, generator=generator))
    return controlnet


@pytest.fixture(scope="session")
def controlnets(tmp_path_factory) -> dict[str, Path]:
    """"union": the control image alone (1.0's layout: control_in_dim = latent channels); "union2": control, mask
    and init image (2.x's: 2 x latent channels + 1, its control layers also refine the noise); "wide": another
    width, so it does not fit; "sd": an SD ControlNet's folder (only its config is read before loading)."""
    root = tmp_path_factory.mktemp("zimage_controlnets")
    _controlnet(LATENT_CHANNELS).save_pretrained(root / "union")
    _controlnet(2 * LATENT_CHANNELS + 1, add_control_noise_refiner="control_layers",
                control_refiner_layers_places=[0]).save_pretrained(root / "union2")
    _controlnet(LATENT_CHANNELS, dim=48, heads=3).save_pretrained(root / "wide")
    (root / "sd").mkdir()
    (root / "sd" / "config.json").write_text(json.dumps({"_class_name": "ControlNetModel"}))
    return {name: root / name for name in ("union", "union2", "wide", "sd")}


@pytest.fixture(scope="module")
def base_pipe():
    """A Z-Image pipeline of this module's own: the control pipelines derive from it with from_pipe (which joins
    their ControlNet to its transformer); the suite's shared direct pipelines are never touched."""
    pipe = ZImagePipeline.from_pretrained(tiny_model_dir("z_image"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _call(pipe, **control) -> np.ndarray:
    image = pipe(prompt=BASE["prompt"], negative_prompt=BASE["negative_prompt"], guidance_scale=BASE["cfg"],
                 num_inference_steps=BASE["steps"], width=32, height=32,
                 max_sequence_length=BASE["max_sequence_length"],
                 generator=torch.Generator("cpu").manual_seed(BASE["seed"]), **control).images[0]
    return pixels(image)


def _direct(pipeline_cls, base, folder: Path, **control) -> np.ndarray:
    return _call(pipeline_cls.from_pipe(base, controlnet=ZImageControlNetModel.from_pretrained(folder)), **control)


def test_txt2img_equals_the_controlnet_pipeline_for_each_controlnet_and_a_plain_run_after_them(
        controlnets, base_pipe, tmp_path):
    control = write_test_image(tmp_path / "control.png", (32, 32), seed=4)
    image = Image.open(control).convert("RGB")
    outputs = {}
    # the second ControlNet runs on the control pipeline derived with the first: joined to the transformer anew
    for name, scale in (("union", 0.8), ("union2", 1.3)):
        request = {**BASE, "controls": [{"model": str(controlnets[name]), "image": control, "scale": scale}]}
        result = run_json("z_image", "txt2img", request, tmp_path / name)
        outputs[name] = pixels(result["files"][0])
        expected = _direct(ZImageControlNetPipeline, base_pipe, controlnets[name], control_image=image,
                           controlnet_conditioning_scale=scale)
        assert np.array_equal(outputs[name], expected), name
        assert result["info"]["model"]["files"]["controlnet:0"]["class"] == "ZImageControlNetModel"
    # the model's bytes count each ControlNet's own tensors once, not the transformer's that it borrows
    model = loaded_model("z_image")
    own = sum(t.numel() * t.element_size() for name in ("union", "union2")
              for t in ZImageControlNetModel.from_pretrained(controlnets[name]).parameters())
    assert model.nbytes() == sum(family.nbytes() for family in model.families.values()) + own
    plain = run_json("z_image", "txt2img", BASE, tmp_path / "plain")
    without = _call(base_pipe)
    assert np.array_equal(pixels(plain["files"][0]), without)
    assert not np.array_equal(outputs["union"], without)  # the control changed the image


def test_inpaint_equals_the_controlnet_inpaint_pipeline(controlnets, base_pipe, tmp_path):
    init = write_test_image(tmp_path / "init.png", (32, 32), seed=7)
    mask = write_test_image(tmp_path / "mask.png", (32, 32), mode="L")
    control = write_test_image(tmp_path / "control.png", (32, 32), seed=8)
    request = {**BASE, "init_image": init, "mask_image": mask, "strength": 1.0,
               "controls": [{"model": str(controlnets["union2"]), "image": control, "scale": 0.75}]}
    del request["width"], request["height"]
    result = run_json("z_image", "inpaint", request, tmp_path / "out")
    expected = _direct(ZImageControlNetInpaintPipeline, base_pipe, controlnets["union2"],
                       image=Image.open(init).convert("RGB"), mask_image=Image.open(mask).convert("L"),
                       control_image=Image.open(control).convert("RGB"), controlnet_conditioning_scale=0.75)
    assert np.array_equal(pixels(result["files"][0]), expected)


@pytest.mark.parametrize("case, task, controls, extra, expected", [
    ("other_family", "txt2img", [{"model": "{sd}", "image": "{control}"}], {},
     "controls.0.model: sd is a ControlNetModel ControlNet; engine z_image takes ZImageControlNetModel"),
    ("start_end", "txt2img", [{"model": "{union}", "image": "{control}", "start": 0.2}], {},
     "controls.0.start: engine z_image's ControlNet pipeline runs the control on every step"),
    ("image_does_not_open", "txt2img", [{"model": "{union}", "image": "{broken}"}], {}, "controls.0.image"),
    ("two_controls", "txt2img",
     [{"model": "{union}", "image": "{control}"}, {"model": "{union}", "image": "{control}"}], {},
     "controls: 2 given; engine z_image's pipelines take one ControlNet"),
    ("union_has_no_type", "txt2img", [{"model": "{union}", "image": "{control}", "type": "pose"}], {},
     "controls.0.type"),
    ("control_only_controlnet_in_inpaint", "inpaint", [{"model": "{union}", "image": "{control}"}], {"strength": 1.0},
     "controls.0.model: union takes the control image alone (control_in_dim 4)"),
    ("inpaint_strength", "inpaint", [{"model": "{union2}", "image": "{control}"}], {"strength": 0.6},
     "strength: got 0.6; with controls, inpaint runs ZImageControlNetInpaintPipeline"),
    ("img2img_has_no_controls", "img2img", [{"model": "{union}", "image": "{control}"}], {}, "controls"),
])
def test_what_does_not_fit_exits_2_before_loading(case, task, controls, extra, expected, controlnets, tmp_path):
    names = {**{name: str(folder) for name, folder in controlnets.items()},
             "control": write_test_image(tmp_path / "control.png", (32, 32), seed=1), "broken": tmp_path / "broken.png"}
    (tmp_path / "broken.png").write_bytes(b"not a png")
    controls = [{key: value.format(**names) if isinstance(value, str) else value for key, value in item.items()}
                for item in controls]
    request = {**BASE, "controls": controls, **extra}
    if task != "txt2img":  # the init image's size
        del request["width"], request["height"]
        request = {"init_image": names["control"], "strength": 0.5, **request}
    if task == "inpaint":
        request["mask_image"] = write_test_image(tmp_path / "mask.png", (32, 32), mode="L")
    assert expected in refused_run("z_image", task, request, tmp_path)


def test_a_controlnet_of_another_width_is_refused_before_the_run(controlnets, tmp_path):
    control = write_test_image(tmp_path / "control.png", (32, 32), seed=1)
    request = {**BASE, "controls": [{"model": str(controlnets["wide"]), "image": control}]}
    stderr = refused_run("z_image", "txt2img", request, tmp_path)
    assert "controls.0.model" in stderr and "its dim 48 differs from the transformer's 32" in stderr
