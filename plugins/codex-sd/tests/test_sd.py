"""sd15 and sdxl on tiny random-weight models: every task equals a direct diffusers call."""

from __future__ import annotations

import json

import numpy as np
import pytest
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
)
from PIL import Image

from codex_diffusers.testing import (  # noqa: F401  (pytest_generate_tests parametrises the suite)
    direct_pipe,
    loaded_family,
    EngineConformance,
    pixels,
    pytest_generate_tests,
    seed_generators,
    run_json,
    tiny_model_dir,
    write_test_image,
)

# What the sampler names in the cases below must mean, written out independently of codex's table.
SCHEDULERS = {
    ("DPM++ 2M", "Karras"): (DPMSolverMultistepScheduler,
                             {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True}),
    ("Euler a", "Automatic"): (EulerAncestralDiscreteScheduler, {}),
    ("DDIM", "Simple"): (DDIMScheduler, {"timestep_spacing": "trailing"}),
}

class _StableDiffusionDirect(EngineConformance):
    classes: dict[str, type] = {}
    overrides: dict = {}

    def direct(self, task, request, model_dir):
        pipe, checkpoint_config = direct_pipe(self.classes[task], model_dir, **self.overrides)
        scheduler_cls, flags = SCHEDULERS[(request["sampler"], request["scheduler"])]
        pipe.scheduler = scheduler_cls.from_config(checkpoint_config, **flags)
        kwargs = dict(prompt=request["prompt"], negative_prompt=request["negative_prompt"] or None,
                      num_inference_steps=request["steps"], guidance_scale=request["cfg"],
                      num_images_per_prompt=request["batch_size"],
                      generator=seed_generators(request))
        if task == "txt2img":
            kwargs.update(width=request["width"], height=request["height"])
        elif task in ("img2img", "inpaint"):
            kwargs.update(image=Image.open(request["init_image"]).convert("RGB"), strength=request["strength"])
            if task == "inpaint":
                kwargs.update(mask_image=Image.open(request["mask_image"]).convert("L"), width=64, height=64)
        elif task == "upscale":
            image = Image.open(request["init_image"]).convert("RGB")
            size = (int(image.width * request["upscale_factor"]), int(image.height * request["upscale_factor"]))
            kwargs.update(image=image.resize(size, Image.Resampling.LANCZOS), strength=request["strength"])
        return pipe(**kwargs).images


SD_CASES = {
    # txt2img takes sampler/scheduler from the preset (DPM++ 2M Karras) and makes a batch of two
    "txt2img": {"prompt": "a red fox in snow", "negative_prompt": "blurry", "width": 64, "height": 48,
                "steps": 3, "seed": 42, "batch_size": 2},
    "img2img": {"prompt": "a fox, winter", "init_image": "{tmp}/init.png", "strength": 0.6, "steps": 4,
                "seed": 7, "sampler": "Euler a"},
    "inpaint": {"prompt": "a cat", "init_image": "{tmp}/init.png", "mask_image": "{tmp}/mask.png",
                "strength": 0.8, "steps": 3, "seed": 5, "sampler": "DDIM", "scheduler": "Simple"},
    "upscale": {"prompt": "sharp details", "init_image": "{tmp}/small.png", "upscale_factor": 2.0,
                "steps": 4, "seed": 9},
}

BAD_REQUESTS = [
    ("wrong_type", "txt2img", {"prompt": "x", "steps": "20"}, "steps"),
    ("bool_is_not_int", "txt2img", {"prompt": "x", "batch_size": True}, "batch_size"),
    ("unknown_key", "txt2img", {"prompt": "x", "step": 20}, "did you mean 'steps'"),
    ("out_of_range", "txt2img", {"prompt": "x", "cfg": 100.0}, "cfg"),
    ("missing_field", "txt2img", {"seed": 1}, "prompt"),
    ("size_off_stride", "txt2img", {"prompt": "x", "width": 100}, "nearest valid values: 96 or 104"),
    ("bad_image_path", "img2img", {"prompt": "x", "init_image": "{tmp}/missing.png"}, "init_image"),
    ("not_an_image", "img2img", {"prompt": "x", "init_image": "{tmp}/out"}, "init_image"),
    ("unknown_sampler", "txt2img", {"prompt": "x", "sampler": "Euler z"}, "sampler"),
    ("schedule_not_for_sampler", "txt2img", {"prompt": "x", "sampler": "Euler a", "scheduler": "Karras"},
     "scheduler"),
    ("width_without_height", "img2img", {"prompt": "x", "init_image": "{tmp}/init.png", "width": 64}, "height"),
    ("mask_size_mismatch", "inpaint", {"prompt": "x", "init_image": "{tmp}/init.png",
                                       "mask_image": "{tmp}/small.png"}, "mask_image"),
    ("upscale_off_stride", "upscale", {"prompt": "x", "init_image": "{tmp}/small.png", "upscale_factor": 1.1},
     "upscale_factor"),
]


# the field check: A1111 syntax differs from plain text only on a prompt that uses it
PROMPT_SYNTAX_CHANGE = {"prompt_syntax": ("plain", {"prompt": "a (red:1.3) fox"})}


class TestSD15(_StableDiffusionDirect):
    engine = "sd15"
    cases = SD_CASES
    bad_requests = BAD_REQUESTS
    field_changes = PROMPT_SYNTAX_CHANGE
    classes = {"txt2img": StableDiffusionPipeline, "img2img": StableDiffusionImg2ImgPipeline,
               "inpaint": StableDiffusionInpaintPipeline, "upscale": StableDiffusionImg2ImgPipeline}
    overrides = {"safety_checker": None, "requires_safety_checker": False}


