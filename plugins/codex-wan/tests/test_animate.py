"""wan_animate on its tiny random-weight model: animate and replace equal a direct diffusers call."""

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
    WanAnimatePipeline,
)
from PIL import Image

from codex_diffusers.testing import (  # noqa: F401  (pytest_generate_tests parametrises the suite)
    EngineConformance,
    cli_run,
    direct_pipe,
    pytest_generate_tests,
    run_json,
    tiny_model_dir,
    write_test_image,
)
from codex_diffusers.testing import assert_tiny_matches_reference, with_tmp

# What the sampler names mean for flow-matching checkpoints, written out independently of codex's table.
SCHEDULERS = {
    "UniPC": (UniPCMultistepScheduler,
              lambda shift: {"prediction_type": "flow_prediction", "use_flow_sigmas": True, "flow_shift": shift}),
    "Euler": (FlowMatchEulerDiscreteScheduler, lambda shift: {"shift": shift}),
    "DPM++ 2M": (DPMSolverMultistepScheduler,
                 lambda shift: {"prediction_type": "flow_prediction", "use_flow_sigmas": True, "flow_shift": shift,
                                "algorithm_type": "dpmsolver++", "solver_order": 2}),
}
FRAMES = 9  # with segment_frame_length 5 and 1 conditioning frame: two segments of 4 new frames


