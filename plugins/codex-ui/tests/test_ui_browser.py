"""codex-ui in a real browser: Playwright drives Debian's headless Chromium (/usr/bin/chromium) against a
real `codex ui` process (the service and the UI on one port, loopback), on the tiny models, with a models
folder holding a LoRA and a VAE for the tiny sd15, and the sleepy test engine (tests/sleepy_engine: an edit
task taking three reference images, a vid2vid task taking a video) and the tone test engine (tests/tone_engine:
a video with a sound track) installed beside the others.

Run locally: `apt-get install chromium` (or set CODEX_CHROMIUM to a Chromium binary), then
`make test` or `.venv/bin/python -m pytest plugins/codex-ui`. Screenshots of every tab land in
artifacts/ui-screens/.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Page, expect, sync_playwright

pytestmark = pytest.mark.browser

CODEX = str(Path(sys.executable).parent / "codex")
CHROMIUM = os.environ.get("CODEX_CHROMIUM", "/usr/bin/chromium")
SCREENS = Path(__file__).resolve().parents[3] / "artifacts" / "ui-screens"
SLEEPY = Path(__file__).resolve().parents[3] / "tests" / "sleepy_engine"
TONE = Path(__file__).resolve().parents[3] / "tests" / "tone_engine"
# a render of the tabs, or an upload's handler (it sends each image to the service): on a loaded machine, seconds
SLOW_UI = 30_000
SMALL = {"prompt": "a lighthouse", "width": 32, "height": 32, "steps": 2, "seed": 5}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_models(models: Path) -> None:
    """A models folder with a LoRA, a VAE and a ControlNet that the tiny sd15 runs: ``loras/ink`` (random, in
    kohya's layout, on the UNet's self-attention and the text encoder: a LoRA without cross-attention weights, so
    that the service lists it for sd15 whatever the model's context width), ``vae/bright-vae`` (the tiny VAE,
    brighter, in A1111's layout) and ``controlnet/tiny-canny`` (``write_controlnet``)."""
    import torch
    from diffusers import AutoencoderKL
    from safetensors.torch import load_file, save_file

    from codex_core.testing import tiny_model_dir
    from codex_diffusers.testing.checkpoint_writers import _vae_to_ldm, write_kohya_sd_lora

    (models / "loras").mkdir(parents=True)
    (models / "vae").mkdir()
    full = write_kohya_sd_lora(tiny_model_dir("sd15"), models / "full-lora.tmp", seed=1)
    save_file({key: value for key, value in load_file(full).items() if "attn2_to_k" not in key
               and "attn2_to_v" not in key}, models / "loras" / "ink.safetensors")
    full.unlink()
    vae = AutoencoderKL.from_pretrained(tiny_model_dir("sd15"), subfolder="vae")
    with torch.no_grad():
        vae.decoder.conv_out.bias += 0.3
    save_file({key: value.contiguous() for key, value in _vae_to_ldm(vae.state_dict(), dict(vae.config)).items()},
              models / "vae" / "bright-vae.safetensors")
    write_controlnet(models / "controlnet" / "tiny-canny")


def write_controlnet(folder: Path) -> None:
    """A diffusers ControlNet for the tiny sd15 (``ControlNetModel.from_unet``), its zero-initialised convolutions
    (the condition embedding's output, the down and mid blocks' outputs) filled with small random values so that
    the control changes the image."""
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    from codex_core.testing import tiny_model_dir

    unet = UNet2DConditionModel.from_pretrained(tiny_model_dir("sd15"), subfolder="unet")
    torch.manual_seed(0)
    controlnet = ControlNetModel.from_unet(unet)
    with torch.no_grad():
        for name, parameter in controlnet.named_parameters():
            if name.startswith(("controlnet_cond_embedding.conv_out", "controlnet_down_blocks",
                                "controlnet_mid_block")):
                parameter.normal_(0, 0.2)
    controlnet.save_pretrained(folder)


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """`codex ui` as a user starts it, on a free loopback port, with its own state dir and models folder (at the
    service's defaults: previews every 2 steps), and the sleepy test engine installed (an edit with up to three
    reference images, put side by side: tests/sleepy_engine), and the tone one (a video with sound)."""
    folder = tmp_path_factory.mktemp("ui")
    write_models(folder / "models")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "--target", str(folder / "site"), str(SLEEPY), str(TONE)],
                   check=True, capture_output=True, text=True)
    path = os.pathsep.join(filter(None, [str(folder / "site"), os.environ.get("PYTHONPATH")]))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(folder / "ui.log", "ab")
    # --max-steps 1000: the interrupt tests queue a run long enough to interrupt (the default limit is 150)
    proc = subprocess.Popen([CODEX, "ui", "--port", str(port), "--state-dir", str(folder / "state"),
                             "--engine", "sd15", "--max-steps", "1000"], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "CODEX_MODELS_DIR": str(folder / "models"), "PYTHONPATH": path})
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(url + "/", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert proc.poll() is None, (folder / "ui.log").read_text(errors="replace")
        assert time.monotonic() < deadline, "codex ui did not start: " + (folder / "ui.log").read_text(errors="replace")
        time.sleep(0.3)
    yield url
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    finally:
        log.close()
    assert proc.returncode == 0, (folder / "ui.log").read_text(errors="replace")  # a clean stop: exit 0


@pytest.fixture(scope="module")
def browser():
    assert Path(CHROMIUM).is_file(), (f"no Chromium at {CHROMIUM}: install it (apt-get install chromium) or set "
                                      "CODEX_CHROMIUM; the browser tests are not skipped")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, service, request) -> Page:
    """A fresh browser session on the UI, loaded (the txt2img form rendered); a failing test leaves a
    screenshot of the page in artifacts/ui-screens/FAILED-<test>.png."""
    context = browser.new_context(viewport={"width": 1400, "height": 1600}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(service + "/")
    page.locator("#codex-field-txt2img-prompt textarea").wait_for()
    yield page
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        SCREENS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=SCREENS / f"FAILED-{request.node.name}.png", full_page=True)
    context.close()


def jobs(service: str) -> list[dict]:
    return httpx.get(service + "/v1/jobs", timeout=10).json()


