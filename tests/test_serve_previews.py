"""Live previews and stopping early, through a real `codex serve` on loopback with the tiny sd15 model.

A running job's latents come back as small PNGs in its /v1 event stream and in A1111's progress
(``current_image``); an interrupt (native or A1111's) stops the job at its next step, keeps the latents
of that step decoded, and ends it ``done``: the pixels equal a direct diffusers call interrupted there.
"""

from __future__ import annotations

import base64
import io
import json
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow

CODEX = str(Path(sys.executable).parent / "codex")
LONG = {"prompt": "a lighthouse", "width": 96, "height": 96, "steps": 150, "seed": 1}  # seconds of denoising


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(state: Path, *args: str) -> dict:
    """`codex serve` on ``state``, at its defaults (previews every 2 steps) but for ``args``."""
    port = free_port()
    log = open(state.parent / "serve.log", "ab")
    proc = subprocess.Popen([CODEX, "serve", "--port", str(port), "--state-dir", str(state), *args], stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/v1/health", timeout=1).status_code == 200:
                return {"url": url, "port": port, "proc": proc}
        except httpx.HTTPError:
            time.sleep(0.2)
        assert proc.poll() is None, (state.parent / "serve.log").read_text()
    raise AssertionError("the service did not start: " + (state.parent / "serve.log").read_text())


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    running = start(tmp_path_factory.mktemp("serve-previews") / "state")
    yield running
    running["proc"].terminate()
    running["proc"].wait(30)


@pytest.fixture
def client(service):
    with httpx.Client(base_url=service["url"], timeout=60) as open_client:
        yield open_client


def png_of(encoded: str) -> Image.Image:
    raw = base64.b64decode(encoded)
    assert raw.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(raw))
    image.load()
    return image


def wait_for(condition, timeout: float = 120, what: str = "the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} did not hold within {timeout} s")


def ended(client: httpx.Client, job_id: str) -> dict:
    return wait_for(lambda: (job := client.get(f"/v1/jobs/{job_id}").json())["state"] in ("done", "failed", "cancelled")
                    and job, what=f"job {job_id} ending")


def direct_pixels(info: dict, stop_at: int) -> np.ndarray:
    """The job's request run by diffusers directly, with the scheduler the job ran and diffusers' interrupt at
    ``stop_at``."""
    import diffusers
    import torch

    from codex_core.testing import tiny_model_dir

    request = info["request"]
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(str(tiny_model_dir("sd15")), safety_checker=None,
                                                             requires_safety_checker=False)
    pipe.scheduler = getattr(diffusers, info["scheduler_class"]).from_config(info["scheduler_config"])
    pipe.set_progress_bar_config(disable=True)

    def interrupt(pipeline, index, timestep, kwargs):
        if index + 1 == stop_at:
            pipeline._interrupt = True
        return kwargs

    image = pipe(request["prompt"], width=request["width"], height=request["height"],
                 num_inference_steps=request["steps"], guidance_scale=request["cfg"],
                 generator=torch.Generator("cpu").manual_seed(request["seed"]), callback_on_step_end=interrupt).images[0]
    return np.asarray(image)


def test_a_running_job_streams_previews_and_stops_early_when_interrupted(client):
    job_id = client.post("/v1/jobs", json={"engine": "sd15", "task": "txt2img", "model": "tiny",
                                           "request": LONG}).json()["id"]
    queued = client.post("/v1/jobs", json={"engine": "sd15", "task": "txt2img", "model": "tiny", "request": LONG})
    previews, progress_images, ends = [], [], []
    with client.stream("GET", f"/v1/jobs/{job_id}/events") as stream:
        name = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: ") and name == "preview":
                previews.append(json.loads(line[6:]))
                if len(previews) == 2:  # A1111's progress shows the latest, as a PNG; then stop the job early
                    progress = client.get("/sdapi/v1/progress").json()
                    progress_images.append(progress["current_image"])
                    assert client.get("/sdapi/v1/progress?skip_current_image=true").json()["current_image"] is None
                    refused = client.post(f"/v1/jobs/{queued.json()['id']}/interrupt")
                    assert refused.status_code == 409 and "DELETE cancels it" in refused.json()["detail"]
                    asked = client.post(f"/v1/jobs/{job_id}/interrupt")
                    assert asked.status_code == 202 and asked.json()["interrupt_requested"] is True
            elif line.startswith("data: ") and name == "end":
                ends.append(json.loads(line[6:]))
                break
    assert ends == [{"id": job_id, "state": "done"}]
    for preview in previews:  # latent-sized PNGs (96 / 8), at every second step
        image = png_of(preview["png"])
        assert image.size == (preview["width"], preview["height"]) == (12, 12)
        assert preview["step"] % 2 == 0 and preview["steps"] == 150 and preview["id"] == job_id
    assert png_of(progress_images[0]).size == (12, 12)
    job = ended(client, job_id)
    info = job["result"]["info"]
    stopped = info["interrupted_at_step"]
    assert job["state"] == "done" and info["steps_planned"] == 150 and previews[-1]["step"] <= stopped < 150
    assert info["steps_done"] == stopped
    served = Image.open(io.BytesIO(client.get(f"/v1/jobs/{job_id}/files/0000.png").content))
    assert np.array_equal(np.asarray(served.convert("RGB")), direct_pixels(info, stopped))
    assert client.post(f"/v1/jobs/{job_id}/interrupt").status_code == 409  # done: nothing to stop
    assert client.post("/v1/jobs/no-such-job/interrupt").status_code == 404
    assert client.delete(f"/v1/jobs/{queued.json()['id']}").status_code in (200, 202)
    ended(client, queued.json()["id"])


