"""The tone "model": a JSON file. Its txt2vid makes ``num_frames`` frames of a colour that moves with the
frame index and the seed, and a stereo sine tone as long as the clip (``num_frames / fps`` seconds).

The tone is ``tone(seed, num_frames, fps)``: its pitch follows the seed (220 Hz + 20 Hz per seed step,
modulo 20 steps), the right channel at half the left's level. A test computes the same samples to compare
what was exported, and a different seed gives a different track (a different hash).
"""

import json
from pathlib import Path

import numpy as np
from PIL import Image

from codex_core import AudioFields, AudioTrack, Engine, Job, Txt2VidParams, VideoOutput

SAMPLE_RATE = 24000  # the default output rate of LTX-2's vocoder (diffusers' LTX2Vocoder)


class ToneTxt2Vid(AudioFields, Txt2VidParams):
    size_multiple = 2  # H.264 in yuv420p: even sides
    frame_multiple = 4


def tone(seed: int, num_frames: int, fps: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The engine's sound track: float32 (2, samples) in [-0.5, 0.5]."""
    count = round(num_frames / fps * sample_rate)
    pitch = 220.0 + 20.0 * (seed % 20)
    left = 0.5 * np.sin(2 * np.pi * pitch * np.arange(count) / sample_rate)
    return np.stack([left, 0.5 * left]).astype(np.float32)


def frame(seed: int, index: int, size: tuple[int, int]) -> Image.Image:
    return Image.new("RGB", size, ((seed * 37 + index * 25) % 256, (index * 40) % 256, 120))


class ToneEngine(Engine):
    key = "tone"
    family = "test"
    description = "Test-only engine: coloured frames with a sine tone (a video with sound)"
    tasks = {"txt2vid": ToneTxt2Vid}
    model_marker = "tone.json"
    tiny_version = "1"

    def build_tiny(self, dest: Path) -> None:
        dest.mkdir(parents=True)
        (dest / self.model_marker).write_text(json.dumps({"sample_rate": SAMPLE_RATE}), encoding="utf-8")

    def load(self, source, runtime) -> dict:
        return json.loads((source.path / self.model_marker).read_text(encoding="utf-8"))

    def run(self, model: dict, job: Job) -> VideoOutput:
        params = job.params
        job.progress.stage("denoise")
        for k in range(1, params.steps + 1):
            job.progress.step(k, params.steps)
            job.steps_done = k
        frames = [frame(params.seed, index, (params.width, params.height)) for index in range(params.num_frames)]
        track = AudioTrack(tone(params.seed, params.num_frames, params.fps, model["sample_rate"]), model["sample_rate"])
        return VideoOutput(frames, params.fps, audio=track)  # always: the core drops it for "audio": false
