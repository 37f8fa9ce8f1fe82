"""Video inputs through `codex serve`'s /v1 API over real HTTP: a video field takes a path inside the input roots, a
data URL or bare base64 (written to the job's inputs folder), or the path `POST /v1/inputs` gave for an uploaded
video; a path outside the roots, a file that is not a video and a mask video of another length are refused with 422
before anything loads, nothing queued and nothing kept.

The engine is the sleepy test engine's vid2vid (tests/sleepy_engine): it gives the input video's frames back
(inverted where a mask video is white), so the output shows which video arrived.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import imageio_ffmpeg
import numpy as np
import pytest

from codex_core.testing import write_test_video

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """Videos inside the service's input root, and one outside it."""
    root = tmp_path_factory.mktemp("video_root")
    outside = tmp_path_factory.mktemp("video_outside")
    return {"root": root,
            "mp4": Path(write_test_video(root / "clip.mp4", 9, (32, 16), fps=8, seed=1)),
            "mask": Path(write_test_video(root / "mask.mp4", 9, (32, 16), fps=8, mode="L")),
            "short": Path(write_test_video(root / "short.webm", 5, (32, 16), fps=8, mode="L")),
            "webm": Path(write_test_video(root / "clip.webm", 9, (32, 16), fps=8, seed=2)),
            "gif": Path(write_test_video(root / "clip.gif", 5, (32, 16), fps=10, seed=3)),
            "outside": Path(write_test_video(outside / "secret.mp4", 9, (32, 16), fps=8))}


CODEX = str(Path(sys.executable).parent / "codex")
SLEEPY = Path(__file__).parent / "sleepy_engine"


@pytest.fixture(scope="module")
def service(tmp_path_factory, clips):
    """`codex serve --input-root ROOT` on a free loopback port, with the sleepy engine importable."""
    folder = tmp_path_factory.mktemp("serve_video")
    site = folder / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "--target", str(site), str(SLEEPY)],
                   check=True, capture_output=True, text=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    log_path = folder / "serve.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([CODEX, "serve", "--port", str(port), "--state-dir", str(folder / "state"),
                                 "--input-root", str(clips["root"])], stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "/v1/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text(errors="replace")
        time.sleep(0.2)
    with httpx.Client(base_url=url, timeout=60) as client:
        yield client, folder / "state"
    proc.terminate()
    assert proc.wait(30) == 0, log_path.read_text(errors="replace")


def finished(client: httpx.Client, response: httpx.Response, timeout: float = 120) -> dict:
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    deadline = time.monotonic() + timeout
    while (job := client.get(f"/v1/jobs/{job_id}").json())["state"] not in ("done", "failed", "cancelled"):
        assert time.monotonic() < deadline, f"job {job_id} still {job['state']}"
        time.sleep(0.1)
    assert job["state"] == "done", job
    return job


def refused(client: httpx.Client, spec: dict, state: Path) -> str:
    """The detail of a 422 for ``spec``: nothing was queued and no input file was kept."""
    jobs_before, kept = len(client.get("/v1/jobs").json()), sorted((state / "inputs").rglob("*"))
    response = client.post("/v1/jobs", json=spec)
    assert response.status_code == 422, response.text
    assert len(client.get("/v1/jobs").json()) == jobs_before and sorted((state / "inputs").rglob("*")) == kept
    return response.json()["detail"]


def data_url(path: Path, kind: str) -> str:
    return f"data:{kind};base64," + base64.b64encode(path.read_bytes()).decode()


def frames_of(client: httpx.Client, job: dict, folder: Path) -> list[np.ndarray]:
    """The job's MP4, downloaded and decoded."""
    name = Path(job["result"]["files"][0]).name
    assert name.endswith(".mp4")
    saved = folder / f"{job['id']}.mp4"
    saved.write_bytes(client.get(f"/v1/jobs/{job['id']}/files/{name}").content)
    reader = imageio_ffmpeg.read_frames(str(saved), pix_fmt="rgb24")
    width, height = next(reader)["size"]
    return [np.frombuffer(frame, np.uint8).reshape(height, width, 3) for frame in reader]


def vid2vid(request: dict) -> dict:
    return {"engine": "sleepy", "task": "vid2vid", "model": "tiny", "request": request}


