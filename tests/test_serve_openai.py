"""OpenAI's images and videos API on `codex serve`, driven by the official `openai` client, unchanged (only its
base_url points at the service): the images are the native /v1 job's pixels for the same request, the
edits are a model's edit task, else Codex's img2img, and inpaint, the video is the job's MP4, and errors are OpenAI-shaped."""

from __future__ import annotations

import base64
import io
import json
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
from PIL import Image

from codex_core.testing import free_port, write_test_image

pytestmark = pytest.mark.slow
CODEX = str(Path(sys.executable).parent / "codex")
PROMPT = "a lighthouse on a cliff"


class Service:
    """`codex serve` in a subprocess, on a free loopback port."""

    def __init__(self, state_dir: Path, *args: str):
        self.state_dir, self.args, self.port = state_dir, args, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = state_dir.parent / f"serve-{self.port}.log"

    def start(self) -> "Service":
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([CODEX, "serve", "--port", str(self.port), "--state-dir", str(self.state_dir),
                                      *self.args], stdout=self.log, stderr=subprocess.STDOUT, env=dict(os.environ))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/v1/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
            assert self.proc.poll() is None, self.log_path.read_text(errors="replace")
        raise AssertionError("the service did not start: " + self.log_path.read_text(errors="replace"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self.log.close()

    def client(self, **headers) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, headers=headers)


def wait(client: httpx.Client, job_id: str, states=("done", "failed", "cancelled"), timeout=120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in states:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {job['state']}")


def submit(client, request, engine="sd15", task="txt2img", **extra) -> httpx.Response:
    return client.post("/v1/jobs", json={"engine": engine, "task": task, "model": "tiny", "request": request, **extra})


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    running = Service(tmp_path_factory.mktemp("openai") / "state", "--openai-default-model", "tiny-sd15",
                      "--openai-default-video-model", "tiny-wan_ti2v_5b", "--max-steps", "50", "--max-batch-size", "4").start()
    yield running
    running.stop()


@pytest.fixture
def client(service):
    with openai.OpenAI(base_url=service.url + "/v1", api_key="any key: this service has no --token",
                       max_retries=0, timeout=120) as open_client:
        yield open_client


@pytest.fixture
def http(service):
    with service.client() as open_client:
        yield open_client


def pixels(raw: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(raw)))


def native_pngs(http: httpx.Client, task: str, request: dict) -> list[bytes]:
    """The PNGs of the /v1 job for ``request`` on tiny sd15."""
    job = wait(http, submit(http, request, task=task).json()["id"])
    assert job["state"] == "done", job
    names = [path.rsplit("/", 1)[1] for path in job["result"]["files"] if path.endswith(".png")]
    return [http.get(f"/v1/jobs/{job['id']}/files/{name}").content for name in names]


def test_images_generate_b64_json_is_the_native_jobs_pixels(client, http):
    answer = client.images.generate(model="tiny-sd15", prompt=PROMPT, n=2, size="64x48", quality="low",
                                    response_format="b64_json", style="vivid")
    codex = answer.model_extra["codex"]
    assert (len(answer.data), answer.size, answer.output_format, answer.quality) == (2, "64x48", "png", "low")
    assert codex["engine"] == "sd15" and codex["steps"] == 12  # low: half the preset's 25 steps
    assert codex["ignored"] == ["style='vivid'"]
    served = [base64.b64decode(image.b64_json) for image in answer.data]
    native = native_pngs(http, "txt2img", {"prompt": PROMPT, "width": 64, "height": 48, "steps": 12, "batch_size": 2,
                                           "seed": codex["seed"]})
    assert len(native) == 2 and all(np.array_equal(pixels(a), pixels(b)) for a, b in zip(served, native))
    assert not np.array_equal(pixels(served[0]), pixels(served[1]))  # two images, not one twice


def test_images_generate_url_with_openais_model_name_runs_the_default_and_says_so(client, http):
    answer = client.images.generate(model="gpt-image-1", prompt=PROMPT, size="64x64", quality="low",
                                    response_format="url")
    codex = answer.model_extra["codex"]
    assert codex["substituted"] == ["model gpt-image-1 -> tiny-sd15 (--openai-default-model)"]
    url = answer.data[0].url
    assert url.startswith(http.base_url.__str__().rstrip("/") + "/v1/jobs/") and answer.data[0].b64_json is None
    downloaded = httpx.get(url)
    assert downloaded.status_code == 200 and downloaded.headers["content-type"] == "image/png"
    native = native_pngs(http, "txt2img", {"prompt": PROMPT, "width": 64, "height": 64, "steps": 12,
                                           "seed": codex["seed"]})
    assert np.array_equal(pixels(downloaded.content), pixels(native[0]))
    # no model at all: the default too, and b64_json (OpenAI's default for its GPT image models)
    default = client.images.generate(prompt=PROMPT, size="64x64", quality="low")
    assert default.data[0].b64_json and default.model_extra["codex"]["model"] == "tiny-sd15"


def test_images_edit_is_img2img_and_with_a_mask_inpaint(client, http, tmp_path):
    image = write_test_image(tmp_path / "in.png", (64, 64), seed=5)
    mask = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (16, 16, 48, 48))  # transparent: what OpenAI's mask says to edit
    mask.save(tmp_path / "mask.png")
    with open(image, "rb") as picture:
        plain = client.images.edit(model="tiny-sd15", image=picture, prompt=PROMPT, quality="low")
    with open(image, "rb") as picture, open(tmp_path / "mask.png", "rb") as alpha:
        masked = client.images.edit(model="tiny-sd15", image=[picture], mask=alpha, prompt=PROMPT, quality="low")
    assert (plain.model_extra["codex"]["task"], masked.model_extra["codex"]["task"]) == ("img2img", "inpaint")
    assert plain.size == masked.size == "64x64"
    encoded = base64.b64encode(open(image, "rb").read()).decode()
    white = Image.new("L", (64, 64), 0)
    white.paste(255, (16, 16, 48, 48))  # Codex's mask: white is repainted
    out = io.BytesIO()
    white.save(out, format="PNG")
    for answer, task, extra in ((plain, "img2img", {}),
                                (masked, "inpaint", {"mask_image": base64.b64encode(out.getvalue()).decode()})):
        native = native_pngs(http, task, {"prompt": PROMPT, "init_image": encoded, "steps": 12,
                                          "seed": answer.model_extra["codex"]["seed"], **extra})
        assert answer.model_extra["codex"]["steps"] == 12  # low: half the preset's 25
        assert np.array_equal(pixels(base64.b64decode(answer.data[0].b64_json)), pixels(native[0])), task
    with open(image, "rb") as picture, pytest.raises(openai.BadRequestError) as refused:
        client.images.edit(model="tiny-sd15", image=picture, mask=Path(image).read_bytes(), prompt=PROMPT)
    assert refused.value.body["param"] == "mask" and "alpha" in refused.value.body["message"]


