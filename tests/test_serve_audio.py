"""A video's sound track through `codex serve`: the /v1 job lists and serves audio.wav beside a GIF and the MP4
with its AAC track, and the OpenAI videos API returns that MP4, sound included. The sound comes from the tone
test engine (tests/tone_engine), pip-installed into a folder of its own for the service process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from codex_core.testing import decoded_audio, free_port, media_streams

pytestmark = pytest.mark.slow
TONE = Path(__file__).parent / "tone_engine"
CODEX = str(Path(sys.executable).parent / "codex")
REQUEST = {"prompt": "a bell", "width": 32, "height": 32, "num_frames": 9, "fps": 8.0, "steps": 2, "seed": 4}


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve_audio")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "--target", str(folder / "site"), str(TONE)],
                   check=True, capture_output=True, text=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(folder / "site"),
                                                                     os.environ.get("PYTHONPATH")]))}
    log_path = folder / "serve.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([CODEX, "serve", "--port", str(port), "--state-dir", str(folder / "state"),
                                 "--openai-default-video-model", "tiny-tone"], stdout=log, stderr=subprocess.STDOUT,
                                env=env)
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "/v1/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert proc.poll() is None, log_path.read_text(errors="replace")
        assert time.monotonic() < deadline, "the service did not start: " + log_path.read_text(errors="replace")
        time.sleep(0.2)
    yield url
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)


def done(http: httpx.Client, spec: dict) -> dict:
    response = http.post("/v1/jobs", json={"engine": "tone", "task": "txt2vid", "model": "tiny", **spec})
    assert response.status_code == 202, response.text
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = http.get(f"/v1/jobs/{response.json()['id']}").json()
        if job["state"] in ("done", "failed", "cancelled"):
            assert job["state"] == "done", job
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job['id']} still {job['state']}")


def audio_lines(path: Path) -> list[str]:
    return [line for line in media_streams(path) if ": Audio: " in line]


def test_a_job_lists_and_serves_its_sound(service, tmp_path):
    with httpx.Client(base_url=service, timeout=60) as http:
        job = done(http, {"request": REQUEST, "formats": ["mp4", "gif"]})
        names = sorted(Path(path).name for path in job["result"]["files"])
        assert names == ["audio.wav", "info.json", "video.gif", "video.mp4"]
        assert job["result"]["info"]["audio"]["codecs"] == {"mp4": "aac", "gif": "pcm_s16le"}
        run_dir = Path(job["result"]["run_dir"])
        wav = http.get(f"/v1/jobs/{job['id']}/files/audio.wav")
        assert wav.status_code == 200 and wav.headers["content-type"] in ("audio/x-wav", "audio/wav")
        assert wav.content == (run_dir / "audio.wav").read_bytes()
        mp4 = tmp_path / "served.mp4"
        mp4.write_bytes(http.get(f"/v1/jobs/{job['id']}/files/video.mp4").content)
        [line] = audio_lines(mp4)
        assert "Audio: aac" in line and "24000 Hz" in line

        silent = done(http, {"request": {**REQUEST, "audio": False}})
        assert sorted(Path(path).name for path in silent["result"]["files"]) == ["info.json", "video.mp4"]
        mp4.write_bytes(http.get(f"/v1/jobs/{silent['id']}/files/video.mp4").content)
        assert not audio_lines(mp4) and silent["result"]["info"]["audio"]["dropped"] is True


def test_the_openai_videos_api_returns_the_mp4_with_its_sound(service, tmp_path):
    with openai.OpenAI(base_url=service + "/v1", api_key="none", max_retries=0, timeout=120) as client, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the SDK marks the videos API as scheduled to end
        video = client.videos.create(model="tiny-tone", prompt="a bell", seconds="1", size="32x32")
        finished = client.videos.poll(video.id)
        content = client.videos.download_content(video.id).read()
    assert finished.status == "completed"
    codex = finished.model_extra["codex"]
    assert (codex["num_frames"], codex["fps"]) == (9, 8.0)
    assert codex["audio"] == {"codec": "aac", "sample_rate": 24000, "channels": 2, "duration": 1.125}
    mp4 = tmp_path / "openai.mp4"
    mp4.write_bytes(content)
    assert "Audio: aac" in audio_lines(mp4)[0]
    sound = np.frombuffer(decoded_audio(mp4, 2, 24000), "<f4")
    assert abs(sound.size / 2 - 1.125 * 24000) <= 1024 and np.abs(sound).max() > 0.3  # the tone, not silence
