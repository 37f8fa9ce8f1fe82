"""The A1111 API as A1111 clients use it, at their defaults: real `codex serve` processes on loopback, the real
`webuiapi` client (and httpx), tiny random-weight models and model files written offline.

Every test that needs a state of its own (nothing chosen yet, a restart, credentials) starts its own service;
the others share one per module and change nothing a later test reads (they choose a checkpoint per call with
``override_settings``)."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from codex_core.testing import tiny_model_dir, write_test_image

pytestmark = pytest.mark.slow

CODEX = str(Path(sys.executable).parent / "codex")
SMALL = {"prompt": "a lighthouse", "width": 32, "height": 32, "steps": 2, "seed": 11}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Service:
    """`codex serve` on a free loopback port, with its own models folder and no config file; restartable."""

    def __init__(self, state_dir: Path, models: Path, *args: str):
        self.state_dir, self.args = state_dir, args
        self.env = {**os.environ, "CODEX_MODELS_DIR": str(models), "XDG_CONFIG_HOME": str(state_dir.parent / "cfg")}
        self.env.pop("CODEX_CONFIG", None)

    def start(self) -> "Service":
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.state_dir.parent / f"serve-{self.port}.log"
        self.proc = subprocess.Popen([CODEX, "serve", "--port", str(self.port), "--state-dir", str(self.state_dir),
                                      *self.args], stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT,
                                     env=self.env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                health = httpx.get(self.url + "/v1/health", timeout=1).json()
                if all(worker["state"] == "idle" for worker in health["workers"]):
                    return self
            except httpx.HTTPError:
                pass
            assert self.proc.poll() is None, self.output()
            time.sleep(0.2)
        raise AssertionError("the service did not start: " + self.output())

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120, **kwargs)

    def webui(self, **kwargs):
        import webuiapi

        return webuiapi.WebUIApi(host="127.0.0.1", port=self.port, **kwargs)


def write_header_only(path: Path, tensors: dict[str, list[int]], metadata: dict[str, str] | None = None) -> None:
    """A valid .safetensors file of F16 zeros with these tensor shapes (and ``__metadata__``)."""
    header, offset = ({"__metadata__": metadata} if metadata else {}), 0
    for name, shape in tensors.items():
        size = 2 * int(np.prod(shape))
        header[name] = {"dtype": "F16", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * offset)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """A models folder: a checkpoint folder and a single file (sd15's tiny model), a LoRA with metadata, a VAE
    with a brighter decoder, and embeddings of SD 1.x and SDXL width and a pickle one."""
    import torch
    from diffusers import AutoencoderKL
    from safetensors.torch import load_file, save_file

    from codex_diffusers.testing.checkpoint_writers import _vae_to_ldm, write_kohya_sd_lora, write_sd_single_file

    root, tiny = tmp_path_factory.mktemp("models"), tiny_model_dir("sd15")
    shutil.copytree(tiny, root / "checkpoints" / "a-folder")
    write_sd_single_file(tiny, root / "checkpoints" / "b-file.safetensors", xl=False)
    lora = write_kohya_sd_lora(tiny, root / "loras" / "style" / "ink.safetensors")
    save_file(load_file(str(lora)), str(lora), metadata={"ss_output_name": "ink-style",
                                                        "ss_tag_frequency": json.dumps({"ink": {"ink": 3}})})
    vae = AutoencoderKL.from_pretrained(tiny, subfolder="vae")
    with torch.no_grad():
        vae.decoder.conv_out.bias += 0.3
    (root / "vae").mkdir()
    save_file({k: v.contiguous() for k, v in _vae_to_ldm(vae.state_dict(), dict(vae.config)).items()},
              str(root / "vae" / "bright-vae.safetensors"))
    write_header_only(root / "embeddings" / "bad-hands.safetensors", {"emb_params": [2, 768]})
    write_header_only(root / "embeddings" / "xl-style.safetensors", {"clip_l": [3, 768], "clip_g": [3, 1280]})
    (root / "embeddings" / "old.pt").write_bytes(b"not opened")
    tiny_sd15_controlnet(root / "controlnet" / "cn-tiny")
    return root


def tiny_sd15_controlnet(folder: Path) -> Path:
    """A ControlNet of the tiny sd15 UNet with its zero-initialised output convolutions filled with small random
    values (a fresh ControlNet adds exactly nothing), saved as a diffusers folder."""
    import diffusers
    import torch

    unet = diffusers.UNet2DConditionModel.from_pretrained(tiny_model_dir("sd15"), subfolder="unet")
    torch.manual_seed(0)
    controlnet = diffusers.ControlNetModel.from_unet(unet)
    with torch.no_grad():
        for name, parameter in controlnet.named_parameters():
            if name.startswith(("controlnet_down_blocks", "controlnet_mid_block", "controlnet_cond_embedding.conv_out")):
                parameter.normal_(0, 0.2)
    controlnet.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    """A service with only the tiny models (an empty models folder)."""
    root = tmp_path_factory.mktemp("bare")
    (root / "models").mkdir()
    running = Service(root / "state", root / "models").start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def stocked(tmp_path_factory, models):
    running = Service(tmp_path_factory.mktemp("stocked") / "state", models).start()
    yield running
    running.stop()


def png(raw_b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(raw_b64)))


def pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def same_image_of_another_batch(batched: np.ndarray, single: np.ndarray) -> bool:
    """Image i of a batch against the one-image run of its seed: the same latents and noise (a generator per image),
    but a batch of 2 goes through other CPU kernels than a batch of 1, whose float rounding can move a pixel by one
    level (measured: 1 pixel of 3072 for seed 13 at 32x32, the same from `codex run`). Another seed moves them all."""
    difference = np.abs(batched.astype(int) - single.astype(int))
    return batched.shape == single.shape and difference.max() <= 1 and (difference > 0).mean() < 0.01


def ran(client: httpx.Client, info: dict, **changes) -> dict:
    """The request an A1111 call's (first) job ran, as its info records it (the sampler as it ran), with ``changes``."""
    job = client.get(f"/v1/jobs/{info['codex_jobs'][0]}").json()["result"]["info"]
    return {**(job.get("first_run") or job)["request"], **changes}


def native(client: httpx.Client, request: dict, task: str = "txt2img", engine: str = "sd15") -> list[np.ndarray]:
    """The images of the same request as a /v1 job."""
    job = client.post("/v1/jobs", json={"engine": engine, "task": task, "model": "tiny", "request": request}).json()
    deadline = time.monotonic() + 120
    while job["state"] not in ("done", "failed", "cancelled"):
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
        job = client.get(f"/v1/jobs/{job['id']}").json()
    assert job["state"] == "done", job
    return [pixels(Image.open(io.BytesIO(client.get(f"/v1/jobs/{job['id']}/files/{Path(path).name}").content)))
            for path in job["result"]["files"] if path.endswith(".png")]


# -- the default flow of a client that never chooses a model ------------------------------------------------------


def test_webuiapi_at_its_defaults_without_choosing_a_model(tmp_path):
    """The client's defaults as they are (Euler a, scheduler automatic, 512x512, 20 steps, a random seed): nothing
    is chosen first, so the current checkpoint is the first found (only tiny models: an engine that takes A1111's
    samplers), reported from the first call."""
    (tmp_path / "models").mkdir()
    service = Service(tmp_path / "state", tmp_path / "models").start()
    try:
        api = service.webui()
        assert api.get_options()["sd_model_checkpoint"] == "tiny-sd15"  # the first call already has one
        assert "Euler a" in api.util_get_sampler_names() and "automatic" in api.util_get_scheduler_names()
        result = api.txt2img(prompt="a lighthouse on a cliff")
        assert result.image.size == (512, 512) and len(result.images) == 1
        info = result.info
        assert info["sampler_name"] == "Euler a" and info["steps"] == 20 and info["all_seeds"] == [info["seed"]]
        assert info["sd_model_name"] == "tiny-sd15" and info["codex_ignored"] == [] and info["codex_substituted"] == []
        assert f"Seed: {info['seed']}," in info["infotexts"][0]
        again = api.img2img(images=[result.image.resize((64, 64))], prompt="the same, at night", seed=3)
        assert again.image.size == (512, 512) and again.info["codex_task"] == "img2img"
        assert again.parameters["init_images"] is None  # as A1111: the images sent are not sent back
        assert api.get_loras() == [] and [row["name"] for row in api.get_upscalers()] == ["None", "Lanczos", "Nearest"]
        read = api.png_info(result.image)
        assert read.json["parameters"]["Seed"] == str(info["seed"]) and read.info.startswith("a lighthouse on a cliff")
        # a flow model at the same defaults: its nearest sampler runs (Euler a is not a flow sampler), and says so
        api.util_set_model("tiny-flux")
        flux = api.txt2img(prompt="a lighthouse on a cliff")
        assert flux.image.size == (512, 512) and flux.info["codex_engine"] == "flux"
        assert (flux.info["sampler_in"], flux.info["sampler_effective"]) == ("Euler a", "Euler")
        assert "Euler a" in flux.info["sampler_warning"] and flux.info["steps"] == 20
    finally:
        service.stop()


# -- every endpoint, in A1111's shape --------------------------------------------------------------------------


def test_every_a1111_endpoint_answers_in_a1111_shape(stocked, models):
    api = stocked.webui()
    with stocked.client() as client:
        sd_models = api.get_sd_models()
        assert [row["title"] for row in sd_models][:2] == ["a-folder", f"b-file.safetensors [{sd_models[1]['hash']}]"]
        assert all(set(row) == {"title", "model_name", "hash", "sha256", "filename", "config"} for row in sd_models)
        import hashlib

        file_sha = hashlib.sha256((models / "checkpoints" / "b-file.safetensors").read_bytes()).hexdigest()
        assert sd_models[1]["sha256"] == file_sha and sd_models[1]["hash"] == file_sha[:10]
        options = api.get_options()  # files before tiny models: the first checkpoint found
        assert options["sd_model_checkpoint"] == "a-folder" and options["sd_vae"] == "Automatic"
        assert options["CLIP_stop_at_last_layers"] == 1
        [lora] = api.get_loras()
        assert (lora["name"], lora["alias"], lora["path"]) == ("style/ink", "style/ink",
                                                                str(models / "loras" / "style" / "ink.safetensors"))
        assert lora["metadata"] == {"ss_output_name": "ink-style", "ss_tag_frequency": {"ink": {"ink": 3}}}
        vae_path = str(models / "vae" / "bright-vae.safetensors")
        assert api.get_sd_vae() == [{"model_name": "bright-vae.safetensors", "filename": vae_path}]
        assert client.get("/sdapi/v1/sd-modules").json() == [{"model_name": "bright-vae.safetensors",
                                                               "filename": vae_path}]
        embeddings = api.get_embeddings()
        assert set(embeddings) == {"loaded", "skipped"}
        assert embeddings["loaded"] == {"bad-hands": {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None,
                                                      "shape": 768, "vectors": 2}}
        assert set(embeddings["skipped"]) == {"xl-style", "old"} and embeddings["skipped"]["xl-style"]["shape"] == 2048
        assert [row["name"] for row in api.get_upscalers()] == ["None", "Lanczos", "Nearest"]
        assert all(set(row) == {"name", "model_name", "model_path", "model_url", "scale"} for row in api.get_upscalers())
        assert [row["name"] for row in api.get_latent_upscale_modes()][0] == "Latent"
        for empty in ("hypernetworks", "face-restorers", "realesrgan-models", "prompt-styles"):
            assert client.get(f"/sdapi/v1/{empty}").json() == [], empty
        memory = api.get_memory()
        assert set(memory) >= {"ram", "cuda"} and memory["ram"]["used"] > 0 and memory["ram"]["total"] > 0
        flags = api.get_cmd_flags()
        assert flags["api"] is True and flags["codex_state_dir"] == str(stocked.state_dir.resolve())
        for refresh in ("refresh-checkpoints", "refresh-loras", "refresh-vae"):
            answer = client.post(f"/sdapi/v1/{refresh}")
            assert answer.status_code == 200 and answer.json() is None, refresh  # as A1111: no body
        # sd-webui-controlnet's scripts, by which webuiapi knows to clear the units of its previous call
        assert api.get_scripts() == {"txt2img": ["controlnet", "controlnet m2m"],
                                     "img2img": ["controlnet", "controlnet m2m"]} and api.has_controlnet
        no_captioner = client.post("/sdapi/v1/interrogate", json={"image": _data_url(Image.new("RGB", (8, 8)))})
        assert no_captioner.status_code == 501 and "no captioner is installed" in no_captioner.json()["detail"]
        assert client.post("/sdapi/v1/interrogate", json={"image": "nope"}).status_code == 422
        for path in ("unload-checkpoint", "reload-checkpoint"):
            assert client.post(f"/sdapi/v1/{path}").json() == {}, path


def _data_url(image: Image.Image) -> str:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def test_refresh_checkpoints_sees_a_new_file(tmp_path, models):
    root = tmp_path / "models"
    shutil.copytree(models / "checkpoints" / "a-folder", root / "checkpoints" / "first")
    service = Service(tmp_path / "state", root).start()
    try:
        api = service.webui()
        assert [row["title"] for row in api.get_sd_models() if row["filename"] != "tiny"] == ["first"]
        shutil.copytree(root / "checkpoints" / "first", root / "checkpoints" / "second")
        assert [row["title"] for row in api.get_sd_models() if row["filename"] != "tiny"] == ["first"]  # kept
        api.refresh_checkpoints()
        assert [row["title"] for row in api.get_sd_models() if row["filename"] != "tiny"] == ["first", "second"]
    finally:
        service.stop()


# -- the current checkpoint and the options ----------------------------------------------------------------------


def test_a_checkpoint_is_named_by_title_name_file_or_hash_and_kept_across_a_restart(tmp_path, models):
    service = Service(tmp_path / "state", models).start()
    try:
        with service.client() as client:
            listed = {row["model_name"]: row for row in client.get("/sdapi/v1/sd-models").json()}
            file_row = listed["b-file"]
            for name in (file_row["title"], "b-file", "b-file.safetensors", file_row["filename"], file_row["hash"],
                         file_row["sha256"], "tiny-sdxl"):
                answer = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": name})
                assert answer.status_code == 200 and answer.json() == {"codex_ignored": []}, name
                expected = "tiny-sdxl" if name == "tiny-sdxl" else file_row["title"]
                assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == expected, name
            refused = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "no-such-model", "sd_vae": "None"})
            assert refused.status_code == 422 and "no model titled 'no-such-model'" in refused.json()["detail"]
            mixed = client.post("/sdapi/v1/options", json={"sd_vae": "bright-vae.safetensors", "show_progress_grid": 1,
                                                            "CLIP_stop_at_last_layers": 2, "samples_format": "jpg"})
            assert mixed.json() == {"codex_ignored": ["samples_format", "show_progress_grid"]}
            assert "POST /sdapi/v1/options: ignored 'samples_format', 'show_progress_grid'" in service.output()
            bad_vae = client.post("/sdapi/v1/options", json={"sd_vae": "nope.safetensors"})
            assert bad_vae.status_code == 422 and "no VAE named 'nope.safetensors'" in bad_vae.json()["detail"]
        service.stop()
        service.start()  # the choice and the options are kept in the state dir
        options = service.webui().get_options()
        assert (options["sd_model_checkpoint"], options["sd_vae"], options["CLIP_stop_at_last_layers"]) == (
            "tiny-sdxl", "bright-vae.safetensors", 2)
        service.stop()
        service = Service(tmp_path / "state", models, "--default-model", "b-file").start()  # the flag comes first
        api = service.webui()
        assert api.get_options()["sd_model_checkpoint"] == file_row["title"]
        api.txt2img(**SMALL, override_settings={"sd_model_checkpoint": "tiny-sd15"})
        assert api.get_options()["sd_model_checkpoint"] == file_row["title"]  # restored after the call, as in A1111
        api.txt2img(**SMALL, override_settings={"sd_model_checkpoint": "tiny-sd15"},
                    override_settings_restore_afterwards=False)
        assert api.get_options()["sd_model_checkpoint"] == "tiny-sd15"  # asked to stay: it stays
    finally:
        service.stop()
    refused = subprocess.run([CODEX, "serve", "--port", str(free_port()), "--state-dir", str(tmp_path / "other"),
                              "--default-model", "nothing-like-it"], capture_output=True, text=True, timeout=60,
                             env=service.env)
    assert refused.returncode == 2 and "--default-model: no model titled 'nothing-like-it'" in refused.stderr