def test_images_edit_runs_a_models_edit_task_with_its_images_as_references(client, http, tmp_path):
    """A model with an edit task (flux: FLUX.1 Kontext) edits instead of img2img: the image is its reference, the size
    the output's, the pixels the native edit job's; more images than the model takes is a 400 naming image."""
    image = write_test_image(tmp_path / "wide.png", (48, 32), seed=5)
    with open(image, "rb") as picture:
        answer = client.images.edit(model="tiny-flux", image=picture, prompt=PROMPT, size="32x32", quality="low")
    codex = answer.model_extra["codex"]
    assert (codex["engine"], codex["task"], answer.size) == ("flux", "edit", "32x32")
    encoded = base64.b64encode(Path(image).read_bytes()).decode()
    job = http.get(f"/v1/jobs/{codex['job']}").json()["result"]["info"]
    request = {**job["request"], "images": [encoded]}
    done = wait(http, http.post("/v1/jobs", json={"engine": "flux", "task": "edit", "model": "tiny",
                                                   "request": request}).json()["id"])
    native = http.get(f"/v1/jobs/{done['id']}/files/0000.png").content
    assert np.array_equal(pixels(base64.b64decode(answer.data[0].b64_json)), pixels(native))
    with open(image, "rb") as one, open(image, "rb") as two, pytest.raises(openai.BadRequestError) as refused:
        client.images.edit(model="tiny-flux", image=[one, two], prompt=PROMPT, size="32x32")
    assert refused.value.body["param"] == "image" and "at most 1 reference image" in refused.value.body["message"]


def test_videos_create_poll_and_download(client, http):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the SDK marks the videos API as scheduled to end
        video = client.videos.create(model="tiny-wan_ti2v_5b", prompt=PROMPT, seconds="1", size="64x64")
        assert video.status in ("queued", "in_progress") and video.object == "video" and video.size == "64x64"
        done = client.videos.poll(video.id)
        content = client.videos.download_content(video.id)
    assert (done.status, done.progress, done.seconds, done.model) == ("completed", 100, "1", "tiny-wan_ti2v_5b")
    codex = done.model_extra["codex"]
    assert (codex["engine"], codex["task"], codex["num_frames"], codex["fps"]) == ("wan_ti2v_5b", "txt2vid", 25, 24.0)
    raw = content.read()
    assert raw[4:8] == b"ftyp"  # an MP4
    assert raw == http.get(f"/v1/jobs/{video.id}/files/video.mp4").content  # the job's own file


