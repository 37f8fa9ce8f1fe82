"""ControlNets on sd15 and sdxl: each task equals diffusers' own ControlNet pipeline on the same tiny base model,
tiny ControlNet and control image, to the pixel; stacking, union models, caching, preprocessing, errors, replay."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch
from diffusers import (
    ControlNetModel,
    ControlNetUnionModel,
    DDIMScheduler,
    StableDiffusionControlNetImg2ImgPipeline,
    StableDiffusionControlNetInpaintPipeline,
    StableDiffusionControlNetPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLControlNetImg2ImgPipeline,
    StableDiffusionXLControlNetInpaintPipeline,
    StableDiffusionXLControlNetPipeline,
    StableDiffusionXLControlNetUnionImg2ImgPipeline,
    StableDiffusionXLControlNetUnionPipeline,
    UNet2DConditionModel,
)
from PIL import Image

from codex_diffusers.testing import (
    assert_same_pixels,
    cli_run,
    loaded_family,
    loaded_model,
    refused_run,
    pixels,
    run_json,
    tiny_model_dir,
    write_test_image,
)
from codex_diffusers.testing.checkpoint_writers import write_controlnet_single_file

# the zero-initialised parts of a fresh ControlNet: filled with noise, or a control would change nothing
ZERO_INITIALISED = ("controlnet_cond_embedding.conv_out", "controlnet_down_blocks", "controlnet_mid_block",
                    "spatial_ch_projs")
# four blocks: the control image's embedding downsamples by 8, as the VAE does
CONDITIONING_CHANNELS = (4, 8, 8, 16)


def _with_noise(module, seed: int):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if name.startswith(ZERO_INITIALISED):
                parameter.copy_(torch.normal(0.0, 0.2, parameter.shape, generator=generator))
    return module


def _unet(engine: str) -> UNet2DConditionModel:
    return UNet2DConditionModel.from_pretrained(tiny_model_dir(engine), subfolder="unet")


@pytest.fixture(scope="session")
def controlnets(tmp_path_factory):
    """Tiny ControlNets of the tiny sd15 and sdxl UNets (two for sdxl, to stack), a tiny SDXL union ControlNet
    (6 modes, as xinsir's first union model), and a FLUX ControlNet folder of a config only."""
    root = tmp_path_factory.mktemp("controlnets")
    folders = {}
    for name, engine, seed in (("sd15", "sd15", 1), ("sdxl", "sdxl", 2), ("sdxl_b", "sdxl", 3)):
        torch.manual_seed(seed)
        module = ControlNetModel.from_unet(_unet(engine), conditioning_embedding_out_channels=CONDITIONING_CHANNELS)
        _with_noise(module, seed).save_pretrained(root / name)
        folders[name] = root / name
    base = ControlNetUnionModel.from_unet(_unet("sdxl"), conditioning_embedding_out_channels=CONDITIONING_CHANNELS)
    # the fusing transformer as wide as the tiny UNet's first block (diffusers' default: 320, the real one's);
    # without "_use_default_values", which would bring those defaults back
    config = {key: value for key, value in base.config.items() if key != "_use_default_values"}
    config.update(num_trans_channel=4, num_trans_head=2, num_proj_channel=4, num_control_type=6)
    torch.manual_seed(4)
    _with_noise(ControlNetUnionModel.from_config(config), 4).save_pretrained(root / "union")
    folders["union"] = root / "union"
    torch.manual_seed(5)
    _with_noise(ControlNetUnionModel.from_config(config), 5).save_pretrained(root / "union_b")
    folders["union_b"] = root / "union_b"
    # the same union model saved under the single-mode class's name: its config's mode count says what it is
    shutil.copytree(root / "union", root / "union_named_single")
    config = json.loads((root / "union" / "config.json").read_text())
    (root / "union_named_single" / "config.json").write_text(json.dumps({**config, "_class_name": "ControlNetModel"}))
    folders["union_named_single"] = root / "union_named_single"
    # single files as A1111's models/ControlNet holds them: lllyasviel's layout, and diffusers' keys in one file
    folders["sd15_file"] = write_controlnet_single_file(root / "sd15", root / "control_tiny_sd15.safetensors")
    folders["sdxl_file"] = write_controlnet_single_file(root / "sdxl", root / "tiny_xl_canny.safetensors",
                                                        original=False)
    folders["sdxl_original"] = write_controlnet_single_file(root / "sdxl", root / "xl_original.safetensors")
    (root / "pickled").mkdir()  # a ControlNet folder with .bin weights only
    shutil.copy(root / "sd15" / "config.json", root / "pickled" / "config.json")
    (root / "pickled" / "diffusion_pytorch_model.bin").write_bytes(b"not loaded")
    folders["pickled"] = root / "pickled"
    (root / "flux").mkdir()
    (root / "flux" / "config.json").write_text(json.dumps({"_class_name": "FluxControlNetModel"}))
    folders["flux"] = root / "flux"
    return folders


@pytest.fixture(scope="session")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("control_images")
    return {"init": write_test_image(root / "init.png", (64, 64), seed=1),
            "mask": write_test_image(root / "mask.png", (64, 64), mode="L"),
            "control": write_test_image(root / "control.png", (64, 64), seed=3),
            "control_b": write_test_image(root / "control_b.png", (64, 64), seed=4),
            "small": write_test_image(root / "small.png", (32, 32), seed=5)}


BASE = {"prompt": "a red fox", "negative_prompt": "blurry", "steps": 4, "seed": 5, "cfg": 6.0,
        "prompt_syntax": "plain", "sampler": "DDIM", "scheduler": "Simple"}
PIPELINES = {("sd15", "txt2img"): StableDiffusionControlNetPipeline,
             ("sd15", "img2img"): StableDiffusionControlNetImg2ImgPipeline,
             ("sd15", "inpaint"): StableDiffusionControlNetInpaintPipeline,
             ("sdxl", "txt2img"): StableDiffusionXLControlNetPipeline,
             ("sdxl", "img2img"): StableDiffusionXLControlNetImg2ImgPipeline,
             ("sdxl", "inpaint"): StableDiffusionXLControlNetInpaintPipeline}
SD15_OPTIONS = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}