def test_override_settings_choose_the_checkpoint_vae_and_clip_skip_for_one_call(stocked, models):
    """The call runs as the /v1 job with the same model, VAE file and clip skip; the current options stay."""
    api = stocked.webui()
    overrides = {"sd_model_checkpoint": "tiny-sd15", "sd_vae": "bright-vae.safetensors",
                 "CLIP_stop_at_last_layers": 2, "sd_hypernetwork": "x"}
    result = api.txt2img(**SMALL, sampler_name="DPM++ 2M", scheduler="karras", override_settings=overrides)
    info = result.info
    assert info["sd_model_name"] == "tiny-sd15" and info["sd_vae_name"] == "bright-vae.safetensors"
    assert info["clip_skip"] == 2 and info["codex_ignored"] == ["override_settings.sd_hypernetwork"]
    assert info["codex_override_settings"] == {key: overrides[key] for key in list(overrides)[:3]}
    assert "VAE: bright-vae.safetensors" in info["infotexts"][0] and "Clip skip: 2" in info["infotexts"][0]
    with stocked.client() as client:
        expected = native(client, {**SMALL, "sampler": "DPM++ 2M", "scheduler": "Karras", "clip_skip": 2,
                                   "vae": str(models / "vae" / "bright-vae.safetensors")})
    assert np.array_equal(pixels(result.image), expected[0])
    plain = api.txt2img(**SMALL, sampler_name="DPM++ 2M", scheduler="karras",
                        override_settings={"sd_model_checkpoint": "tiny-sd15"})
    assert not np.array_equal(pixels(plain.image), expected[0])  # the VAE and the skip were this call's only
    assert api.get_options()["sd_model_checkpoint"] == "a-folder"
    xl = api.txt2img(**SMALL, sampler_name="Euler a", override_settings={"sd_model_checkpoint": "tiny-sdxl",
                                                                         "CLIP_stop_at_last_layers": 2})
    assert xl.info["sd_model_name"] == "tiny-sdxl" and xl.info["codex_engine"] == "sdxl"
    assert any(line.startswith("clip_skip=2 (engine sdxl takes at most 1") for line in xl.info["codex_ignored"])
    with pytest.raises(RuntimeError, match="422"):
        api.txt2img(**SMALL, override_settings={"sd_model_checkpoint": "not-a-model"})