def choose(page: Page, dropdown: str, option: str) -> None:
    page.locator(f"#{dropdown} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def field(page: Page, name: str, task: str = "txt2img"):
    return page.locator(f"#codex-field-{task}-{name}")


def fill(page: Page, request: dict, task: str = "txt2img") -> dict:
    """Types each field of ``request`` into the form; returns the Request JSON panel once it shows them all."""
    for name, value in request.items():
        box = field(page, name, task).locator("textarea, input").first
        box.fill(str(value))
    panel = page.locator("#codex-request .cm-content")
    expect(panel).to_contain_text(f'"{list(request)[-1]}": {json.dumps(list(request.values())[-1])}')
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        shown = json.loads(panel.inner_text())
        if all(shown.get(name) == value for name, value in request.items()):
            return shown
        time.sleep(0.1)
    raise AssertionError(f"the Request JSON panel shows {panel.inner_text()}, not {request}")


def wait_for(condition, what: str, timeout: float = 90):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        time.sleep(0.1)
    return value


def tab_names(page: Page) -> list[str]:
    return [tab.inner_text().strip() for tab in page.locator("#codex-tabs button[role=tab]").all() if tab.is_visible()]


def field_names(page: Page, task: str) -> set[str]:
    prefix = f"codex-field-{task}-"
    ids = page.locator(f"[id^={prefix}]").evaluate_all("nodes => nodes.map(n => n.id)")
    return {name.removeprefix(prefix) for name in ids if page.locator(f"#{name}").is_visible()}


def png_text(path: Path) -> dict[str, str]:
    with Image.open(path) as image:
        return dict(image.text)


def box(page: Page, selector: str) -> dict:
    found = page.locator(selector).bounding_box()
    assert found is not None, f"{selector} is not shown"
    return found


def test_txt2img_by_ctrl_enter_shows_the_image_beside_the_form_and_the_download_carries_the_request(page, service):
    choose(page, "codex-model", "tiny (random weights, for tests)")
    shown = fill(page, SMALL)
    assert shown == SMALL  # only what was typed: the presets fill the rest on the service
    field(page, "seed").locator("input").press("Control+Enter")

    expect(page.locator("#codex-status")).to_contain_text("done", timeout=90_000)  # (a preview may come first)
    image = page.locator("#codex-gallery img").first
    page.wait_for_function("() => { const i = document.querySelector('#codex-gallery img'); "
                           "return i && i.complete && i.naturalWidth > 0; }")
    assert image.evaluate("i => [i.naturalWidth, i.naturalHeight]") == [32, 32]
    # at a desktop width the output is beside the form: right of it, from the same height
    form, output, shown_image = box(page, "#codex-form"), box(page, "#codex-output"), box(page, "#codex-gallery img")
    assert output["x"] >= form["x"] + form["width"] and abs(output["y"] - form["y"]) < 40
    assert output["x"] <= shown_image["x"] and shown_image["y"] < form["y"] + form["height"]
    assert box(page, "#codex-generate")["x"] >= output["x"]
    SCREENS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENS / "sd15-txt2img-result.png", full_page=True)

    row = page.locator("#codex-files tr, #codex-files .file-preview-holder, #codex-files li").filter(has_text=".png")
    with page.expect_download() as download:
        row.first.locator("a").first.click()
    saved = Path(download.value.path())
    text = png_text(saved)
    record = json.loads(text["codex"])
    assert record["engine"] == "sd15" and record["task"] == "txt2img"
    assert record["request_in"] == shown  # exactly what the panel showed was sent
    assert {key: record["request"][key] for key in shown} == shown
    assert record["applied_preset_patch"] and not set(record["applied_preset_patch"]) & set(shown)  # presets filled the rest
    assert "Seed: 5" in text["parameters"] and "Size: 32x32" in text["parameters"]
    with Image.open(saved) as image:
        assert image.size == (32, 32)

    # in a narrow window the output goes under the form, in the window's width, and Generate still runs
    page.set_viewport_size({"width": 640, "height": 1200})
    expect(page.locator("#codex-output")).to_be_visible()
    form, output = box(page, "#codex-form"), box(page, "#codex-output")
    assert output["y"] >= form["y"] + form["height"] and output["x"] + output["width"] <= 640
    before = len(jobs(service))
    page.locator("#codex-generate").click()
    newest = wait_for(lambda: len(found := jobs(service)) > before and found[0], "the job queued")
    expect(page.locator("#codex-status")).to_contain_text(f"{newest['id']} done", timeout=90_000)


def test_a_bad_value_shows_the_field_named_error_and_queues_nothing(page, service):
    choose(page, "codex-model", "tiny (random weights, for tests)")
    before = len(jobs(service))
    fill(page, {"prompt": "x", "width": 65})
    page.keyboard.press("Control+Enter")
    width = field(page, "width")
    expect(width).to_contain_text("65 is not a multiple of 8")
    expect(page.locator("#codex-status")).to_contain_text("Not queued")
    expect(page.locator("#codex-status")).to_contain_text("width:")
    SCREENS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENS / "sd15-txt2img-error.png", full_page=True)
    assert len(jobs(service)) == before
    # the value the user typed is still there, to be corrected
    assert field(page, "width").locator("input").input_value() == "65"


def test_a_video_tab_plays_the_video_with_the_requested_frames_and_fps(page, service):
    choose(page, "codex-engine", "wan_ti2v_5b — wan2.2")
    expect(page.locator("#codex-tabs button[role=tab]", has_text="txt2vid")).to_be_visible()
    choose(page, "codex-model", "tiny (random weights, for tests)")
    request = {"prompt": "waves", "width": 32, "height": 32, "num_frames": 5, "fps": 8, "steps": 2, "seed": 3}
    fill(page, request, "txt2vid")
    page.keyboard.press("Control+Enter")
    video = page.locator("#codex-video video")
    video.wait_for()
    page.wait_for_function("() => { const v = document.querySelector('#codex-video video'); "
                           "return v && v.readyState >= 1 && v.duration > 0; }")
    assert video.evaluate("v => [v.videoWidth, v.videoHeight]") == [32, 32]
    duration = video.evaluate("v => v.duration")
    assert abs(duration - 5 / 8) < 0.2, duration
    info = page.locator("#codex-info")
    expect(info).to_contain_text('"num_frames": 5')
    expect(info).to_contain_text('"fps": 8')
    SCREENS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENS / "wan_ti2v_5b-txt2vid-result.png", full_page=True)