class TestSDXL(_StableDiffusionDirect):
    engine = "sdxl"
    cases = SD_CASES
    bad_requests = BAD_REQUESTS[:3]
    field_changes = PROMPT_SYNTAX_CHANGE
    fields_exempt = {"clip_skip": "sdxl takes only clip_skip 1 (its conditioning is the penultimate layer already)"}
    classes = {"txt2img": StableDiffusionXLPipeline, "img2img": StableDiffusionXLImg2ImgPipeline,
               "inpaint": StableDiffusionXLInpaintPipeline, "upscale": StableDiffusionXLImg2ImgPipeline}


# -- behaviour beyond the shared suite ----------------------------------------------------------


def test_img2img_resizes_init_image_when_size_given_and_says_so(tmp_path):
    write_test_image(tmp_path / "init.png", (64, 64), seed=1)
    result = run_json("sd15", "img2img", {"prompt": "x", "init_image": str(tmp_path / "init.png"),
                                          "width": 48, "height": 32, "steps": 2, "seed": 1}, tmp_path / "out")
    assert Image.open(result["files"][0]).size == (48, 32)
    assert result["info"]["notes"]["resized"]["init_image"] == {"from": [64, 64], "to": [48, 32],
                                                                 "resample": "lanczos"}


def test_upscale_output_is_factor_times_input(tmp_path):
    write_test_image(tmp_path / "small.png", (32, 24), seed=2)
    result = run_json("sdxl", "upscale", {"prompt": "x", "init_image": str(tmp_path / "small.png"),
                                          "upscale_factor": 2.0, "steps": 2, "seed": 3}, tmp_path / "out")
    assert Image.open(result["files"][0]).size == (64, 48)


def test_pipeline_is_loaded_once_and_tasks_share_components(tmp_path):
    write_test_image(tmp_path / "init.png", (64, 64), seed=1)
    first = run_json("sd15", "txt2img", {"prompt": "x", "width": 64, "height": 64, "steps": 1, "seed": 1},
                     tmp_path / "out")
    second = run_json("sd15", "img2img", {"prompt": "x", "init_image": str(tmp_path / "init.png"), "steps": 2,
                                          "seed": 1}, tmp_path / "out")
    assert second["info"]["model"]["reused_from_cache"] is True
    assert second["info"]["timings"]["load"] == 0.0
    family = loaded_family("sd15")
    img2img = family.for_class(StableDiffusionImg2ImgPipeline)
    assert img2img.unet is family.base.unet and img2img.vae is family.base.vae
    assert first["info"]["model"]["path"] == second["info"]["model"]["path"]


def test_same_seed_same_pixels_and_random_seed_is_recorded(tmp_path):
    request = {"prompt": "x", "width": 32, "height": 32, "steps": 2}
    a = run_json("sd15", "txt2img", {**request, "seed": 11}, tmp_path / "a")
    b = run_json("sd15", "txt2img", {**request, "seed": 11}, tmp_path / "b")
    c = run_json("sd15", "txt2img", request, tmp_path / "c")
    assert np.array_equal(pixels(a["files"][0]), pixels(b["files"][0]))
    assert c["info"]["seed_source"] == "random" and isinstance(c["info"]["seed"], int)
    again = run_json("sd15", "txt2img", {**request, "seed": c["info"]["seed"]}, tmp_path / "d")
    assert np.array_equal(pixels(c["files"][0]), pixels(again["files"][0]))


@pytest.mark.parametrize("sampler, scheduler, cls, flags", [
    ("DPM++ 2M Karras", None, "DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    ("Euler", "Exponential", "EulerDiscreteScheduler", {"use_exponential_sigmas": True}),
    ("PLMS", "Automatic", "PNDMScheduler", {"skip_prk_steps": True}),
    ("LMS", "Karras", "LMSDiscreteScheduler", {"use_karras_sigmas": True}),
])
def test_effective_scheduler_is_reported(tmp_path, sampler, scheduler, cls, flags):
    request = {"prompt": "x", "width": 32, "height": 32, "steps": 2, "seed": 1, "sampler": sampler}
    if scheduler:
        request["scheduler"] = scheduler
    info = run_json("sd15", "txt2img", request, tmp_path / "out")["info"]
    assert info["sampler_in"] == sampler
    assert info["scheduler_effective"]["class"] == cls
    assert flags.items() <= info["scheduler_effective"]["flags"].items()
    assert info["scheduler_class"] == cls  # the scheduler the pipeline call ran with, and its whole config
    for key, value in flags.items():
        assert info["scheduler_config"][key] == value
    # the run changed its own view of the pipeline, never the cached one
    assert type(loaded_family("sd15").base.scheduler).__name__ == "PNDMScheduler"


def test_unsupported_mode_is_reported_not_silent(tmp_path):
    info = run_json("sd15", "txt2img", {"prompt": "x", "width": 32, "height": 32, "steps": 1, "seed": 1,
                                        "mode": "lcm"}, tmp_path / "out")["info"]
    assert info["mode"] == "normal" and info["mode_requested"] == "lcm"
    assert "not supported" in info["mode_ignored_reason"]


def test_tiny_model_has_the_real_architecture():
    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_model_dir("sdxl"))
    assert pipe.vae_scale_factor == 8  # like the real VAE, so size rules match real checkpoints
    assert pipe.unet.config.addition_embed_type == "text_time"
    config = json.loads((tiny_model_dir("sd15") / "model_index.json").read_text())
    assert config["_class_name"] == "StableDiffusionPipeline"