# -- sd-webui-controlnet's API ----------------------------------------------------------------------------------


def test_a_controlnet_unit_from_webuiapi_runs_as_the_v1_request_with_controls(stocked, models, tmp_path):
    """webuiapi's ControlNetUnit (canny, its thresholds, weight, guidance end) gives the /v1 job's pixels with the
    same controls; the extension's routes answer through webuiapi's helpers; what Codex does otherwise is said."""
    import cv2
    import webuiapi

    from codex_core.a1111_controls import model_title

    api = stocked.webui()
    title = model_title(models / "controlnet" / "cn-tiny")
    assert api.controlnet_model_list() == [title] and api.controlnet_version() == 2
    modules = api.controlnet_module_list()
    assert modules[0] == "none" and {"canny", "blur_gaussian", "invert", "depth_midas"} <= set(modules)
    control = Image.open(write_test_image(tmp_path / "control.png", (64, 64), seed=3)).convert("RGB")
    edges = cv2.Canny(np.asarray(control), 50, 150)  # an independent canny with the unit's thresholds
    detected = api.controlnet_detect([control], module="canny", threshold_a=50, threshold_b=150)
    assert detected.info == "Success" and np.array_equal(pixels(detected.image)[..., 0], edges)
    call = {"prompt": "a cat", "negative_prompt": "", "width": 64, "height": 64, "steps": 2, "seed": 5,
            "cfg_scale": 7, "sampler_name": "DDIM", "override_settings": {"sd_model_checkpoint": "tiny-sd15"}}
    unit = webuiapi.ControlNetUnit(image=control, module="canny", model="cn-tiny", weight=0.7,
                                   resize_mode="Just Resize", threshold_a=50, threshold_b=150, guidance_end=0.8,
                                   processor_res=64)
    result = api.txt2img(**call, controlnet_units=[unit])
    info = result.info
    assert (info["codex_ignored"], info["codex_substituted"]) == ([], [])
    assert len(result.images) == 2 and len(info["infotexts"]) == 1  # the image, then the detected map
    assert np.array_equal(pixels(result.images[1])[..., 0], edges)
    assert (f'ControlNet 0: "Module: canny, Model: {title}, Weight: 0.7, Resize Mode: Just Resize, Processor Res: 64, '
            'Threshold A: 50.0, Threshold B: 150.0, Guidance Start: 0.0, Guidance End: 0.8, Pixel Perfect: False, '
            'Control Mode: Balanced"') in info["infotexts"][0]
    encoded = base64.b64encode((tmp_path / "control.png").read_bytes()).decode()
    with stocked.client() as client:
        controls = [{"model": "cn-tiny", "image": encoded, "scale": 0.7, "end": 0.8, "preprocess": "canny",
                     "preprocess_params": {"low_threshold": 50, "high_threshold": 150}}]
        expected = native(client, ran(client, info, controls=controls))
        plain = native(client, ran(client, info, controls=[]))
    assert np.array_equal(pixels(result.image), expected[0])
    assert not np.array_equal(expected[0], plain[0])  # the control steers
    other = api.txt2img(**call, controlnet_units=[webuiapi.ControlNetUnit(  # webuiapi's defaults: Resize and Fill
        image=control.resize((48, 48)), model=title, control_mode=1)])
    where = "alwayson_scripts.ControlNet.args.0"
    assert other.info["codex_substituted"] == [
        f"{where}.resize_mode='Resize and Fill' ran as 'Just Resize': the 48x48 control image was stretched to 64x64",
        f"{where}.control_mode='My prompt is more important' ran as 'Balanced' (diffusers has no equivalent of the "
        "extension's soft injection, 0.825^(12-i) per layer)"]
    assert len(other.images) == 2 and other.images[1].size == (48, 48)  # a "none" unit's map: its image as sent
    assert api.png_info(result.image).json["parameters"]["ControlNet 0"].startswith(f"Module: canny, Model: {title},")
    # img2img: a unit without an image is steered by the init image, as the extension does
    again = api.img2img(images=[control], **call, denoising_strength=0.6, controlnet_units=[webuiapi.ControlNetUnit(
        module="canny", model="cn-tiny", resize_mode="Just Resize", threshold_a=50, threshold_b=150, processor_res=64)])
    assert again.info["codex_task"] == "img2img" and again.info["codex_substituted"] == []
    with stocked.client() as client:
        expected = native(client, ran(client, again.info, init_image=encoded, controls=[{**controls[0], "scale": 1.0,
                                                                                        "end": 1.0}]), task="img2img")
    assert np.array_equal(pixels(again.image), expected[0])
    with pytest.raises(RuntimeError, match="422.*args.0.model: no ControlNet named .*nope"):
        api.txt2img(**call, controlnet_units=[webuiapi.ControlNetUnit(image=control, model="nope")])