def test_the_vid2vid_tab_takes_an_uploaded_video_and_plays_the_result(page, service, tmp_path):
    """An MP4 uploaded into the sleepy test engine's vid2vid form goes to the service (POST /v1/inputs, as a video),
    its path into the request; the run gives the video's frames back, played in the result's video element."""
    from codex_core.testing import write_test_video

    clip = Path(write_test_video(tmp_path / "clip.mp4", 9, (32, 16), fps=8, seed=4))
    choose(page, "codex-engine", "sleepy — test")
    tab = page.locator("#codex-tabs button[role=tab]", has_text="vid2vid")
    expect(tab).to_be_visible(timeout=SLOW_UI)
    choose(page, "codex-model", "tiny (random weights, for tests)")
    tab.click()
    field(page, "init_video", "vid2vid").locator("input[type=file]").set_input_files(str(clip))
    panel = page.locator("#codex-request .cm-content")
    sent = wait_for(lambda: json.loads(panel.inner_text() or "{}").get("init_video"), "the video in the request", 60)
    assert Path(sent).read_bytes() == clip.read_bytes()  # the service's copy of the upload, by its content
    page.keyboard.press("Control+Enter")
    expect(page.locator("#codex-status")).to_contain_text("done", timeout=60_000)
    latest = jobs(service)[0]
    assert (latest["spec"]["engine"], latest["spec"]["task"]) == ("sleepy", "vid2vid")
    assert latest["spec"]["request"]["init_video"] == sent
    page.wait_for_function("() => { const v = document.querySelector('#codex-video video'); "
                           "return v && v.readyState >= 1 && v.duration > 0; }")
    video = page.locator("#codex-video video")
    assert video.evaluate("v => [v.videoWidth, v.videoHeight]") == [32, 16]
    assert abs(video.evaluate("v => v.duration") - 9 / 8) < 0.2
    SCREENS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENS / "sleepy-vid2vid-upload.png", full_page=True)


def test_an_ltx2_video_plays_with_its_sound(page, service):
    """LTX-2 on its tiny model (a sound track from its audio VAE and vocoder, AAC in the MP4): the result player is
    not muted and, once played a moment (muted: a headless page may not start sound), reports an audio track."""
    choose(page, "codex-engine", "ltx2 — ltx-2")
    expect(page.locator("#codex-tabs button[role=tab]", has_text="txt2vid")).to_be_visible(timeout=SLOW_UI)
    choose(page, "codex-model", "tiny (random weights, for tests)")
    fill(page, {"prompt": "a bell rings", "width": 64, "height": 64, "num_frames": 9, "fps": 8, "steps": 2,
                "max_sequence_length": 128, "seed": 4}, "txt2vid")
    page.keyboard.press("Control+Enter")
    expect(page.locator("#codex-status")).to_contain_text("done", timeout=120_000)
    video = page.locator("#codex-video video")
    video.wait_for()
    page.wait_for_function("() => { const v = document.querySelector('#codex-video video'); "
                           "return v && v.readyState >= 1 && v.duration > 0; }")
    assert video.evaluate("v => v.muted") is False
    has_audio = video.evaluate("""async v => {
        v.muted = true;
        await v.play();
        await new Promise(done => setTimeout(done, 800));
        v.pause();
        v.muted = false;
        return Boolean(v.mozHasAudio || v.webkitAudioDecodedByteCount > 0 || (v.audioTracks && v.audioTracks.length));
    }""")
    assert has_audio, "the <video> element reports no audio track"
    expect(page.locator("#codex-info")).to_contain_text('"sample_rate": 24000')
    SCREENS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENS / "ltx2-txt2vid-sound.png", full_page=True)


def test_a_long_run_shows_previews_esc_keeps_its_image_and_shift_esc_cancels(page, service):
    choose(page, "codex-model", "tiny (random weights, for tests)")
    fill(page, {"prompt": "x", "width": 64, "height": 64, "steps": 1000, "seed": 1})
    page.keyboard.press("Control+Enter")
    expect(page.locator("#codex-progress")).to_contain_text("/1000", timeout=90_000)  # denoising has begun
    job_id = page.locator("#codex-status code").first.inner_text()
    # the service's previews (every 2 steps) show where the image will be: latent-sized (64 / 8), while it runs
    # read in the same tick as the wait: the next preview (2 steps later) replaces the element, and a fresh one
    # has not decoded yet
    shown = page.wait_for_function(
        "() => { const i = document.querySelector('#codex-gallery img'); return i && i.complete && i.naturalWidth > 0 "
        "&& i.alt.startsWith('preview') && [i.alt, i.naturalWidth, i.naturalHeight, i.src]; }", timeout=60_000)
    caption, width, height, src = shown.json_value()
    running = next(job for job in jobs(service) if job["id"] == job_id)
    assert [width, height] == [8, 8] and running["state"] == "running" and running["step"] < 1000
    assert src.endswith(".png")  # the service's PNG, not re-encoded lossily
    step = int(caption.removeprefix("preview · step ").split("/")[0])
    assert caption.endswith("/1000") and step % 2 == 0 and step <= running["step"]
    SCREENS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENS / "sd15-txt2img-preview.png", full_page=True)

    page.keyboard.press("Escape")  # interrupt: it stops at its next step, and its image is kept
    status = page.locator("#codex-status")
    expect(status).to_contain_text(f"{job_id} done (interrupted at step", timeout=60_000)
    page.wait_for_function("() => { const i = document.querySelector('#codex-gallery img'); "
                           "return i && i.complete && i.naturalWidth === 64 && !i.alt.startsWith('preview'); }")
    done = next(job for job in jobs(service) if job["id"] == job_id)
    stopped = done["result"]["info"]["interrupted_at_step"]
    assert done["state"] == "done" and step <= stopped < 1000 and done["result"]["files"][0].endswith("0000.png")
    expect(status).to_contain_text(f"step {stopped}/1000")
    expect(page.locator("#codex-info")).to_contain_text(f'"interrupted_at_step": {stopped}')

    page.keyboard.press("Control+Enter")  # the same run again, cancelled outright: nothing kept
    expect(status).not_to_contain_text(job_id)
    second = page.locator("#codex-status code").first.inner_text()
    page.wait_for_function("() => { const i = document.querySelector('#codex-gallery img'); "
                           "return i && i.alt.startsWith('preview'); }", timeout=60_000)  # it runs
    page.keyboard.press("Shift+Escape")
    expect(status).to_contain_text(f"{second} cancelled", timeout=60_000)
    row = page.locator("#codex-queue").get_by_role("row").filter(has_text=second)
    expect(row).to_contain_text("cancelled", timeout=10_000)
    cancelled = next(job for job in jobs(service) if job["id"] == second)
    assert cancelled["state"] == "cancelled" and not cancelled.get("result")
    expect(page.locator("#codex-gallery img")).to_have_count(0)  # its preview is not left as if a result


