"""flux2 on a tiny random-weight FLUX.2 [dev]: every task equals a direct diffusers call."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from diffusers import (
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    Flux2Pipeline,
    UniPCMultistepScheduler,
)
from PIL import Image

from codex_core import RunOptions, prepare
from codex_diffusers.testing import (  # noqa: F401  (pytest_generate_tests parametrises the suite)
    EngineConformance,
    cli_run,
    direct_pipe,
    pixels,
    pytest_generate_tests,
    run_json,
    seed_generators,
    tiny_model_dir,
    write_test_image,
)

# What the sampler names must mean, written out independently of codex's table (shift: the checkpoint's).
FLOW_SIGMAS = {"prediction_type": "flow_prediction", "use_flow_sigmas": True}
SCHEDULERS = {
    "Euler": (FlowMatchEulerDiscreteScheduler, {}),
    "UniPC": (UniPCMultistepScheduler, FLOW_SIGMAS),
    "DPM++ 2M": (DPMSolverMultistepScheduler, {**FLOW_SIGMAS, "algorithm_type": "dpmsolver++", "solver_order": 2}),
}
# The tiny tokenizer's system message and template take ~65 tokens: a window that holds the prompt too.
WINDOW = 96


def direct_call(pipeline_cls, task: str, request: dict, model_dir: Path, **extra) -> list[Image.Image]:
    """The same request made on the diffusers pipeline directly: an edit passes its reference images at their own
    sizes and no width/height, so the pipeline's own size rule decides."""
    pipe, checkpoint_config = direct_pipe(pipeline_cls, model_dir)
    scheduler_cls, flags = SCHEDULERS[request["sampler"]]
    if scheduler_cls is not FlowMatchEulerDiscreteScheduler:
        flags = {**flags, "flow_shift": checkpoint_config["shift"]}
    pipe.scheduler = scheduler_cls.from_config(checkpoint_config, **flags)
    kwargs = dict(prompt=request["prompt"], guidance_scale=request["cfg"], num_inference_steps=request["steps"],
                  num_images_per_prompt=request["batch_size"], max_sequence_length=request["max_sequence_length"],
                  generator=seed_generators(request), **extra)
    if task == "txt2img":
        kwargs.update(width=request["width"], height=request["height"])
    elif task == "edit":
        kwargs["image"] = [Image.open(path).convert("RGB") for path in request["images"]]
        if request.get("width"):
            kwargs.update(width=request["width"], height=request["height"])
    return pipe(**kwargs).images



class TestFlux2(EngineConformance):
    engine = "flux2"
    cases = {
        # UniPC, a batch of two, embedded guidance 2.5
        "txt2img": {"prompt": "a red fox in snow", "width": 48, "height": 32, "steps": 2, "seed": 42, "batch_size": 2,
                    "cfg": 2.5, "max_sequence_length": WINDOW, "sampler": "UniPC"},
        # two reference images; the output size is the pipeline's rule from the first (88x72 -> 80x64)
        "edit": {"prompt": "combine the two images", "images": ["{tmp}/ref_a.png", "{tmp}/ref_b.png"], "steps": 2,
                 "seed": 7, "max_sequence_length": WINDOW},
    }
    bad_requests = [
        ("size_off_stride", "txt2img", {"prompt": "x", "width": 40}, "nearest valid values: 32 or 48"),
        ("a1111_sampler", "txt2img", {"prompt": "x", "sampler": "Euler a"}, "allowed: Euler, UniPC, DPM++ 2M"),
        ("unknown_key", "txt2img", {"prompt": "x", "true_cfg": 2.0}, "true_cfg: unknown field"),
        ("negative_prompt", "txt2img", {"prompt": "x", "negative_prompt": "blurry"},
         "negative_prompt: FLUX.2 pipelines take no negative prompt"),
        ("too_many_images", "edit", {"prompt": "x", "images": ["{tmp}/ref_b.png"] * 11},
         "images: got 11 images; this model takes at most 10"),
        ("reference_too_small", "edit", {"prompt": "x", "images": ["{tmp}/ref_b.png", "{tmp}/small.png"]},
         "images.1: 32x32 is too small"),
        ("edit_size_off_stride", "edit", {"prompt": "x", "images": ["{tmp}/ref_a.png"], "width": 72, "height": 64},
         "width: got 72: 72 is not a multiple of 16"),
        ("max_sequence_length_range", "txt2img", {"prompt": "x", "max_sequence_length": 513}, "max_sequence_length"),
    ]


    def prepare_inputs(self, tmp_path):
        super().prepare_inputs(tmp_path)
        write_test_image(tmp_path / "ref_a.png", (88, 72), seed=3)
        write_test_image(tmp_path / "ref_b.png", (64, 64), seed=4)

    def direct(self, task, request, model_dir):
        return direct_call(Flux2Pipeline, task, request, model_dir)


def test_presets_are_the_model_cards_before_anything_loads():
    prepared = prepare("flux2", "txt2img", {"prompt": "x"}, RunOptions(model="tiny"))
    assert prepared.preset_fill.patch == {"width": 1024, "height": 1024, "steps": 50, "cfg": 4.0,
                                          "max_sequence_length": 512, "sampler": "Euler"}