def _request(task: str, images, controls: list[dict]) -> dict:
    request = {**BASE, "controls": controls}
    if task == "txt2img":
        request.update(width=64, height=64)
    else:
        request.update(init_image=images["init"], strength=0.8)
        if task == "inpaint":
            request["mask_image"] = images["mask"]
    return request


def _direct(pipeline_cls, engine: str, controlnet, task: str, request: dict, **control_arguments):
    """diffusers' own call: the control pipeline loaded from the tiny base folder with the given ControlNet(s)
    (a pipeline of this test's own, never a cached one), DDIM with trailing spacing ("DDIM"/"Simple")."""
    options = SD15_OPTIONS if engine == "sd15" else {}
    pipe = pipeline_cls.from_pretrained(tiny_model_dir(engine), controlnet=controlnet, **options)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
    kwargs = dict(prompt=request["prompt"], negative_prompt=request["negative_prompt"],
                  num_inference_steps=request["steps"], guidance_scale=request["cfg"], width=64, height=64,
                  generator=torch.Generator("cpu").manual_seed(request["seed"]), **control_arguments)
    if task != "txt2img":
        kwargs.update(image=Image.open(request["init_image"]).convert("RGB"), strength=request["strength"])
    if task == "inpaint":
        kwargs["mask_image"] = Image.open(request["mask_image"]).convert("L")
    return pipe(**kwargs).images


def _image(path) -> Image.Image:
    return Image.open(path).convert("RGB")


@pytest.mark.parametrize("engine, task", list(PIPELINES))
def test_one_controlnet_equals_diffusers_controlnet_pipeline(engine, task, controlnets, images, tmp_path):
    control = {"model": str(controlnets[engine]), "image": images["control"], "scale": 0.7, "start": 0.2, "end": 0.8}
    request = _request(task, images, [control])
    result = run_json(engine, task, request, tmp_path / "out")
    image_argument = "image" if task == "txt2img" else "control_image"
    expected = _direct(PIPELINES[(engine, task)], engine, ControlNetModel.from_pretrained(controlnets[engine]), task,
                       request, **{image_argument: _image(images["control"])}, controlnet_conditioning_scale=0.7,
                       control_guidance_start=0.2, control_guidance_end=0.8)
    assert_same_pixels(result["info"]["outputs"], expected)
    info = result["info"]
    assert info["notes"]["controls"] == [{"model": str(controlnets[engine]), "type": None, "scale": 0.7,
                                          "start": 0.2, "end": 0.8}]