def test_a_video_from_an_input_reference_is_img2vid_and_a_key_makes_one_video(client, tmp_path):
    image = write_test_image(tmp_path / "first.png", (64, 64), seed=9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        made = [client.videos.create(model="tiny-wan_ti2v_5b", prompt=PROMPT, seconds="0.5", size="64x64",
                                     input_reference=("first.png", Path(image).read_bytes(), "image/png"), extra_headers={"Idempotency-Key": "v1"})
                for _ in range(2)]
        done = client.videos.poll(made[0].id)
    assert made[0].id == made[1].id and done.status == "completed"
    assert (done.model_extra["codex"]["task"], done.model_extra["codex"]["num_frames"]) == ("img2vid", 13)


def test_errors_are_openais_shape_and_the_sdk_raises_them(client, http):
    with pytest.raises(openai.BadRequestError) as bad_size:
        client.images.generate(model="tiny-sd15", prompt=PROMPT, size="big")
    assert bad_size.value.body == {"message": "size: 'big'; WIDTHxHEIGHT (e.g. 1024x1024) or auto",
                                   "type": "invalid_request_error", "param": "size", "code": "invalid_size"}
    with pytest.raises(openai.BadRequestError) as odd_size:  # the engine's own rule, named by OpenAI's parameter
        client.images.generate(model="tiny-sd15", prompt=PROMPT, size="60x64")
    assert odd_size.value.body["param"] == "size" and "multiple of 8" in odd_size.value.message
    with pytest.raises(openai.BadRequestError) as too_many:  # a cost limit, named by OpenAI's parameter
        client.images.generate(model="tiny-sd15", prompt=PROMPT, size="64x64", n=5)
    assert too_many.value.body["param"] == "n" and "--max-batch-size" in too_many.value.message
    with pytest.raises(openai.BadRequestError) as unknown:
        client.images.generate(model="no-such-model", prompt=PROMPT)
    assert unknown.value.body["code"] == "model_not_found" and "tiny-sd15" in unknown.value.message
    with pytest.raises(openai.BadRequestError) as extra:
        client.images.generate(prompt=PROMPT, extra_body={"steps": 3})
    assert extra.value.body["param"] == "steps" and "Unrecognized request argument" in extra.value.message
    with pytest.raises(openai.BadRequestError) as many:
        client.images.generate(prompt=PROMPT, n=11)
    assert many.value.body["param"] == "n"
    with pytest.raises(openai.NotFoundError) as missing, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        client.videos.retrieve("no-such-video")
    assert missing.value.body["type"] == "invalid_request_error"
    assert http.get("/v1/jobs", params={"state": "queued"}).json() == []  # nothing refused was queued


def test_an_idempotency_key_makes_a_retried_generate_wait_for_the_same_job(client):
    first = client.images.generate(prompt=PROMPT, size="64x64", quality="low", extra_headers={"Idempotency-Key": "g1"})
    again = client.images.generate(prompt=PROMPT, size="64x64", quality="low", extra_headers={"Idempotency-Key": "g1"})
    assert first.model_extra["codex"]["job"] == again.model_extra["codex"]["job"]
    assert first.data[0].b64_json == again.data[0].b64_json
    with pytest.raises(openai.ConflictError) as reused:
        client.images.generate(prompt="another", size="64x64", extra_headers={"Idempotency-Key": "g1"})
    assert "'g1'" in reused.value.message and reused.value.response.headers["x-should-retry"] == "false"


def test_the_token_is_the_api_key(tmp_path):
    service = Service(tmp_path / "state", "--token", "s3cret", "--openai-default-model", "tiny-sd15").start()
    try:
        with openai.OpenAI(base_url=service.url + "/v1", api_key="wrong", max_retries=0) as wrong:
            with pytest.raises(openai.AuthenticationError) as refused:
                wrong.images.generate(prompt=PROMPT, size="64x64", quality="low")
        assert refused.value.body["code"] == "invalid_api_key"
        with openai.OpenAI(base_url=service.url + "/v1", api_key="s3cret", max_retries=0) as right:
            assert len(right.images.generate(prompt=PROMPT, size="64x64", quality="low").data) == 1
        assert json.loads(httpx.get(service.url + "/v1/health").text)["status"] == "ok"
    finally:
        service.stop()