def test_switching_engine_changes_tabs_fields_and_samplers(page, service):
    def samplers() -> list[str]:
        field(page, "sampler").locator("input").click()
        names = [option.inner_text().strip() for option in page.get_by_role("option").all()]
        page.keyboard.press("Escape")
        return names

    expect(page.locator("#codex-tabs")).to_contain_text("upscale")
    assert tab_names(page) == ["txt2img", "img2img", "inpaint", "upscale", "PNG Info"]
    sd_fields, sd_samplers = field_names(page, "txt2img"), samplers()
    assert {"prompt", "width", "clip_skip", "sampler", "scheduler"} <= sd_fields
    assert {"Euler a", "DPM++ 2M", "DDIM"} <= set(sd_samplers)

    choose(page, "codex-engine", "flux — flux")
    expect(field(page, "max_sequence_length")).to_be_visible()
    expect(page.locator("#codex-tabs button[role=tab]", has_text="upscale")).to_be_hidden()
    assert tab_names(page) == ["txt2img", "img2img", "inpaint", "edit", "PNG Info"]
    flux_fields, flux_samplers = field_names(page, "txt2img"), samplers()
    assert "clip_skip" not in flux_fields and "max_sequence_length" in flux_fields
    served = httpx.get(service + "/v1/samplers/flux", timeout=10).json()
    assert sorted(flux_samplers) == sorted(row["sampler"] for row in served["samplers"])  # flow samplers only
    assert "Euler a" not in flux_samplers

    choose(page, "codex-engine", "svd — stable-video-diffusion")
    expect(field(page, "init_image", "img2vid")).to_be_visible()
    expect(page.locator("#codex-tabs button[role=tab]", has_text="txt2img")).to_be_hidden()
    assert tab_names(page) == ["img2vid", "PNG Info"]
    assert "prompt" not in field_names(page, "img2vid") and "init_image" in field_names(page, "img2vid")


def test_each_tab_is_captured(page, service):
    """A screenshot of every task tab of an image and a video engine, and of PNG Info (CI artifacts)."""
    SCREENS.mkdir(parents=True, exist_ok=True)
    taken = []
    for engine, label in (("sd15", "sd15 — stable-diffusion"), ("wan_ti2v_5b", "wan_ti2v_5b — wan2.2")):
        if engine != "sd15":
            choose(page, "codex-engine", label)
            expect(page.locator("#codex-tabs button[role=tab]", has_text="txt2vid")).to_be_visible()
        for name in tab_names(page):
            page.locator("#codex-tabs button[role=tab]", has_text=name).click()
            page.wait_for_timeout(300)
            path = SCREENS / f"{engine}-{name.replace(' ', '_')}.png"
            page.screenshot(path=path, full_page=True)
            taken.append(path)
    assert len(taken) == 5 + 3
    for path in taken:
        with Image.open(path) as image:
            assert image.width == 1400 and image.height > 600