def test_a_path_in_the_roots_a_data_url_and_bare_base64_each_reach_the_engine(service, clips, tmp_path):
    client, state = service
    sent = {"path": str(clips["mp4"]), "data URL": data_url(clips["webm"], "video/webm"),
            "bare base64": base64.b64encode(clips["mp4"].read_bytes()).decode(),
            "GIF data URL": data_url(clips["gif"], "image/gif")}
    for how, value in sent.items():
        job = finished(client, client.post("/v1/jobs", json=vid2vid({"init_video": value})))
        info = job["result"]["info"]
        written = Path(info["request"]["init_video"])
        source = clips["gif"] if how.startswith("GIF") else clips["webm"] if how == "data URL" else clips["mp4"]
        assert written.read_bytes() == source.read_bytes(), how
        assert info["inputs"]["init_video"]["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
        if how == "path":
            assert written == clips["mp4"]
        else:  # inline: kept in the job's own inputs folder, named for the field, with the container's suffix
            assert written.is_relative_to(state / "inputs") and written.stem == "init_video"
            assert written.suffix == {"data URL": ".webm", "bare base64": ".mp4", "GIF data URL": ".gif"}[how]
        made = frames_of(client, job, tmp_path)
        assert len(made) == (5 if how.startswith("GIF") else 9) and made[0].shape == (16, 32, 3), how


def test_an_uploaded_video_and_a_mask_video(service, clips, tmp_path):
    client, state = service
    uploaded = client.post("/v1/inputs", content=clips["mp4"].read_bytes(), headers={"content-type": "video/mp4"})
    assert uploaded.status_code == 201, uploaded.text
    body = uploaded.json()
    assert body["sha256"] == hashlib.sha256(clips["mp4"].read_bytes()).hexdigest() and body["path"].endswith(".mp4")
    job = finished(client, client.post("/v1/jobs", json=vid2vid(
        {"init_video": body["path"], "mask_video": data_url(clips["mask"], "video/mp4")})))
    assert set(job["result"]["info"]["inputs"]) == {"init_video", "mask_video"}
    assert len(frames_of(client, job, tmp_path)) == 9

    not_video = client.post("/v1/inputs", content=b"\x00" * 300, headers={"content-type": "video/mp4"})
    assert not_video.status_code == 422 and "body: the data is not a video ffmpeg can read" in not_video.text


def test_refused_before_loading(service, clips):
    client, state = service
    outside = refused(client, vid2vid({"init_video": str(clips["outside"])}), state)
    assert "init_video: " in outside and "is outside the folders this service may read" in outside
    escape = refused(client, vid2vid({"init_video": str(clips["root"] / ".." / clips["outside"].parent.name /
                                                        "secret.mp4")}), state)
    assert "init_video: " in escape and "outside the folders" in escape
    corrupt = refused(client, vid2vid({"init_video": "data:video/mp4;base64," +
                                       base64.b64encode(b"not a video" * 50).decode()}), state)
    assert "init_video: the data is not a video ffmpeg can read" in corrupt
    wrong = refused(client, vid2vid({"init_video": str(clips["mp4"]), "mask_video": str(clips["short"])}), state)
    assert "mask_video: has 5 frames but init_video has 9" in wrong
    # a mask sent inline with the wrong length: refused, and its file not kept
    wrong_inline = refused(client, vid2vid({"init_video": str(clips["mp4"]),
                                            "mask_video": data_url(clips["short"], "video/webm")}), state)
    assert "mask_video: has 5 frames but init_video has 9" in wrong_inline


def test_the_size_limits_apply_to_videos(clips, tmp_path):
    """A video sent inline is refused over the pixel limit (--max-image-pixels, per frame), and a job whose input
    video has more frames than --max-frames is over that limit, before it is queued."""
    from codex_core.serve.inputs import Inputs
    from codex_core.serve.limits import Limits, check_prepared
    from codex_core.errors import UsageError

    problems: list[str] = []
    assert Inputs([clips["root"]], max_pixels=32 * 16 - 1).write_video(
        "init_video", clips["mp4"].read_bytes(), tmp_path, "init_video", problems) is None
    assert problems == ["init_video: the video's frames are 32x16 = 512 pixels; this service takes at most 511 "
                        "(--max-image-pixels)"] and not list(tmp_path.iterdir())

    sys.path.insert(0, str(SLEEPY))
    from codex_sleepy.engine import SleepyEngine, SleepyVid2Vid

    params = SleepyVid2Vid.model_validate({"init_video": str(clips["mp4"])})
    check_prepared(Limits(), SleepyEngine(), "vid2vid", params)
    with pytest.raises(UsageError) as caught:
        check_prepared(Limits(frames=8), SleepyEngine(), "vid2vid", params)
    assert caught.value.message == "init_video: the input video's frame count is 9; this service takes at most 8 (--max-frames)"
