"""`codex serve` over real HTTP on loopback: a real service process, real clients, a real database file."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from codex_core.testing import cli_run, free_port, write_test_image

pytestmark = pytest.mark.slow

CODEX = str(Path(sys.executable).parent / "codex")
SMALL = {"prompt": "a lighthouse", "width": 32, "height": 32, "steps": 2, "seed": 11}
LONG = {"prompt": "a lighthouse", "width": 96, "height": 96, "steps": 150, "seed": 1}  # seconds of denoising


class Service:
    def __init__(self, state_dir: Path, *args: str):
        self.state_dir, self.args, self.proc = state_dir, args, None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> "Service":
        self.log = open(self.state_dir.parent / f"serve-{self.port}.log", "ab")
        self.proc = subprocess.Popen([CODEX, "serve", "--port", str(self.port), "--state-dir", str(self.state_dir),
                                      *self.args], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/v1/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
            assert self.proc.poll() is None, self.output()
        raise AssertionError("the service did not start: " + self.output())

    def output(self) -> str:
        return (self.state_dir.parent / f"serve-{self.port}.log").read_text(errors="replace")

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)

    def client(self, **headers) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, headers=headers)


def wait(client: httpx.Client, job_id: str, states=("done", "failed", "cancelled"), timeout=120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in states:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {job['state']}")


@pytest.fixture(scope="module")
def inputs_root(tmp_path_factory):
    return tmp_path_factory.mktemp("inputs")


@pytest.fixture(scope="module")
def service(tmp_path_factory, inputs_root):
    state = tmp_path_factory.mktemp("serve") / "state"
    running = Service(state, "--input-root", str(inputs_root), "--max-image-pixels", str(256 * 256)).start()
    yield running
    running.stop()


@pytest.fixture
def client(service):
    with service.client() as open_client:
        yield open_client


def submit(client, request, engine="sd15", task="txt2img", **extra) -> httpx.Response:
    return client.post("/v1/jobs", json={"engine": engine, "task": task, "model": "tiny", "request": request, **extra})


def test_the_api_describes_engines_schemas_presets_and_samplers(client):
    assert client.get("/v1/health").json()["status"] == "ok"
    assert "sd15" in {engine["engine"] for engine in client.get("/v1/engines").json()}
    schema = client.get("/v1/engines/sd15/txt2img/schema").json()
    assert schema == json.loads(cli_run(["schema", "sd15", "txt2img"]).stdout)
    assert client.get("/v1/presets/sd15/txt2img").json()["values"]["steps"] == 25
    # an engine with variants: the default variant's values without ?variant=, named; a variant it lacks is a 422
    dev = client.get("/v1/presets/flux/txt2img").json()
    assert (dev["variant"], dev["variants"], dev["values"]["steps"]) == ("dev", ["dev", "schnell"], 28)
    assert client.get("/v1/presets/flux/txt2img?variant=schnell").json()["values"]["steps"] == 4
    for bad in ("pro", "../../etc", "/tmp"):
        refused = client.get("/v1/presets/flux/txt2img", params={"variant": bad})
        assert refused.status_code == 422 and "variant: flux has no variant" in refused.json()["detail"]
    schnell = client.get("/v1/engines/flux/txt2img/schema?variant=schnell").json()
    assert schnell == json.loads(cli_run(["schema", "flux", "txt2img", "--variant", "schnell"]).stdout)
    assert "DPM++ 2M" in {row["sampler"] for row in client.get("/v1/samplers/sd15").json()["samplers"]}
    assert client.get("/docs").status_code == 200 and client.get("/openapi.json").json()["info"]["title"] == "Codex"
    assert client.get("/v1/engines/nope/txt2img/schema").status_code == 422


def test_a_job_runs_and_gives_the_clis_pixels(client, tmp_path):
    response = submit(client, SMALL)
    assert response.status_code == 202, response.text
    job = wait(client, response.json()["id"])
    assert job["state"] == "done", job
    served = client.get(f"/v1/jobs/{job['id']}/files/0000.png")
    assert served.status_code == 200 and served.headers["content-type"] == "image/png"
    (tmp_path / "served.png").write_bytes(served.content)
    local = json.loads(cli_run(["run", "sd15", "txt2img", "--model", "tiny", "--quiet", "--out", str(tmp_path / "cli"),
                                "--json", json.dumps(SMALL)]).stdout)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "served.png")), np.asarray(Image.open(local["files"][0])))
    assert job["result"]["info"]["request"] == local["info"]["request"]
    assert job["result"]["attempt"] == 1
    assert client.get(f"/v1/jobs/{job['id']}/files/nope.png").status_code == 404


def test_an_invalid_request_is_422_with_the_clis_problems_and_nothing_is_queued(client):
    before = len(client.get("/v1/jobs").json())
    response = submit(client, {"prompt": "x", "steps": 0, "cfg": "high"})
    assert response.status_code == 422
    problems = response.json()["problems"]
    assert any(p.startswith("steps: got 0") for p in problems) and any(p.startswith("cfg:") for p in problems)
    assert submit(client, SMALL, task="vid2vid").status_code == 422
    assert client.post("/v1/jobs", json={"engine": "sd15", "task": "txt2img", "bogus": 1}).status_code == 422
    assert len(client.get("/v1/jobs").json()) == before


def test_images_come_inline_and_paths_only_from_the_input_roots(client, service, inputs_root, tmp_path):
    image = write_test_image(tmp_path / "in.png", (32, 32), seed=3)
    encoded = base64.b64encode(Path(image).read_bytes()).decode()
    request = {"prompt": "x", "steps": 2, "strength": 0.5, "seed": 2}
    for value in (encoded, "data:image/png;base64," + encoded):
        job = wait(client, submit(client, {**request, "init_image": value}, task="img2img").json()["id"])
        assert job["state"] == "done", job
    inside = write_test_image(inputs_root / "inside.png", (32, 32), seed=3)
    assert wait(client, submit(client, {**request, "init_image": inside}, task="img2img").json()["id"])["state"] == "done"
    os.symlink(image, inputs_root / "link-out.png")  # a symlink out of the root is outside it
    for path in ("/etc/passwd", str(inputs_root / ".." / Path(image).parent.name / "in.png"),
                 str(inputs_root / "link-out.png"), image):
        response = submit(client, {**request, "init_image": path}, task="img2img")
        assert response.status_code == 422, path
        assert "init_image" in response.json()["detail"] and "outside the folders" in response.json()["detail"]
    before = sorted((service.state_dir / "inputs").iterdir())
    refused = submit(client, {**request, "init_image": encoded, "steps": 0}, task="img2img")
    assert refused.status_code == 422 and sorted((service.state_dir / "inputs").iterdir()) == before  # nothing kept
    big = tmp_path / "big.png"
    Image.new("RGB", (512, 512)).save(big)
    response = submit(client, {**request, "init_image": base64.b64encode(big.read_bytes()).decode()}, task="img2img")
    assert response.status_code == 422 and "at most 65536" in response.json()["detail"]


def test_an_uploaded_image_is_kept_by_its_content_and_a_request_may_name_it(client, tmp_path):
    image = write_test_image(tmp_path / "in.png", (32, 32), seed=4)
    raw = Path(image).read_bytes()
    png = {"content-type": "image/png"}
    first, again = client.post("/v1/inputs", content=raw, headers=png), client.post("/v1/inputs", content=raw, headers=png)
    assert first.status_code == again.status_code == 201
    assert first.json()["path"] == again.json()["path"]  # the same image twice is one file
    stored = Path(first.json()["path"])
    assert stored.read_bytes() == raw and stored.suffix == ".png"
    request = {"prompt": "x", "init_image": str(stored), "steps": 2, "strength": 0.5, "seed": 2}
    job = wait(client, submit(client, request, task="img2img").json()["id"])
    assert job["state"] == "done", job
    refused = client.post("/v1/inputs", content=b"not an image", headers=png)
    assert refused.status_code == 422 and "not an image" in refused.json()["detail"]
    big = tmp_path / "big.png"
    Image.new("RGB", (300, 300)).save(big)  # the service takes at most 256 x 256 pixels
    assert "--max-image-pixels" in client.post("/v1/inputs", content=big.read_bytes(), headers=png).json()["detail"]


def test_the_models_route_lists_the_models_folders_by_engine(tmp_path, monkeypatch):
    from safetensors.numpy import save_file

    models = tmp_path / "models"
    (models / "loras").mkdir(parents=True)
    lora = models / "loras" / "ink.safetensors"
    block = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k"  # kohya's names, SD 1.x shapes
    save_file({f"{block}.lora_down.weight": np.zeros((4, 768), np.float16),
               f"{block}.lora_up.weight": np.zeros((320, 4), np.float16)}, lora)
    monkeypatch.setenv("CODEX_MODELS_DIR", str(models))  # the service's own models folders
    running = Service(tmp_path / "state").start()
    try:
        with running.client() as client:
            rows = client.get("/v1/models", params={"kind": "loras", "engine": "sd15"}).json()
            assert [(row["kind"], row["path"], row["engines"]) for row in rows] == [("loras", str(lora), ["sd15"])]
            assert client.get("/v1/models", params={"engine": "sd15"}).json() == []  # no checkpoints
            assert client.get("/v1/models", params={"kind": "loras", "engine": "wan_ti2v_5b"}).json() == []
            assert client.get("/v1/models", params={"kind": "weights"}).status_code == 422
            assert client.get("/v1/models", params={"engine": "nope"}).status_code == 422
    finally:
        running.stop()


def test_the_event_stream_delivers_every_step(client):
    job_id = submit(client, {**SMALL, "steps": 6}).json()["id"]
    events = []
    with client.stream("GET", f"/v1/jobs/{job_id}/events") as stream:
        name = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
                if name == "end":
                    break
    steps = [data["step"] for name, data in events if name == "step"]
    assert steps == sorted(steps) and steps[-1] == 6 and len(steps) >= 2
    assert events[-1] == ("end", {"id": job_id, "state": "done"})
    # the run's stage events, in order (the stream may open after the first ones)
    stages = [data["stage"] for name, data in events if name == "stage"]
    order = ["loading", "encoding", "running", "decoding", "exporting"]
    assert stages == sorted(stages, key=order.index) and stages[-2:] == ["decoding", "exporting"]


def test_cancel_a_queued_and_a_running_job(client, service):
    running = submit(client, LONG).json()["id"]
    queued = submit(client, SMALL).json()["id"]
    wait(client, running, states=("running",))
    cancelled = client.delete(f"/v1/jobs/{queued}")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    while (client.get(f"/v1/jobs/{running}").json().get("step") or 0) < 1:
        time.sleep(0.05)
    assert client.delete(f"/v1/jobs/{running}").status_code == 202
    job = wait(client, running)
    assert job["state"] == "cancelled" and "no partial output" in job["error"]
    outputs = service.state_dir / "outputs"
    assert not [p for p in outputs.iterdir() if p.name.endswith(".partial")]
    assert client.delete(f"/v1/jobs/{running}").json() == {"id": running, "deleted": True}
    assert client.get(f"/v1/jobs/{running}").status_code == 404


def test_a_token_guards_every_route_but_health_and_limits_hold(tmp_path):
    service = Service(tmp_path / "state", "--token", "s3cret", "--max-body-bytes", "2000", "--max-queue", "1",
                      "--max-batch-size", "2").start()
    try:
        with service.client() as anonymous, service.client(Authorization="Bearer wrong") as wrong, \
                service.client(Authorization="Bearer s3cret") as right:
            assert anonymous.get("/v1/health").status_code == 200
            # every route the service documents, of every router (/v1 and /sdapi/v1): the token comes first
            paths = right.get("/openapi.json").json()["paths"]
            assert any(path.startswith("/sdapi/v1/") for path in paths)
            for path, operations in paths.items():
                for method in operations:
                    url = path.replace("{", "").replace("}", "")  # any value: the token is checked before it
                    for open_client in (anonymous, wrong):
                        status = open_client.request(method.upper(), url).status_code
                        assert status == (200 if path == "/v1/health" else 401), (method, path, status)
            for open_client, status in ((anonymous, 401), (wrong, 401), (right, 200)):
                assert open_client.get("/v1/engines").status_code == status
                assert open_client.get("/v1/jobs").status_code == status
            too_big = submit(right, {"prompt": "x" * 5000})
            assert too_big.status_code == 413
            assert submit(right, {**SMALL, "batch_size": 3}).status_code == 422
            outside = right.post("/v1/jobs", json={"engine": "sd15", "task": "txt2img", "model": "/etc",
                                                   "request": SMALL})
            assert outside.status_code == 422 and "outside the folders" in outside.json()["detail"]
            assert right.get("/v1/jobs").json() == []
            first = submit(right, LONG).json()["id"]
            wait(right, first, states=("running",))
            second = submit(right, LONG)
            assert second.status_code == 202
            full = submit(right, LONG)
            assert full.status_code == 429 and "the queue is full" in full.json()["detail"]
            for job_id in (first, second.json()["id"]):
                right.delete(f"/v1/jobs/{job_id}")
    finally:
        service.stop()


def test_sigterm_stops_the_service_cleanly_with_exit_0(tmp_path):
    service = Service(tmp_path / "state").start()
    service.proc.send_signal(signal.SIGTERM)
    assert service.proc.wait(30) == 0


def test_one_state_dir_serves_one_service(service):
    result = subprocess.run([CODEX, "serve", "--port", str(free_port()), "--state-dir", str(service.state_dir)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "another codex serve is using it" in result.stderr


def test_a_non_loopback_bind_needs_a_token(tmp_path):
    result = subprocess.run([CODEX, "serve", "--host", "0.0.0.0", "--port", str(free_port()), "--state-dir",
                             str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "needs --token" in result.stderr


def test_a_killed_service_loses_no_accepted_job(tmp_path):
    state = tmp_path / "state"
    service = Service(state).start()
    with service.client() as client:
        first = submit(client, LONG).json()["id"]
        rest = [submit(client, {**SMALL, "seed": seed}).json()["id"] for seed in (1, 2)]
        wait(client, first, states=("running",))
    service.stop(signal.SIGKILL)  # mid-job, no cleanup
    again = Service(state).start()
    try:
        with again.client() as client:
            jobs = {job_id: wait(client, job_id, timeout=300) for job_id in [first, *rest]}
        assert all(job["state"] == "done" for job in jobs.values()), jobs
        assert jobs[first]["attempts"] == 2 and jobs[first]["result"]["attempt"] == 2  # re-run once, and says so
        assert all(jobs[job_id]["attempts"] == 1 for job_id in rest)
        assert "was running when the service stopped: requeued" in again.output()
        assert not [p for p in (state / "outputs").iterdir() if p.name.endswith(".partial")]
    finally:
        again.stop()


# -- the A1111-compatible API, through the real webuiapi client -------------------------------------


@pytest.fixture
def webui(service):
    import webuiapi

    api = webuiapi.WebUIApi(host="127.0.0.1", port=service.port)
    api.set_options({"sd_model_checkpoint": "tiny-sd15"})
    return api


def test_a1111_models_options_samplers_and_schedulers(webui, client):
    titles = [model["title"] for model in webui.get_sd_models()]
    assert "tiny-sd15" in titles and "tiny-sdxl" in titles
    webui.set_options({"sd_model_checkpoint": "tiny-sdxl"})
    assert webui.get_options()["sd_model_checkpoint"] == "tiny-sdxl"
    webui.set_options({"sd_model_checkpoint": "tiny-sd15"})
    assert webui.get_options()["sd_model_checkpoint"] == "tiny-sd15"
    names = [sampler["name"] for sampler in webui.get_samplers()]
    assert {"Euler a", "DPM++ 2M"} <= set(names)
    assert {"name": "karras", "label": "Karras"}.items() <= next(
        row for row in webui.get_schedulers() if row["name"] == "karras").items()
    refused = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "no-such-model"})
    assert refused.status_code == 422 and "no model titled 'no-such-model'" in refused.json()["detail"]


def test_a1111_txt2img_with_a_seed_gives_the_native_jobs_pixels(webui, client, tmp_path):
    result = webui.txt2img(prompt="a fox", seed=5, width=64, height=64, steps=3, cfg_scale=6.0,
                           sampler_name="DPM++ 2M", scheduler="karras")
    assert result.image.size == (64, 64)
    assert result.info["seed"] == 5 and result.info["all_seeds"] == [5]
    assert result.info["infotexts"][0].startswith("a fox\nSteps: 3, Sampler: DPM++ 2M, Schedule type: Karras")
    assert result.info["codex_ignored"] == []  # webuiapi's defaults are all neutral
    native = wait(client, submit(client, {"prompt": "a fox", "seed": 5, "width": 64, "height": 64, "steps": 3,
                                          "cfg": 6.0, "sampler": "DPM++ 2M", "scheduler": "Karras"}).json()["id"])
    expected = Image.open(io.BytesIO(client.get(f"/v1/jobs/{native['id']}/files/0000.png").content))
    assert np.array_equal(np.asarray(result.image.convert("RGB")), np.asarray(expected.convert("RGB")))


def test_a1111_img2img_and_inpaint_with_a_mask(webui, client, tmp_path):
    init = Image.open(write_test_image(tmp_path / "in.png", (64, 64), seed=4))
    mask = Image.open(write_test_image(tmp_path / "mask.png", (64, 64), mode="L"))
    plain = webui.img2img(images=[init], prompt="snow", seed=3, width=64, height=64, steps=4, denoising_strength=0.5)
    assert plain.image.size == (64, 64) and plain.info["codex_task"] == "img2img"
    inpainted = webui.img2img(images=[init], mask_image=mask, prompt="snow", seed=3, width=64, height=64, steps=4,
                              denoising_strength=0.9, sampler_name="Euler a")
    assert inpainted.info["codex_task"] == "inpaint"
    encoded = {name: base64.b64encode((tmp_path / f"{name}.png").read_bytes()).decode() for name in ("in", "mask")}
    # webuiapi's default schedule type, "automatic", is even spacing (Uniform) for Euler a in A1111
    native = wait(client, submit(client, {"prompt": "snow", "seed": 3, "width": 64, "height": 64, "steps": 4,
                                          "strength": 0.9, "sampler": "Euler a", "scheduler": "Uniform", "cfg": 7.0,
                                          "init_image": encoded["in"], "mask_image": encoded["mask"]},
                                 task="inpaint").json()["id"])
    expected = Image.open(io.BytesIO(client.get(f"/v1/jobs/{native['id']}/files/0000.png").content))
    assert np.array_equal(np.asarray(inpainted.image.convert("RGB")), np.asarray(expected.convert("RGB")))


def test_a1111_png_info_reads_our_parameters(webui):
    image = webui.txt2img(prompt="a fox", seed=9, width=32, height=32, steps=2).image
    info = webui.png_info(image)
    assert info.info.startswith("a fox\nSteps: 2")
    assert info.json["parameters"]["Seed"] == "9" and info.json["parameters"]["Prompt"] == "a fox"


def test_a1111_a_value_it_would_have_to_change_is_422_and_unknown_settings_are_listed(webui):
    with pytest.raises(RuntimeError, match="422"):
        webui.txt2img(prompt="x", width=60, height=64, steps=2)  # not a multiple of 8
    result = webui.txt2img(prompt="x", seed=1, width=32, height=32, steps=2, restore_faces=True, tiling=True)
    assert "restore_faces=True" in result.info["codex_ignored"] and "tiling=True" in result.info["codex_ignored"]


# What each A1111 schedule type runs with Euler on sd15 (the kit's table: exact, or the nearest with a warning)
A1111_SCHEDULES_WITH_EULER = {
    "automatic": "Uniform", "uniform": "Uniform", "karras": "Karras", "exponential": "Exponential",
    "polyexponential": "Exponential", "sgm_uniform": "Simple", "kl_optimal": "DDIM", "align_your_steps": "DDIM",
    "simple": "Simple", "normal": "Uniform", "ddim": "DDIM", "beta": "Beta", "turbo": "Simple",
    "align_your_steps_GITS": "DDIM", "align_your_steps_11": "DDIM", "align_your_steps_32": "DDIM"}


def test_a1111_every_schedule_type_runs_and_reports_what_ran(webui, client):
    names = [row["name"] for row in webui.get_schedulers()]
    assert names == list(A1111_SCHEDULES_WITH_EULER)
    for name, expected in A1111_SCHEDULES_WITH_EULER.items():
        result = webui.txt2img(prompt="x", seed=1, width=32, height=32, steps=2, sampler_name="Euler", scheduler=name)
        info = result.info
        assert (info["sampler_in"], info["scheduler_in"]) == ("Euler", name)
        assert info["scheduler_effective"]["schedule"] == expected and info["sampler_effective"] == "Euler", name
        assert (info["sampler_warning"] is not None) == name.startswith(("kl_", "align_")), info["sampler_warning"]
        assert f"Sampler: Euler, Schedule type: {expected}," in info["infotexts"][0]
        job = client.get(f"/v1/jobs/{info['codex_jobs'][0]}").json()["result"]["info"]  # the job's own record
        assert job["scheduler_effective"] == info["scheduler_effective"] and job["sampler_fallback"] == "nearest"


def test_a1111_every_sampler_runs_on_sd15_and_flux_and_reports_what_ran(webui, client):
    for model, engine in (("tiny-sd15", "sd15"), ("tiny-flux", "flux")):
        webui.set_options({"sd_model_checkpoint": model})
        listed = webui.get_samplers()
        assert listed[0]["name"] == "DPM++ 2M" and {"name": "Euler a", "aliases": ["k_euler_a", "k_euler_ancestral"],
                                                  "options": {}} in listed
        promised = {row["name"]: row for row in client.get(f"/v1/samplers/{engine}").json()["names"]
                    if row["kind"] == "sampler"}
        assert [row["name"] for row in listed] == list(promised)
        for name, row in promised.items():
            info = webui.txt2img(prompt="x", seed=1, width=32, height=32, steps=2, sampler_name=name).info
            assert info["sampler_in"] == name and info["sampler_effective"] == row["runs"], (engine, name)
            if row["exact"]:
                assert info["sampler_warning"] is None or "scheduler" in info["sampler_warning"], info
            else:
                assert f"sampler {name!r}" in info["sampler_warning"], info
    # the defaults of the clients that fail on a flow model elsewhere: webuiapi's, and the chat front ends'
    for sampler, scheduler, runs in (("Euler a", "automatic", "Euler"), ("DDIM", "normal", "Euler"),
                                     ("Euler a", "Karras", "Euler"), ("DPM++ 2M", "karras", "UniPC")):
        info = webui.txt2img(prompt="x", seed=1, width=32, height=32, steps=2, sampler_name=sampler,
                             scheduler=scheduler).info
        assert info["sampler_effective"] == runs and info["scheduler_effective"]["schedule"] == "Automatic"
        job = client.get(f"/v1/jobs/{info['codex_jobs'][0]}").json()["result"]["info"]
        assert (job["sampler_in"], job["sampler_effective"], job["sampler_fallback"]) == (sampler, runs, "nearest")
        assert job["sampler_warning"] and job["sampler_warning"] in info["sampler_warning"]


def test_a1111_progress_and_interrupt(webui, service):
    import threading

    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(
        result=webui.txt2img(prompt="x", seed=1, width=96, height=96, steps=150)))
    thread.start()
    deadline = time.monotonic() + 60
    progress = webui.get_progress()
    while progress["state"]["sampling_step"] < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
        progress = webui.get_progress()
    assert progress["state"]["sampling_steps"] == 150 and 0 < progress["progress"] < 1
    assert progress["state"]["job_count"] >= 1
    webui.interrupt()
    thread.join(60)
    # A1111's answer: the image it stopped, decoded at the step it reached (tests/test_serve_previews.py: its pixels)
    assert len(outcome["result"].images) == 1 and outcome["result"].info["interrupted"] is True
    assert webui.get_progress()["state"]["job_count"] == 0


def test_codex_run_server_prints_what_a_local_run_prints(service, tmp_path):
    init = write_test_image(tmp_path / "init.png", (32, 32), seed=6)
    request = json.dumps({"prompt": "a fox", "init_image": init, "strength": 0.5, "steps": 2, "seed": 4})
    remote = cli_run(["run", "sd15", "img2img", "--model", "tiny", "--server", service.url, "--quiet",
                      "--out", str(tmp_path / "remote"), "--json", request])
    assert remote.exit_code == 0, remote.stderr
    local = cli_run(["run", "sd15", "img2img", "--model", "tiny", "--quiet", "--out", str(tmp_path / "local"),
                     "--json", request])
    remote_data, local_data = json.loads(remote.stdout), json.loads(local.stdout)
    assert np.array_equal(np.asarray(Image.open(remote_data["files"][0])), np.asarray(Image.open(local_data["files"][0])))
    assert remote_data["run_dir"].startswith(str(tmp_path / "remote"))
    assert remote_data["info"]["request"]["seed"] == local_data["info"]["request"]["seed"] == 4
    bad = cli_run(["run", "sd15", "txt2img", "--server", service.url, "--json", '{"prompt": "x", "steps": 0}'])
    assert bad.exit_code == 2 and "steps: got 0" in bad.stderr
    assert cli_run(["run", "sd15", "txt2img", "--server", service.url, "--device", "cuda",
                    "--json", '{"prompt": "x"}']).exit_code == 2
    gone = cli_run(["run", "sd15", "txt2img", "--server", f"http://127.0.0.1:{free_port()}", "--json", '{"prompt": "x"}'])
    assert gone.exit_code == 2 and "cannot reach" in gone.stderr


def rss_mb(pid: int) -> float:
    """The resident memory of the service and its worker processes (where the models are)."""
    import psutil

    service = psutil.Process(pid)
    return sum(process.memory_info().rss for process in [service, *service.children(recursive=True)]) / 2**20


def test_a_bounded_load_every_job_correct_and_memory_flat_after_warm_up(tmp_path):
    """8 concurrent clients, 48 jobs over 4 seeds: each output equals its seed's reference, nothing is lost,
    and the resident memory of the service and its worker process grows by less than 64 MiB after a warm-up
    (bench/serve.py: 200 jobs)."""
    from concurrent.futures import ThreadPoolExecutor

    service = Service(tmp_path / "state").start()
    try:
        with service.client() as client:
            references = {}
            for seed in range(4):  # warm-up, and the reference image of each seed
                job = wait(client, submit(client, {**SMALL, "seed": seed}).json()["id"])
                references[seed] = client.get(f"/v1/jobs/{job['id']}/files/0000.png").content
            warm = rss_mb(service.proc.pid)

            def one(index: int) -> bool:
                with service.client() as own:
                    seed = index % 4
                    job = wait(own, submit(own, {**SMALL, "seed": seed}).json()["id"], timeout=300)
                    png = own.get(f"/v1/jobs/{job['id']}/files/0000.png").content
                    same = np.array_equal(np.asarray(Image.open(io.BytesIO(png))),
                                          np.asarray(Image.open(io.BytesIO(references[seed]))))
                    return job["state"] == "done" and same

            with ThreadPoolExecutor(8) as pool:
                outcomes = list(pool.map(one, range(48)))
            assert all(outcomes) and len(outcomes) == 48
            assert len([job for job in client.get("/v1/jobs?limit=1000").json() if job["state"] == "done"]) == 52
            assert rss_mb(service.proc.pid) - warm < 64
    finally:
        service.stop()


def test_a_worker_takes_jobs_for_the_model_it_holds_first_but_none_starves(tmp_path):
    from codex_core.serve.store import JobStore

    store = JobStore(tmp_path / "jobs.sqlite3")
    a, b, c = (store.submit({"engine": "e", "task": "t", "request": {}, "model": model})["id"] for model in "xyx")
    assert store.claim(prefer=("e", "x"))["id"] == a
    assert store.claim(prefer=("e", "x"))["id"] == c  # b waits: its model is not loaded here
    assert store.claim(prefer=("e", "x"))["id"] == b  # nothing else left
    d, e = (store.submit({"engine": "e", "task": "t", "request": {}, "model": model})["id"] for model in "yx")
    assert store.claim(prefer=("e", "x"), patience=0)["id"] == d  # the oldest has waited long enough
    assert store.claim()["id"] == e


def test_devices_are_one_worker_each_and_given_once(client, tmp_path):
    assert [(w["device"], w["running"]) for w in client.get("/v1/health").json()["workers"]] == [("auto", 0)]
    result = subprocess.run([CODEX, "serve", "--devices", "cpu,cpu", "--port", str(free_port()), "--state-dir",
                             str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "give each device once" in result.stderr
    result = subprocess.run([CODEX, "serve", "--devices", "tpu", "--port", str(free_port()), "--state-dir",
                             str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "unknown device 'tpu'" in result.stderr


def test_cost_limits_refuse_a_job_before_it_is_queued_naming_the_flag(client, inputs_root, service):
    """Each limit is a 422 naming the field, the limit and the flag that raises it, before anything is queued;
    the A1111 layer submits through the same check."""
    queued = len(client.get("/v1/jobs").json())

    def refused(request, flag, **extra):
        started = time.monotonic()
        response = submit(client, request, **extra)
        assert response.status_code == 422 and flag in response.json()["detail"], response.text[:500]
        return time.monotonic() - started

    refused({**SMALL, "width": 8192, "height": 8192}, "(--max-output-pixels)")
    refused({**SMALL, "steps": 1000}, "(--max-steps)")
    refused({**SMALL, "prompt": "a fox " + "BREAK " * 2000}, "(--max-prompt-tokens)")
    assert refused({**SMALL, "prompt": "x" * 1_000_000}, "(--max-prompt-bytes)") < 2  # before validating 1 MB
    big = inputs_root / "big.png"
    Image.new("RGB", (304, 304)).save(big)  # over this service's --max-image-pixels 65536, by its header
    refused({"prompt": "x", "init_image": str(big), "steps": 2, "seed": 1}, "(--max-image-pixels)", task="img2img")
    a1111 = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "tiny-sd15"})
    assert a1111.status_code == 200
    wide = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "width": 8192, "height": 8192, "steps": 2})
    assert wide.status_code == 422 and "--max-output-pixels" in wide.text
    assert len(client.get("/v1/jobs").json()) == queued  # nothing was queued