def test_png_info_reads_a_codex_png_and_sends_its_request_to_the_tab(page, service, tmp_path):
    request = {"prompt": "from png info", "width": 32, "height": 32, "steps": 2, "seed": 9}
    spec = {"engine": "sd15", "task": "txt2img", "request": request, "model": "tiny"}
    job = httpx.post(service + "/v1/jobs", json=spec, timeout=30).json()
    deadline = time.monotonic() + 120
    while (found := httpx.get(f"{service}/v1/jobs/{job['id']}", timeout=10).json())["state"] not in ("done", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert found["state"] == "done", found
    png = tmp_path / "made.png"
    png.write_bytes(httpx.get(f"{service}/v1/jobs/{job['id']}/files/0000.png", timeout=10).content)

    page.locator("#codex-tabs button[role=tab]", has_text="PNG Info").click()
    page.locator("#codex-pnginfo-file input[type=file]").set_input_files(str(png))
    expect(page.locator("#codex-pnginfo-text textarea")).to_have_value(png_text(png)["parameters"])
    page.locator("#codex-pnginfo-send").click()
    expect(page.locator("#codex-status")).to_contain_text("Sent to txt2img")
    expect(page.locator("#codex-request .cm-content")).to_contain_text('"prompt": "from png info"')
    assert json.loads(page.locator("#codex-request .cm-content").inner_text()) == request
    expect(field(page, "prompt").locator("textarea")).to_have_value("from png info")


def test_a_mode_the_checkpoint_does_not_support_says_why(page, service):
    choose(page, "codex-model", "tiny (random weights, for tests)")
    choose(page, "codex-mode", "lcm")
    expect(page.locator("#codex-request .cm-content")).to_contain_text('"mode": "lcm"')
    fill(page, SMALL)
    page.keyboard.press("Control+Enter")
    status = page.locator("#codex-status")
    expect(status).to_contain_text("mode 'lcm' is not supported by the checkpoint")
    expect(status).to_contain_text("done", timeout=90_000)
    expect(page.locator("#codex-info")).to_contain_text("mode_ignored_reason")
    expect(page.locator("#codex-info")).to_contain_text('"mode": "normal"')


def test_esc_cancels_a_queued_job_and_alt_enter_skips_the_running_job_and_the_next_one_runs(page, service):
    def post(request):
        spec = {"engine": "sd15", "task": "txt2img", "model": "tiny", "request": request}
        return httpx.post(service + "/v1/jobs", json=spec, timeout=30).json()["id"]

    long_id = post({"prompt": "x", "width": 64, "height": 64, "steps": 1000, "seed": 2})
    next_id = post(SMALL)
    deadline = time.monotonic() + 90
    while not (httpx.get(f"{service}/v1/jobs/{long_id}", timeout=10).json().get("step") or 0):
        assert time.monotonic() < deadline, "the long job did not start"
        time.sleep(0.2)
    # this page's job waits behind them: Esc has nothing to keep of it, and cancels it
    choose(page, "codex-model", "tiny (random weights, for tests)")
    fill(page, SMALL)
    page.keyboard.press("Control+Enter")
    expect(page.locator("#codex-status")).to_contain_text("queued (position")
    mine = page.locator("#codex-status code").first.inner_text()
    page.keyboard.press("Escape")
    expect(page.locator("#codex-status")).to_contain_text(f"{mine} cancelled", timeout=30_000)
    assert httpx.get(f"{service}/v1/jobs/{mine}", timeout=10).json()["state"] == "cancelled"
    assert httpx.get(f"{service}/v1/jobs/{long_id}", timeout=10).json()["state"] == "running"
    page.locator("body").press("Alt+Enter")
    expect(page.locator("#codex-status")).to_contain_text(f"Skipped {long_id}")
    expect(page.locator("#codex-queue").get_by_role("row").filter(has_text=long_id)).to_contain_text("cancelled", timeout=30_000)
    expect(page.locator("#codex-queue").get_by_role("row").filter(has_text=next_id)).to_contain_text("done", timeout=90_000)


def test_reuse_seed(page, service):
    # Send to img2img is not tested here: in some test orders the img2img request it sets is lost
    # before the tab is opened (open in issue 12's note)
    choose(page, "codex-model", "tiny (random weights, for tests)")
    fill(page, {"prompt": "a fox", "width": 32, "height": 32, "steps": 2})
    page.keyboard.press("Control+Enter")
    expect(page.locator("#codex-status")).to_contain_text("done", timeout=90_000)
    seed = httpx.get(service + "/v1/jobs", timeout=10).json()[0]["result"]["info"]["seed"]
    page.locator("#codex-reuse-seed").click()
    expect(page.locator("#codex-request .cm-content")).to_contain_text(f'"seed": {seed}')
    expect(field(page, "seed").locator("input")).to_have_value(str(seed))


def test_a_request_typed_into_the_json_panel_is_what_runs(page, service):
    choose(page, "codex-model", "tiny (random weights, for tests)")
    typed = {"prompt": "typed as JSON", "width": 40, "height": 32, "steps": 2, "seed": 12}
    editor = page.locator("#codex-request .cm-content")
    editor.click()
    page.keyboard.press("Control+A")
    page.keyboard.type(json.dumps(typed))
    page.keyboard.press("Control+Enter")  # from inside the editor
    expect(page.locator("#codex-status")).to_contain_text("done", timeout=90_000)
    latest = httpx.get(service + "/v1/jobs", timeout=10).json()[0]
    assert latest["spec"]["request"] == typed and latest["result"]["info"]["request_in"] == typed
    expect(field(page, "width").locator("input")).to_have_value("40")  # the form shows what the panel said


def test_img2img_uploads_the_image_and_inpaint_paints_the_mask(page, service, tmp_path):
    source = tmp_path / "in.png"
    Image.new("RGB", (64, 64), (200, 100, 50)).save(source)
    choose(page, "codex-model", "tiny (random weights, for tests)")
    panel = page.locator("#codex-request .cm-content")

    page.locator("#codex-tabs button[role=tab]", has_text="img2img").click()
    field(page, "init_image", "img2img").locator("input[type=file]").set_input_files(str(source))
    expect(panel).to_contain_text('"init_image"')
    uploaded = Path(json.loads(panel.inner_text())["init_image"])
    assert uploaded.read_bytes() == source.read_bytes()  # the service keeps the bytes it was sent

    page.locator("#codex-tabs button[role=tab]", has_text="inpaint").click()
    editor = field(page, "init_image", "inpaint")
    editor.locator("input[type=file]").first.set_input_files(str(source))
    expect(panel).to_contain_text('"init_image"')
    box = editor.locator("canvas").first.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.45)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.55, box["y"] + box["height"] * 0.55, steps=10)
    page.mouse.up()
    page.locator("#codex-inpaint-use-mask").click()
    expect(panel).to_contain_text('"mask_image"')
    with Image.open(json.loads(panel.inner_text())["mask_image"]) as mask:
        assert mask.size == (64, 64)
        painted = mask.histogram()[255]
    assert 0 < painted < 64 * 64  # the stroke, not the whole image
    fill(page, {"prompt": "a patch", "steps": 2, "seed": 4}, "inpaint")
    page.keyboard.press("Control+Enter")
    expect(page.locator("#codex-status")).to_contain_text("done", timeout=90_000)
    latest = httpx.get(service + "/v1/jobs", timeout=10).json()[0]
    assert latest["spec"]["task"] == "inpaint" and latest["state"] == "done"
    SCREENS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENS / "sd15-inpaint-result.png", full_page=True)


def test_send_to_img2img_carries_the_image_and_prompt(page, service):
    choose(page, "codex-model", "tiny (random weights, for tests)")
    fill(page, {"prompt": "a fox", "width": 32, "height": 32, "steps": 2})
    page.keyboard.press("Control+Enter")
    expect(page.locator("#codex-status")).to_contain_text("done", timeout=90_000)
    page.locator("#codex-send-img2img").click()
    expect(page.locator("#codex-status")).to_contain_text("Sent to img2img")
    # the img2img tab is the one shown, and its request has the image and the prompt
    expect(page.locator("#codex-tabs button[role=tab][aria-selected=true]")).to_have_text("img2img")
    panel = page.locator("#codex-request .cm-content")
    expect(panel).to_contain_text('"init_image"')
    expect(field(page, "prompt", "img2img").locator("textarea")).to_have_value("a fox")
    # the other tabs' forms mount too (their text boxes report their values): the panel and the task stay
    time.sleep(2)
    sent = json.loads(panel.inner_text())
    assert sent["prompt"] == "a fox" and Path(sent["init_image"]).name.endswith(".png")
    page.keyboard.press("Control+Enter")  # at once, as sent: the img2img request runs
    expect(page.locator("#codex-status")).to_contain_text("done", timeout=90_000)
    latest = httpx.get(service + "/v1/jobs", timeout=10).json()[0]
    assert latest["spec"]["task"] == "img2img" and latest["state"] == "done"
    assert latest["result"]["info"]["request"]["init_image"] == sent["init_image"]
    assert latest["result"]["info"]["request"]["prompt"] == "a fox"