UNIT_FIELDS = ["enabled", "module", "model", "weight", "image", "input_image", "mask", "resize_mode", "processor_res",
               "threshold_a", "threshold_b", "guidance_start", "guidance_end", "pixel_perfect", "control_mode",
               "save_detected_map", "low_vram", "hr_option"]


def test_hostile_controlnet_units_and_detect_bodies_get_a_4xx_never_a_5xx(stocked):
    """Each field of a unit, the units list and the script mapping, and detect's fields, set to a wrong type, NaN,
    infinity, a huge number, a path, a NUL...: a 4xx naming what is wrong, and no job queued (steps 0 is refused
    after the units are read)."""
    unit = {"model": "cn-tiny", "image": _data_url(Image.new("RGB", (8, 8)))}
    base = {"prompt": "x", "width": 8, "height": 8, "steps": 0,
            "override_settings": {"sd_model_checkpoint": "tiny-sd15"}}
    with stocked.client() as client:
        before = len(client.get("/v1/jobs", params={"limit": 10_000}).json())
        bodies = [{**base, "alwayson_scripts": value} for value in HOSTILE]
        bodies += [{**base, "alwayson_scripts": {"controlnet": value}} for value in HOSTILE]
        bodies += [{**base, "alwayson_scripts": {"controlnet": {"args": value}}} for value in HOSTILE]
        bodies += [{**base, "alwayson_scripts": {"controlnet": {"args": [{**unit, field: value}]}}}
                   for field in UNIT_FIELDS for value in HOSTILE]
        for body in bodies:
            answer = client.post("/sdapi/v1/txt2img", content=json.dumps(body, allow_nan=True),
                                 headers={"content-type": "application/json"})
            assert 400 <= answer.status_code < 500, (json.dumps(body)[:200], answer.text[:300])
        assert len(client.get("/v1/jobs", params={"limit": 10_000}).json()) == before
        detect = {"controlnet_module": "canny", "controlnet_input_images": [unit["image"]]}
        for field in ("controlnet_module", "controlnet_input_images", "controlnet_images", "controlnet_threshold_a",
                      "controlnet_threshold_b", "controlnet_processor_res"):
            for value in HOSTILE:
                answer = client.post("/controlnet/detect", content=json.dumps({**detect, field: value}, allow_nan=True),
                                     headers={"content-type": "application/json"})
                assert answer.status_code < 500, (field, repr(value)[:40], answer.text[:300])