@pytest.mark.parametrize("first, expected", [
    ((88, 72), (80, 64, False)),  # floored to multiples of 16 (the pipeline crops)
    ((2000, 1500), (1168, 880, True)),  # over 1024x1024's area: scaled to it, then floored
    ((1024, 1024), (1024, 1024, False)),
])
def test_the_edit_size_rule_is_the_pipelines(first, expected):
    """params.reference_size is the arithmetic of Flux2Pipeline's step 4 (its image processor's own resize, then
    the floor to 16); the pipeline itself agrees on a small image (a large one would be slow on a CPU)."""
    from codex_flux2.params import reference_size

    assert reference_size(*first) == expected
    pipe, _ = direct_pipe(Flux2Pipeline, tiny_model_dir("flux2"))
    if expected[2]:
        scaled = pipe.image_processor._resize_to_target_area(Image.new("RGB", first), 1024 * 1024).size
        assert (scaled[0] // 16 * 16, scaled[1] // 16 * 16) == expected[:2]
    elif first[0] * first[1] < 128 * 128:
        latents = pipe(prompt="x", image=Image.new("RGB", first), num_inference_steps=1, max_sequence_length=WINDOW,
                       output_type="latent").images
        assert latents.shape[1] * 16 * 16 == expected[0] * expected[1]  # packed latents: one token per 16x16 px


def test_width_and_height_override_the_first_images_size(tmp_path):
    write_test_image(tmp_path / "a.png", (88, 72), seed=3)
    request = {"prompt": "x", "images": [str(tmp_path / "a.png")], "width": 48, "height": 32, "steps": 2, "seed": 1,
               "max_sequence_length": WINDOW}
    result = run_json("flux2", "edit", request, tmp_path / "out")
    assert Image.open(result["files"][0]).size == (48, 32)
    assert result["info"]["notes"]["edit_size"] == {"width": 48, "height": 32,
                                                    "rule": "the request's width and height"}
    expected = direct_call(Flux2Pipeline, "edit", result["info"]["request"], tiny_model_dir("flux2"))
    assert np.array_equal(pixels(result["files"][0]), pixels(expected[0]))


def test_truncation_counts_the_chat_templated_prompt(tmp_path):
    info = run_json("flux2", "txt2img", {"prompt": "a red fox in snow", "width": 32, "height": 32, "steps": 1,
                                         "seed": 1, "max_sequence_length": 48}, tmp_path / "out")["info"]
    seen = info["notes"]["truncated"]["prompt"]["tokenizer"]
    assert seen["kept"] == 48 and seen["tokens"] > 48  # the system message alone fills most of the window


def test_tiny_model_has_the_real_architecture():
    pipe, config = direct_pipe(Flux2Pipeline, tiny_model_dir("flux2"))
    assert pipe.vae_scale_factor == 8  # like the real VAE: the size rule (16) is the real one
    assert pipe.transformer.config.guidance_embeds is True
    assert pipe.text_encoder.config.text_config.num_hidden_layers >= 30  # the pipeline reads hidden state 30
    assert config["use_dynamic_shifting"] is True


# -- the diffusers behaviour the validation rests on (diffusers 0.42) ---------------------------------------


def test_diffusers_would_round_sizes_silently():
    pipe, _ = direct_pipe(Flux2Pipeline, tiny_model_dir("flux2"))
    image = pipe(prompt="x", width=40, height=32, num_inference_steps=1, max_sequence_length=WINDOW).images[0]
    assert image.size == (32, 32)  # asked for 40 wide: hence size_multiple = 16, checked before loading


def test_diffusers_refuses_reference_images_under_64_pixels():
    pipe, _ = direct_pipe(Flux2Pipeline, tiny_model_dir("flux2"))
    with pytest.raises(ValueError, match="at least 64px"):
        pipe(prompt="x", image=[Image.new("RGB", (32, 32))], num_inference_steps=1, max_sequence_length=WINDOW)


def test_a_dev_folder_whose_processor_needs_torchvision_is_refused_before_loading(tmp_path):
    """The real [dev] repos name PixtralProcessor; transformers builds it only with torchvision (not installed here)."""
    import importlib.util
    import json
    import shutil

    from codex_diffusers.testing import cli_run

    assert importlib.util.find_spec("torchvision") is None
    folder = tmp_path / "dev"
    shutil.copytree(tiny_model_dir("flux2"), folder)
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "tokenizer": ["transformers", "PixtralProcessor"]}))
    out = tmp_path / "out"
    result = cli_run(["run", "flux2", "txt2img", "--model", str(folder), "--out", str(out), "--json",
                      json.dumps({"prompt": "x", "width": 32, "height": 32})])
    assert result.exit_code == 2 and "pip install torchvision" in result.stderr and not out.exists()


def test_dev_has_no_step_cache_because_its_pipeline_sets_no_cache_context(tmp_path):
    from diffusers import TaylorSeerCacheConfig

    from codex_diffusers.testing import cli_run

    result = cli_run(["run", "flux2", "txt2img", "--model", "tiny", "--out", str(tmp_path / "out"), "--json",
                      '{"prompt": "x", "cache": {"type": "taylorseer"}}'])
    assert result.exit_code == 2 and "cache: unknown field" in result.stderr
    # the diffusers behaviour behind it: if this starts passing, [dev] can take the cache field
    pipe = Flux2Pipeline.from_pretrained(tiny_model_dir("flux2"))
    pipe.transformer.enable_cache(TaylorSeerCacheConfig(cache_interval=2))
    with pytest.raises(ValueError, match="No cache context is set"):
        pipe(prompt="x", width=32, height=32, num_inference_steps=2, max_sequence_length=WINDOW)
