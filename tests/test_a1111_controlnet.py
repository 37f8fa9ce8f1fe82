"""sd-webui-controlnet's vocabulary: its API units read into Codex's ``controls`` (what maps, what is substituted or
ignored and said so, what is refused naming the field), its ``ControlNet N`` infotext lines, and a grid axis over a
control's scale. The HTTP side (webuiapi's ControlNetUnit against /v1) is in test_serve_a1111.py."""

from __future__ import annotations

import base64
import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from codex_core.a1111_controls import infotext_pairs, legacy_hash, model_title
from codex_core.errors import UsageError
from codex_core.grid import make_axis, make_grid
from codex_core.registry import get_engine
from codex_core.serve.a1111 import controlnet_units
from codex_core.testing import cli_run, run_json, write_test_image


def b64_png(size: tuple[int, int], seed: int = 0) -> str:
    import random

    rng = random.Random(seed)
    image = Image.new("RGB", size)
    image.putdata([(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(size[0] * size[1])])
    out = io.BytesIO()
    image.save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


@pytest.fixture
def controlnets(tmp_path, monkeypatch) -> Path:
    """A models folder with one diffusers ControlNet folder (its config and a small weights file; nothing loads it)."""
    folder = tmp_path / "models" / "controlnet" / "canny-tiny"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"_class_name": "ControlNetModel"}))
    header = json.dumps({"w": {"dtype": "F16", "shape": [4], "data_offsets": [0, 8]}}).encode()
    (folder / "diffusion_pytorch_model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)
    monkeypatch.setenv("CODEX_MODELS_DIR", str(tmp_path / "models"))
    return folder


def translate(body: dict, task: str = "txt2img") -> tuple[dict, list[str], list[str], list[bool]]:
    request = {key: body[key] for key in ("width", "height") if key in body}
    ignored, substituted = [], []
    maps = controlnet_units.into_request(body, task, get_engine("sd15"), request, ignored, substituted)
    return request, ignored, substituted, maps


def unit(**changes) -> dict:
    """A unit as webuiapi 0.9.17's ControlNetUnit.to_dict sends it, with a 64x64 image."""
    return {"image": b64_png((64, 64)), "mask": None, "module": "canny", "model": "canny-tiny", "weight": 0.7,
            "resize_mode": "Just Resize", "low_vram": False, "processor_res": 64, "threshold_a": 50,
            "threshold_b": 150, "guidance_start": 0.1, "guidance_end": 0.8, "control_mode": "Balanced",
            "pixel_perfect": False, "hr_option": "Both", "enabled": True, **changes}


def test_units_become_controls_with_the_thresholds_as_cannys(controlnets):
    first = unit()
    body = {"width": 64, "height": 64, "alwayson_scripts": {"ControlNet": {"args": [
        first, unit(enabled=False), {"input_image": first["image"], "model": model_title(controlnets),
                                     "module": "blur_gaussian", "threshold_a": 3, "save_detected_map": False}]}}}
    request, ignored, substituted, maps = translate(body)
    assert request["controls"] == [
        {"model": str(controlnets), "image": first["image"], "resize": True, "scale": 0.7, "start": 0.1, "end": 0.8,
         "preprocess": "canny", "preprocess_params": {"low_threshold": 50, "high_threshold": 150}},
        {"model": str(controlnets), "image": first["image"], "resize": True, "preprocess": "blur",
         "preprocess_params": {"radius": 3}}]
    assert (ignored, substituted, maps) == ([], [], [True, False])
    # the extension's defaults: -1 (and a value out of the slider's range) leave canny's own thresholds
    request, *_ = translate({**body, "alwayson_scripts": {"controlnet": {"args": [
        unit(threshold_a=-1, threshold_b=900, module="none")]}}})
    assert "preprocess" not in request["controls"][0]
    request, *_ = translate({**body, "alwayson_scripts": {"controlnet": {"args": [unit(threshold_a=-1, threshold_b=900)]}}})
    assert "preprocess_params" not in request["controls"][0] and request["controls"][0]["preprocess"] == "canny"


def test_what_codex_does_otherwise_is_substituted_and_said(controlnets):
    body = {"width": 64, "height": 48, "alwayson_scripts": {
        "controlnet": {"args": [unit(model="canny-tiny [0123abcd]", resize_mode=1, control_mode=2, processor_res=512,
                                     low_vram=True)]},
        "Dynamic Prompts": {"args": [True]}, "Refiner": {"args": []}}}
    request, ignored, substituted, _ = translate(body)
    where = "alwayson_scripts.controlnet.args.0"
    assert substituted == [
        f"{where}.model='canny-tiny [0123abcd]': no ControlNet has that hash; ran {model_title(controlnets)}, found "
        "by its name",
        f"{where}.resize_mode='Crop and Resize' ran as 'Just Resize': the 64x64 control image was stretched to 64x48",
        f"{where}.control_mode='ControlNet is more important' ran as 'Balanced' (diffusers has no equivalent of the "
        "extension's soft injection, 0.825^(12-i) per layer, applied to the conditional pass only)",
        f"{where}.processor_res=512: canny ran on the control image at the output size (48 on the short side), as "
        "pixel_perfect does"]
    assert ignored == ["alwayson_scripts.Dynamic Prompts (Codex runs no A1111 scripts)", f"{where}.low_vram=True"]
    assert request["controls"][0]["model"] == str(controlnets)
    # the same size: every resize mode leaves the image as it is; pixel_perfect is what Codex does
    _, _, same, _ = translate({"width": 64, "height": 64, "alwayson_scripts": {"controlnet": {"args": [
        unit(resize_mode="Resize and Fill", processor_res=512, pixel_perfect=True)]}}})
    assert same == []


def test_img2img_units_without_an_image_use_the_init_image(controlnets):
    init = b64_png((64, 64), seed=2)
    request, *_ = translate({"width": 64, "height": 64, "init_images": [init],
                             "alwayson_scripts": {"controlnet": {"args": [unit(image="")]}}}, task="img2img")
    assert request["controls"][0]["image"] == init


@pytest.mark.parametrize("changes, message", [
    ({"model": "None"}, "args.0.model: got 'None'; the unit is enabled but names no ControlNet"),
    ({"model": "depth-xl"}, "args.0.model: no ControlNet named 'depth-xl'; the ControlNets: canny-tiny ["),
    ({"module": "mlsd"}, "args.0.module: 'mlsd' is not a preprocessor here; the modules: none, "),
    ({"image": ""}, "args.0.image: got ''; the control image as base64 or a data URL (img2img uses its init"),
    ({"image": "bm90IGFuIGltYWdl"}, "args.0.image: not a base64 image or data URL"),
    ({"resize_mode": "Stretch"}, "args.0.resize_mode: got 'Stretch'; one of 'Just Resize', 'Crop and Resize'"),
    ({"control_mode": 3}, "args.0.control_mode: got 3; one of 'Balanced'"),
    ({"weight": "1"}, "args.0.weight: got '1'; a number"),
    ({"threshold_a": 50.5}, "args.0.threshold_a: got 50.5; canny's low_threshold is a whole number"),
    ({"enabled": "yes"}, "args.0.enabled: got 'yes'; true or false"),
])
def test_a_wrong_unit_is_refused_naming_its_field(controlnets, changes, message):
    with pytest.raises(UsageError) as caught:
        translate({"width": 64, "height": 64, "alwayson_scripts": {"controlnet": {"args": [unit(**changes)]}}})
    assert message in caught.value.message


def test_an_engine_without_controls_lists_the_units_as_ignored(controlnets):
    ignored = []
    request = {}
    body = {"alwayson_scripts": {"controlnet": {"args": [unit(model="not read")]}}}  # not read: could not run
    assert controlnet_units.into_request(body, "txt2vid", get_engine("wan_ti2v_5b"), request, ignored, []) == []
    assert ignored == ["alwayson_scripts.controlnet (1 unit: engine wan_ti2v_5b txt2vid takes no ControlNets)"]
    assert "controls" not in request


def test_a_hires_pass_without_controls_is_said():
    substituted = []
    controlnet_units.check_hires(get_engine("sd15"), {"controls": [{"model": "m", "image": "i"}]},
                                 [{"task": "upscale", "request": {}}], substituted)
    assert substituted == ["alwayson_scripts.controlnet: the hires pass runs without the ControlNet units (engine "
                           "sd15's upscale task takes no controls)"]
    controlnet_units.check_hires(get_engine("sd15"), {}, [{"task": "upscale", "request": {}}], substituted)
    assert len(substituted) == 1  # no controls, nothing to say


def test_the_infotext_line_is_the_extensions(controlnets):
    info = {"notes": {"controls": [
        {"model": "canny-tiny", "type": None, "scale": 0.7, "start": 0.0, "end": 0.8, "preprocess": "canny",
         "preprocess_params": {"low_threshold": 100, "high_threshold": 200}},
        {"model": "canny-tiny", "type": None, "scale": 1.0, "start": 0.0, "end": 1.0}]},
        "model": {"files": {"controlnet:0": {"folder": str(controlnets)}, "controlnet:1": {"folder": str(controlnets)}}}}
    title = model_title(controlnets)
    assert title == f"canny-tiny [{legacy_hash(controlnets / 'diffusion_pytorch_model.safetensors')}]"
    assert title.endswith("[e3b0c442]")  # A1111's old hash of a file under 1 MiB: the sha256 of nothing
    assert infotext_pairs(info, (64, 48)) == [
        ("ControlNet 0", f"Module: canny, Model: {title}, Weight: 0.7, Resize Mode: Just Resize, Processor Res: 48, "
                         "Threshold A: 100.0, Threshold B: 200.0, Guidance Start: 0.0, Guidance End: 0.8, "
                         "Pixel Perfect: False, Control Mode: Balanced"),
        ("ControlNet 1", f"Module: none, Model: {title}, Weight: 1.0, Resize Mode: Just Resize, Processor Res: 48, "
                         "Threshold A: -1, Threshold B: -1, Guidance Start: 0.0, Guidance End: 1.0, "
                         "Pixel Perfect: False, Control Mode: Balanced")]


def test_a_grid_axis_reaches_into_a_control():
    spec = {"engine": "sd15", "task": "txt2img", "request": {"prompt": "x", "controls": [{"model": "m", "image": "i"}]}}
    grid = make_grid(spec, [make_axis("x", "controls.0.scale", [0.5, 1.0], "--x")], 1, "g", "grid")
    cells = [request for _, _, request in grid.cells()]
    assert [cell["controls"] for cell in cells] == [[{"model": "m", "image": "i", "scale": 0.5}],
                                                   [{"model": "m", "image": "i", "scale": 1.0}]]
    assert spec["request"]["controls"] == [{"model": "m", "image": "i"}]  # every cell from the same request
    assert grid.axes[0].labels() == ["controls.0.scale: 0.5", "controls.0.scale: 1.0"]
    for field, problem in (("controls.1.scale", "the request has no controls.1"),
                           ("loras.0.scale", "the request has no loras"),
                           ("prompt.x", "prompt is not a mapping of fields")):
        with pytest.raises(UsageError, match=problem):
            make_grid(spec, [make_axis("x", field, [1, 2], "--x")], 1, "g", "grid")


# -- tiny sd15 with a tiny ControlNet: grid and batch ---------------------------------------------------------------


def tiny_sd15_controlnet(folder: Path) -> Path:
    """A ControlNet of the tiny sd15 UNet whose zero-initialised output convolutions are filled with small random
    values (a fresh ControlNet adds exactly nothing), saved as a diffusers folder."""
    import diffusers
    import torch

    from codex_core.testing import tiny_model_dir

    unet = diffusers.UNet2DConditionModel.from_pretrained(tiny_model_dir("sd15"), subfolder="unet")
    torch.manual_seed(0)
    controlnet = diffusers.ControlNetModel.from_unet(unet)
    with torch.no_grad():
        for name, parameter in controlnet.named_parameters():
            if name.startswith(("controlnet_down_blocks", "controlnet_mid_block", "controlnet_cond_embedding.conv_out")):
                parameter.normal_(0, 0.2)
    controlnet.save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_a_grid_over_a_control_scale_and_a_batch_give_the_single_runs_pixels(tmp_path):
    controlnet = tiny_sd15_controlnet(tmp_path / "cn")
    image = write_test_image(tmp_path / "control.png", (64, 64), seed=3)
    request = {"prompt": "a cat", "width": 64, "height": 64, "steps": 2, "seed": 5, "sampler": "DDIM",
               "scheduler": "Simple", "cfg": 7.0, "negative_prompt": "",
               "controls": [{"model": str(controlnet), "image": image, "preprocess": "canny"}]}
    out = tmp_path / "grid"
    result = cli_run(["grid", "sd15", "txt2img", "--model", "tiny", "--json", json.dumps(request),
                      "--x", "controls.0.scale=0.5,1.5", "--id", "cn", "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "batch.jsonl")
    lines.write_text("\n".join(json.dumps({"engine": "sd15", "task": "txt2img", "model": "tiny", "id": f"s{index}",
                                           "request": {**request, "controls": [{**request["controls"][0],
                                                                                "scale": scale}]}})
                               for index, scale in enumerate((0.5, 1.5))) + "\n")
    batch = cli_run(["batch", str(lines), "--out", str(tmp_path / "batch"), "-q"])
    assert batch.exit_code == 0, batch.output
    single = run_json("sd15", "txt2img", {**request, "controls": [{**request["controls"][0], "scale": 1.5}]},
                      tmp_path / "single")["info"]
    cells = [np.asarray(Image.open(out / f"cn-x{index}" / "0000.png")) for index in range(2)]
    items = [np.asarray(Image.open(tmp_path / "batch" / f"s{index}" / "0000.png")) for index in range(2)]
    assert np.array_equal(cells[1], np.asarray(Image.open(single["outputs"][0])))
    assert all(np.array_equal(cell, item) for cell, item in zip(cells, items))
    assert not np.array_equal(cells[0], cells[1])  # the scale reaches the ControlNet
    infos = [json.loads((out / f"cn-x{index}" / "info.json").read_text()) for index in range(2)]
    assert [info["notes"]["controls"][0]["scale"] for info in infos] == [0.5, 1.5]
    assert (out / "cn-x0" / "control-0-canny.png").is_file()
    with Image.open(out / "cn-x0" / "0000.png") as written:  # codex run's PNGs carry the extension's line too
        assert (f'ControlNet 0: "Module: canny, Model: {model_title(controlnet)}, Weight: 0.5, Resize Mode: Just Resize, '
                'Processor Res: 64, Threshold A: 100.0, Threshold B: 200.0, Guidance Start: 0.0, Guidance End: 1.0, '
                'Pixel Perfect: False, Control Mode: Balanced"') in written.info["parameters"]
