"""Video inputs (``VideoPath``): probed before anything loads, decoded once by the bundled ffmpeg, checked against
the task's rules, and recorded like every input file.

The engine is the sleepy test engine's ``vid2vid`` (tests/sleepy_engine, registered here in-process): it gives the
input video's frames back as ``Job.input_video`` decoded them, inverted where the mask video is white, so a run's
output shows which frames arrived with what pixels.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from codex_core import ParamError, hookimpl
from codex_core.params import validate
from codex_core.testing import cli_run, registered, run_json, write_test_video
from codex_core.videos import (MAX_VIDEO_FRAMES, input_frame_count, probe_video, read_video, resampled_indices)

sys.path.insert(0, str(Path(__file__).parent / "sleepy_engine"))
from codex_sleepy.engine import SleepyEngine, SleepyVid2Vid  # noqa: E402


def ffmpeg_frames(path: str) -> list[np.ndarray]:
    """imageio-ffmpeg's own decode of every frame (what a video's pixels are, palette and codec aside)."""
    reader = imageio_ffmpeg.read_frames(path, pix_fmt="rgb24")
    width, height = next(reader)["size"]
    return [np.frombuffer(frame, np.uint8).reshape(height, width, 3) for frame in reader]


def problems(data: dict) -> list[str]:
    with pytest.raises(ParamError) as caught:
        validate(SleepyVid2Vid, data, "sleepy", "vid2vid")
    return caught.value.problems


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("clips")
    return {
        "mp4": write_test_video(folder / "clip.mp4", 9, (48, 32), fps=8, seed=1),
        "webm": write_test_video(folder / "clip.webm", 9, (48, 32), fps=8, seed=2),
        "gif": write_test_video(folder / "clip.gif", 9, (48, 32), fps=10, seed=3),
        "mask": write_test_video(folder / "mask.mp4", 9, (48, 32), fps=8, mode="L"),
        "short_mask": write_test_video(folder / "short.mp4", 5, (48, 32), fps=8, mode="L"),
        "small_mask": write_test_video(folder / "small.mp4", 9, (32, 32), fps=8, mode="L"),
        "ten": write_test_video(folder / "ten.mp4", 10, (48, 32), fps=8),
        "long": write_test_video(folder / "long.mp4", 17, (48, 32), fps=16),
    }


class SleepyPlugin:
    @hookimpl
    def codex_register_engines(self, register):
        register(SleepyEngine())


@pytest.fixture
def sleepy():
    """The sleepy engine registered in-process."""
    with registered(SleepyPlugin(), "in-test-sleepy"):
        yield


@pytest.mark.parametrize("kind", ["mp4", "webm", "gif"])
def test_each_container_decodes_to_its_frames(clips, kind):
    facts = probe_video(clips[kind])
    assert (facts.frames, facts.size) == (9, (48, 32))
    assert facts.fps == pytest.approx(10 if kind == "gif" else 8, abs=0.5)  # a GIF's delays are in 1/100 s
    frames = read_video(clips[kind])
    assert len(frames) == 9 and {frame.size for frame in frames} == {(48, 32)}
    assert {frame.mode for frame in frames} == {"RGB"}
    for ours, theirs in zip(frames, ffmpeg_frames(clips[kind])):
        assert np.array_equal(np.asarray(ours), theirs)
    assert not np.array_equal(np.asarray(frames[0]), np.asarray(frames[1]))  # the frames differ: all were read


def test_the_probe_counts_without_decoding_and_is_kept_per_file_version(clips, tmp_path):
    from codex_core.videos import _probe_cached

    copy = tmp_path / "copy.mp4"
    copy.write_bytes(Path(clips["mp4"]).read_bytes())
    before = _probe_cached.cache_info()
    probe_video(str(copy))
    probe_video(str(copy))
    after = _probe_cached.cache_info()
    assert (after.misses - before.misses, after.hits - before.hits) == (1, 1)
    copy.write_bytes(Path(clips["long"]).read_bytes())  # another version of the file: probed again
    assert probe_video(str(copy)).frames == 17


def test_bad_files_are_refused_naming_the_field(clips, tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(bytes(range(256)) * 20)
    truncated = tmp_path / "truncated.mp4"
    data = Path(clips["mp4"]).read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    empty = tmp_path / "empty.webm"
    empty.write_bytes(b"")
    silent = tmp_path / "sound.m4a"  # a container ffmpeg reads, with no video stream
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "sine=d=0.2", str(silent)],
                   check=True)
    expected = {
        str(garbage): "is not a video ffmpeg can read (",
        str(truncated): "is not a video ffmpeg can read (",
        str(empty): "is not a video ffmpeg can read (",
        str(silent): "has no video stream",
        str(tmp_path): "is a folder, not a video file",
        str(tmp_path / "missing.mp4"): "no such video file",
    }
    for value, words in expected.items():
        found = problems({"init_video": value})
        assert len(found) == 1 and found[0].startswith("init_video: ") and words in found[0], (value, found)


def test_a_video_over_the_frame_limit_is_refused(tmp_path, monkeypatch):
    from codex_core import videos

    monkeypatch.setattr(videos, "MAX_VIDEO_FRAMES", 12)
    path = write_test_video(tmp_path / "long.mp4", 13, (16, 16))
    found = problems({"init_video": path})
    assert found == [f"init_video: got '{path}': 'long.mp4' has more than 12 frames, the most a video input may "
                     "have; trim it first"]
    assert MAX_VIDEO_FRAMES == 1024


def test_a_mask_video_must_match_its_video(clips):
    assert problems({"init_video": clips["mp4"], "mask_video": clips["short_mask"]}) == [
        "mask_video: has 5 frames but init_video has 9; a mask video needs one frame per frame of its video"]
    assert problems({"init_video": clips["mp4"], "mask_video": clips["small_mask"]}) == [
        "mask_video: its frames are 32x32 but init_video's are 48x32; give both the same size"]
    validate(SleepyVid2Vid, {"init_video": clips["mp4"], "mask_video": clips["mask"]}, "sleepy", "vid2vid")


def test_frame_rules_and_resampling(clips):
    # the task's 4k+1 rule, and an exact count when the request gives num_frames
    assert problems({"init_video": clips["ten"]}) == [
        "init_video: gives 10 frames (8 fps); this model takes 4k+1 frames (9 or 13): trim the video or resample "
        "it with video_fps"]
    assert problems({"init_video": clips["mp4"], "num_frames": 13}) == [
        "init_video: gives 9 frames (8 fps) but num_frames is 13; set num_frames to 9, or give a video of 13 "
        "frames (or resample it with video_fps)"]
    # 17 frames at 16 fps resampled to 8 fps: every other frame, 9 of them (4k+1 again)
    params = validate(SleepyVid2Vid, {"init_video": clips["long"], "video_fps": 8.0}, "sleepy", "vid2vid")
    assert input_frame_count(params, "init_video") == 9
    assert resampled_indices(17, 16, 8) == [0, 2, 4, 6, 8, 10, 12, 14, 16]
    assert resampled_indices(5, 8, 16) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]  # a higher rate repeats frames
    assert resampled_indices(9, 8, 8) == list(range(9))
    assert problems({"init_video": clips["long"], "video_fps": 10.0}) == [
        "init_video: gives 11 frames at 10 fps (resampled from 17 at 16); this model takes 4k+1 frames (9 or 13): "
        "trim the video"]


def test_a_run_records_the_video_and_replay_finds_it(clips, sleepy, tmp_path):
    request = {"init_video": clips["mp4"], "mask_video": clips["mask"]}
    result = run_json("sleepy", "vid2vid", request, tmp_path / "runs", "tiny", "--format", "frames")
    info = result["info"]
    for field in ("init_video", "mask_video"):
        record = info["inputs"][field]
        assert record["path"] == str(Path(request[field]).resolve())
        assert record["sha256"] == hashlib.sha256(Path(request[field]).read_bytes()).hexdigest()
    run_dir = Path(result["run_dir"])
    written = sorted((run_dir / "frames").glob("*.png"))
    assert len(written) == 9
    # the frames as decoded, inverted where the mask is white: what Job.input_video gave the engine
    source, masks = ffmpeg_frames(clips["mp4"]), ffmpeg_frames(clips["mask"])
    for path, frame, mask in zip(written, source, masks):
        white = np.asarray(Image.fromarray(mask).convert("L"))
        expected = Image.composite(Image.fromarray(255 - frame), Image.fromarray(frame), Image.fromarray(white))
        assert (white == 255).any() and (white == 0).any()
        assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), np.asarray(expected)), path
    again = cli_run(["replay", str(run_dir), "--out", str(tmp_path / "again"), "--quiet", "--check"])
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout)["check"]["identical"] is True


def test_resampling_is_recorded_in_the_notes(clips, sleepy, tmp_path):
    result = run_json("sleepy", "vid2vid", {"init_video": clips["long"], "video_fps": 8.0}, tmp_path / "runs",
                      "tiny", "--format", "frames")
    assert result["info"]["notes"]["resampled"] == {
        "init_video": {"from_fps": 16.0, "to_fps": 8.0, "from_frames": 17, "to_frames": 9}}
    written = sorted((Path(result["run_dir"]) / "frames").glob("*.png"))
    source = ffmpeg_frames(clips["long"])
    assert len(written) == 9
    for path, index in zip(written, resampled_indices(17, 16, 8)):
        assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), source[index])


def test_a_bad_video_exits_2_before_loading(clips, sleepy, tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all" * 100)
    result = cli_run(["run", "sleepy", "vid2vid", "--model", "tiny", "--out", str(tmp_path / "runs"), "--quiet",
                      "--json", json.dumps({"init_video": str(garbage)})])
    assert result.exit_code == 2 and "init_video: " in result.stderr and "not a video" in result.stderr
    result = cli_run(["run", "sleepy", "vid2vid", "--model", "tiny", "--out", str(tmp_path / "runs"), "--quiet",
                      "--json", json.dumps({"init_video": clips["mp4"], "mask_video": clips["short_mask"]})])
    assert result.exit_code == 2 and "mask_video: has 5 frames but init_video has 9" in result.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_the_schema_marks_video_fields():
    schema = SleepyVid2Vid.model_json_schema()
    assert schema["properties"]["init_video"]["x-codex-input"] == "video"
    mask = schema["properties"]["mask_video"]
    assert any(option.get("x-codex-input") == "video" for option in mask["anyOf"])
    with pytest.raises(ValidationError):
        SleepyVid2Vid.model_validate({"init_video": 3})


def test_lists_and_optional_video_fields_are_input_files(clips):
    """info.json's sha256 records and replay's lookup cover a list of videos and an optional one, by item."""
    from typing import Annotated

    from pydantic import BaseModel

    from codex_core import INPUT_FILE, VideoPath
    from codex_core.params import input_files
    from codex_core.serve.inputs import input_fields

    class Clips(BaseModel):
        videos: Annotated[list[VideoPath], INPUT_FILE] = []
        extra: list[VideoPath] | None = None
        mask_video: VideoPath | None = None

    params = Clips.model_validate({"videos": [clips["mp4"], clips["gif"]], "extra": [clips["webm"]],
                                   "mask_video": clips["mask"]})
    assert input_files(params) == {"videos.0": clips["mp4"], "videos.1": clips["gif"], "extra.0": clips["webm"],
                                   "mask_video": clips["mask"]}
    assert input_fields(Clips) == {"videos": "video", "extra": "video", "mask_video": "video"}
    from codex_core.replay import request_with_inputs
    info = {"request": {"videos": ["a.mp4", "b.gif"]}, "inputs": {"videos.1": {"path": "/abs/b.gif"}}}
    assert request_with_inputs(info)["videos"] == ["a.mp4", "/abs/b.gif"]


def test_a_rotated_video_is_probed_at_the_size_its_frames_decode_to(clips, tmp_path):
    """A phone video's rotation (a display matrix): ffmpeg turns the frames upright, and the probe says that size."""
    rotated = tmp_path / "rotated.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-display_rotation", "90", "-i", clips["mp4"],
                    "-c", "copy", str(rotated)], check=True)
    facts = probe_video(str(rotated))
    frames = read_video(str(rotated))
    assert (facts.size, facts.frames) == ((32, 48), 9)
    assert len(frames) == 9 and frames[0].size == (32, 48)
