"""Live previews and stopping early, in the kit: the projection is the coefficients' product, the latents
are mapped into the coefficients' space and unpacked as each pipeline does, and a run asked to stop early
gives the pixels of a direct diffusers call interrupted at the same step."""

from __future__ import annotations

import inspect
import io
import json
from pathlib import Path
from types import SimpleNamespace

import diffusers
import numpy as np
import pytest
import torch
from PIL import Image

from codex_core import RunOptions, get_engine, run
from codex_core.testing import tiny_model_dir
from codex_diffusers import DiffusersEngine, reference_config_dir
from codex_diffusers.latent_rgb import FORMATS, SD15
from codex_diffusers.previews import MAX_SIDE, Previewer, normalisation, previewer_for

ENGINES = ("sd15", "sdxl", "flux", "hunyuan_video", "ltx_video", "svd", "wan_ti2v_5b", "wan_t2v_14b", "wan_i2v_14b")


def fake_vae(config: dict, **buffers):
    return SimpleNamespace(config=config, _buffers=buffers)


def decoded(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_the_projection_of_known_latents_is_the_coefficients_product():
    latent = torch.tensor([[[0.5, -1.0], [2.0, 0.0]], [[1.0, 0.25], [-0.5, 0.0]],
                           [[-2.0, 0.5], [0.75, 0.0]], [[0.0, 1.5], [-1.0, 0.0]]])  # [C=4, h=2, w=2]
    png, width, height = Previewer(SD15, fake_vae({"scaling_factor": 0.18215}), lambda z: z)(latent)
    factors = np.array(SD15.factors)
    rgb = np.einsum("chw,cr->hwr", latent.numpy().astype(np.float64), factors)  # SD 1.5 has no bias
    expected = np.floor(np.clip((rgb + 1) / 2, 0, 1) * 255)
    assert (width, height) == (2, 2) and decoded(png).shape == (2, 2, 3)
    assert np.abs(decoded(png).astype(int) - expected).max() <= 1  # float32 vs float64 at a rounding edge
    assert decoded(png)[1, 1].tolist() == [127, 127, 127]  # a zero latent pixel: mid-grey


def test_latents_normalised_otherwise_are_mapped_into_the_coefficients_space():
    """Tiny flux's VAE says scaling 1.5035, shift 0.0609; FLUX.1's (the coefficients') 0.3611, 0.1159: the
    previewer undoes the pipeline's normalisation and applies the coefficients' own, exactly."""
    flux, vae = FORMATS["flux"], fake_vae({"scaling_factor": 1.5035, "shift_factor": 0.0609})
    z = torch.randn(16, 3, 5, generator=torch.Generator().manual_seed(0))
    in_space = ((z / 1.5035 + 0.0609) - 0.1159) * 0.3611
    a, b = normalisation(flux, vae)
    assert torch.allclose(a[:, None, None] * z + b[:, None, None], in_space, atol=1e-6)
    made = Previewer(flux, vae, lambda latents: latents)(z)
    direct = Previewer(flux, fake_vae({"scaling_factor": 0.3611, "shift_factor": 0.1159}), lambda latents: latents)
    assert np.abs(decoded(made[0]).astype(int) - decoded(direct(in_space)[0]).astype(int)).max() <= 1


def vae_config_of(folder: Path) -> dict:
    """A shipped vae/config.json with its class's defaults filled in, as the loaded VAE's config has them."""
    config = json.loads((folder / "vae" / "config.json").read_text())
    signature = inspect.signature(getattr(diffusers, config["_class_name"]).__init__)
    defaults = {name: p.default for name, p in signature.parameters.items() if p.default is not inspect.Parameter.empty}
    return {**defaults, **config}


# sd35: the SD3 VAE unchanged in 3.5; krea2: the Qwen-Image VAE normalises with Wan 2.1's statistics (wan21)
@pytest.mark.parametrize("engine_key", ["sd15", "sdxl", "flux", "hunyuan_video", "wan_ti2v_5b", "wan_t2v_14b", "sd35",
                                        "krea2"])
def test_the_published_checkpoints_latents_are_the_coefficients_space(engine_key):
    """Canary: the reference checkpoints' VAE configs normalise latents exactly as the coefficients assume (the map
    is the identity), and have the coefficients' channels: a changed config would show here."""
    engine = get_engine(engine_key)
    folder = reference_config_dir(engine_key)
    config, fmt = vae_config_of(folder), FORMATS[engine.latent_format]
    assert (config.get("latent_channels") or config.get("z_dim")) == fmt.channels
    a, b = normalisation(fmt, fake_vae(config))
    assert torch.allclose(a, torch.ones(fmt.channels), atol=1e-4) and torch.allclose(b, torch.zeros(fmt.channels),
                                                                                       atol=1e-4)


def test_every_engine_names_coefficients_and_the_pipelines_that_cannot_stop_early_are_known():
    """Each engine's format exists; every pipeline class it runs has diffusers' interrupt flag, but SVD's (it runs
    to the end when asked to stop: the README says so)."""
    without = set()
    for key in ENGINES:
        engine = get_engine(key)
        assert isinstance(engine, DiffusersEngine) and engine.latent_format in FORMATS, key
        for name in engine.pipelines.values():
            if not isinstance(getattr(getattr(diffusers, name), "interrupt", None), property):
                without.add(name)
    assert without == {"StableVideoDiffusionPipeline"}


def test_packed_and_video_latents_come_back_as_one_images_channels():
    """Flux and LTX pack their latents: unpacked as their pipelines do (the first image, the newest frame);
    SVD orders frames before channels; the other videos give their newest frame."""
    known = torch.arange(2 * 16 * 8 * 6, dtype=torch.float32).reshape(2, 16, 8, 6)  # [B, C, h, w]
    flux_pipe = SimpleNamespace(_unpack_latents=diffusers.FluxPipeline._unpack_latents, vae_scale_factor=8)
    packed = diffusers.FluxPipeline._pack_latents(known, 2, 16, 8, 6)
    job = SimpleNamespace(params=get_engine("flux").params_model("txt2img").model_construct(width=48, height=64))
    assert torch.equal(get_engine("flux").preview_latents(flux_pipe, packed, job), known[0])

    video = torch.randn(1, 128, 3, 2, 4, generator=torch.Generator().manual_seed(1))  # [B, C, F, h, w]
    ltx = diffusers.LTXPipeline
    ltx_pipe = SimpleNamespace(_unpack_latents=ltx._unpack_latents, vae_temporal_compression_ratio=8,
                               vae_spatial_compression_ratio=32, transformer_spatial_patch_size=1,
                               transformer_temporal_patch_size=1)
    ltx_job = SimpleNamespace(params=get_engine("ltx_video").params_model("txt2vid").model_construct(
        width=128, height=64, num_frames=17))
    assert torch.equal(get_engine("ltx_video").preview_latents(ltx_pipe, ltx._pack_latents(video, 1, 1), ltx_job),
                       video[0, :, -1])
    svd = torch.randn(1, 5, 4, 3, 3)  # [B, F, C, h, w]
    assert torch.equal(get_engine("svd").preview_latents(None, svd, None), svd[0, -1])
    wan = torch.randn(1, 16, 3, 4, 4)
    assert torch.equal(get_engine("wan_t2v_14b").preview_latents(None, wan, None), wan[0, :, -1])


def test_a_preview_is_at_most_max_side_and_none_when_the_channels_do_not_match():
    png, width, height = Previewer(SD15, fake_vae({"scaling_factor": 0.18215}), lambda z: z)(torch.zeros(4, 512, 1024))
    assert (width, height) == (MAX_SIDE, MAX_SIDE // 2) and decoded(png).shape == (MAX_SIDE // 2, MAX_SIDE, 3)
    assert Previewer(SD15, fake_vae({}), lambda z: z)(torch.zeros(16, 4, 4)) is None
    # tiny flux's VAE has 1 latent channel, FLUX.1's 16: no previewer, no previews
    job = SimpleNamespace(progress=SimpleNamespace(preview_every=1))
    pipe = SimpleNamespace(vae=fake_vae({"latent_channels": 1}))
    assert previewer_for(get_engine("flux"), pipe, job) is None
    assert previewer_for(get_engine("sd15"), SimpleNamespace(vae=fake_vae({"latent_channels": 4})), job) is not None


def test_previews_come_every_n_steps_only_when_asked(tmp_path):
    events: list[dict] = []
    request = {"prompt": "a fox", "width": 64, "height": 64, "steps": 5, "seed": 2}
    plain = run("sd15", "txt2img", request, RunOptions(model="tiny", out=tmp_path, quiet=True,
                                                        on_progress=events.append))
    assert [e for e in events if e["type"] == "preview"] == [] and [e["done"] for e in events
                                                                   if e["type"] == "step"][-1] == 5
    events.clear()
    previewed = run("sd15", "txt2img", request, RunOptions(model="tiny", out=tmp_path, quiet=True,
                                                            on_progress=events.append, preview_every=2))
    previews = [e for e in events if e["type"] == "preview"]
    assert [(e["step"], e["total"]) for e in previews] == [(2, 5), (4, 5)]  # never the last step
    for event in previews:  # latent-sized: 1/8 of the output's sides, as the event says
        assert decoded(event["png"]).shape == (event["height"], event["width"], 3) == (8, 8, 3)
    assert np.array_equal(decoded(Path(plain.files[0]).read_bytes()), decoded(Path(previewed.files[0]).read_bytes()))
    # what the previews cost is in info.timings, within the denoising time
    assert "preview" not in plain.info["timings"]
    assert 0 < previewed.info["timings"]["preview"] < previewed.info["timings"]["denoise"]


@pytest.mark.parametrize("stop_at", [1, 4])
def test_a_run_stopped_early_is_a_direct_call_interrupted_at_that_step(tmp_path, stop_at):
    steps: list[int] = []
    request = {"prompt": "a fox", "width": 64, "height": 64, "steps": 10, "seed": 3, "sampler": "Euler a", "cfg": 6.0}
    result = run("sd15", "txt2img", request, RunOptions(
        model="tiny", out=tmp_path, quiet=True, on_progress=lambda e: e["type"] == "step" and steps.append(e["done"]),
        stop_early=lambda: bool(steps) and steps[-1] >= stop_at))
    assert (result.info["interrupted_at_step"], result.info["steps_planned"], result.info["steps_done"]) == (
        stop_at, 10, stop_at)
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(str(tiny_model_dir("sd15")), safety_checker=None,
                                                             requires_safety_checker=False)
    pipe.scheduler = diffusers.EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)

    def interrupt(pipeline, index, timestep, kwargs):
        if index + 1 == stop_at:
            pipeline._interrupt = True
        return kwargs

    direct = pipe("a fox", width=64, height=64, num_inference_steps=10, guidance_scale=6.0,
                  generator=torch.Generator("cpu").manual_seed(3), callback_on_step_end=interrupt).images[0]
    assert np.array_equal(decoded(Path(result.files[0]).read_bytes()), np.asarray(direct))
