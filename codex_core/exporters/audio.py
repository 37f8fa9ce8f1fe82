"""A video's sound track (``VideoOutput.audio``) as the exporters write it and info.json records it.

The core imports no numpy: the track's samples are a numpy array made by the engine, and only its own
methods (``astype``, ``clip``, ``tobytes``) are used here.

The recorded ``sha256`` is of the PCM before any encoding: the samples as float32 little-endian, in the
track's (channels, samples) layout, row-major (planar: all of channel 0, then channel 1, ...). AAC and
Opus are lossy, so an output file cannot prove the track; that hash does, and ``codex replay --check``
compares it.
"""

from __future__ import annotations

import hashlib
import wave
from pathlib import Path
from typing import Any

from ..errors import CodexError
from ..outputs import AudioTrack, RunFiles

WAV_NAME = "audio.wav"
PCM_LAYOUT = "float32 little-endian, (channels, samples) row-major"


def check_track(track: AudioTrack) -> None:
    """Refuse a track the exporters could not write faithfully (an engine's mistake, not the user's)."""
    samples = track.samples
    shape = getattr(samples, "shape", None)
    if not hasattr(samples, "astype") or shape is None or len(shape) != 2:
        raise CodexError(f"the engine returned audio samples of type {type(samples).__name__} with shape {shape}; "
                         "expected a numpy float array shaped (channels, samples)")
    if not isinstance(track.sample_rate, int) or isinstance(track.sample_rate, bool) or not 1000 <= track.sample_rate <= 384000:
        raise CodexError(f"the engine returned audio at sample_rate {track.sample_rate!r}; expected an int in 1000..384000")
    if not 1 <= shape[0] <= 8 or shape[1] < 1:
        raise CodexError(f"the engine returned audio shaped {tuple(shape)}; expected (channels 1..8, samples >= 1)")
    if getattr(samples.dtype, "kind", None) != "f":
        raise CodexError(f"the engine returned audio samples of dtype {samples.dtype}; expected float PCM in [-1, 1]")


def pcm_bytes(track: AudioTrack) -> bytes:
    """The track as the hash covers it (``PCM_LAYOUT``)."""
    return track.samples.astype("<f4").tobytes(order="C")


def interleaved_f32(track: AudioTrack) -> bytes:
    """The track interleaved (frame by frame, channel by channel), float32 little-endian: ffmpeg's ``f32le``."""
    return track.samples.T.astype("<f4", order="C").tobytes(order="C")


def record(track: AudioTrack) -> dict[str, Any]:
    """What info.json says of the track (``codecs``: what each written file holds, filled in by the exporters)."""
    check_track(track)
    return {"sample_rate": track.sample_rate, "channels": track.channels, "samples": int(track.samples.shape[1]),
            "duration": round(track.duration, 6), "sha256": hashlib.sha256(pcm_bytes(track)).hexdigest(),
            "sha256_of": PCM_LAYOUT, "codecs": {}}


def noted(info: dict[str, Any], track: AudioTrack, fmt: str, codec: str) -> None:
    """Record that ``fmt``'s file carries the track as ``codec`` (and the track's facts, once)."""
    if "audio" not in info or info["audio"].get("dropped"):
        info["audio"] = record(track)
    info["audio"].setdefault("codecs", {})[fmt] = codec


def write_wav(track: AudioTrack, files: RunFiles, info: dict[str, Any], fmt: str) -> list[Path]:
    """``audio.wav`` (16-bit PCM) beside the frames of a format without sound (GIF, PNG frames); once per run."""
    path = files.staging_dir / WAV_NAME
    noted(info, track, fmt, "pcm_s16le")
    info["audio"]["wav"] = str(files.final_path(path))
    if path.exists():  # GIF and frames in one run share it
        return []
    # 16-bit as ffmpeg converts float to s16 (x * 32768, rounded, clipped), so this WAV and ffmpeg's agree
    pcm = (track.samples.T * 32768.0).round().clip(-32768, 32767).astype("<i2", order="C").tobytes(order="C")
    tmp = path.with_name("." + path.name + ".tmp")
    with wave.open(str(tmp), "wb") as out:
        out.setnchannels(track.channels)
        out.setsampwidth(2)
        out.setframerate(track.sample_rate)
        out.writeframes(pcm)
    tmp.replace(path)
    return [path]
