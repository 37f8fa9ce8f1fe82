"""Test helpers that need nothing beyond the core: run the CLI in-process, make input images, build tiny models.

Part of the plugin API (``codex_core.API_MODULES``): plugins' tests use it. The conformance suite for
engines on diffusers pipelines, with pixel comparisons, is ``codex_diffusers.testing``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from click.testing import CliRunner
from PIL import Image, ImageDraw


def cli_run(args: list[str], input: str | None = None):
    """Invoke the ``codex`` CLI in-process (plugins' commands included); returns click's Result."""
    from .cli import cli
    from .registry import register_commands

    register_commands(cli)
    return CliRunner().invoke(cli, args, input=input, catch_exceptions=False)


def run_json(engine: str, task: str, request: dict, out: Path, model: str = "tiny", *extra: str) -> dict:
    """Run through the CLI and return its JSON result; fails with the CLI's stderr on error."""
    result = cli_run(["run", engine, task, "--model", model, "--out", str(out), "--quiet",
                      "--json", json.dumps(request), *extra])
    assert result.exit_code == 0, f"exit {result.exit_code}: {result.stderr}"
    return json.loads(result.stdout)


def write_test_image(path: Path, size: tuple[int, int], seed: int = 0, mode: str = "RGB") -> str:
    """A deterministic noisy RGB image (or, for mode "L", a mask with a white centre square)."""
    width, height = size
    if mode == "L":
        mask = Image.new("L", size, 0)
        ImageDraw.Draw(mask).rectangle([width // 4, height // 4, 3 * width // 4 - 1, 3 * height // 4 - 1], fill=255)
        mask.save(path)
    else:
        Image.frombytes("RGB", size, random.Random(seed).randbytes(width * height * 3)).save(path)
    return str(path)


VIDEO_CODECS = {".mp4": "libx264", ".webm": "libvpx-vp9", ".gif": "gif", ".mkv": "libx264", ".mov": "libx264"}


def write_test_video(path: Path, frames: int, size: tuple[int, int], fps: float = 8, seed: int = 0,
                     mode: str = "RGB") -> str:
    """A deterministic video of ``frames`` frames (codec by suffix: MP4 H.264, WebM VP9, GIF), written by the
    bundled ffmpeg. Each frame is 8x8-pixel blocks of seeded colours (so a lossy codec keeps them close), and
    differs from the others; ``mode="L"``: a mask video, a white square on black that moves a pixel per frame."""
    import imageio_ffmpeg

    width, height = size
    rng = random.Random(seed)
    writer = imageio_ffmpeg.write_frames(str(path), size, fps=fps, codec=VIDEO_CODECS[Path(path).suffix.lower()],
                                         macro_block_size=1, quality=None if Path(path).suffix == ".gif" else 9,
                                         ffmpeg_log_level="error")
    writer.send(None)
    for index in range(frames):
        if mode == "L":
            frame = Image.new("L", size, 0)
            left = (width // 4 + index) % width
            ImageDraw.Draw(frame).rectangle([left, height // 4, left + width // 2 - 1, 3 * height // 4 - 1], fill=255)
            frame = frame.convert("RGB")
        else:
            blocks = Image.frombytes("RGB", (-(-width // 8), -(-height // 8)),
                                     rng.randbytes(3 * -(-width // 8) * -(-height // 8)))
            frame = blocks.resize((blocks.width * 8, blocks.height * 8), Image.Resampling.NEAREST).crop(
                (0, 0, width, height))
        writer.send(frame.tobytes())
    writer.close()
    return str(path)


def tiny_model_dir(engine: str) -> Path:
    """Build (once) and return the engine's tiny model folder, through the engine's own builder."""
    from . import registry, sources
    from .progress import Progress

    found = registry.get_engine(engine)
    path = sources.tiny_path(found, found.tiny_version)
    found.ensure_tiny(path, Progress(enabled=False))
    return path


def interrupted(args: list[str], marker: bytes, sig: int) -> tuple[int, str]:
    """Start `codex ARGS` in a subprocess, send ``sig`` once ``marker`` shows on its stderr; (exit status, stderr)."""
    codex = Path(sys.executable).parent / "codex"
    # SIGINT at its default in the child: a test runner started in the background (`pytest &`) has it ignored,
    # and Python then installs no KeyboardInterrupt for it
    proc = subprocess.Popen([str(codex), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = rest = b""
    try:
        while marker not in seen:
            chunk = os.read(proc.stderr.fileno(), 4096)
            assert chunk, f"codex ended before {marker!r}: {seen.decode(errors='replace')}"
            seen += chunk
        proc.send_signal(sig)
        _, rest = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, (seen + rest).decode(errors="replace")


def add_entry_point(monkeypatch, name: str, module: str) -> None:
    """Make ``importlib.metadata.entry_points`` list one more ``codex`` plugin (e.g. a broken one) for a test."""
    import importlib.metadata

    real = importlib.metadata.entry_points

    def with_extra(**kwargs):
        found = list(real(**kwargs))
        if kwargs.get("group") == "codex":
            found.append(importlib.metadata.EntryPoint(name, module, "codex"))
        return found

    monkeypatch.setattr(importlib.metadata, "entry_points", with_extra)


def clear_registry() -> None:
    """Collect the plugins' contributions again (after registering an in-test plugin with ``plugins.pm``)."""
    from .registry import clear_cache

    clear_cache()


def loaded_models(engine_key: str | None = None) -> list:
    """The models the process-wide model cache holds (of one engine, or all), least recently used first."""
    from .model_cache import cache

    return cache.loaded(engine_key)


def clear_model_cache() -> None:
    """Unload every cached model (a test that needs the next run to load)."""
    from .model_cache import cache

    cache.clear()


@contextmanager
def registered(plugin: object, name: str = "in-test") -> Iterator[None]:
    """An in-test plugin (an object with hook implementations) registered for the block, then removed; the
    registry collects the plugins' contributions again on both sides."""
    from .plugins import load_plugins, pm
    from .registry import clear_cache

    load_plugins()
    pm.register(plugin, name=name)
    clear_cache()
    try:
        yield
    finally:
        pm.unregister(name=name)
        clear_cache()


def unload_models_from(folder: Path) -> None:
    """Unload the cached models loaded from under ``folder`` (a test's own checkpoints; others stay loaded)."""
    from .model_cache import cache

    for key in [key for key in cache.keys() if str(key[1][1]).startswith(str(folder))]:
        cache.drop(key)


def media_streams(path: Path) -> list[str]:
    """The stream lines ffmpeg prints for a media file (``Stream #0:1...: Audio: aac (LC), 24000 Hz, stereo,
    ...``): what a player finds in it, for tests that look for the video and audio streams."""
    import imageio_ffmpeg

    listed = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)],
                            capture_output=True, text=True, errors="replace")  # exits 1: no output file given
    return [line.strip() for line in listed.stderr.splitlines() if line.strip().startswith("Stream #")]


def decoded_audio(path: Path, channels: int, sample_rate: int) -> bytes:
    """A media file's first audio stream decoded by the bundled ffmpeg: float32 little-endian, interleaved,
    at ``channels`` and ``sample_rate`` (``numpy.frombuffer(..., "<f4").reshape(-1, channels).T`` is the
    (channels, samples) layout of ``AudioTrack``)."""
    import imageio_ffmpeg

    decoded = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", "0:a:0",
                              "-f", "f32le", "-ac", str(channels), "-ar", str(sample_rate), "-"],
                             capture_output=True, check=True)
    return decoded.stdout


def cpu_ranks_env(env: dict | None = None) -> dict:
    """The environment for context-parallel ranks started by a test on a machine without an accelerator: the
    test-only ``tests/cpu_ranks`` shim first on PYTHONPATH (see its docstring), one thread per rank."""
    import os
    from pathlib import Path

    env = dict(os.environ if env is None else env)
    shim = Path(__file__).resolve().parent.parent / "tests" / "cpu_ranks"
    env["PYTHONPATH"] = os.pathsep.join([str(shim), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def free_port() -> int:
    """A TCP port free on loopback now (for a service a test starts)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def install_package(source: Path, target: Path) -> Path:
    """pip-install the package at ``source`` (e.g. the tests' sleepy engine) into the folder ``target``, for a test's
    subprocesses to find on PYTHONPATH; returns ``target``."""
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "--target", str(target), str(source)],
                   check=True, capture_output=True, text=True)
    return target


def on_cpu_ranks(script: Path, out: Path, *args: str, ranks: int = 2, timeout: float = 300) -> dict:
    """Run ``script OUT ARGS...`` as ``ranks`` torchrun ranks on the CPU (gloo, ``cpu_ranks_env``); the JSON that
    rank 0 wrote to ``out`` (the script ends with ``codex_diffusers.testing.write_rank_result``). Fails with the ranks' stderr."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks),
               str(script), str(out), *args]
    done = subprocess.run(command, env=cpu_ranks_env(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(Path(out).read_text())