def test_two_stacked_controlnets_on_sdxl_equal_diffusers_multi_controlnet(controlnets, images, tmp_path):
    controls = [{"model": str(controlnets["sdxl"]), "image": images["control"], "scale": 0.6, "end": 0.7},
                {"model": str(controlnets["sdxl_b"]), "image": images["control_b"], "scale": 1.3, "start": 0.3}]
    request = _request("txt2img", images, controls)
    result = run_json("sdxl", "txt2img", request, tmp_path / "out")
    nets = [ControlNetModel.from_pretrained(controlnets["sdxl"]), ControlNetModel.from_pretrained(controlnets["sdxl_b"])]
    expected = _direct(StableDiffusionXLControlNetPipeline, "sdxl", nets, "txt2img", request,
                       image=[_image(images["control"]), _image(images["control_b"])],
                       controlnet_conditioning_scale=[0.6, 1.3], control_guidance_start=[0.0, 0.3],
                       control_guidance_end=[0.7, 1.0])
    assert_same_pixels(result["info"]["outputs"], expected)
    files = result["info"]["model"]["files"]
    assert files["controlnet:0"]["folder"] == str(controlnets["sdxl"])
    assert files["controlnet:1"]["folder"] == str(controlnets["sdxl_b"])
    assert files["controlnet:0"]["sha256"] != files["controlnet:1"]["sha256"]


def test_union_controlnet_takes_several_controls_as_lists_on_one_model(controlnets, images, tmp_path):
    """Two controls on one union model go to that one model (its modes fuse inside it), not to a
    MultiControlNetUnionModel: diffusers' union pipeline with lists of images and modes."""
    controls = [{"model": str(controlnets["union"]), "image": images["control"], "type": "canny", "scale": 0.8},
                {"model": str(controlnets["union"]), "image": images["control_b"], "type": "depth", "scale": 1.2,
                 "end": 0.6}]
    request = _request("txt2img", images, controls)
    result = run_json("sdxl", "txt2img", request, tmp_path / "out")
    expected = _direct(StableDiffusionXLControlNetUnionPipeline, "sdxl",
                       ControlNetUnionModel.from_pretrained(controlnets["union"]), "txt2img", request,
                       control_image=[_image(images["control"]), _image(images["control_b"])], control_mode=[3, 1],
                       controlnet_conditioning_scale=[0.8, 1.2], control_guidance_start=[0.0, 0.0],
                       control_guidance_end=[1.0, 0.6])
    assert_same_pixels(result["info"]["outputs"], expected)
    assert [c["type"] for c in result["info"]["notes"]["controls"]] == ["canny", "depth"]
    renamed = [{**control, "model": str(controlnets["union_named_single"])} for control in controls]
    same = run_json("sdxl", "txt2img", _request("txt2img", images, renamed), tmp_path / "renamed")
    assert_same_pixels(same["info"]["outputs"], expected)
    # the modes reach the model: the same controls with their types swapped steer otherwise
    swapped = [{**controls[0], "type": "depth"}, {**controls[1], "type": "canny"}]
    other = run_json("sdxl", "txt2img", _request("txt2img", images, swapped), tmp_path / "swapped")
    assert not np.array_equal(pixels(other["info"]["outputs"][0]), pixels(result["info"]["outputs"][0]))


