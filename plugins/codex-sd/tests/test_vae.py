"""The request's `vae` on sd15: a VAE file (A1111 layout) or folder for one run, as diffusers would use it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, StableDiffusionPipeline
from safetensors.torch import save_file

from codex_diffusers.testing.checkpoint_writers import _vae_to_ldm
from codex_diffusers.testing import cli_run, direct_pipe, pixels, run_json, tiny_model_dir

REQUEST = {"prompt": "a boat", "seed": 4, "width": 32, "height": 32, "steps": 2, "cfg": 7.0, "sampler": "DPM++ 2M",
           "scheduler": "Karras"}


@pytest.fixture(scope="module")
def other_vae(tmp_path_factory):
    """The tiny VAE with a brighter decoder, as a diffusers folder and as an A1111-layout file."""
    root = tmp_path_factory.mktemp("vae")
    vae = AutoencoderKL.from_pretrained(tiny_model_dir("sd15"), subfolder="vae")
    with torch.no_grad():
        vae.decoder.conv_out.bias += 0.3
    vae.save_pretrained(root / "folder")
    state, config = vae.state_dict(), dict(vae.config)
    save_file({k: v.contiguous() for k, v in _vae_to_ldm(state, config).items()}, root / "bright-vae.safetensors")
    return {"vae": vae, "folder": root / "folder", "file": root / "bright-vae.safetensors"}


def direct(vae) -> np.ndarray:
    pipe, config = direct_pipe(StableDiffusionPipeline, tiny_model_dir("sd15"), safety_checker=None,
                               feature_extractor=None, requires_safety_checker=False)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", solver_order=2,
                                                             use_karras_sigmas=True)
    own = pipe.vae
    pipe.vae = vae
    try:
        result = pipe(prompt="a boat", width=32, height=32, num_inference_steps=2, guidance_scale=7.0,
                      generator=torch.Generator("cpu").manual_seed(4))
    finally:
        pipe.vae = own
    return pixels(result.images[0])


def test_a_vae_file_by_name_and_a_vae_folder_give_diffusers_pixels_and_the_next_run_is_clean(other_vae, tmp_path,
                                                                                             monkeypatch):
    models = tmp_path / "models"
    (models / "vae").mkdir(parents=True)
    (models / "vae" / "bright-vae.safetensors").write_bytes(other_vae["file"].read_bytes())
    monkeypatch.setenv("CODEX_MODELS_DIR", str(models))
    base = run_json("sd15", "txt2img", REQUEST, tmp_path / "base")
    by_name = run_json("sd15", "txt2img", {**REQUEST, "vae": "bright-vae"}, tmp_path / "a")
    expected = direct(other_vae["vae"])
    assert np.array_equal(pixels(by_name["files"][0]), expected)
    assert not np.array_equal(pixels(base["files"][0]), expected)
    folder = run_json("sd15", "txt2img", {**REQUEST, "vae": str(other_vae["folder"])}, tmp_path / "b")
    assert np.array_equal(pixels(folder["files"][0]), expected)
    again = run_json("sd15", "txt2img", REQUEST, tmp_path / "c")
    assert np.array_equal(pixels(again["files"][0]), pixels(base["files"][0]))
    record = by_name["info"]["model"]["files"]["vae"]
    parameters = cli_run(["info", by_name["files"][0], "--parameters"]).stdout
    assert f"VAE hash: {record['hash']}, VAE: bright-vae.safetensors" in parameters


@pytest.mark.parametrize("vae, message", [("nowhere", "vae: got 'nowhere': no such file or folder 'nowhere'"),
                                          ("vae.ckpt", "no such file")])
def test_a_missing_vae_exits_2_naming_the_field(vae, message, tmp_path):
    result = cli_run(["run", "sd15", "txt2img", "--model", "tiny", "--json", json.dumps({**REQUEST, "vae": vae})])
    assert result.exit_code == 2 and message in result.stderr
