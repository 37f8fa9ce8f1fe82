"""The depth annotator: a tiny random Depth Anything (the real architecture, built here) in the annotators folder
gives, through `codex preprocess` and through a run's ``"preprocess": "depth"``, exactly what transformers'
own depth-estimation pipeline makes of the same image; the folder rule, and the error when nothing is there."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import ControlNetModel, DDIMScheduler, StableDiffusionControlNetPipeline, UNet2DConditionModel
from PIL import Image
from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, pipeline

from codex_core import ControlSpec
from codex_diffusers.annotators import DEPTH_NEEDS, depth_folder
from codex_diffusers.testing import assert_same_pixels, cli_run, pixels, run_json, tiny_model_dir

# Depth Anything V2 Small's processor settings, at a 42 px working size (3 patches of 14) instead of 518
PROCESSOR = {"image_processor_type": "DPTImageProcessor", "do_resize": True, "size": {"height": 42, "width": 42},
             "keep_aspect_ratio": True, "ensure_multiple_of": 14, "resample": 3, "do_rescale": True,
             "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.485, 0.456, 0.406],
             "image_std": [0.229, 0.224, 0.225], "do_pad": False}


def photo(width: int = 96, height: int = 64) -> Image.Image:
    """Structure for a depth model to see: a fractal blended with a gradient (not square: the map must come back
    at the input's size)."""
    image = Image.effect_mandelbrot((width, height), (-2.0, -1.2, 1.0, 1.2), 40).convert("RGB")
    return Image.blend(image, Image.linear_gradient("L").resize((width, height)).convert("RGB"), 0.4)


@pytest.fixture(scope="module")
def depth_model(tmp_path_factory) -> Path:
    """A tiny random Depth Anything (Dinov2 backbone, DPT neck and head), saved as safetensors with its processor."""
    folder = tmp_path_factory.mktemp("depth") / "depth-anything-tiny"
    backbone = Dinov2Config(hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32,
                            image_size=42, patch_size=14, out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=16, neck_hidden_sizes=[8, 16, 32, 32],
                                 fusion_hidden_size=16, head_hidden_size=8, patch_size=14)
    torch.manual_seed(0)
    DepthAnythingForDepthEstimation(config).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(PROCESSOR))
    return folder


@pytest.fixture
def models(tmp_path, monkeypatch, depth_model) -> Path:
    """A models root whose annotators folder holds the tiny depth model."""
    root = tmp_path / "models"
    shutil.copytree(depth_model, root / "annotators" / depth_model.name)
    monkeypatch.setenv("CODEX_MODELS_DIR", str(root))
    return root


def expected_depth(folder: Path, image: Image.Image) -> np.ndarray:
    """transformers' depth-estimation pipeline on the same folder and image: its "depth" image, as RGB."""
    made = pipeline("depth-estimation", model=str(folder))(image)["depth"]
    return pixels(made.convert("RGB"))