def test_a1111_interrupt_returns_the_images_so_far_and_the_one_it_stopped(service, client):
    import webuiapi

    api = webuiapi.WebUIApi(host="127.0.0.1", port=service["port"])
    api.set_options({"sd_model_checkpoint": "tiny-sd15"})
    outcome: dict = {}
    call = threading.Thread(target=lambda: outcome.update(result=api.txt2img(
        prompt="a lighthouse", seed=1, width=96, height=96, steps=150, n_iter=3)))
    call.start()
    progress = wait_for(lambda: (p := api.get_progress())["current_image"] and p["state"]["sampling_step"] >= 2 and p,
                        what="a preview in A1111's progress")
    assert png_of(progress["current_image"]).size == (12, 12) and progress["state"]["interrupted"] is False
    api.interrupt()
    call.join(120)
    result = outcome["result"]
    assert result.info["interrupted"] is True and len(result.images) == 1  # the later batches never ran
    first, *later = [client.get(f"/v1/jobs/{job_id}").json() for job_id in result.info["codex_jobs"]]
    assert [job["state"] for job in later] == ["cancelled", "cancelled"]
    stopped = first["result"]["info"]["interrupted_at_step"]
    assert 2 <= stopped < 150 and result.info["all_seeds"] == [1]
    assert np.array_equal(np.asarray(result.images[0].convert("RGB")), direct_pixels(first["result"]["info"], stopped))


def test_a1111_skip_stops_the_current_batch_and_the_call_goes_on(service, client):
    import webuiapi

    api = webuiapi.WebUIApi(host="127.0.0.1", port=service["port"])
    api.set_options({"sd_model_checkpoint": "tiny-sd15"})
    outcome: dict = {}
    call = threading.Thread(target=lambda: outcome.update(result=api.txt2img(
        prompt="a lighthouse", seed=5, width=96, height=96, steps=150, n_iter=2)))
    call.start()
    skipped = set()
    for _ in range(2):  # skip each batch once it is under way
        job = wait_for(lambda: (p := api.get_progress())["state"]["sampling_step"] >= 1
                       and p["state"]["job"] not in skipped and p["state"]["job"], what="the next batch running")
        skipped.add(job)
        assert client.post("/sdapi/v1/skip").status_code == 200
    call.join(120)
    result = outcome["result"]
    assert len(result.images) == 2 and result.info["all_seeds"] == [5, 6] and result.info["interrupted"] is True
    for job_id in result.info["codex_jobs"]:
        info = client.get(f"/v1/jobs/{job_id}").json()["result"]["info"]
        assert info["interrupted_at_step"] < info["steps_planned"] == 150


def test_an_interrupt_recorded_before_a_crash_holds_for_the_next_attempt(tmp_path):
    """The request is on disk like a cancel: a job whose service died after the interrupt was recorded (and before
    its run honoured it) is run again at the restart, and stops at its first step, kept."""
    state = tmp_path / "state"
    first = start(state)
    try:
        with httpx.Client(base_url=first["url"], timeout=60) as client:
            job_id = client.post("/v1/jobs", json={"engine": "sd15", "task": "txt2img", "model": "tiny",
                                                   "request": LONG}).json()["id"]
            wait_for(lambda: (client.get(f"/v1/jobs/{job_id}").json().get("step") or 0) >= 1, what="a first step")
    finally:
        first["proc"].send_signal(signal.SIGKILL)
        first["proc"].wait(30)
    with sqlite3.connect(state / "jobs.sqlite3") as db:  # what POST .../interrupt writes before it answers
        assert db.execute("UPDATE jobs SET interrupt_requested = 1 WHERE id = ? AND state = 'running'",
                          (job_id,)).rowcount == 1
    second = start(state)
    try:
        with httpx.Client(base_url=second["url"], timeout=60) as client:
            job = ended(client, job_id)
    finally:
        second["proc"].terminate()
        second["proc"].wait(30)
    info = job["result"]["info"]
    assert (job["state"], job["attempts"], info["interrupted_at_step"], info["steps_planned"]) == ("done", 2, 1, 150)


def test_preview_every_0_sends_no_previews(tmp_path):
    running = start(tmp_path / "state", "--preview-every", "0")
    try:
        with httpx.Client(base_url=running["url"], timeout=60) as client:
            job_id = client.post("/v1/jobs", json={"engine": "sd15", "task": "txt2img", "model": "tiny", "request": {
                **LONG, "steps": 12}}).json()["id"]
            names, images = [], []
            with client.stream("GET", f"/v1/jobs/{job_id}/events") as stream:
                for line in stream.iter_lines():
                    if line.startswith("event: "):
                        names.append(line[7:])
                        if names[-1] == "step":
                            images.append(client.get("/sdapi/v1/progress").json()["current_image"])
                        if names[-1] == "end":
                            break
    finally:
        running["proc"].terminate()
        running["proc"].wait(30)
    assert names.count("step") >= 6 and "preview" not in names and set(images) == {None}
