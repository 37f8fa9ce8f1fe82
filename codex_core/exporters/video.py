"""Video writers through imageio-ffmpeg's bundled ffmpeg (MP4/H.264, WebM/VP9, GIF) and PNG frames.

The request and effective settings go into the container's ``comment`` tag (MP4, WebM; GIF has no
place for them) and ``info["video"]`` describes the first container written. A sound track
(``VideoOutput.audio``) is muxed in the same ffmpeg call: AAC in MP4, Opus in WebM; GIF and PNG frames
have no place for sound, so it goes beside them as ``audio.wav`` (``exporters/audio.py``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CodexError
from ..outputs import AudioTrack, RunFiles, VideoOutput, signals_deferred
from . import audio as sound
from .png import embedded


@dataclass(frozen=True)
class Container:
    format: str
    codec: str  # ffmpeg encoder
    codec_name: str  # what info.json reports
    pix_fmt: str | None
    output_params: tuple[str, ...]
    carries_metadata: bool = True
    # the sound track's ffmpeg encoder and its options, and what info.json calls it; None: audio.wav beside it
    audio_codec: str | None = None
    audio_params: tuple[str, ...] = ()
    audio_codec_name: str | None = None


CONTAINERS = {
    # 192 kb/s AAC-LC and 128 kb/s Opus: transparent for a generated track, small beside the video
    "mp4": Container("mp4", "libx264", "h264", "yuv420p", ("-crf", "17", "-preset", "medium", "-movflags", "+faststart"),
                     audio_codec="aac", audio_params=("-b:a", "192k"), audio_codec_name="aac"),
    "webm": Container("webm", "libvpx-vp9", "vp9", "yuv420p", ("-crf", "30", "-b:v", "0", "-row-mt", "1"),
                      audio_codec="libopus", audio_params=("-b:a", "128k"), audio_codec_name="opus"),
    # One palette for the whole clip (palettegen/paletteuse) instead of ffmpeg's fixed 256 colours.
    # pal8: without it imageio-ffmpeg asks for yuv420p and ffmpeg falls back to a fixed rgb8 palette.
    "gif": Container("gif", "gif", "gif", "pal8",
                     ("-filter_complex", "split[a][b];[a]palettegen[p];[b][p]paletteuse", "-loop", "0"),
                     carries_metadata=False),
}


def ffmpeg_problem() -> str | None:
    """Why ffmpeg cannot be used, or None when it can."""
    try:
        import imageio_ffmpeg

        imageio_ffmpeg.get_ffmpeg_exe()
    except ImportError:
        return "imageio-ffmpeg is not installed (pip install imageio-ffmpeg)"
    except RuntimeError as exc:  # no bundled binary and none on PATH / IMAGEIO_FFMPEG_EXE
        return f"no ffmpeg binary found ({exc})"
    return None


def write_container(container: Container, output: VideoOutput, files: RunFiles, info: dict[str, Any]) -> list[Path]:
    frames = [frame.convert("RGB") for frame in output.frames]
    if not frames:
        raise CodexError("the engine returned no frames to export")
    width, height = frames[0].size
    if container.pix_fmt == "yuv420p" and (width % 2 or height % 2):
        raise CodexError(f"{container.format} (yuv420p) needs even width and height, got {width}x{height}")
    params = list(container.output_params)
    path = files.staging_dir / f"video.{container.format}"
    track = output.audio
    written = [path]
    if track is not None and container.audio_codec:
        sound.noted(info, track, container.format, container.audio_codec_name)
    if container.carries_metadata:  # after the audio facts are in info: the file's copy names its own track
        params += ["-metadata", "comment=" + json.dumps(embedded(info, 0), default=str)]
    encode(path, frames, output.fps, container, params, track if container.audio_codec else None)
    if track is not None and not container.audio_codec:
        written += sound.write_wav(track, files, info, container.format)
    fps = output.fps
    if container.format == "gif":  # GIF delays are whole centiseconds: 16 fps plays as 100/6 = 16.67
        fps = round(100 / max(1, round(100 / output.fps)), 3)
    entry = {"path": str(files.final_path(path)), "format": container.format, "codec": container.codec_name,
             "fps": fps, "frames": len(frames), "width": width, "height": height,
             "metadata_embedded": container.carries_metadata}
    if track is not None:
        entry["audio_codec"] = container.audio_codec_name or None  # None: the sound is in audio.wav beside it
    info.setdefault("video", entry)
    info.setdefault("videos", []).append(entry)
    return written


def encode(path: Path, frames: list, fps: float, container: Container, params: list[str],
           audio: AudioTrack | None = None) -> None:
    """Pipe rgb24 frames into imageio-ffmpeg's ffmpeg binary and wait for it, whatever happens.

    Our own pipe rather than ``imageio_ffmpeg.write_frames`` because, on Ctrl-C or SIGTERM, that
    generator closes ffmpeg's stdin and kills it without waiting: ffmpeg could still create or
    finish the file after the run folder's cleanup had removed it, leaving a partial folder behind.
    The command line is the one imageio-ffmpeg builds (rate as a fraction, no resizing); with ``audio``
    its raw float PCM is a second input (a temporary file, removed with the call whatever happens),
    encoded with ``container.audio_codec`` into the same file: one ffmpeg call, one staged file.
    """
    import tempfile
    from fractions import Fraction

    import imageio_ffmpeg

    width, height = frames[0].size
    rate = str(Fraction(fps).limit_denominator())
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-f", "rawvideo", "-vcodec", "rawvideo", "-s", f"{width}x{height}",
           "-pix_fmt", "rgb24", "-r", rate, "-i", "-"]
    with tempfile.TemporaryDirectory(prefix="codex-audio-") as scratch:
        if audio is not None:
            pcm = Path(scratch) / "track.f32"
            pcm.write_bytes(sound.interleaved_f32(audio))
            cmd += ["-f", "f32le", "-ar", str(audio.sample_rate), "-ac", str(audio.channels), "-i", str(pcm),
                    "-map", "0:v", "-map", "1:a", "-acodec", container.audio_codec, *container.audio_params]
        else:
            cmd += ["-an"]
        cmd += ["-vcodec", container.codec]
        if container.pix_fmt:
            cmd += ["-pix_fmt", container.pix_fmt]
        cmd += ["-v", "error", *params, str(path)]
        _run_encoder(cmd, frames, container)


def _run_encoder(cmd: list[str], frames: list, container: Container) -> None:
    import subprocess
    import tempfile

    with tempfile.TemporaryFile() as log:
        # Its own session: a Ctrl-C at the terminal reaches us, and we decide when ffmpeg stops. Signals wait
        # until Popen returns: interrupted while waiting for exec, Popen would leave ffmpeg running unowned.
        with signals_deferred():
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log,
                                    start_new_session=True)
        try:
            try:
                for frame in frames:
                    proc.stdin.write(frame.tobytes())  # rgb24, row by row
                proc.stdin.close()
            except BrokenPipeError:  # ffmpeg stopped reading: its log says why (not the CLI's "reader has gone")
                pass
            status = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()  # dead before the caller removes the staging folder
            raise
        if status != 0:
            log.seek(0)
            reason = log.read().decode(errors="replace").strip().splitlines()
            raise CodexError(f"ffmpeg could not write {container.format}: "
                             f"{reason[-1] if reason else f'exit status {status}'}")


def write_frames(output: VideoOutput, files: RunFiles, info: dict[str, Any]) -> list[Path]:
    """Lossless PNG per frame, in ``frames/`` (and the sound track, if any, as ``audio.wav`` beside it)."""
    folder = files.staging_dir / "frames"
    folder.mkdir()
    written = []
    for index, frame in enumerate(output.frames):
        path = folder / f"{index:04d}.png"
        frame.save(path)
        written.append(path)
    info["frames"] = {"path": str(files.final_path(folder)), "count": len(written), "fps": output.fps}
    if output.audio is not None:
        written += sound.write_wav(output.audio, files, info, "frames")
    return written


def decode_frames(path: Path):
    """The frames of a video file as RGB PIL images, decoded by imageio-ffmpeg's ffmpeg."""
    import imageio_ffmpeg
    from PIL import Image

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    for frame in reader:
        yield Image.frombytes("RGB", tuple(meta["size"]), bytes(frame))


