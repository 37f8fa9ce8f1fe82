"""The `edit` task through `codex serve`'s /v1 API over real HTTP: reference images sent inline (bare base64, as
A1111 clients send them, and data URLs), each written to the job's inputs folder in the order given.

flux (FLUX.1 Kontext, one reference image) runs on its tiny model; several reference images go to the sleepy test
engine (tests/sleepy_engine, up to three), whose edit puts them side by side: its output shows which images
arrived, in which order, with what pixels.
"""

from __future__ import annotations

import base64
import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from codex_core.testing import write_test_image

pytestmark = pytest.mark.slow

CODEX = str(Path(sys.executable).parent / "codex")
SLEEPY = Path(__file__).parent / "sleepy_engine"
FLUX_EDIT = {"prompt": "make it winter", "max_area": 2304, "steps": 2, "seed": 3, "max_sequence_length": 8}


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """`codex serve` on a free loopback port, with the sleepy engine importable (pip-installed into a folder)."""
    folder = tmp_path_factory.mktemp("serve_edit")
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
        proc = subprocess.Popen([CODEX, "serve", "--port", str(port), "--state-dir", str(folder / "state")],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
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


def inline(path: str, data_url: bool = False) -> str:
    encoded = base64.b64encode(Path(path).read_bytes()).decode()
    return "data:image/png;base64," + encoded if data_url else encoded


def finished(client: httpx.Client, response: httpx.Response, timeout: float = 180) -> dict:
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    deadline = time.monotonic() + timeout
    while (job := client.get(f"/v1/jobs/{job_id}").json())["state"] not in ("done", "failed", "cancelled"):
        assert time.monotonic() < deadline, f"job {job_id} still {job['state']}"
        time.sleep(0.1)
    assert job["state"] == "done", job
    return job


def output(client: httpx.Client, job: dict) -> Image.Image:
    name = Path(job["result"]["files"][0]).name
    return Image.open(io.BytesIO(client.get(f"/v1/jobs/{job['id']}/files/{name}").content)).convert("RGB")


def refused(client: httpx.Client, spec: dict, state: Path) -> str:
    """The detail of a 422 for ``spec``; nothing was queued and no image was kept."""
    jobs_before, kept = len(client.get("/v1/jobs").json()), sorted((state / "inputs").rglob("*"))
    response = client.post("/v1/jobs", json=spec)
    assert response.status_code == 422, response.text
    assert len(client.get("/v1/jobs").json()) == jobs_before and sorted((state / "inputs").rglob("*")) == kept
    return response.json()["detail"]


def test_flux_edit_takes_its_image_inline_and_gives_the_size_info_says(service, tmp_path):
    client, state = service
    wide = write_test_image(tmp_path / "wide.png", (48, 32), seed=4)
    spec = {"engine": "flux", "task": "edit", "model": "tiny", "request": {**FLUX_EDIT, "images": [inline(wide)]}}
    job = finished(client, client.post("/v1/jobs", json=spec))
    info = job["result"]["info"]
    written = Path(info["request"]["images"][0])  # the inline image, written to the job's inputs folder
    assert written.is_relative_to(state) and written.read_bytes() == Path(wide).read_bytes()
    edit_size = info["notes"]["edit_size"]
    assert (edit_size["width"], edit_size["height"]) == (48, 32)  # 48x32's aspect ratio at 48 * 48 pixels
    # (that the pixels are the pipeline's own for this image: the flux conformance suite, on the same tiny model)
    assert output(client, job).size == (edit_size["width"], edit_size["height"])

    two = {**spec, "request": {**FLUX_EDIT, "images": [inline(wide), inline(wide, data_url=True)]}}
    assert "images: got 2 images; this model takes at most 1 reference image" in refused(client, two, state)


def test_several_inline_reference_images_reach_the_engine_in_the_order_sent(service, tmp_path):
    client, state = service
    red = tmp_path / "red.png"
    Image.new("RGB", (16, 16), (220, 20, 20)).save(red)
    pattern = write_test_image(tmp_path / "pattern.png", (24, 16), seed=7)
    spec = {"engine": "sleepy", "task": "edit", "model": "tiny",
            "request": {"prompt": "x", "images": [inline(pattern), inline(str(red), data_url=True)]}}
    job = finished(client, client.post("/v1/jobs", json=spec))
    written = [Path(path) for path in job["result"]["info"]["request"]["images"]]
    assert [path.read_bytes() for path in written] == [Path(pattern).read_bytes(), red.read_bytes()]
    assert [path.stem for path in written] == ["images_0", "images_1"] and written[0].is_relative_to(state)
    made = np.asarray(output(client, job))  # the sleepy edit: the images side by side, left to right
    with Image.open(pattern) as first, Image.open(red) as second:
        assert made.shape == (16, 40, 3)
        assert np.array_equal(made[:, :24], np.asarray(first.convert("RGB")))
        assert np.array_equal(made[:, 24:], np.asarray(second.convert("RGB")))

    four = {**spec, "request": {"prompt": "x", "images": [inline(str(red))] * 4}}
    assert "images: got 4 images; this model takes at most 3 reference images" in refused(client, four, state)