def test_codex_preprocess_depth_equals_transformers_depth_estimation_pipeline(models, tmp_path):
    source = tmp_path / "photo.png"
    photo().save(source)
    result = cli_run(["preprocess", "depth", str(source), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.stderr
    with Image.open(result.stdout.strip()) as written:
        made = pixels(written.convert("RGB"))
    expected = expected_depth(models / "annotators" / "depth-anything-tiny", photo())
    assert made.shape == (64, 96, 3) and (made[..., 0] == made[..., 2]).all()
    assert np.array_equal(made, expected)
    assert made.min() == 0 and made.max() == 255 and len(np.unique(made)) > 50  # a map, not a flat image


def test_a_run_with_preprocess_depth_saves_that_map_and_the_controlnet_reads_it(models, tmp_path):
    folder = tiny_model_dir("sd15")
    torch.manual_seed(1)
    controlnet = ControlNetModel.from_unet(UNet2DConditionModel.from_pretrained(folder, subfolder="unet"),
                                           conditioning_embedding_out_channels=(4, 8, 8, 16))
    with torch.no_grad():  # its zero-initialised convolutions filled with noise, or the control would change nothing
        for name, parameter in controlnet.named_parameters():
            if name.startswith(("controlnet_cond_embedding.conv_out", "controlnet_down_blocks",
                                "controlnet_mid_block")):
                parameter.normal_(0.0, 0.2)
    controlnet.save_pretrained(tmp_path / "controlnet")
    source = tmp_path / "photo.png"
    photo(64, 64).save(source)
    request = {"prompt": "a room", "steps": 2, "width": 64, "height": 64, "seed": 5, "prompt_syntax": "plain",
               "sampler": "DDIM", "scheduler": "Simple", "cfg": 7.0, "negative_prompt": "",
               "controls": [{"model": str(tmp_path / "controlnet"), "image": str(source), "preprocess": "depth",
                             "scale": 0.8}]}
    info = run_json("sd15", "txt2img", request, tmp_path / "out")["info"]
    side = Path(info["side_images"]["control-0-depth"]["path"])
    assert side.name == "control-0-depth.png" and info["notes"]["controls"][0]["preprocess"] == "depth"
    depth = expected_depth(models / "annotators" / "depth-anything-tiny", photo(64, 64))
    with Image.open(side) as saved:
        control = saved.convert("RGB")
    assert np.array_equal(pixels(control), depth)
    direct = StableDiffusionControlNetPipeline.from_pretrained(
        folder, controlnet=ControlNetModel.from_pretrained(tmp_path / "controlnet"), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    direct.scheduler = DDIMScheduler.from_config(direct.scheduler.config, timestep_spacing="trailing")
    image = direct("a room", image=control, num_inference_steps=2, guidance_scale=7.0, width=64,
                   height=64, negative_prompt="", controlnet_conditioning_scale=0.8,
                   generator=torch.Generator("cpu").manual_seed(5)).images[0]
    with Image.open(info["outputs"][0]) as ours:
        assert_same_pixels([ours], [image])


def _fake_depth_folder(path: Path, complete: bool = True) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    if complete:
        (path / "preprocessor_config.json").write_text("{}")
        (path / "model.safetensors").write_bytes(b"")
    return path


def test_the_first_depth_named_folder_with_its_files_in_search_order_is_used(tmp_path, monkeypatch):
    codex, a1111 = tmp_path / "models", tmp_path / "webui"
    monkeypatch.setenv("CODEX_MODELS_DIR", str(codex))
    config = tmp_path / "config.yaml"
    config.write_text(f"models:\n  roots:\n    - {{path: {a1111}, layout: a1111}}\n")
    monkeypatch.setenv("CODEX_CONFIG", str(config))
    downloads = a1111 / "extensions" / "sd-webui-controlnet" / "annotator" / "downloads"
    nested = _fake_depth_folder(downloads / "LiheYoung" / "depth-anything-small-hf")  # a hub id's two levels
    _fake_depth_folder(downloads / "zz" / "midas-not-by-name")
    assert depth_folder() == nested
    incomplete = _fake_depth_folder(codex / "annotators" / "DPT-Hybrid-MiDaS", complete=False)
    assert depth_folder() == nested  # the codex root comes first, but that folder lacks its processor and weights
    first = _fake_depth_folder(codex / "annotators" / "depth_anything_v2_small")
    assert depth_folder() == first and incomplete.name < first.name


def test_missing_depth_weights_exit_2_naming_what_to_download_and_where(tmp_path, monkeypatch):
    monkeypatch.setenv("CODEX_MODELS_DIR", str(tmp_path / "models"))
    _fake_depth_folder(tmp_path / "models" / "annotators" / "dpt-large", complete=False)
    source = tmp_path / "photo.png"
    photo().save(source)
    result = cli_run(["preprocess", "depth", str(source), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and not (tmp_path / "out").exists()
    assert (f"codex: error: TYPE: depth needs {DEPTH_NEEDS}, which is not in the annotators folders "
            f"({tmp_path / 'models' / 'annotators'}); {tmp_path / 'models' / 'annotators' / 'dpt-large'} lacks "
            "config.json or preprocessor_config.json or a .safetensors file") in result.stderr
    assert (f"download depth-anything/Depth-Anything-V2-Small-hf into "
            f"{tmp_path / 'models' / 'annotators' / 'depth-anything-v2-small-hf'}") in result.stderr
    with pytest.raises(ValueError, match=r"preprocess\n.*depth needs a depth-anything\*/dpt\* folder"):
        ControlSpec.model_validate({"model": "c", "image": str(source), "preprocess": "depth"})