def options(page: Page, dropdown) -> list[str]:
    """The options a dropdown offers once opened (its own list: another dropdown's may still be in the page)."""
    box = dropdown.locator("input").first
    box.click()
    listbox = page.locator(f"#{box.get_attribute('aria-controls')}")
    expect(listbox.get_by_role("option").first).to_be_visible()
    return [option.inner_text().strip().lstrip("✓").strip() for option in listbox.get_by_role("option").all()]


def test_the_lora_and_vae_pickers_offer_the_models_folders_and_the_run_uses_what_was_picked(page, service):
    listed = httpx.get(service + "/v1/models", params={"engine": "sd15", "kind": "loras"}, timeout=30).json()
    assert [row["name"] for row in listed] == ["ink"]  # the service lists the folder's LoRA for sd15
    choose(page, "codex-model", "tiny (random weights, for tests)")
    panel = page.locator("#codex-request .cm-content")
    loras, vae = field(page, "loras"), field(page, "vae")
    assert options(page, loras) == ["ink"]
    page.get_by_role("option", name="ink", exact=True).click()
    expect(panel).to_contain_text('"name": "ink"')
    assert json.loads(panel.inner_text()) == {"loras": [{"name": "ink", "scale": 1.0}]}
    scale = field(page, "loras-scale-0")
    expect(scale).to_contain_text("ink scale")
    scale.locator("input[type=number]").fill("0.6")
    scale.locator("input[type=number]").press("Tab")
    expect(panel).to_contain_text('"scale": 0.6')
    assert options(page, vae) == ["the checkpoint's own", "bright-vae"]
    page.get_by_role("option", name="bright-vae", exact=True).click()
    expect(panel).to_contain_text('"vae": "bright-vae"')
    shown = fill(page, SMALL)
    assert shown == {"loras": [{"name": "ink", "scale": 0.6}], "vae": "bright-vae", **SMALL}

    page.keyboard.press("Control+Enter")
    expect(page.locator("#codex-status")).to_contain_text("done", timeout=90_000)
    info = page.locator("#codex-info")
    expect(info).to_contain_text('"vae": "bright-vae"')
    expect(info).to_contain_text('"name": "ink"')
    latest = jobs(service)[0]["result"]["info"]
    assert latest["request_in"] == shown
    files = latest["model"]["files"]  # what the run loaded: the folder's files, the LoRA at its scale
    assert files["lora:ink"]["scale"] == 0.6 and files["lora:ink"]["path"].endswith("loras/ink.safetensors")
    assert files["vae"]["path"].endswith("vae/bright-vae.safetensors")

    # the panel edited by hand: the pickers show it; a chip removed takes its LoRA out of the request
    editor = page.locator("#codex-request .cm-content")
    editor.click()
    page.keyboard.press("Control+A")
    page.keyboard.type(json.dumps({**SMALL, "loras": [{"name": "ink", "scale": 0.25}]}))
    page.locator("#codex-status").click()  # the panel is taken when it loses focus
    expect(field(page, "loras-scale-0").locator("input[type=number]")).to_have_value("0.25")
    expect(vae.locator("input")).to_have_value("the checkpoint's own")
    loras.locator(".token").filter(has_text="ink").locator(".token-remove, [role=button]").first.click()
    expect(panel).not_to_contain_text("loras")
    expect(field(page, "loras-scale-0")).to_be_hidden()
    assert json.loads(panel.inner_text()) == SMALL


