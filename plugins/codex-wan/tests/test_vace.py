"""wan_vace (Wan 2.1 VACE) on a tiny random-weight model: every task equals a direct WanVACEPipeline call."""

from __future__ import annotations

import json
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import torch
from diffusers import (
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    UniPCMultistepScheduler,
    WanVACEPipeline,
)
from PIL import Image

from codex_diffusers.testing import (  # noqa: F401  (pytest_generate_tests parametrises the suite)
    EngineConformance,
    assert_tiny_matches_reference,
    cli_run,
    direct_pipe,
    pytest_generate_tests,
    run_json,
    tiny_model_dir,
    write_test_image,
)

# What the sampler names mean for flow-matching checkpoints, written out independently of codex's table.
SCHEDULERS = {
    "UniPC": (UniPCMultistepScheduler,
              lambda shift: {"prediction_type": "flow_prediction", "use_flow_sigmas": True, "flow_shift": shift}),
    "Euler": (FlowMatchEulerDiscreteScheduler, lambda shift: {"shift": shift}),
    "DPM++ 2M": (DPMSolverMultistepScheduler,
                 lambda shift: {"prediction_type": "flow_prediction", "use_flow_sigmas": True, "flow_shift": shift,
                                "algorithm_type": "dpmsolver++", "solver_order": 2}),
}