def write_video(path: Path, size: tuple[int, int], frames: int, seed: int, fps: float = 16.0) -> Path:
    """A small H.264 MP4 of random blocks (sizes even: yuv420p)."""
    rng = np.random.default_rng(seed)
    writer = imageio_ffmpeg.write_frames(str(path), size, fps=fps, macro_block_size=1, quality=9,
                                         output_params=["-loglevel", "error"])
    writer.send(None)
    for _ in range(frames):
        blocks = rng.integers(0, 256, (size[1] // 4 + 1, size[0] // 4 + 1, 3), dtype=np.uint8)
        writer.send(np.ascontiguousarray(np.kron(blocks, np.ones((4, 4, 1), np.uint8))[:size[1], :size[0]]))
    writer.close()
    return path


def read_video(path: str) -> list[Image.Image]:
    """The frames of a video, decoded here with imageio-ffmpeg (not codex's reader)."""
    reader = imageio_ffmpeg.read_frames(path)
    width, height = next(reader)["size"]
    return [Image.fromarray(np.frombuffer(frame, np.uint8).reshape(height, width, 3).copy()) for frame in reader]


INPUT_VIDEOS = {  # name: (size, frames, seed)
    "pose.mp4": ((48, 32), FRAMES, 1),  # resized to the 32x32 output
    "face.mp4": ((24, 24), FRAMES, 2),  # resized to the tiny motion encoder's 16x16
    "background.mp4": ((32, 32), FRAMES, 3),
    "mask.mp4": ((32, 32), FRAMES, 5),
    "face_short.mp4": ((24, 24), 5, 7),
    "mask_wide.mp4": ((48, 32), FRAMES, 8),
}
_written: dict[str, Path] = {}


def write_inputs(tmp_path: Path) -> None:
    """The input videos, encoded once per session and copied into each test's folder."""
    import shutil

    if "dir" not in _written:
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="codex_animate_inputs_"))
        for name, (size, frames, seed) in INPUT_VIDEOS.items():
            write_video(folder / name, size, frames, seed)
        write_test_image(folder / "character.png", (40, 48), seed=3)
        (folder / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not a video")
        _written["dir"] = folder
    for file in _written["dir"].iterdir():
        shutil.copyfile(file, tmp_path / file.name)


def direct_call(request: dict, model_dir: Path) -> list[Image.Image]:
    """The same request made on diffusers' WanAnimatePipeline directly: the videos at their own sizes (the
    pipeline resizes them with Lanczos, as codex does before passing them)."""
    pipe, checkpoint_config = direct_pipe(WanAnimatePipeline, model_dir)
    scheduler_cls, flags = SCHEDULERS[request["sampler"]]
    pipe.scheduler = scheduler_cls.from_config(checkpoint_config, **flags(request["flow_shift"]))
    kwargs = dict(image=Image.open(request["character_image"]).convert("RGB"),
                  pose_video=read_video(request["pose_video"]), face_video=read_video(request["face_video"]),
                  prompt=request["prompt"], negative_prompt=request["negative_prompt"] or None,
                  height=request["height"], width=request["width"], mode=request["animate_mode"],
                  segment_frame_length=request["segment_frame_length"],
                  prev_segment_conditioning_frames=request["prev_segment_conditioning_frames"],
                  num_inference_steps=request["steps"], guidance_scale=request["cfg"],
                  max_sequence_length=request["max_sequence_length"], output_type="pil",
                  generator=torch.Generator("cpu").manual_seed(request["seed"]))
    if request["animate_mode"] == "replace":
        kwargs["background_video"] = read_video(request["background_video"])
        kwargs["mask_video"] = [frame.convert("L") for frame in read_video(request["mask_video"])]
    return pipe(**kwargs).frames[0]


BASE = {"prompt": "a dancer", "character_image": "{tmp}/character.png", "pose_video": "{tmp}/pose.mp4",
        "face_video": "{tmp}/face.mp4", "width": 32, "height": 32, "steps": 2, "segment_frame_length": 5}
REPLACE = {"animate_mode": "replace", "background_video": "{tmp}/background.mp4", "mask_video": "{tmp}/mask.mp4"}


class TestWanAnimate(EngineConformance):
    engine = "wan_animate"
    # the preset's UniPC and cfg 1 (no guidance); two segments of 5 frames over the 9-frame pose video
    cases = {"animate": {**BASE, "seed": 42}}
    field_changes = {
        "character_image": "{tmp}/init.png",
        "pose_video": "{tmp}/background.mp4",
        "face_video": "{tmp}/mask.mp4",
        "segment_frame_length": 9,
        "prev_segment_conditioning_frames": (5, {"segment_frame_length": 13}),
    }
    # replace mode cannot run without its two videos: test_replace_mode_equals_direct_diffusers_call runs it
    fields_exempt = {name: "test_replace_mode_equals_direct_diffusers_call compares replace mode with diffusers"
                     for name in ("animate_mode", "background_video", "mask_video")}
    bad_requests = [
        (name, "animate", {**BASE, **fields}, expect) for name, fields, expect in [
            ("size_off_stride_16", {"width": 40}, "nearest valid values: 32 or 48"),
            ("discrete_sampler", {"sampler": "DDIM"}, "sampler"),
            ("no_karras_for_flow", {"sampler": "DPM++ 2M", "scheduler": "Karras"}, "scheduler"),
            ("unknown_key", {"pose_vidoe": "{tmp}/pose.mp4"}, "did you mean 'pose_video'"),
            ("segment_not_4k_plus_1", {"segment_frame_length": 6}, "nearest valid values: 5 or 9"),
            ("segment_not_twice_its_overlap", {"prev_segment_conditioning_frames": 5, "segment_frame_length": 9},
             "segment_frame_length: 9 must be more than twice prev_segment_conditioning_frames (5)"),
            ("overlap_the_pipeline_does_not_take", {"prev_segment_conditioning_frames": 3},
             "prev_segment_conditioning_frames"),
            ("num_frames_other_than_the_pose_video", {"num_frames": 5}, "num_frames: 5 differs from pose_video's 9"),
            ("face_video_of_another_length", {"face_video": "{tmp}/face_short.mp4"},
             "face_video: 5 frames, but pose_video has 9"),
            ("replace_without_mask", {"animate_mode": "replace", "background_video": "{tmp}/background.mp4"},
             "animate_mode 'replace' needs mask_video"),
            ("background_in_animate_mode", {"background_video": "{tmp}/background.mp4"},
             "background_video: only used with animate_mode 'replace'"),
            ("mask_of_another_size", {**REPLACE, "mask_video": "{tmp}/mask_wide.mp4"},
             "mask_video: 48x32, but background_video is 32x32"),
            ("corrupt_pose_video", {"pose_video": "{tmp}/corrupt.mp4"}, "is not a video ffmpeg can read"),
            ("missing_face_video", {"face_video": "{tmp}/nowhere.mp4"}, "no such video file"),
            ("video_for_the_image", {"character_image": "{tmp}/pose.mp4"}, "character_image"),
        ]
    ]

    def prepare_inputs(self, tmp_path):
        super().prepare_inputs(tmp_path)
        write_inputs(tmp_path)

    def direct(self, task, request, model_dir):
        return direct_call(request, model_dir)

    def test_every_engine_field_reaches_the_pipeline(self, task, tmp_path):
        # the field changes name input files, which live in the test's own folder
        self.field_changes = {name: tuple(with_tmp(list(change), tmp_path)) if isinstance(change, tuple) else
                              with_tmp(change, tmp_path) for name, change in type(self).field_changes.items()}
        super().test_every_engine_field_reaches_the_pipeline(task, tmp_path)


# -- beyond the shared suite --------------------------------------------------------------------


def frames_of(result) -> list[str]:
    return sorted(f for f in result["files"] if Path(f).parent.name == "frames")


def test_replace_mode_equals_direct_diffusers_call(tmp_path):
    write_inputs(tmp_path)
    request = with_tmp({**BASE, **REPLACE, "seed": 3, "sampler": "DPM++ 2M", "cfg": 2.0, "negative_prompt": "blur"},
                       tmp_path)
    result = run_json("wan_animate", "animate", request, tmp_path / "out", "tiny", "--format", "frames")
    expected = direct_call(result["info"]["request"], tiny_model_dir("wan_animate"))
    ours = frames_of(result)
    assert len(ours) == len(expected) == FRAMES
    # every input file is hashed in info.json (what replay compares), the optional replace videos too
    assert set(result["info"]["inputs"]) == {"character_image", "pose_video", "face_video", "background_video",
                                             "mask_video"}
    for mine, theirs in zip(ours, expected):
        assert np.array_equal(np.asarray(Image.open(mine).convert("RGB")), np.asarray(theirs.convert("RGB")))


def test_the_pose_video_decides_frames_and_rate_and_inputs_are_resized_as_recorded(tmp_path):
    write_inputs(tmp_path)
    request = with_tmp({**BASE, "seed": 1, "steps": 1}, tmp_path)
    info = run_json("wan_animate", "animate", request, tmp_path / "out", "tiny", "--format", "frames")["info"]
    assert (info["request"]["num_frames"], info["request"]["fps"]) == (FRAMES, 16.0)
    assert info["frames"]["count"] == FRAMES and info["frames"]["fps"] == 16.0
    assert info["notes"]["resized"] == {
        "pose_video": {"from": [48, 32], "to": [32, 32], "resample": "lanczos"},
        "face_video": {"from": [24, 24], "to": [16, 16], "resample": "lanczos"},  # motion_encoder_size
    }
    assert info["notes"]["character_image_fit"]["from"] == [40, 48]
    # the preset fills what the request left out; num_frames and fps come from the pose video, not a preset
    assert info["applied_preset_patch"] == {"cfg": 1.0, "flow_shift": 5.0, "sampler": "UniPC",
                                            "animate_mode": "animate", "prev_segment_conditioning_frames": 1,
                                            "max_sequence_length": 512}


def test_the_tiny_model_is_the_real_architecture():
    assert_tiny_matches_reference("wan_animate")
    pipe = WanAnimatePipeline.from_pretrained(tiny_model_dir("wan_animate"))
    config = pipe.transformer.config
    # 16 noise + 4 mask + 16 reference latent channels; the CLIP width is the transformer's image_dim
    assert config.in_channels == 2 * pipe.vae.config.z_dim + pipe.vae_scale_factor_temporal == 36
    assert config.image_dim == pipe.image_encoder.config.hidden_size
    assert config.text_dim == pipe.text_encoder.config.d_model
    assert pipe.vae_scale_factor_spatial * config.patch_size[1] == 16  # the size rule the params enforce
    assert type(pipe.image_processor).__name__.startswith("CLIPImageProcessor")


def test_a_model_of_another_wan_variant_is_refused_both_ways(tmp_path):
    request = with_tmp({**BASE, "seed": 1}, tmp_path)
    write_inputs(tmp_path)
    result = cli_run(["run", "wan_animate", "animate", "--model", str(tiny_model_dir("wan_ti2v_5b")), "--quiet",
                      "--out", str(tmp_path / "a"), "--json", json.dumps(request)])
    assert result.exit_code == 2 and "it is a WanPipeline checkpoint" in result.stderr, result.stderr
    result = cli_run(["run", "wan_i2v_14b", "img2vid", "--model", str(tiny_model_dir("wan_animate")), "--quiet",
                      "--out", str(tmp_path / "b"), "--json", json.dumps(
                          {"prompt": "x", "init_image": request["character_image"], "width": 32, "height": 32,
                           "num_frames": 5, "steps": 1})])
    assert result.exit_code == 2 and "it is a WanAnimatePipeline checkpoint" in result.stderr, result.stderr
    assert "engines that fit it: wan_animate" in result.stderr


def test_presets_are_the_wan_authors_defaults():
    """wan/configs/wan_animate_14B.py and generate.py of github.com/Wan-Video/Wan2.2, as the preset says."""
    from codex_core import get_engine, preset_values

    assert preset_values(get_engine("wan_animate"), "animate") == {
        "width": 1280, "height": 720, "steps": 20, "cfg": 1.0, "flow_shift": 5.0, "sampler": "UniPC",
        "animate_mode": "animate", "segment_frame_length": 77, "prev_segment_conditioning_frames": 1,
        "max_sequence_length": 512}


@pytest.mark.parametrize("sampler", ["Euler"])
def test_every_flow_sampler_runs_in_the_pipeline(tmp_path, sampler):
    """UniPC (the preset) and DPM++ 2M run in the conformance cases; Euler here, against diffusers too."""
    write_inputs(tmp_path)
    request = with_tmp({**BASE, "seed": 5, "sampler": sampler}, tmp_path)
    result = run_json("wan_animate", "animate", request, tmp_path / "out", "tiny", "--format", "frames")
    expected = direct_call(result["info"]["request"], tiny_model_dir("wan_animate"))
    for mine, theirs in zip(frames_of(result), expected):
        assert np.array_equal(np.asarray(Image.open(mine).convert("RGB")), np.asarray(theirs.convert("RGB")))


def test_diffusers_alone_fails_late_when_a_segment_is_not_twice_its_overlap(tmp_path):
    """Why segment_frame_length > 2 x prev_segment_conditioning_frames is checked first: the pipeline counts
    9 // (9 - 5) = 2 segments for 9 frames, generates the first and fails its own assertion on the second."""
    write_inputs(tmp_path)
    request = with_tmp({**BASE, "seed": 1, "steps": 1, "sampler": "Euler", "flow_shift": 5.0, "negative_prompt": "",
                        "cfg": 1.0, "animate_mode": "animate", "max_sequence_length": 16, "segment_frame_length": 9,
                        "prev_segment_conditioning_frames": 5}, tmp_path)
    with pytest.raises(AssertionError):
        direct_call(request, tiny_model_dir("wan_animate"))


# -- --component transformer=FILE ------------------------------------------------------------------


def _frames_pixels(result) -> list[np.ndarray]:
    return [np.asarray(Image.open(f).convert("RGB"), dtype=np.int16) for f in frames_of(result)]


@pytest.mark.slow
def test_a_diffusers_layout_transformer_file_gives_the_folders_pixels_and_gguf_q8_stays_close(tmp_path):
    from safetensors.torch import load_file, save_file

    from codex_diffusers.testing import loaded_family
    from codex_diffusers.testing.checkpoint_writers import write_gguf_q8

    base = tiny_model_dir("wan_animate")
    write_inputs(tmp_path)
    request = with_tmp({**BASE, "seed": 4, "steps": 1}, tmp_path)
    single = tmp_path / "wan_animate_transformer.safetensors"  # the diffusers layout in one file
    save_file(load_file(base / "transformer" / "diffusion_pytorch_model.safetensors"), single)

    def run(name, *extra):
        return run_json("wan_animate", "animate", request, tmp_path / name, str(base), "--format", "frames", *extra)

    reference = _frames_pixels(run("folder"))
    ours = run("file", "--component", f"transformer={single}")
    assert all(np.array_equal(a, b) for a, b in zip(_frames_pixels(ours), reference))
    assert ours["info"]["model"]["components"] == {"transformer": str(single)}
    gguf = write_gguf_q8(base, tmp_path / "wan_animate-Q8_0.gguf")
    quantised = run("gguf", "--component", f"transformer={gguf}")
    kinds = {type(p).__name__ for p in loaded_family("wan_animate").base.transformer.parameters()}
    assert "GGUFParameter" in kinds  # the weights stay 8-bit, dequantised per layer as they run
    diff = max(np.abs(a - b).max() for a, b in zip(_frames_pixels(quantised), reference))
    assert diff <= 8, diff  # 8-bit weights: close to the float model, not equal


def test_a_transformer_file_of_another_wan_model_is_not_an_animate_transformer(tmp_path):
    from codex_core import get_engine
    from safetensors.torch import load_file, save_file

    other = tmp_path / "ti2v.safetensors"
    save_file(load_file(tiny_model_dir("wan_ti2v_5b") / "transformer" / "diffusion_pytorch_model.safetensors"), other)
    engine = get_engine("wan_animate")
    assert "not a wan_animate transformer" in engine.component_problem("transformer", other, None)
    animate = tmp_path / "animate.safetensors"
    save_file(load_file(tiny_model_dir("wan_animate") / "transformer" / "diffusion_pytorch_model.safetensors"), animate)
    assert engine.component_problem("transformer", animate, None) is None


@pytest.mark.slow
def test_a_lora_changes_the_output_as_diffusers_loader_does_and_is_undone(tmp_path):
    from codex_diffusers.testing import write_transformer_lora

    base = tiny_model_dir("wan_animate")
    write_inputs(tmp_path)
    lora = write_transformer_lora("WanAnimatePipeline", base, tmp_path, ["to_q", "to_k", "to_v"], "animate_lora.safetensors")
    request = with_tmp({**BASE, "seed": 6, "steps": 1}, tmp_path)
    plain = _frames_pixels(run_json("wan_animate", "animate", request, tmp_path / "a", "tiny", "--format", "frames"))
    styled = run_json("wan_animate", "animate", {**request, "loras": [{"path": str(lora), "scale": 1.0}]},
                      tmp_path / "b", "tiny", "--format", "frames")
    assert not all(np.array_equal(a, b) for a, b in zip(plain, _frames_pixels(styled)))
    pipe, _ = direct_pipe(WanAnimatePipeline, base)
    pipe.load_lora_weights(str(lora), adapter_name="check")
    try:
        expected = direct_call(styled["info"]["request"], base)
    finally:
        pipe.delete_adapters("check")
    assert all(np.array_equal(a, np.asarray(b.convert("RGB"), dtype=np.int16))
               for a, b in zip(_frames_pixels(styled), expected))
    again = run_json("wan_animate", "animate", request, tmp_path / "c", "tiny", "--format", "frames")
    assert all(np.array_equal(a, b) for a, b in zip(plain, _frames_pixels(again)))