def test_the_controlnet_panel_previews_canny_refuses_a_bad_window_and_generates_as_the_cli_does(page, service,
                                                                                              tmp_path):
    """sd15's ControlNet panel, on the tiny model and the models folder's tiny ControlNet: an uploaded control image
    (which enables its unit) through canny at the thresholds set; Preview shows OpenCV's canny of the upload. A start
    after end is refused before anything runs, said next to the unit; corrected, Generate runs it: the info records
    the control and its preprocessed image (the preview's pixels), and the image is the one `codex run` makes of the
    same request."""
    import cv2
    import numpy as np

    from codex_core.testing import write_test_image

    source = Path(write_test_image(tmp_path / "control.png", (64, 64), seed=3))
    choose(page, "codex-model", "tiny (random weights, for tests)")
    panel = page.locator("#codex-request .cm-content")
    page.locator("#codex-field-txt2img-controls .label-wrap").first.click()  # the panel opens
    unit = "codex-control-txt2img"  # the editor of the unit selected (unit 0 at first)
    page.locator(f"#{unit}-image input[type=file]").set_input_files(str(source))
    sent = wait_for(lambda: (json.loads(panel.inner_text() or "{}").get("controls") or [{}])[0].get("image"),
                    "the control image in the request", 60)
    assert Path(sent).read_bytes() == source.read_bytes()  # the service's copy of the upload
    expect(page.locator(f"#{unit}-enable input")).to_be_checked()  # an upload enables its unit
    choose(page, f"{unit}-preprocess", "canny")
    expect(page.locator(f"#{unit}-canny-params")).to_be_visible()
    for name, value in (("low_threshold", 50), ("high_threshold", 150)):
        box = page.locator(f"#{unit}-canny-{name} input[type=number]")
        box.fill(str(value))
        box.press("Tab")
        expect(panel).to_contain_text(f'"{name}": {value}')
    page.locator(f"#{unit}-preview-button").click()
    page.wait_for_function(f"() => {{ const i = document.querySelector('#{unit}-preview img'); "
                           "return i && i.complete && i.naturalWidth > 0; }")
    expect(page.locator(f"#{unit}-note")).to_contain_text("canny: 64x64")
    preview = httpx.get(page.locator(f"#{unit}-preview img").get_attribute("src"), timeout=10).content
    expected = cv2.Canny(np.asarray(Image.open(source).convert("RGB")), 50, 150)
    with Image.open(io.BytesIO(preview)) as shown:
        previewed = np.asarray(shown.convert("RGB"))
    assert previewed.shape == (64, 64, 3) and (previewed == expected[..., None]).all()
    assert 0 < (expected > 0).mean() < 1  # edges, not a blank or a full image
    choose(page, f"{unit}-model", "tiny-canny")
    expect(panel).to_contain_text('"model": "tiny-canny"')
    selector = page.locator(f"#{unit}-unit")
    expect(selector).to_contain_text("Unit 0 ✓")  # enabled
    selector.get_by_text("Unit 1", exact=True).click()  # another unit: empty, disabled, sending nothing
    expect(page.locator(f"#{unit}-enable input")).not_to_be_checked()
    expect(page.locator(f"#{unit}-preprocess input")).to_have_value("none")
    expect(page.locator(f"#{unit}-canny-params")).to_be_hidden()
    selector.get_by_text("Unit 0 ✓", exact=True).click()  # and back: what was set
    expect(page.locator(f"#{unit}-canny-low_threshold input[type=number]")).to_have_value("50")
    expect(page.locator(f"#{unit}-model input")).to_have_value("tiny-canny")
    for name, value in (("start", 0.9), ("end", 0.5)):
        box = page.locator(f"#{unit}-{name} input[type=number]")
        box.fill(str(value))
        box.press("Tab")
        expect(panel).to_contain_text(f'"{name}": {value}')
    request = {"prompt": "a lighthouse", "width": 64, "height": 64, "steps": 2, "seed": 5}
    fill(page, request)

    before = len(jobs(service))
    page.keyboard.press("Control+Enter")
    status = page.locator("#codex-status")
    expect(status).to_contain_text("Not queued")
    expect(status).to_contain_text("controls.0.start: got 0.9: 0.9 is after end (0.5)")
    # the forms made again (a render: seconds on a loaded machine), the problem next to its unit
    expect(page.locator(f"#{unit}-error")).to_contain_text("controls.0: start: got 0.9: 0.9 is after end (0.5)",
                                                           timeout=SLOW_UI)
    expect(page.locator(f"#{unit}-errors")).to_contain_text("1 control refused: controls.0")
    SCREENS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENS / "sd15-txt2img-controlnet-error.png", full_page=True)
    assert len(jobs(service)) == before
    end = page.locator(f"#{unit}-end input[type=number]")  # the unit, made again, keeps what was set
    expect(end).to_have_value("0.5")
    end.fill("1")
    end.press("Tab")
    expect(panel).to_contain_text('"end": 1')

    page.keyboard.press("Control+Enter")
    expect(status).to_contain_text("done", timeout=90_000)
    latest = jobs(service)[0]
    sent_request = latest["spec"]["request"]
    assert sent_request["controls"] == [{"image": sent, "preprocess": "canny", "model": "tiny-canny", "start": 0.9,
                                         "end": 1, "preprocess_params": {"low_threshold": 50, "high_threshold": 150}}]
    info = latest["result"]["info"]
    control = info["notes"]["controls"][0]
    assert (control["model"], control["preprocess"], control["start"], control["end"]) == ("tiny-canny", "canny", 0.9,
                                                                                           1.0)
    assert control["preprocess_params"] == {"low_threshold": 50, "high_threshold": 150}
    assert info["side_images"]["control-0-canny"]["width"] == 64 and "controlnet:0" in info["model"]["files"]
    side = httpx.get(f"{service}/v1/jobs/{latest['id']}/files/control-0-canny.png", timeout=10).content
    with Image.open(io.BytesIO(side)) as saved:
        assert (np.asarray(saved.convert("RGB")) == previewed).all()  # what was previewed is what the run used
    info_panel = page.locator("#codex-info")
    expect(info_panel).to_contain_text('"control-0-canny"')
    expect(info_panel).to_contain_text('"tiny-canny"')
    page.screenshot(path=SCREENS / "sd15-txt2img-controlnet-result.png", full_page=True)

    # the same request through the CLI, on the same models folder: the same pixels
    models = Path(httpx.get(f"{service}/v1/models", params={"kind": "controlnet"}, timeout=30).json()[0]["path"])
    ran = subprocess.run([CODEX, "run", "sd15", "txt2img", "--model", "tiny", "--quiet", "--out", str(tmp_path / "cli"),
                          "--json", json.dumps(sent_request)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "CODEX_MODELS_DIR": str(models.parent.parent)})
    assert ran.returncode == 0, ran.stderr
    made = httpx.get(f"{service}/v1/jobs/{latest['id']}/files/0000.png", timeout=10).content
    with Image.open(io.BytesIO(made)) as ui_image, Image.open(json.loads(ran.stdout)["info"]["outputs"][0]) as cli:
        assert np.array_equal(np.asarray(ui_image), np.asarray(cli))


def edit_tab(page: Page) -> None:
    """flux on its tiny model, its Edit tab open (FLUX.1 Kontext: one reference image)."""
    choose(page, "codex-engine", "flux — flux")
    expect(page.locator("#codex-tabs button[role=tab]", has_text="edit")).to_be_visible(timeout=SLOW_UI)
    choose(page, "codex-model", "tiny (random weights, for tests)")
    page.locator("#codex-tabs button[role=tab]", has_text="edit").click()
    expect(field(page, "images", "edit")).to_be_visible(timeout=SLOW_UI)


def test_the_edit_tab_edits_an_uploaded_image_at_the_size_info_gives(page, service, tmp_path):
    source = tmp_path / "wide.png"
    Image.new("RGB", (48, 32), (40, 120, 200)).save(source)
    edit_tab(page)
    note = page.locator("#codex-edit-images-note")
    expect(note).to_contain_text("1 reference image, in the order added; the first is the one edited", timeout=SLOW_UI)
    field(page, "images", "edit").locator("input[type=file]").set_input_files(str(source))
    panel = page.locator("#codex-request .cm-content")
    expect(panel).to_contain_text('"images"', timeout=SLOW_UI)
    uploaded = json.loads(panel.inner_text())["images"]
    assert len(uploaded) == 1 and Path(uploaded[0]).read_bytes() == source.read_bytes()  # the bytes sent
    # the image's aspect ratio at max_area 48x48 pixels, floored to 16: 48x32 (FluxKontextPipeline's rule)
    request = {"prompt": "make it red", "max_area": 2304, "steps": 2, "seed": 6, "max_sequence_length": 8}
    shown = fill(page, request, "edit")
    assert shown == {"images": uploaded, **request}
    page.keyboard.press("Control+Enter")
    expect(page.locator("#codex-status")).to_contain_text("done", timeout=120_000)
    page.wait_for_function("() => { const i = document.querySelector('#codex-gallery img'); "
                           "return i && i.complete && i.naturalWidth > 0 && !i.alt.startsWith('preview'); }")
    latest = jobs(service)[0]
    assert latest["spec"]["task"] == "edit" and latest["spec"]["request"] == shown  # the images went with it
    info = latest["result"]["info"]
    edit_size = info["notes"]["edit_size"]
    assert (edit_size["width"], edit_size["height"]) == (48, 32) and "FluxKontextPipeline's rule" in edit_size["rule"]
    assert info["request"]["images"] == uploaded
    shown_size = page.locator("#codex-gallery img").first.evaluate("i => [i.naturalWidth, i.naturalHeight]")
    assert shown_size == [edit_size["width"], edit_size["height"]]
    expect(page.locator("#codex-info")).to_contain_text('"edit_size"')
    SCREENS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENS / "flux-edit-result.png", full_page=True)


