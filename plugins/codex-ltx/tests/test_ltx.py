"""ltx_video on a tiny random-weight LTX-Video: both tasks equal a direct diffusers call, frame for frame."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import (
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    LTXImageToVideoPipeline,
    LTXPipeline,
    UniPCMultistepScheduler,
)
from PIL import Image

from codex_diffusers.testing import (  # noqa: F401  (pytest_generate_tests parametrises the suite)
    EngineConformance,
    cli_run,
    direct_pipe,
    pytest_generate_tests,
    run_json,
    tiny_model_dir,
)

# What the flow sampler names must mean here, written out independently of codex's table.
FLOW_SIGMAS = {"prediction_type": "flow_prediction", "use_flow_sigmas": True}
SCHEDULERS = {"Euler": (FlowMatchEulerDiscreteScheduler, {}), "UniPC": (UniPCMultistepScheduler, FLOW_SIGMAS)}
CLASSES = {"txt2vid": LTXPipeline, "img2vid": LTXImageToVideoPipeline}


def direct_call(task: str, request: dict, model_dir) -> list[Image.Image]:
    pipe, checkpoint_config = direct_pipe(CLASSES[task], model_dir)
    scheduler_cls, flags = SCHEDULERS[request["sampler"]]
    pipe.scheduler = scheduler_cls.from_config(checkpoint_config, **flags)
    kwargs = dict(prompt=request["prompt"], negative_prompt=request["negative_prompt"] or None,
                  width=request["width"], height=request["height"], num_frames=request["num_frames"],
                  frame_rate=request["fps"], num_inference_steps=request["steps"], guidance_scale=request["cfg"],
                  decode_timestep=request["decode_timestep"], decode_noise_scale=request["decode_noise_scale"],
                  generator=torch.Generator("cpu").manual_seed(request["seed"]))
    if task == "img2vid":
        image = Image.open(request["init_image"]).convert("RGB")
        kwargs["image"] = image.resize((request["width"], request["height"]), Image.Resampling.LANCZOS)
    return pipe(**kwargs).frames[0]


class TestLTXVideo(EngineConformance):
    engine = "ltx_video"
    cases = {
        # sampler (Euler), cfg 3.0, decode settings and the negative prompt come from the preset
        "txt2vid": {"prompt": "a red fox running in snow", "width": 64, "height": 32, "num_frames": 9, "fps": 24.0,
                    "steps": 2, "seed": 42},
        # UniPC with flow sigmas, a non-default decode timestep, an init image resized to the frame size
        "img2vid": {"prompt": "the fox turns its head", "init_image": "{tmp}/init.png", "width": 32, "height": 32,
                    "num_frames": 9, "fps": 12.0, "steps": 2, "seed": 7, "sampler": "UniPC",
                    "decode_timestep": 0.1, "negative_prompt": ""},
    }
    bad_requests = [
        ("frames_not_8k_plus_1", "txt2vid", {"prompt": "x", "num_frames": 10}, "nearest valid values: 9 or 17"),
        ("size_off_stride", "txt2vid", {"prompt": "x", "width": 720}, "nearest valid values: 704 or 736"),
        ("init_image_on_txt2vid", "txt2vid", {"prompt": "x", "init_image": "{tmp}/init.png"}, "init_image"),
        ("img2vid_without_init_image", "img2vid", {"prompt": "x"}, "init_image: required field is missing"),
        ("dpm_takes_no_sigmas", "txt2vid", {"prompt": "x", "sampler": "DPM++ 2M"}, "allowed: Euler, UniPC"),
        ("a1111_sampler", "txt2vid", {"prompt": "x", "sampler": "Euler a"}, "sampler"),
        ("no_flow_shift_field", "txt2vid", {"prompt": "x", "flow_shift": 3.0}, "flow_shift: unknown field"),
        ("decode_timestep_range", "txt2vid", {"prompt": "x", "decode_timestep": 2.0}, "decode_timestep"),
        ("one_video_per_request", "txt2vid", {"prompt": "x", "batch_size": 2}, "batch_size"),
        ("one_step_fails_in_the_scheduler", "txt2vid", {"prompt": "x", "steps": 1}, "steps: got 1"),
    ]

    def direct(self, task, request, model_dir):
        return direct_call(task, request, model_dir)


# -- behaviour beyond the shared suite ----------------------------------------------------------


def test_presets_are_the_authors_settings():
    from codex_core import get_engine, preset_values

    expected = {"width": 704, "height": 480, "num_frames": 121, "fps": 25.0, "steps": 40, "cfg": 3.0,
                "decode_timestep": 0.05, "decode_noise_scale": 0.025, "sampler": "Euler",
                "negative_prompt": "worst quality, inconsistent motion, blurry, jittery, distorted"}
    for task in ("txt2vid", "img2vid"):
        assert preset_values(get_engine("ltx_video"), task) == expected


def test_fps_conditions_the_model_as_well_as_the_export(tmp_path):
    request = {"prompt": "x", "width": 32, "height": 32, "num_frames": 9, "steps": 2, "seed": 1}
    slow = run_json("ltx_video", "txt2vid", {**request, "fps": 8.0}, tmp_path / "a", "tiny", "--format", "frames,mp4")
    fast = run_json("ltx_video", "txt2vid", {**request, "fps": 30.0}, tmp_path / "b", "tiny", "--format", "frames,mp4")
    assert (slow["info"]["video"]["fps"], fast["info"]["video"]["fps"]) == (8.0, 30.0)
    frames = [sorted(f for f in run["files"] if "/frames/" in f) for run in (slow, fast)]
    assert any(Image.open(a).tobytes() != Image.open(b).tobytes() for a, b in zip(*frames))


def test_tiny_model_has_the_real_architecture():
    pipe, scheduler = direct_pipe(LTXPipeline, tiny_model_dir("ltx_video"))
    assert (pipe.vae_spatial_compression_ratio, pipe.vae_temporal_compression_ratio) == (32, 8)
    assert pipe.vae.config.timestep_conditioning is True  # decode_timestep matters, as on 0.9.1+ checkpoints
    assert pipe.transformer.config.caption_channels == pipe.text_encoder.config.d_model
    assert scheduler["use_dynamic_shifting"] is True and scheduler["shift_terminal"] == 0.1


# -- the diffusers behaviour our validation and sampler policy rest on (diffusers 0.42) -----------------


def test_diffusers_alone_would_round_frames_silently(tmp_path):
    pipe, config = direct_pipe(LTXPipeline, tiny_model_dir("ltx_video"))
    pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(config)
    frames = pipe("x", width=32, height=32, num_frames=12, num_inference_steps=2,
                  generator=torch.Generator("cpu").manual_seed(0)).frames[0]
    assert len(frames) == 9  # asked for 12: hence 8k+1 is checked before loading
    result = cli_run(["run", "ltx_video", "txt2vid", "--model", "tiny", "--out", str(tmp_path / "out"),
                      "--json", json.dumps({"prompt": "x", "width": 32, "height": 32, "num_frames": 12})])
    assert result.exit_code == 2 and "nearest valid values: 9 or 17" in result.stderr


def test_one_step_fails_inside_diffusers_hence_steps_from_2():
    pipe, config = direct_pipe(LTXPipeline, tiny_model_dir("ltx_video"))
    pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(config)
    with pytest.raises(IndexError):
        pipe("x", width=32, height=32, num_frames=9, num_inference_steps=1)


def test_dpm_solver_is_left_out_because_it_fails_inside_diffusers():
    pipe, config = direct_pipe(LTXPipeline, tiny_model_dir("ltx_video"))
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(config, **FLOW_SIGMAS, solver_order=2)
    with pytest.raises(ValueError, match="custom sigmas"):
        pipe("x", width=32, height=32, num_frames=9, num_inference_steps=2)
