"""hunyuan_video_15 on tiny random-weight models: both tasks equal a direct diffusers call."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import (
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    HunyuanVideo15ImageToVideoPipeline,
    HunyuanVideo15Pipeline,
    UniPCMultistepScheduler,
)
from PIL import Image

from codex_diffusers.testing import (  # noqa: F401  (pytest_generate_tests parametrises the suite)
    EngineConformance,
    cli_run,
    direct_pipe,
    loaded_family,
    pytest_generate_tests,
    run_json,
    tiny_model_dir,
    write_test_image,
)

# What the flow sampler names must mean, written out independently of codex's table.
SCHEDULERS = {
    "Euler": lambda shift: (FlowMatchEulerDiscreteScheduler, {"shift": shift}),
    "UniPC": lambda shift: (UniPCMultistepScheduler,
                            {"prediction_type": "flow_prediction", "use_flow_sigmas": True, "flow_shift": shift}),
}


def direct_call(pipeline_cls, folder: Path, request: dict) -> list[Image.Image]:
    """The pipeline called as diffusers' docs do, with the request's guidance set on its guider."""
    pipe, checkpoint_config = direct_pipe(pipeline_cls, folder)
    scheduler_cls, flags = SCHEDULERS[request["sampler"]](request["flow_shift"])
    pipe.scheduler = scheduler_cls.from_config(checkpoint_config, **flags)
    pipe.guider = pipe.guider.new(guidance_scale=request["cfg"])
    kwargs = dict(prompt=request["prompt"], negative_prompt=request["negative_prompt"] or None,
                  num_frames=request["num_frames"], num_inference_steps=request["steps"], output_type="pil",
                  generator=torch.Generator("cpu").manual_seed(request["seed"]))
    if pipeline_cls is HunyuanVideo15ImageToVideoPipeline:
        kwargs["image"] = Image.open(request["init_image"]).convert("RGB")
    else:
        kwargs.update(height=request["height"], width=request["width"])
    return pipe(**kwargs).frames[0]


class TestHunyuanVideo15(EngineConformance):
    engine = "hunyuan_video_15"
    cases = {
        # sampler (Euler) and flow_shift (5.0) come from the preset; cfg 1.0 in both cases: the guider off, one pass a
        # step (as the distilled checkpoints run), which keeps the suite fast; test_cfg_is_the_runs_guider runs real
        # CFG with a negative prompt against diffusers
        "txt2vid": {"prompt": "a red fox in snow", "width": 48, "height": 32, "num_frames": 5, "fps": 8.0,
                    "steps": 2, "seed": 42, "cfg": 1.0},
        # no size: the 32x32 image's bucket (tiny target_size 32) is 32x32; UniPC at another shift
        "img2vid": {"prompt": "a fox turns its head", "init_image": "{tmp}/small.png", "num_frames": 1,
                    "fps": 12.0, "steps": 2, "seed": 7, "sampler": "UniPC", "flow_shift": 3.0, "cfg": 1.0},
    }
    bad_requests = [
        ("frames_off_stride", "txt2vid", {"prompt": "x", "num_frames": 6}, "nearest valid values: 5 or 9"),
        ("size_off_stride", "txt2vid", {"prompt": "x", "width": 40}, "nearest valid values: 32 or 48"),
        ("unknown_key", "txt2vid", {"prompt": "x", "guidance_scale": 3.0}, "guidance_scale"),
        ("dpm_needs_sigmas", "txt2vid", {"prompt": "x", "sampler": "DPM++ 2M"}, "allowed: Euler, UniPC"),
        ("unsupported_sampler", "img2vid", {"prompt": "x", "init_image": "{tmp}/small.png", "sampler": "DDIM"},
         "sampler: 'DDIM' has no exact equivalent"),
        ("negative_prompt_without_cfg", "txt2vid", {"prompt": "x", "cfg": 1.0, "negative_prompt": "blurry"},
         "negative_prompt: it would be ignored"),
        ("cfg_below_1", "txt2vid", {"prompt": "x", "cfg": 0.5}, "cfg"),
        ("img2vid_size_not_the_bucket", "img2vid", {"prompt": "x", "init_image": "{tmp}/small.png", "width": 48},
         "width: got 48; HunyuanVideo 1.5 img2vid makes 32x32"),
        ("img2vid_without_init_image", "img2vid", {"prompt": "x"}, "init_image: required field is missing"),
        ("init_image_on_txt2vid", "txt2vid", {"prompt": "x", "init_image": "{tmp}/small.png"}, "init_image"),
        ("flow_shift_zero", "txt2vid", {"prompt": "x", "flow_shift": 0.0}, "flow_shift"),
    ]

    def direct(self, task, request, model_dir):
        if task == "txt2vid":
            return direct_call(HunyuanVideo15Pipeline, model_dir, request)
        return direct_call(HunyuanVideo15ImageToVideoPipeline, model_dir / "i2v", request)

    def test_a_size_at_an_odd_multiple_of_the_stride_runs_at_that_size(self, task, tmp_path):
        """img2vid takes no size (the image's bucket decides; a size other than it is a bad request above): a tall
        image gives its tall bucket, recorded as the request's width/height and in notes.size."""
        if task == "txt2vid":
            return super().test_a_size_at_an_odd_multiple_of_the_stride_runs_at_that_size(task, tmp_path)
        from codex_core import probe_video

        write_test_image(tmp_path / "tall.png", (20, 60), seed=4)  # aspect 3: the 16x48 bucket of target_size 32
        request = {"prompt": "x", "init_image": str(tmp_path / "tall.png"), "num_frames": 1, "steps": 1, "seed": 1}
        info = run_json(self.engine, task, request, tmp_path / "out")["info"]
        assert (info["request"]["width"], info["request"]["height"]) == (16, 48)
        assert {k: info["notes"]["size"][k] for k in ("width", "height")} == {"width": 16, "height": 48}
        seen = probe_video(Path(info["video"]["path"]))
        assert (seen["width"], seen["height"]) == (16, 48)


# -- behaviour beyond the shared suite ----------------------------------------------------------


def test_bucket_size_is_the_pipelines_rule():
    """The pure arithmetic equals diffusers' own (HunyuanVideo15ImageProcessor.calculate_default_height_width)."""
    from diffusers.pipelines.hunyuan_video1_5.image_processor import HunyuanVideo15ImageProcessor

    from codex_hunyuan.v15_params import bucket_size

    processor = HunyuanVideo15ImageProcessor(vae_scale_factor=16)
    for target in (32, 640, 960):
        for width, height in [(1280, 720), (720, 1280), (1000, 1000), (640, 480), (300, 1200), (1917, 1080), (5, 3)]:
            h, w = processor.calculate_default_height_width(height, width, target)
            assert bucket_size(width, height, target) == (w, h), (target, width, height)


def test_cfg_is_the_runs_guider_and_the_cached_pipeline_keeps_its_own(tmp_path):
    request = {"prompt": "x", "width": 32, "height": 32, "num_frames": 1, "steps": 2, "seed": 3, "cfg": 2.5,
               "negative_prompt": "blurry"}
    result = run_json("hunyuan_video_15", "txt2vid", request, tmp_path / "out", "tiny", "--format", "frames")
    info = result["info"]
    assert info["steps_done"] == 2  # counted at the scheduler: the pipeline has no step callback
    base = loaded_family("hunyuan_video_15", "txt2vid").base
    assert base.guider.guidance_scale == 6.0  # the checkpoint's, untouched by the run's 2.5
    frames = sorted(f for f in result["files"] if Path(f).parent.name == "frames")
    expected = direct_call(HunyuanVideo15Pipeline, tiny_model_dir("hunyuan_video_15"), info["request"])
    assert len(frames) == len(expected) == 1 and (np.asarray(Image.open(frames[0]).convert("RGB")) ==
                                                  np.asarray(expected[0].convert("RGB"))).all()


def test_dpm_solver_fails_in_diffusers():
    """Why the flow DPM++ 2M is not offered: the pipelines pass explicit sigmas, which it does not take."""
    folder = tiny_model_dir("hunyuan_video_15")
    pipe, config = direct_pipe(HunyuanVideo15Pipeline, folder)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(config, prediction_type="flow_prediction",
                                                              use_flow_sigmas=True, flow_shift=5.0)
    try:
        with pytest.raises(ValueError, match="does not support custom"):
            pipe(prompt="x", height=16, width=16, num_frames=1, num_inference_steps=1, output_type="pil")
    finally:
        pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(config)


def test_each_task_rejects_the_other_tasks_checkpoint(tmp_path):
    tiny_dir = tiny_model_dir("hunyuan_video_15")
    out = tmp_path / "out"
    result = cli_run(["run", "hunyuan_video_15", "txt2vid", "--model", str(tiny_dir / "i2v"), "--out", str(out),
                      "--quiet", "--json", json.dumps({"prompt": "x", "width": 16, "height": 16, "num_frames": 1,
                                                       "steps": 1})])
    assert result.exit_code == 2, result.stderr
    assert "is an img2vid checkpoint (HunyuanVideo15ImageToVideoPipeline)" in result.stderr
    assert "checkpoint slot (CODEX_MODEL_HUNYUAN_VIDEO_15)" in result.stderr
    assert not out.exists() or not any(out.iterdir())


def test_tiny_model_has_the_real_strides():
    folder = tiny_model_dir("hunyuan_video_15")
    for cls, path in ((HunyuanVideo15Pipeline, folder), (HunyuanVideo15ImageToVideoPipeline, folder / "i2v")):
        config = json.loads((path / "model_index.json").read_text())
        assert config["_class_name"] == cls.__name__
        vae = json.loads((path / "vae" / "config.json").read_text())
        assert (vae["spatial_compression_ratio"], vae["temporal_compression_ratio"]) == (16, 4)
        transformer = json.loads((path / "transformer" / "config.json").read_text())
        assert transformer["patch_size"] == 1 and transformer["in_channels"] == 2 * vae["latent_channels"] + 1


def test_tiny_model_is_the_reference_architecture_with_the_same_config_keys():
    """The tiny txt2vid model against the shipped configs of …-480p_t2v: the same component classes and
    architecture choices (codex_diffusers' check) and the same config keys in every component (sizes aside)."""
    from codex_diffusers import reference_config_dir
    from codex_diffusers.testing import assert_tiny_matches_reference

    assert_tiny_matches_reference("hunyuan_video_15")
    reference, tiny = reference_config_dir("hunyuan_video_15"), tiny_model_dir("hunyuan_video_15")
    for config in sorted(reference.glob("*/*config.json")):
        theirs = json.loads(config.read_text())
        ours = json.loads((tiny / config.parent.name / config.name).read_text())
        metadata = {"_diffusers_version", "transformers_version", "dtype", "torch_dtype", "architectures",
                    "_class_name", "_name_or_path", "output_hidden_states"}
        assert set(ours) - metadata == set(theirs) - metadata, config.parent.name


def test_diffusers_cannot_load_a_transformer_file_or_a_lora_for_it_yet(tmp_path):
    """Why hunyuan_video_15 takes no --component file and no loras (canaries: a diffusers that adds either fails
    here, and the engine can then offer it)."""
    from diffusers import HunyuanVideo15Transformer3DModel

    from codex_core import get_engine

    folder = tiny_model_dir("hunyuan_video_15")
    with pytest.raises(ValueError, match="FromOriginalModelMixin is currently only compatible with"):
        HunyuanVideo15Transformer3DModel.from_single_file(
            str(folder / "transformer" / "diffusion_pytorch_model.safetensors"), config=str(folder),
            subfolder="transformer", local_files_only=True)
    assert not hasattr(HunyuanVideo15Pipeline, "load_lora_weights")
    assert not hasattr(HunyuanVideo15ImageToVideoPipeline, "load_lora_weights")
    engine = get_engine("hunyuan_video_15")
    assert engine.replaceable_components == () and not engine.supports_loras()
    result = cli_run(["run", "hunyuan_video_15", "txt2vid", "--model", str(folder), "--out", str(tmp_path / "o"),
                      "--component", f"transformer={folder / 'transformer' / 'diffusion_pytorch_model.safetensors'}",
                      "--json", json.dumps({"prompt": "x", "width": 16, "height": 16, "num_frames": 1, "steps": 1})])
    assert result.exit_code == 2 and "transformer" in result.stderr, result.stderr


def test_block_caches_are_refused_before_loading_and_the_others_run(tmp_path):
    """FirstBlockCache and MagCache look blocks up in diffusers' registry, which lacks HunyuanVideo 1.5's (a canary:
    a diffusers that registers it fails here); TaylorSeer and PAB hook modules and attention, and run."""
    from diffusers.hooks._helpers import TransformerBlockRegistry
    from diffusers.models.transformers.transformer_hunyuan_video15 import HunyuanVideo15TransformerBlock

    with pytest.raises(ValueError, match="not registered"):
        TransformerBlockRegistry.get(HunyuanVideo15TransformerBlock)
    request = {"prompt": "x", "width": 16, "height": 16, "num_frames": 1, "steps": 3, "seed": 1, "cfg": 1.0}
    for kind in ("first_block", "magcache"):
        result = cli_run(["run", "hunyuan_video_15", "txt2vid", "--model", "tiny", "--out", str(tmp_path / kind),
                          "--json", json.dumps({**request, "cache": {"type": kind, "mag_ratios": [1.0] * 3}
                                                if kind == "magcache" else {"type": kind}})])
        assert result.exit_code == 2 and "cache.type" in result.stderr, result.stderr
    for kind in ("taylorseer", "pab"):
        info = run_json("hunyuan_video_15", "txt2vid", {**request, "cache": {"type": kind}}, tmp_path / kind)["info"]
        assert info["request"]["cache"]["type"] == kind and info["steps_done"] == 3