def test_union_controlnets_of_two_folders_stack_like_diffusers_multi_union(controlnets, images, tmp_path):
    controls = [{"model": str(controlnets["union"]), "image": images["control"], "type": "openpose", "scale": 0.9},
                {"model": str(controlnets["union_b"]), "image": images["control_b"], "type": "segment",
                 "start": 0.25}]
    request = _request("img2img", images, controls)
    result = run_json("sdxl", "img2img", request, tmp_path / "out")
    nets = [ControlNetUnionModel.from_pretrained(controlnets["union"]),
            ControlNetUnionModel.from_pretrained(controlnets["union_b"])]
    expected = _direct(StableDiffusionXLControlNetUnionImg2ImgPipeline, "sdxl", nets, "img2img", request,
                       control_image=[_image(images["control"]), _image(images["control_b"])], control_mode=[0, 5],
                       controlnet_conditioning_scale=[0.9, 1.0], control_guidance_start=[0.0, 0.25],
                       control_guidance_end=[1.0, 1.0])
    assert_same_pixels(result["info"]["outputs"], expected)


@pytest.mark.parametrize("engine, task, name", [("sd15", "inpaint", "sd15_file"), ("sdxl", "img2img", "sdxl_file")])
def test_single_file_controlnet_equals_its_diffusers_folder(engine, task, name, controlnets, images, tmp_path):
    """A1111-style single files (sd15: lllyasviel's original layout; sdxl: diffusers' keys in one file) load with a
    config derived from the run's UNet and the file's tensors: the same pixels as the diffusers folder."""
    control = {"image": images["control"], "scale": 0.8, "start": 0.1, "end": 0.9}
    from_file = run_json(engine, task, _request(task, images, [{**control, "model": str(controlnets[name])}]),
                         tmp_path / "file")
    from_folder = run_json(engine, task, _request(task, images, [{**control, "model": str(controlnets[engine])}]),
                           tmp_path / "folder")
    assert_same_pixels(from_file["info"]["outputs"], [Image.open(from_folder["info"]["outputs"][0])])
    record = from_file["info"]["model"]["files"]["controlnet:0"]
    assert record["path"] == str(controlnets[name]) and record["class"] == "ControlNetModel"
    assert record["sha256"] == hashlib.sha256(controlnets[name].read_bytes()).hexdigest()


def test_controls_leave_the_cached_model_alone(controlnets, images, tmp_path):
    """A ControlNet added and removed between runs: the base model is not reloaded (the cache's entry is the same
    object, load time 0) and a run without controls afterwards gives the plain pipeline's pixels."""
    plain = {**BASE, "width": 64, "height": 64}
    before = run_json("sd15", "txt2img", plain, tmp_path / "a")
    model = loaded_model("sd15")
    controlled = run_json("sd15", "txt2img", {**plain, "controls": [
        {"model": str(controlnets["sd15"]), "image": images["control"], "scale": 1.5}]}, tmp_path / "b")
    assert loaded_model("sd15") is model
    assert controlled["info"]["model"]["reused_from_cache"] is True
    assert controlled["info"]["timings"]["load"] == 0.0
    assert not np.array_equal(pixels(controlled["info"]["outputs"][0]), pixels(before["info"]["outputs"][0]))  # the control steers
    after = run_json("sd15", "txt2img", plain, tmp_path / "c")
    assert loaded_model("sd15") is model and after["info"]["timings"]["load"] == 0.0
    fresh = StableDiffusionPipeline.from_pretrained(tiny_model_dir("sd15"), **SD15_OPTIONS)
    fresh.set_progress_bar_config(disable=True)
    fresh.scheduler = DDIMScheduler.from_config(fresh.scheduler.config, timestep_spacing="trailing")
    expected = fresh(prompt=plain["prompt"], negative_prompt=plain["negative_prompt"], num_inference_steps=4,
                     guidance_scale=6.0, width=64, height=64, generator=torch.Generator("cpu").manual_seed(5)).images
    assert_same_pixels(after["info"]["outputs"], expected)
    assert_same_pixels(before["info"]["outputs"], expected)
    family = loaded_family("sd15")
    assert not hasattr(family.base, "controlnet")
    assert family.for_class(StableDiffusionControlNetPipeline).controlnet is None  # the run set its own on a view


def test_model_cache_counts_the_controlnet_bytes(controlnets, images, tmp_path):
    folder = shutil.copytree(controlnets["sd15"], tmp_path / "cn_copy")  # a ControlNet no run has loaded yet
    plain = {**BASE, "width": 64, "height": 64, "steps": 1}
    run_json("sd15", "txt2img", plain, tmp_path / "a")
    before = loaded_model("sd15").nbytes()
    run_json("sd15", "txt2img", {**plain, "controls": [{"model": str(folder), "image": images["control"]}]},
             tmp_path / "b")
    module = ControlNetModel.from_pretrained(folder)
    size = sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))
    assert loaded_model("sd15").nbytes() - before == size