# -- seeds, batches, several init images --------------------------------------------------------------------------


def test_image_i_of_a_call_gets_seed_plus_i_and_equals_a_one_image_run(bare):
    api = bare.webui()
    result = api.txt2img(**{**SMALL, "seed": 10}, batch_size=2, n_iter=2,
                         override_settings={"sd_model_checkpoint": "tiny-sd15"})
    assert len(result.images) == 4 and result.info["all_seeds"] == [10, 11, 12, 13]
    assert [f"Seed: {10 + index}," in text for index, text in enumerate(result.info["infotexts"])] == [True] * 4
    with bare.client() as client:
        for index in (1, 3):
            single = native(client, ran(client, result.info, seed=10 + index, batch_size=1))
            assert same_image_of_another_batch(pixels(result.images[index]), single[0]), index
    drawn = api.txt2img(**{**SMALL, "seed": -1}, batch_size=2, override_settings={"sd_model_checkpoint": "tiny-sd15"})
    first = drawn.info["all_seeds"][0]
    assert drawn.info["all_seeds"] == [first, first + 1]  # a random seed, then the next


def test_several_init_images_make_a_batch_one_image_each(bare, tmp_path):
    """As A1111: up to batch_size init images, image i from init image i with seed + i; more is refused."""
    api = bare.webui()
    inits = [Image.open(write_test_image(tmp_path / f"in{index}.png", (32, 32), seed=index)) for index in range(2)]
    common = {"prompt": "snow", "seed": 4, "steps": 4, "width": 32, "height": 32, "denoising_strength": 0.5,
              "override_settings": {"sd_model_checkpoint": "tiny-sd15"}}
    result = api.img2img(images=inits, batch_size=2, **common)
    assert len(result.images) == 2 and result.info["all_seeds"] == [4, 5]
    with bare.client() as client:
        for index in range(2):
            encoded = base64.b64encode((tmp_path / f"in{index}.png").read_bytes()).decode()
            expected = native(client, ran(client, result.info, seed=4 + index, batch_size=1, init_image=encoded),
                              task="img2img")
            assert same_image_of_another_batch(pixels(result.images[index]), expected[0]), index
        assert not same_image_of_another_batch(pixels(result.images[0]), expected[0])  # another seed and image: no
    with pytest.raises(RuntimeError, match="init_images: got 2 images for a batch_size of 1"):
        api.img2img(images=inits, batch_size=1, **common)