def test_the_edit_tab_says_when_there_are_no_images_or_more_than_the_engine_takes(page, service, tmp_path):
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(first)
    Image.new("RGB", (32, 32), (30, 200, 30)).save(second)
    edit_tab(page)
    before = len(jobs(service))
    fill(page, {"prompt": "x", "steps": 2}, "edit")
    page.keyboard.press("Control+Enter")
    status = page.locator("#codex-status")
    expect(status).to_contain_text("Not queued")
    expect(status).to_contain_text("images: add at least 1 reference image")
    expect(page.locator("#codex-edit-images-note")).to_contain_text("⚠ images: add at least 1 reference image")

    gallery = field(page, "images", "edit")
    gallery.locator("input[type=file]").set_input_files([str(first), str(second)])  # in this order
    note = page.locator("#codex-edit-images-note")
    expect(note).to_contain_text("2 images; flux takes at most 1 reference image: remove 1", timeout=SLOW_UI)
    panel = page.locator("#codex-request .cm-content")
    expect(panel).to_contain_text('"images"', timeout=SLOW_UI)
    sent = json.loads(panel.inner_text())["images"]
    assert [Path(path).read_bytes() for path in sent] == [first.read_bytes(), second.read_bytes()]  # order kept
    page.keyboard.press("Control+Enter")
    expect(status).to_contain_text("images: 2 images; flux takes at most 1 reference image")
    SCREENS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENS / "flux-edit-too-many.png", full_page=True)
    assert len(jobs(service)) == before  # nothing was sent

    gallery.locator("[aria-label='Delete image']").first.click(force=True)  # the first goes; the second stays
    expect(note).to_contain_text("images: 1 reference image, in the order added", timeout=SLOW_UI)
    expect(panel).not_to_contain_text(sent[0], timeout=SLOW_UI)
    assert json.loads(panel.inner_text())["images"] == sent[1:]
    gallery.locator("[aria-label='Clear']").first.click()
    expect(panel).not_to_contain_text('"images"', timeout=SLOW_UI)
    broken = tmp_path / "broken.png"
    broken.write_bytes(first.read_bytes()[:60])  # a PNG cut short: the service does not take it
    gallery.locator("input[type=file]").set_input_files(str(broken))
    expect(note).to_contain_text("⚠ images: the PNG image does not decode", timeout=SLOW_UI)
    assert "images" not in json.loads(panel.inner_text())


def test_the_edit_tab_sends_several_images_in_the_order_added_to_an_engine_that_takes_them(page, service, tmp_path):
    """The sleepy test engine takes up to three reference images and puts them side by side: its output shows the
    images it got, in order."""
    colours = [(220, 20, 20), (20, 220, 20), (20, 20, 220)]
    files = []
    for index, colour in enumerate(colours):
        files.append(tmp_path / f"{index}.png")
        Image.new("RGB", (16 + 8 * index, 16), colour).save(files[-1])
    choose(page, "codex-engine", "sleepy — test")
    expect(page.locator("#codex-tabs button[role=tab]", has_text="edit")).to_be_visible(timeout=SLOW_UI)
    choose(page, "codex-model", "tiny (random weights, for tests)")
    page.locator("#codex-tabs button[role=tab]", has_text="edit").click()
    note = page.locator("#codex-edit-images-note")
    expect(note).to_contain_text("up to 3 reference images, in the order added", timeout=SLOW_UI)
    gallery = field(page, "images", "edit")
    gallery.locator("input[type=file]").set_input_files([str(files[2]), str(files[0])])
    panel = page.locator("#codex-request .cm-content")
    # as a user would: the third once the first two show (an upload still in flight is replaced, not appended)
    wait_for(lambda: len(json.loads(panel.inner_text()).get("images", [])) == 2, "two images in the request", 30)
    gallery.locator("input[type=file]").last.set_input_files(str(files[1]))  # one more, added after them
    wait_for(lambda: len(json.loads(panel.inner_text()).get("images", [])) == 3, "three images in the request", 30)
    sent = json.loads(panel.inner_text())["images"]
    order = [files[2], files[0], files[1]]
    assert [Path(path).read_bytes() for path in sent] == [path.read_bytes() for path in order]
    fill(page, {"prompt": "side by side"}, "edit")
    page.keyboard.press("Control+Enter")
    expect(page.locator("#codex-status")).to_contain_text("done", timeout=60_000)
    latest = jobs(service)[0]
    assert latest["spec"]["engine"] == "sleepy" and latest["spec"]["request"]["images"] == sent
    page.wait_for_function("() => { const i = document.querySelector('#codex-gallery img'); "
                           "return i && i.complete && i.naturalWidth > 0; }")
    assert page.locator("#codex-gallery img").first.evaluate("i => [i.naturalWidth, i.naturalHeight]") == [72, 16]
    made = httpx.get(f"{service}/v1/jobs/{latest['id']}/files/0000.png", timeout=10).content
    with Image.open(io.BytesIO(made)) as image:  # left to right: the order added
        assert [image.getpixel((x, 8)) for x in (0, 32, 48)] == [colours[2], colours[0], colours[1]]
    SCREENS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENS / "sleepy-edit-three-images.png", full_page=True)

    gallery.locator("input[type=file]").last.set_input_files(str(files[0]))  # a fourth: one too many
    expect(note).to_contain_text("4 images; sleepy takes at most 3 reference images: remove 1", timeout=SLOW_UI)
    before = len(jobs(service))
    page.keyboard.press("Control+Enter")
    expect(page.locator("#codex-status")).to_contain_text("Not queued")
    assert len(jobs(service)) == before