def read_video_comment(path: Path) -> str | None:
    """The text of an MP4/WebM ``comment`` tag (None if there is none); UsageError if ffmpeg cannot read the file."""
    import subprocess

    import imageio_ffmpeg

    from ..errors import UsageError

    dump = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "ffmetadata", "-"],
                          capture_output=True, text=True, errors="replace")
    if dump.returncode != 0:
        reason = dump.stderr.strip().splitlines()[-1] if dump.stderr.strip() else f"exit status {dump.returncode}"
        raise UsageError(f"{path}: not a readable video ({reason})")
    for line in dump.stdout.splitlines():
        key, _, value = line.partition("=")
        if key.lower() == "comment":
            # ffmetadata escapes '=', ';', '#', '\\' and newlines with a backslash
            return value.replace("\\=", "=").replace("\\;", ";").replace("\\#", "#").replace("\\\\", "\\")
    return None


def read_video_metadata(path: Path) -> dict[str, Any]:
    """The ``codex`` JSON embedded in an MP4/WebM ``comment`` tag (empty if there is none)."""
    comment = read_video_comment(path)
    return {"codex": json.loads(comment)} if comment is not None else {}


def probe(path: Path) -> dict[str, Any]:
    """Frame count and fps as a player sees them (decodes the whole file)."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    count = sum(1 for _ in reader)
    return {"frames": count, "fps": meta["fps"], "width": meta["size"][0], "height": meta["size"][1],
            "codec": meta.get("codec")}