def test_img2img_on_an_editing_checkpoint_runs_its_edit_task_and_says_so(tmp_path):
    """A FLUX.1 Kontext folder serves only edit: A1111's img2img runs it with init_images as the reference images at
    the call's width x height, equal to the /v1 edit job of the same request; txt2img on it is a 422."""
    models = tmp_path / "models"
    kontext = models / "checkpoints" / "kontext"
    shutil.copytree(tiny_model_dir("flux"), kontext)
    index = json.loads((kontext / "model_index.json").read_text())
    (kontext / "model_index.json").write_text(json.dumps({**index, "_class_name": "FluxKontextPipeline"}))
    service = Service(tmp_path / "state", models, "--default-model", "kontext").start()
    try:
        api = service.webui()
        reference = Image.open(write_test_image(tmp_path / "ref.png", (48, 32), seed=3))
        result = api.img2img(images=[reference], prompt="make it winter", width=32, height=32, steps=2, seed=5,
                             sampler_name="Euler", denoising_strength=0.6)
        info = result.info
        assert info["codex_task"] == "edit" and info["codex_engine"] == "flux" and result.image.size == (32, 32)
        assert info["codex_substituted"] == ["img2img -> edit: kontext is an instruction-editing model (flux edit); "
                                             "init_images are its reference images"]
        assert "denoising_strength (engine flux edit has no such setting)" in info["codex_ignored"]
        with service.client() as client:
            job = client.get(f"/v1/jobs/{info['codex_jobs'][0]}").json()["result"]["info"]
            assert job["notes"]["edit_size"]["width"] == 32 and len(job["request"]["images"]) == 1
            request = {**job["request"], "images": [base64.b64encode((tmp_path / "ref.png").read_bytes()).decode()]}
            native_job = client.post("/v1/jobs", json={"engine": "flux", "task": "edit", "model": str(kontext),
                                                       "request": request}).json()
            deadline = time.monotonic() + 120
            while native_job["state"] not in ("done", "failed", "cancelled"):
                assert time.monotonic() < deadline, native_job
                time.sleep(0.1)
                native_job = client.get(f"/v1/jobs/{native_job['id']}").json()
            assert native_job["state"] == "done", native_job
            raw = client.get(f"/v1/jobs/{native_job['id']}/files/0000.png").content
        assert np.array_equal(pixels(result.image), pixels(Image.open(io.BytesIO(raw))))
        with pytest.raises(RuntimeError, match="kontext serves edit, not txt2img"):
            api.txt2img(**SMALL)
        with pytest.raises(RuntimeError, match="init_images: got 2 images; kontext edits with at most 1 reference"):
            api.img2img(images=[reference, reference], prompt="x", width=32, height=32, steps=2)
    finally:
        service.stop()


# -- the hires fix ---------------------------------------------------------------------------------------------


def test_enable_hr_runs_the_upscale_task_on_each_image_in_one_job(bare):
    api = bare.webui()
    result = api.txt2img(**{**SMALL, "seed": 5}, batch_size=2, enable_hr=True, hr_scale=2, denoising_strength=0.5,
                         hr_second_pass_steps=4, override_settings={"sd_model_checkpoint": "tiny-sd15"})
    info = result.info
    assert [image.size for image in result.images] == [(64, 64), (64, 64)] and info["all_seeds"] == [5, 6]
    assert len(info["codex_jobs"]) == 1 and (info["width"], info["height"]) == (32, 32)  # A1111: the first pass's
    assert info["codex_substituted"] == ["hr_upscaler='Latent' ran as Lanczos (the upscale task resizes the image "
                                         "with Lanczos before its second pass)"]
    assert "Hires upscale: 2.0" in info["infotexts"][0] and "Seed: 5," in info["infotexts"][0]
    with bare.client() as client:
        first_run = ran(client, info, seed=6, batch_size=1)
        first = native(client, first_run)[0]
        buffer = io.BytesIO()
        Image.fromarray(first).save(buffer, format="PNG")
        upscaled = native(client, {"prompt": SMALL["prompt"], "init_image": base64.b64encode(buffer.getvalue()).decode(),
                                   "upscale_factor": 2.0, "strength": 0.5, "steps": 4, "seed": 6,
                                   "sampler": first_run["sampler"], "scheduler": first_run["scheduler"], "cfg": 7.0},
                          task="upscale")[0]
    assert same_image_of_another_batch(pixels(result.images[1]), upscaled)
    sized = api.txt2img(**SMALL, enable_hr=True, hr_resize_x=48, denoising_strength=0.5,
                        override_settings={"sd_model_checkpoint": "tiny-sd15"})
    assert sized.image.size == (48, 48)
    with pytest.raises(RuntimeError, match=r"422.*--max-output-pixels"):  # the follow-up step's cost, before a job
        api.txt2img(prompt="x", width=1024, height=1024, steps=2, enable_hr=True, hr_scale=5,
                    override_settings={"sd_model_checkpoint": "tiny-sd15"})
    flux = api.txt2img(**SMALL, sampler_name="Euler", enable_hr=True,
                       override_settings={"sd_model_checkpoint": "tiny-flux"})
    assert flux.image.size == (32, 32) and "enable_hr (engine flux has no upscale task)" in flux.info["codex_ignored"]


