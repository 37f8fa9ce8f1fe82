"""A video's sound track in the outputs: AAC in MP4, Opus in WebM, audio.wav beside GIF and PNG frames, info's
record of it (with the PCM's hash), ``"audio": false``, `codex replay --check` and `codex grid`.

The sound comes from the tone test engine (tests/tone_engine: coloured frames and a stereo sine per seed,
registered in-process here), so every part is tested without a sound-making model."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from codex_core import registry
from codex_core.exporters.video import probe
from codex_core.outputs import AudioTrack, VideoOutput, run_folder
from codex_core.testing import cli_run, decoded_audio, media_streams, registered, run_json

sys.path.insert(0, str(Path(__file__).parent / "tone_engine"))
from codex_tone import plugin as tone_plugin  # noqa: E402
from codex_tone.engine import SAMPLE_RATE, frame, tone  # noqa: E402

REQUEST = {"prompt": "a bell", "width": 32, "height": 32, "num_frames": 9, "fps": 8.0, "steps": 2, "seed": 4}
SECONDS = 9 / 8.0


@pytest.fixture(scope="module", autouse=True)
def tone_engine():
    with registered(tone_plugin, "tone-test"):
        yield


def run(tmp_path: Path, request: dict | None = None, *formats: str) -> dict:
    extra = ["--format", ",".join(formats)] if formats else []
    return run_json("tone", "txt2vid", {**REQUEST, **(request or {})}, tmp_path, "tiny", *extra)


def audio_lines(path: Path) -> list[str]:
    return [line for line in media_streams(path) if ": Audio: " in line]


def decoded(path: Path) -> np.ndarray:
    return np.frombuffer(decoded_audio(path, 2, SAMPLE_RATE), "<f4").reshape(-1, 2).T


def export(tmp_path, formats, output):
    info = {"engine": "tone", "task": "txt2vid", "request": REQUEST}
    exporters = registry.exporters()
    with run_folder(tmp_path, "run") as folder:
        for name in formats:
            folder.written.extend(exporters[name].write(output, folder, info))
    return folder, info


def test_mp4_has_the_asked_frames_and_fps_and_an_aac_track_of_the_clips_duration(tmp_path):
    result = run(tmp_path)
    video = Path(result["run_dir"]) / "video.mp4"
    seen = probe(video)
    assert (seen["frames"], seen["fps"], seen["width"], seen["height"]) == (9, 8.0, 32, 32)
    [line] = audio_lines(video)
    assert "Audio: aac" in line and f"{SAMPLE_RATE} Hz" in line and "stereo" in line
    sound = decoded(video)
    expected = tone(4, 9, 8.0)
    assert abs(sound.shape[1] - expected.shape[1]) <= 1024  # AAC frames of 1024 samples; MP4's edit list trims
    count = min(sound.shape[1], expected.shape[1])
    assert np.sqrt(np.mean((sound[:, :count] - expected[:, :count]) ** 2)) < 0.02  # the tone itself, lossy
    info = result["info"]
    assert info["audio"] == {"sample_rate": SAMPLE_RATE, "channels": 2, "samples": expected.shape[1],
                             "duration": SECONDS, "sha256": hashlib.sha256(expected.astype("<f4").tobytes()).hexdigest(),
                             "sha256_of": "float32 little-endian, (channels, samples) row-major", "codecs": {"mp4": "aac"}}
    assert info["video"]["audio_codec"] == "aac"
    # the MP4's own copy of the run (its comment tag) records the track too: `codex info video.mp4` shows it
    shown = json.loads(cli_run(["info", str(video)]).stdout)["codex"]
    assert shown["audio"]["sha256"] == info["audio"]["sha256"] and shown["audio"]["codecs"] == {"mp4": "aac"}


def test_webm_carries_the_track_as_opus(tmp_path):
    result = run(tmp_path, None, "webm")
    video = Path(result["run_dir"]) / "video.webm"
    assert probe(video)["frames"] == 9
    [line] = audio_lines(video)
    assert "Audio: opus" in line and "stereo" in line
    sound, expected = decoded(video), tone(4, 9, 8.0)
    assert abs(sound.shape[1] - expected.shape[1]) <= 960  # Opus frames of 20 ms at 48 kHz
    count = min(sound.shape[1], expected.shape[1])
    assert np.sqrt(np.mean((sound[:, :count] - expected[:, :count]) ** 2)) < 0.05
    assert result["info"]["audio"]["codecs"] == {"webm": "opus"}


def test_gif_and_frames_put_the_track_beside_them_as_one_wav(tmp_path):
    result = run(tmp_path, None, "gif", "frames")
    run_dir = Path(result["run_dir"])
    assert not audio_lines(run_dir / "video.gif")
    wav = run_dir / "audio.wav"
    assert sorted(Path(p).name for p in result["files"] if not Path(p).parent.name == "frames") == \
        ["audio.wav", "info.json", "video.gif"]
    with wave.open(str(wav)) as read:
        assert (read.getnchannels(), read.getsampwidth(), read.getframerate()) == (2, 2, SAMPLE_RATE)
        pcm = np.frombuffer(read.readframes(read.getnframes()), "<i2").reshape(-1, 2).T
    expected = tone(4, 9, 8.0)
    assert np.array_equal(pcm, np.clip(np.round(expected * 32768), -32768, 32767).astype(np.int16))
    # what ffmpeg reads from it is the track, to 16-bit precision
    assert np.abs(decoded(wav) - expected).max() <= 1 / 32768
    info = result["info"]
    assert info["audio"]["codecs"] == {"gif": "pcm_s16le", "frames": "pcm_s16le"}
    assert info["audio"]["wav"] == str(wav) and info["video"]["audio_codec"] is None
    assert str(wav) in info["outputs"]


def test_audio_false_exports_a_silent_video_and_says_so(tmp_path):
    result = run(tmp_path, {"audio": False}, "mp4", "gif")
    run_dir = Path(result["run_dir"])
    assert not audio_lines(run_dir / "video.mp4") and probe(run_dir / "video.mp4")["frames"] == 9
    assert not (run_dir / "audio.wav").exists()
    audio = result["info"]["audio"]
    assert audio["dropped"] is True and "audio" in audio["reason"] and "codecs" not in audio
    assert audio["sha256"] == hashlib.sha256(tone(4, 9, 8.0).astype("<f4").tobytes()).hexdigest()  # what was made
    assert "audio_codec" not in result["info"]["video"]


def test_a_mono_48khz_track_keeps_its_rate_and_channels(tmp_path):
    """The rate and layout are the engine's: LTX-2's vocoder with bandwidth extension makes 48 kHz."""
    frames = [frame(1, index, (32, 32)) for index in range(5)]
    samples = tone(1, 5, 8.0, 48000)[:1]
    folder, info = export(tmp_path, ["mp4", "webm"], VideoOutput(frames, 8.0, AudioTrack(samples, 48000)))
    for name, codec in (("video.mp4", "aac"), ("video.webm", "opus")):
        [line] = audio_lines(folder.final_dir / name)
        assert f"Audio: {codec}" in line and "48000 Hz" in line and "mono" in line
    assert (info["audio"]["channels"], info["audio"]["sample_rate"], info["audio"]["samples"]) == (1, 48000, 30000)


def test_an_engine_without_sound_writes_no_audio(tmp_path):
    frames = [frame(1, index, (32, 32)) for index in range(5)]
    folder, info = export(tmp_path, ["mp4", "frames"], VideoOutput(frames, 8.0))
    assert "audio" not in info and not audio_lines(folder.final_dir / "video.mp4")
    assert not (folder.final_dir / "audio.wav").exists()


@pytest.mark.parametrize("samples, rate, message", [
    (np.zeros(10, np.float32), SAMPLE_RATE, r"shaped \(channels, samples\)"),
    (np.zeros((2, 10), np.int16), SAMPLE_RATE, "dtype int16"),
    (np.zeros((2, 10), np.float32), 0, "sample_rate 0"),
    ([[0.0, 0.1]], SAMPLE_RATE, "of type list"),
])
def test_a_malformed_track_fails_the_export_and_leaves_nothing(tmp_path, samples, rate, message):
    frames = [frame(1, index, (32, 32)) for index in range(5)]
    with pytest.raises(Exception, match=message):
        export(tmp_path, ["mp4"], VideoOutput(frames, 8.0, AudioTrack(samples, rate)))
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_export_with_sound_leaves_no_folder_and_no_scratch_file(tmp_path, monkeypatch):
    """The PCM handed to ffmpeg is a temporary file: gone with the call, whether ffmpeg finished or not."""
    import tempfile

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    frames = [frame(1, index, (32, 32)) for index in range(5)]
    track = AudioTrack(tone(1, 5, 8.0), SAMPLE_RATE)

    from codex_core.exporters import video

    def interrupted(cmd, frames, container):  # Ctrl-C while ffmpeg runs
        [pcm] = [Path(arg) for arg in cmd if arg.endswith("track.f32")]  # the PCM: an input of the same call
        assert pcm.stat().st_size == track.samples.size * 4
        raise KeyboardInterrupt

    monkeypatch.setattr(video, "_run_encoder", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export(tmp_path / "out", ["mp4"], VideoOutput(frames, 8.0, track))
    assert list((tmp_path / "out").iterdir()) == [] and list(scratch.iterdir()) == []


# -- replay -------------------------------------------------------------------------------------------------


def test_replay_check_compares_the_sound_tracks_hash(tmp_path):
    original = Path(run(tmp_path / "runs")["run_dir"])
    again = cli_run(["replay", str(original), "--out", str(tmp_path / "again"), "--quiet", "--check"])
    assert again.exit_code == 0, again.stderr
    check = json.loads(again.stdout)["check"]
    assert check["identical"] is True and check["audio"] == {"identical": True, "sha256": check["audio"]["sha256"]}
    assert "sound track identical" in again.stderr

    tampered = tmp_path / "tampered"
    shutil.copytree(original, tampered)
    info = json.loads((tampered / "info.json").read_text())
    info["audio"]["sha256"] = "0" * 64  # as if the original run had made another track
    (tampered / "info.json").write_text(json.dumps(info))
    different = cli_run(["replay", str(tampered), "--out", str(tmp_path / "again"), "--quiet", "--check"])
    assert different.exit_code == 1
    check = json.loads(different.stdout)["check"]
    assert check["identical"] is False and check["differing"] == 0  # the frames agree; the sound does not
    assert check["audio"]["identical"] is False and check["audio"]["sha256_recorded"] == "0" * 64
    assert "sound track differs" in different.stderr


def test_replay_of_a_run_without_its_track_is_different(tmp_path):
    """A run recorded with sound, replayed into a silent one (here: the recorded request says audio: false)."""
    original = Path(run(tmp_path / "runs")["run_dir"])
    info = json.loads((original / "info.json").read_text())
    info["request"]["audio"] = False
    (original / "info.json").write_text(json.dumps(info))
    again = cli_run(["replay", str(original), "--out", str(tmp_path / "again"), "--quiet", "--check"])
    assert again.exit_code == 1
    assert json.loads(again.stdout)["check"]["audio"]["identical"] is False


# -- grid -----------------------------------------------------------------------------------------------------


def test_a_video_grid_is_silent_and_says_so(tmp_path):
    result = cli_run(["grid", "tone", "txt2vid", "--model", "tiny", "--out", str(tmp_path), "--json",
                      json.dumps(REQUEST), "--x", "seed=1,2"])
    assert result.exit_code == 0, result.stderr
    summary = json.loads((tmp_path / "batch.json").read_text())
    [grid] = summary["grids"]
    assert grid["status"] == "done" and grid["audio"].startswith("left out")
    assert not audio_lines(Path(grid["path"]))
    assert "left out" in result.stderr and "sound" in result.stderr
    for cell in ("x0", "x1"):  # each cell keeps its own sound
        [cell_dir] = [p for p in tmp_path.iterdir() if p.name.endswith(cell)]
        assert audio_lines(cell_dir / "video.mp4")