def write_video(path: Path, frames: int, size: tuple[int, int], seed: int, mask: bool = False) -> str:
    """A small MP4 (H.264, as users bring): noise frames, or for a mask a white square moving on black."""
    rng = np.random.default_rng(seed)
    width, height = size
    writer = imageio_ffmpeg.write_frames(str(path), size, fps=16, macro_block_size=1, quality=9)
    writer.send(None)
    for index in range(frames):
        if mask:
            frame = np.zeros((height, width, 3), np.uint8)
            frame[height // 4: 3 * height // 4, index % (width // 2): index % (width // 2) + width // 2] = 255
        else:
            frame = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        writer.send(frame.tobytes())
    writer.close()
    return str(path)


def decoded(path: str, size: tuple[int, int], mode: str = "RGB") -> list[Image.Image]:
    """The video's frames decoded by ffmpeg independently of codex, converted to ``mode`` and resized (Lanczos)."""
    reader = imageio_ffmpeg.read_frames(path, pix_fmt="rgb24")
    meta = next(reader)
    frames = [Image.frombytes("RGB", tuple(meta["size"]), bytes(frame)).convert(mode) for frame in reader]
    return [frame if frame.size == size else frame.resize(size, Image.Resampling.LANCZOS) for frame in frames]


CASES = {
    # txt2vid: the sampler (UniPC), flow shift and conditioning scale from the preset
    "txt2vid": {"prompt": "a paper boat on a river", "negative_prompt": "blurry", "width": 48, "height": 32,
                "num_frames": 5, "steps": 2, "seed": 3},
    # a 5-frame 48x48 video and its mask, resized to 32x32 (Lanczos); num_frames from the video
    "vid2vid": {"prompt": "a red car", "init_video": "{tmp}/video.mp4", "mask_video": "{tmp}/mask.mp4",
                "width": 32, "height": 32, "steps": 2, "seed": 4, "sampler": "Euler", "conditioning_scale": 0.8},
    # two reference images of other sizes than the frames: the pipeline fits each on a white canvas
    "ref2vid": {"prompt": "the fox on a beach", "reference_images": ["{tmp}/init.png", "{tmp}/small.png"],
                "width": 48, "height": 32, "num_frames": 5, "steps": 2, "seed": 5, "sampler": "DPM++ 2M"},
}

VID = {"prompt": "x", "init_video": "{tmp}/video.mp4", "width": 32, "height": 32}


class TestWanVACE(EngineConformance):
    engine = "wan_vace"
    cases = CASES
    fields_exempt = {
        "init_video": "its frames are the call's video: the conformance case is pixel-equal to a direct call with them",
        "mask_video": "its frames are the call's mask: the conformance case is pixel-equal to a direct call with them",
        "reference_images": "the call's reference_images: the ref2vid case is pixel-equal to a direct call with them",
    }
    bad_requests = [
        ("size_off_stride_16", "txt2vid", {"prompt": "x", "width": 40}, "nearest valid values: 32 or 48"),
        ("frames_not_4k_plus_1", "txt2vid", {"prompt": "x", "num_frames": 6}, "num_frames"),
        ("flow_engine_rejects_a1111_sampler", "vid2vid", {**VID, "sampler": "DDIM"}, "sampler"),
        ("unknown_key", "txt2vid", {"prompt": "x", "num_frame": 5}, "did you mean 'num_frames'"),
        ("txt2vid_with_init_image", "txt2vid", {"prompt": "x", "init_image": "{tmp}/init.png"}, "task vid2vid"),
        ("conditioning_scale_out_of_range", "txt2vid", {"prompt": "x", "conditioning_scale": 3.0},
         "conditioning_scale"),
        ("too_many_reference_images", "ref2vid", {"prompt": "x", "reference_images": ["{tmp}/init.png"] * 4},
         "reference_images: got 4 images; wan_vace takes 1 to 3"),
        ("no_reference_images", "ref2vid", {"prompt": "x", "reference_images": []}, "reference_images"),
        ("vid2vid_without_video", "vid2vid", {"prompt": "x"}, "init_video"),
        ("mask_of_another_length", "vid2vid", {**VID, "mask_video": "{tmp}/mask9.mp4"},
         "mask_video: has 9 frames but init_video has 5"),
        ("mask_of_another_size", "vid2vid", {**VID, "mask_video": "{tmp}/mask_small.mp4"},
         "mask_video: its frames are 32x32 but init_video's are 48x48"),
        ("video_frames_not_4k_plus_1", "vid2vid", {**VID, "init_video": "{tmp}/video6.mp4"},
         "init_video: its 6 frames are not 4k+1; pass num_frames (at most 5)"),
        ("more_frames_than_the_video", "vid2vid", {**VID, "num_frames": 9},
         "num_frames: 9 is more than init_video's 5 frames"),
        ("corrupt_video", "vid2vid", {**VID, "init_video": "{tmp}/broken.mp4"}, "init_video"),
        ("missing_video", "vid2vid", {**VID, "init_video": "{tmp}/nowhere.mp4"}, "init_video"),
    ]

    def prepare_inputs(self, tmp_path: Path) -> None:
        super().prepare_inputs(tmp_path)
        if (tmp_path / "video.mp4").exists():
            return
        write_video(tmp_path / "video.mp4", 5, (48, 48), seed=1)
        write_video(tmp_path / "mask.mp4", 5, (48, 48), seed=2, mask=True)
        write_video(tmp_path / "mask9.mp4", 9, (48, 48), seed=2, mask=True)
        write_video(tmp_path / "mask_small.mp4", 5, (32, 32), seed=2, mask=True)
        write_video(tmp_path / "video6.mp4", 6, (48, 48), seed=3)
        (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")

    def run_case(self, task, tmp_path):
        """Every run of a case records each input file (sha256, what replay compares): the videos, each image."""
        request, result = super().run_case(task, tmp_path)
        named = {name for name in ("init_video", "mask_video") if name in request}
        named |= {f"reference_images.{index}" for index in range(len(request.get("reference_images", [])))}
        assert set(result["info"]["inputs"]) == named, result["info"]["inputs"]
        return request, result

    def direct(self, task, request, model_dir):
        pipe, checkpoint_config = direct_pipe(WanVACEPipeline, model_dir)
        scheduler_cls, flags = SCHEDULERS[request["sampler"]]
        pipe.scheduler = scheduler_cls.from_config(checkpoint_config, **flags(request["flow_shift"]))
        size = (request["width"], request["height"])
        kwargs = dict(prompt=request["prompt"], negative_prompt=request["negative_prompt"] or None,
                      height=request["height"], width=request["width"], num_frames=request["num_frames"],
                      num_inference_steps=request["steps"], guidance_scale=request["cfg"],
                      conditioning_scale=request["conditioning_scale"], output_type="pil",
                      generator=torch.Generator("cpu").manual_seed(request["seed"]))
        if task == "vid2vid":
            kwargs["video"] = decoded(request["init_video"], size)[:request["num_frames"]]
            if request.get("mask_video"):
                kwargs["mask"] = decoded(request["mask_video"], size, "L")[:request["num_frames"]]
        if task == "ref2vid":
            kwargs["reference_images"] = [Image.open(path).convert("RGB") for path in request["reference_images"]]
        return pipe(**kwargs).frames[0]


# -- behaviour beyond the shared suite ----------------------------------------------------------


def test_tiny_model_is_the_vace_architecture():
    assert_tiny_matches_reference("wan_vace")
    pipe = WanVACEPipeline.from_pretrained(tiny_model_dir("wan_vace"))
    config = pipe.transformer.config
    # the context blocks read 16 + 16 video latents and the mask folded by the VAE's 8x8 stride
    assert config.vace_in_channels == 2 * pipe.vae.config.z_dim + pipe.vae_scale_factor_spatial ** 2 == 96
    assert pipe.transformer_2 is None and pipe.config.boundary_ratio is None
    assert pipe.transformer.config.text_dim == pipe.text_encoder.config.d_model


def test_vid2vid_without_a_mask_regenerates_all_and_takes_the_first_frames(tmp_path):
    """No mask: the pipeline's own all-white mask (restyle), pixel-equal to a direct call and unlike the masked
    run of the same video; num_frames below the video's length: its first frames, said in notes; the video
    resized to the frame size, said in notes.resized."""
    case = TestWanVACE()
    case.prepare_inputs(tmp_path)
    write_video(tmp_path / "long.mp4", 9, (48, 32), seed=1)
    request = {"prompt": "x", "init_video": str(tmp_path / "long.mp4"), "width": 32, "height": 32,
               "num_frames": 5, "steps": 2, "seed": 1, "sampler": "Euler"}
    result = run_json("wan_vace", "vid2vid", request, tmp_path / "out", "tiny", "--format", "frames")
    info = result["info"]
    assert info["notes"]["init_video_frames"] == {"used": 5, "of": 9}
    assert info["notes"]["resized"]["init_video"] == {"from": [48, 32], "to": [32, 32], "resample": "lanczos"}
    ours = [np.asarray(Image.open(f).convert("RGB")) for f in sorted(result["files"]) if f.endswith(".png")]
    expected = case.direct("vid2vid", info["request"], tiny_model_dir("wan_vace"))
    assert len(ours) == 5 and all(np.array_equal(a, np.asarray(b)) for a, b in zip(ours, expected))
    masked = case.direct("vid2vid", {**info["request"], "mask_video": str(tmp_path / "mask.mp4")},
                         tiny_model_dir("wan_vace"))
    assert not all(np.array_equal(a, np.asarray(b)) for a, b in zip(ours, masked))  # the mask is used


@pytest.mark.parametrize("task, expected", [
    ("txt2vid", {"width": 1280, "height": 720, "num_frames": 81, "fps": 16.0, "steps": 30, "cfg": 5.0,
                 "flow_shift": 5.0, "conditioning_scale": 1.0, "sampler": "UniPC"}),
    ("vid2vid", {"width": 1280, "height": 720, "fps": 16.0, "steps": 30, "cfg": 5.0, "flow_shift": 5.0,
                 "conditioning_scale": 1.0, "sampler": "UniPC"}),
    ("ref2vid", {"width": 1280, "height": 720, "num_frames": 81, "fps": 16.0, "steps": 30, "cfg": 5.0,
                 "flow_shift": 5.0, "conditioning_scale": 1.0, "sampler": "UniPC"}),
])
def test_presets_are_the_published_defaults(task, expected):
    """diffusers' WanVACEPipeline example and Wan 2.1's sizes for VACE-14B, as the presets' comments say."""
    from codex_core import get_engine, preset_values

    assert preset_values(get_engine("wan_vace"), task) == expected


def test_a_plain_wan_model_is_refused_for_vace(tmp_path):
    result = cli_run(["run", "wan_vace", "txt2vid", "--model", str(tiny_model_dir("wan_t2v_14b")), "--out",
                      str(tmp_path / "out"), "--json", json.dumps({"prompt": "x", "width": 32, "height": 32,
                                                                   "num_frames": 5, "steps": 1})])
    assert result.exit_code == 2, result.stderr
    assert "it is a WanPipeline checkpoint" in result.stderr and "wan_vace runs WanVACEPipeline" in result.stderr