def test_canny_preprocess_saves_and_uses_an_independent_canny(controlnets, images, tmp_path):
    import cv2

    control = {"model": str(controlnets["sd15"]), "image": images["init"], "preprocess": "canny",
               "preprocess_params": {"low_threshold": 40, "high_threshold": 120}, "scale": 0.9}
    request = _request("txt2img", images, [control])
    result = run_json("sd15", "txt2img", request, tmp_path / "out")
    info = result["info"]
    saved = tmp_path / "out" / info["run_id"] / "control-0-canny.png"
    assert saved.is_file() and info["side_images"]["control-0-canny"]["path"].endswith("control-0-canny.png")
    edges = cv2.Canny(np.asarray(Image.open(images["init"]).convert("RGB")), 40, 120)
    assert edges.any()  # a check that could fail: the input has edges at these thresholds
    assert np.array_equal(np.asarray(Image.open(saved).convert("L")), edges)
    assert np.array_equal(np.asarray(Image.open(saved).convert("RGB")), np.stack([edges] * 3, axis=-1))
    record = info["notes"]["controls"][0]
    assert record["preprocess"] == "canny" and record["preprocessed_image"] == "control-0-canny.png"
    assert record["preprocess_params"] == {"low_threshold": 40, "high_threshold": 120}
    expected = _direct(StableDiffusionControlNetPipeline, "sd15", ControlNetModel.from_pretrained(controlnets["sd15"]),
                       "txt2img", request, image=Image.fromarray(edges).convert("RGB"),
                       controlnet_conditioning_scale=0.9)
    assert_same_pixels(result["info"]["outputs"], expected)


def test_resize_true_resizes_the_control_image_and_records_it(controlnets, images, tmp_path):
    control = {"model": str(controlnets["sd15"]), "image": images["small"], "resize": True}
    result = run_json("sd15", "txt2img", _request("txt2img", images, [control]), tmp_path / "out")
    assert result["info"]["notes"]["resized"]["controls.0.image"]["from"] == [32, 32]
    assert result["info"]["notes"]["resized"]["controls.0.image"]["to"] == [64, 64]
    assert Image.open(result["info"]["outputs"][0]).size == (64, 64)


@pytest.mark.parametrize("engine, control, expected", [
    ("sd15", {"model": "{sdxl}"}, ["controls.0.model", "SDXL ControlNet", "engine sdxl runs it"]),
    ("sdxl", {"model": "{sd15}"}, ["controls.0.model", "SD 1.x/2.x ControlNet", "engine sd15 runs it"]),
    ("sd15", {"model": "{flux}"}, ["controls.0.model", "FluxControlNetModel", "ControlNetModel"]),
    ("sd15", {"model": "{union}", "type": "canny"}, ["controls.0.model", "ControlNetUnionModel"]),
    ("sd15", {"image": "{not_an_image}"}, ["controls.0.image"]),
    ("sd15", {"image": "{small}"}, ["controls.0.image", "32x32", "64x64", "resize"]),
    ("sd15", {"start": 0.8, "end": 0.3}, ["controls.0.start", "after end"]),
    ("sd15", {"start": 0.5, "end": 0.5}, ["controls.0.end", "equals start"]),
    ("sd15", {"preprocess": "depth"}, ["controls.0.preprocess"]),
    ("sd15", {"type": "canny"}, ["controls.0.type", "single-mode", "leave type out"]),
    ("sdxl", {"model": "{union}"}, ["controls.0.type", "union ControlNet", "canny"]),
    ("sdxl", {"model": "{union}", "type": "tile"}, ["controls.0.type", "'tile'", "segment"]),
    ("sdxl", {"model": "{union_named_single}"}, ["controls.0.type", "union ControlNet"]),
    ("sd15", {"model": "{pickled}"}, ["controls.0.model", "no diffusion_pytorch_model.safetensors"]),
    ("sd15", {"model": "{sdxl_file}"}, ["controls.0.model", "tiny_xl_canny.safetensors", "engine sdxl runs it"]),
    ("sdxl", {"model": "{sd15_file}"}, ["controls.0.model", "engine sd15 runs it"]),
    ("sd15", {"model": "{sd15_file}", "type": "canny"}, ["controls.0.type", "single-mode"]),
    ("sd15", {"model": "{a_lora}"}, ["controls.0.model", "not a ControlNet file"]),
    ("sdxl", {"model": "{sdxl_original}"}, ["controls.0.model", "original layout", "diffusers-layout file"]),
])
def test_bad_controls_exit_2_before_loading_naming_the_field(engine, control, expected, controlnets, images,
                                                              tmp_path):
    (tmp_path / "not_an_image.png").write_text("not a picture")
    from safetensors.torch import save_file

    save_file({"lora_unet_down_blocks_1_attentions_0_proj_in.lora_down.weight": torch.zeros(2, 8)},
              str(tmp_path / "a_lora.safetensors"))
    values = {**{key: str(path) for key, path in controlnets.items()}, **images,
              "not_an_image": str(tmp_path / "not_an_image.png"), "a_lora": str(tmp_path / "a_lora.safetensors")}
    spec = {"model": str(controlnets[engine]), "image": images["control"]}
    spec.update({key: value.format(**values) if isinstance(value, str) else value for key, value in control.items()})
    stderr = refused_run(engine, "txt2img", _request("txt2img", images, [spec]), tmp_path, empty_out_ok=True)
    for text in expected:
        assert text in stderr, stderr


