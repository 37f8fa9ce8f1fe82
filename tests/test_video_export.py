"""Video exporters: MP4/WebM/GIF through imageio-ffmpeg, PNG frames, metadata, and failure paths."""

import json

import random

import pytest
from PIL import Image

from codex_core import registry
from codex_core.exporters.video import probe, read_video_metadata
from codex_core.inspect_outputs import read_info
from codex_core.outputs import VideoOutput, run_folder

INFO = {"engine": "eng", "task": "txt2vid", "request": {"prompt": "waves", "num_frames": 9, "fps": 12.0},
        "seed": 3, "versions": {"codex-core": "0"}}


def clip(count=9, size=(48, 32)):
    rng = random.Random(0)
    return VideoOutput([Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3)) for _ in range(count)],
                       fps=12.0)


def export(tmp_path, formats, output=None):
    info = json.loads(json.dumps(INFO))
    exporters = registry.exporters()
    with run_folder(tmp_path, "run") as folder:
        for name in formats:
            folder.written.extend(exporters[name].write(output or clip(), folder, info))
    return folder.final_dir, info


@pytest.mark.parametrize("fmt, codec, fps", [("mp4", "h264", 12.0), ("webm", "vp9", 12.0),
                                             ("gif", "gif", 12.5)])  # GIF delays are whole centiseconds
def test_containers_play_at_the_requested_fps_with_every_frame(tmp_path, fmt, codec, fps):
    run_dir, info = export(tmp_path, [fmt])
    seen = probe(run_dir / f"video.{fmt}")
    assert seen["frames"] == 9 and seen["fps"] == pytest.approx(fps, abs=0.01)
    assert (seen["width"], seen["height"]) == (48, 32)
    assert info["video"] == {"path": str(run_dir / f"video.{fmt}"), "format": fmt, "codec": codec, "fps": fps,
                             "frames": 9, "width": 48, "height": 32, "metadata_embedded": fmt != "gif"}


def test_container_metadata_carries_the_request(tmp_path):
    run_dir, _ = export(tmp_path, ["mp4", "webm"])
    for name in ("video.mp4", "video.webm"):
        assert read_video_metadata(run_dir / name)["codex"]["request"] == INFO["request"]
        assert read_info(run_dir / name)["codex"]["seed"] == 3


def test_frames_are_lossless(tmp_path):
    output = clip(5)
    run_dir, info = export(tmp_path, ["frames"], output)
    files = sorted((run_dir / "frames").iterdir())
    assert [f.name for f in files] == [f"{i:04d}.png" for i in range(5)]
    for file, frame in zip(files, output.frames):
        assert Image.open(file).convert("RGB").tobytes() == frame.tobytes()
    assert info["frames"]["count"] == 5


def test_odd_sizes_are_refused_for_yuv420p_and_nothing_remains(tmp_path):
    with pytest.raises(Exception, match="needs even width and height"):
        export(tmp_path, ["frames", "mp4"], clip(3, size=(33, 32)))
    assert list(tmp_path.iterdir()) == []


def test_missing_ffmpeg_is_a_usage_error_before_loading(monkeypatch):
    from codex_core import Engine, Txt2VidParams, hookimpl, plugins
    from codex_core.errors import UsageError
    from codex_core.exporters import Exporter
    from codex_core.orchestrator import RunOptions, prepare

    class VideoEngine(Engine):
        key = "video_test"
        tasks = {"txt2vid": Txt2VidParams}

    class VideoPlugin:
        @hookimpl
        def codex_register_engines(self, register):
            register(VideoEngine())

    plugins.load_plugins()
    plugins.pm.register(VideoPlugin(), name="video-test")
    registry.clear_cache()
    try:
        broken = Exporter("mp4", "video", lambda *a: [], unavailable=lambda: "no ffmpeg binary found")
        monkeypatch.setitem(registry.exporters(), "mp4", broken)
        request = {"prompt": "x", "width": 32, "height": 32, "steps": 1, "cfg": 1.0, "num_frames": 5, "fps": 8.0}
        with pytest.raises(UsageError, match="--format mp4: no ffmpeg binary found") as caught:
            prepare("video_test", "txt2vid", request)  # mp4 is the default format for videos
        assert "frames" in caught.value.hint
        options = RunOptions(formats=("frames",))
        assert prepare("video_test", "txt2vid", request, options).formats == ("frames",)
    finally:
        plugins.pm.unregister(name="video-test")
        registry.clear_cache()