# -- the workers' models ------------------------------------------------------------------------------------------


def test_unload_checkpoint_empties_the_workers_model_cache_and_reload_fills_it(bare):
    api = bare.webui()
    with bare.client() as client:
        def loaded() -> int:
            return client.get("/v1/health").json()["workers"][0]["models_loaded"]

        api.txt2img(**SMALL, override_settings={"sd_model_checkpoint": "tiny-sd15"})
        assert loaded() == 1
        assert client.post("/sdapi/v1/unload-checkpoint").json() == {}
        assert loaded() == 0
        assert client.post("/sdapi/v1/reload-checkpoint").json() == {}
        assert loaded() == 1
    assert api.txt2img(**SMALL).image.size == (32, 32)


# -- extras ----------------------------------------------------------------------------------------------------


def test_extras_upscale_with_a1111s_built_in_upscalers(bare, tmp_path):
    api = bare.webui()
    image = Image.open(write_test_image(tmp_path / "in.png", (40, 24), seed=3)).convert("RGB")
    lanczos = api.extra_single_image(image, upscaler_1="Lanczos", upscaling_resize=2)
    assert np.array_equal(pixels(lanczos.image), pixels(image.resize((80, 48), Image.Resampling.LANCZOS)))
    assert "Postprocess upscaler: Lanczos" in lanczos.info
    nearest = api.extra_single_image(image, upscaler_1="Nearest", upscaling_resize=3)
    assert np.array_equal(pixels(nearest.image), pixels(image.resize((120, 72), Image.Resampling.NEAREST)))
    untouched = api.extra_single_image(image)  # the client's default upscaler is None: A1111 leaves the image
    assert np.array_equal(pixels(untouched.image), pixels(image))
    boxed = api.extra_single_image(image, upscaler_1="Lanczos", resize_mode=1, upscaling_resize_w=64,
                                   upscaling_resize_h=64)
    assert boxed.image.size == (64, 64)  # covered (by 64/24), then the centre cropped
    batch = api.extra_batch_images([image, image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)], upscaler_1="Lanczos")
    assert [result.size for result in batch.images] == [(80, 48), (80, 48)]
    with pytest.raises(RuntimeError, match=r"422.*upscaler_1: got .*R-ESRGAN 4x\+.*the upscalers: None, Lanczos"):
        api.extra_single_image(image, upscaler_1="R-ESRGAN 4x+")


# -- credentials ---------------------------------------------------------------------------------------------------


def test_api_auth_and_token_as_basic_or_bearer_on_every_route(tmp_path):
    (tmp_path / "models").mkdir()
    service = Service(tmp_path / "state", tmp_path / "models", "--api-auth", "alice:s3cret,bob:pa:ss",
                      "--token", "tok").start()
    try:
        import webuiapi

        api = service.webui(username="alice", password="s3cret")  # webuiapi's set_auth: HTTP Basic
        result = api.txt2img(**SMALL)
        assert result.image.size == (32, 32) and api.get_options()["sd_model_checkpoint"] == "tiny-sd15"
        wrong = webuiapi.WebUIApi(host="127.0.0.1", port=service.port, username="alice", password="nope")
        with pytest.raises(RuntimeError, match="401"):
            wrong.txt2img(**SMALL)
        accepted = [("bob", "pa:ss"), ("anyone", "tok")]  # a password may hold a colon; the token as a password
        with service.client(auth=("alice", "s3cret")) as right:
            paths = right.get("/openapi.json").json()["paths"]
            job_id = right.get("/v1/jobs").json()[0]["id"]
            for user, password in accepted:
                with service.client(auth=(user, password)) as other:
                    assert other.get("/sdapi/v1/options").status_code == 200, user
            with service.client(headers={"Authorization": "Bearer tok"}) as bearer:
                assert bearer.get(f"/v1/jobs/{job_id}/files/0000.png").status_code == 200
                with bearer.stream("GET", f"/v1/jobs/{job_id}/events") as events:
                    assert events.status_code == 200
        for headers in ({}, {"Authorization": "Bearer s3cret"}, {"Authorization": "Basic !!"},
                        {"Authorization": "Basic " + base64.b64encode(b"alice:wrong").decode()}):
            with service.client(headers=headers) as anonymous:
                for path, operations in paths.items():
                    for method in operations:
                        url = path.replace("{job_id}", job_id).replace("{name}", "0000.png").replace("{", "").replace(
                            "}", "")
                        status = anonymous.request(method.upper(), url).status_code
                        assert status == (200 if path == "/v1/health" else 401), (headers, method, path, status)
                refused = anonymous.get("/sdapi/v1/options")
                assert refused.headers["www-authenticate"] == 'Basic realm="codex", Bearer'
    finally:
        service.stop()