def test_union_and_single_mode_controls_do_not_mix(controlnets, images, tmp_path):
    controls = [{"model": str(controlnets["sdxl"]), "image": images["control"]},
                {"model": str(controlnets["union"]), "image": images["control"], "type": "depth"}]
    stderr = refused_run("sdxl", "txt2img", _request("txt2img", images, controls), tmp_path,
                         empty_out_ok=True)
    assert "controls: controls.1 on union ControlNets, controls.0 on single-mode ones" in stderr


def test_replay_finds_a_moved_controlnet_by_its_sha256(controlnets, images, tmp_path, monkeypatch):
    """A control run replays identically; after its ControlNet folder moved into the controlnet models folder under
    another name, replay finds it by the sha256 of its weights file and still reproduces the run."""
    monkeypatch.setenv("CODEX_MODELS_DIR", str(tmp_path / "models"))
    original = shutil.copytree(controlnets["sd15"], tmp_path / "elsewhere" / "my-canny")
    control = {"model": str(original), "image": images["init"], "preprocess": "canny", "scale": 0.8, "end": 0.9}
    first = run_json("sd15", "img2img", _request("img2img", images, [control]), tmp_path / "out")
    info = first["info"]
    record = info["model"]["files"]["controlnet:0"]
    assert record["path"] == str(original / "diffusion_pytorch_model.safetensors")
    assert info["inputs"]["controls.0.image"]["sha256"]
    again = cli_run(["replay", first["run_dir"], "--check", "-q", "--out", str(tmp_path / "again")])
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout)["check"]["identical"] is True
    (tmp_path / "models" / "controlnet").mkdir(parents=True)
    moved = shutil.move(str(original), tmp_path / "models" / "controlnet" / "canny-renamed")
    moved_run = cli_run(["replay", first["run_dir"], "--check", "--out", str(tmp_path / "moved")])
    assert moved_run.exit_code == 0, moved_run.stderr
    assert f"controls.0.model: {original / 'diffusion_pytorch_model.safetensors'} is gone" in moved_run.stderr
    assert str(moved) in moved_run.stderr
    data = json.loads(moved_run.stdout)
    assert data["check"]["identical"] is True
    assert data["info"]["request"]["controls"][0]["model"] == str(moved)
    # a ControlNet folder in the controlnet models folder is also found by its name
    by_name = run_json("sd15", "img2img", _request("img2img", images, [{**control, "model": "canny-renamed"}]),
                       tmp_path / "by_name")
    assert_same_pixels(by_name["info"]["outputs"], first["info"]["outputs"])