def test_the_readme_example_runs(bare, tmp_path, monkeypatch):
    """README's "A1111 clients" example, as it is but for the port."""
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### A1111 clients"):]
    code = section[section.index("```python") + len("```python"):section.index("```", section.index("```python") + 9)]
    monkeypatch.chdir(tmp_path)
    exec(compile(code.replace("port=7861", f"port={bare.port}"), "README.md", "exec"), {})
    assert Image.open(tmp_path / "lighthouse.png").size == (512, 512)
    with bare.client() as client:  # the example chose a checkpoint: choose the first again for the other tests
        client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "tiny-sd15"})


HOSTILE = [None, True, -1, 0, 1e300, float("nan"), float("-inf"), "", "../../etc/passwd", "a\x00b", [], [1], {},
           {"a": [1]}, "x" * 5000, 2**70]
# each route's fields, and a body that is refused anyway after them (steps 0), so that nothing runs
HOSTILE_ROUTES = {
    "txt2img": ({"prompt": "x", "width": 32, "height": 32, "steps": 0, "enable_hr": True},
                ["enable_hr", "hr_scale", "hr_resize_x", "hr_resize_y", "hr_second_pass_steps", "hr_upscaler",
                 "denoising_strength", "width", "batch_size", "n_iter", "hr_sampler_name", "hr_prompt", "seed",
                 "override_settings", "override_settings_restore_afterwards", "eta"]),
    "img2img": ({"prompt": "x", "steps": 0, "init_images": [_data_url(Image.new("RGB", (8, 8)))]},
                ["init_images", "batch_size", "mask", "inpainting_mask_invert", "override_settings"]),
    "options": ({}, ["sd_model_checkpoint", "sd_vae", "CLIP_stop_at_last_layers"]),
    "extra-single-image": ({"image": "x", "upscaler_1": "Lanczos"},
                           ["image", "upscaler_1", "upscaler_2", "resize_mode", "upscaling_resize",
                            "upscaling_resize_w", "upscaling_crop", "extras_upscaler_2_visibility"]),
    "extra-batch-images": ({"imageList": [{"data": "x"}]}, ["imageList", "upscaling_resize", "resize_mode"]),
    "interrogate": ({}, ["image", "model"]),
}


def test_hostile_bodies_get_a_4xx_never_a_5xx(bare):
    """Each field of the new routes set to a wrong type, NaN, infinity, a huge number, a path, a NUL...: a 4xx
    naming what is wrong (interrogate, which answers 501 to a right request, too), and no job is queued."""
    with bare.client() as client:
        before = len(client.get("/v1/jobs", params={"limit": 10_000}).json())
        for route, (base, fields) in HOSTILE_ROUTES.items():
            for field in fields:
                for value in HOSTILE:
                    body = json.dumps({**base, field: value}, allow_nan=True)
                    answer = client.post(f"/sdapi/v1/{route}", content=body, headers={"content-type": "application/json"})
                    assert answer.status_code < 500, (route, field, repr(value)[:40], answer.text[:300])
            for junk in ([], "x", 5, None):
                assert 400 <= client.post(f"/sdapi/v1/{route}", json=junk).status_code < 500, (route, junk)
        assert len(client.get("/v1/jobs", params={"limit": 10_000}).json()) == before


def test_a_v1_job_with_a_follow_up_step_is_checked_before_it_is_queued(bare, tmp_path):
    """The follow-up step of the native API (what enable_hr uses): its task, its image field and its cost are
    refused at submission with the field named; a right one makes one run folder with the last step's images."""
    spec = {"engine": "sd15", "task": "txt2img", "model": "tiny", "request": {**SMALL, "batch_size": 2}}
    step = {"task": "upscale", "request": {"prompt": "x", "upscale_factor": 2.0, "strength": 0.5, "steps": 2}}
    with bare.client() as client:
        before = len(client.get("/v1/jobs", params={"limit": 10_000}).json())
        for follow_up, expected in (([{**step, "task": "txt2vid"}], "follow_up.0.task: engine sd15 has no task"),
                                    ([{**step, "image_field": "prompt"}], "follow_up.0.image_field: 'prompt' is not"),
                                    ([{**step, "request": {**step["request"], "steps": 500}}], "--max-steps"),
                                    ([step] * 5, "follow_up: 5 steps; a job takes at most 4")):
            refused = client.post("/v1/jobs", json={**spec, "follow_up": follow_up})
            assert refused.status_code == 422 and expected in refused.json()["detail"], refused.text[:300]
        assert len(client.get("/v1/jobs", params={"limit": 10_000}).json()) == before
        job = client.post("/v1/jobs", json={**spec, "follow_up": [step]}).json()
        while job["state"] not in ("done", "failed", "cancelled"):
            time.sleep(0.1)
            job = client.get(f"/v1/jobs/{job['id']}").json()
        assert job["state"] == "done", job
        run_dir = Path(job["result"]["run_dir"])
        assert sorted(path.name for path in run_dir.iterdir()) == ["0000.png", "0001.png", "info.json"]
        info = json.loads((run_dir / "info.json").read_text())
        assert info["task"] == "upscale" and info["seeds"] == [11, 12] and info["first_run"]["seeds"] == [11, 12]
        assert [Image.open(run_dir / name).size for name in ("0000.png", "0001.png")] == [(64, 64), (64, 64)]
