"""flux on tiny random-weight FLUX.1 models: every task equals a direct diffusers call."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from diffusers import (
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxImg2ImgPipeline,
    FluxInpaintPipeline,
    FluxKontextPipeline,
    FluxPipeline,
    UniPCMultistepScheduler,
)
from PIL import Image

from codex_core import ParamError, RunOptions, UsageError, get_engine, prepare
from codex_diffusers.testing import (  # noqa: F401  (pytest_generate_tests parametrises the suite)
    assert_configs_differ_only,
    direct_pipe,
    loaded_family,
    EngineConformance,
    cli_run,
    pixels,
    pytest_generate_tests,
    seed_generators,
    run_json,
    tiny_model_dir,
    write_test_image,
)
from codex_flux import tiny


def detect_variant(folder):
    return get_engine("flux").detect_variant(folder)

# What the sampler names in the cases below must mean, written out independently of codex's table.
FLOW_SIGMAS = {"prediction_type": "flow_prediction", "use_flow_sigmas": True}
SCHEDULERS = {
    "Euler": (FlowMatchEulerDiscreteScheduler, {}),
    "UniPC": (UniPCMultistepScheduler, FLOW_SIGMAS),
}
CLASSES = {"txt2img": FluxPipeline, "img2img": FluxImg2ImgPipeline, "inpaint": FluxInpaintPipeline,
           "edit": FluxKontextPipeline}

def direct_call(task: str, request: dict, model_dir: Path) -> list[Image.Image]:
    pipe, checkpoint_config = direct_pipe(CLASSES[task], model_dir)
    scheduler_cls, flags = SCHEDULERS[request["sampler"]]
    pipe.scheduler = scheduler_cls.from_config(checkpoint_config, **flags)
    kwargs = dict(prompt=request["prompt"], true_cfg_scale=request["true_cfg"], guidance_scale=request["cfg"],
                  negative_prompt=request["negative_prompt"] if request["true_cfg"] > 1 else None,
                  num_inference_steps=request["steps"], num_images_per_prompt=request["batch_size"],
                  max_sequence_length=request["max_sequence_length"],
                  generator=seed_generators(request))
    if task == "txt2img":
        kwargs.update(width=request["width"], height=request["height"])
    elif task == "edit":  # Kontext: the image's size as the start (diffusers' own default is a square 1024x1024)
        image = Image.open(request["images"][0]).convert("RGB")
        area = request.get("max_area") or (request["width"] * request["height"] if request.get("width")
                                           else 1024 * 1024)
        kwargs.update(image=image, width=request.get("width") or image.width,
                      height=request.get("height") or image.height, max_area=area,
                      _auto_resize=request.get("auto_resize", True))
    else:  # the init image's own size (the Flux pipelines would default to 1024x1024)
        image = Image.open(request["init_image"]).convert("RGB")
        kwargs.update(image=image, width=image.width, height=image.height, strength=request["strength"])
        if task == "inpaint":
            kwargs["mask_image"] = Image.open(request["mask_image"]).convert("L")
    return pipe(**kwargs).images


class TestFlux(EngineConformance):
    engine = "flux"
    cases = {
        # true CFG against a negative prompt with UniPC, a batch of two; max_sequence_length small for the tiny T5
        "txt2img": {"prompt": "a red fox in snow", "negative_prompt": "blurry", "true_cfg": 2.0, "width": 48,
                    "height": 32, "steps": 3, "seed": 42, "batch_size": 2, "max_sequence_length": 32,
                    "sampler": "UniPC"},
        # Euler, cfg (embedded guidance 3.5) and strength from the dev preset; keeps the 64x64 init size
        "img2img": {"prompt": "a fox, winter", "init_image": "{tmp}/init.png", "steps": 4, "seed": 7,
                    "max_sequence_length": 32},
        "inpaint": {"prompt": "a cat", "init_image": "{tmp}/init.png", "mask_image": "{tmp}/mask.png",
                    "strength": 0.8, "steps": 3, "seed": 5, "cfg": 5.0, "max_sequence_length": 24},
        # Kontext on a 48x32 reference at its own size (auto_resize off keeps the tiny run small) scaled to
        # 2304 pixels: 64x32 -> 3:2 at 2304 = 58.8x39.2 -> 48x32; true CFG against a negative prompt
        "edit": {"prompt": "make it winter", "images": ["{tmp}/wide.png"], "max_area": 2304, "auto_resize": False,
                 "steps": 2, "seed": 9, "max_sequence_length": 16, "true_cfg": 1.5, "negative_prompt": "blurry"},
    }
    bad_requests = [
        ("size_off_stride", "txt2img", {"prompt": "x", "width": 40}, "nearest valid values: 32 or 48"),
        ("init_image_off_stride", "img2img", {"prompt": "x", "init_image": "{tmp}/odd.png"},
         "init_image: its width 40 is not a multiple of 16"),
        ("negative_prompt_without_true_cfg", "txt2img", {"prompt": "x", "negative_prompt": "blurry"}, "true_cfg"),
        ("true_cfg_below_1", "txt2img", {"prompt": "x", "true_cfg": 0.5}, "true_cfg"),
        ("a1111_sampler", "txt2img", {"prompt": "x", "sampler": "Euler a"}, "allowed: Euler, UniPC"),
        ("unipc_img2img", "img2img", {"prompt": "x", "init_image": "{tmp}/init.png", "sampler": "UniPC"},
         "sampler: 'UniPC'"),
        ("unknown_key", "txt2img", {"prompt": "x", "true_cgf": 2.0}, "did you mean 'true_cfg'"),
        ("flow_shift_is_not_a_flux_field", "txt2img", {"prompt": "x", "flow_shift": 3.0}, "flow_shift: unknown field"),
        ("max_sequence_length_range", "txt2img", {"prompt": "x", "max_sequence_length": 513}, "max_sequence_length"),
        ("img2img_without_init_image", "img2img", {"prompt": "x"}, "init_image: required field is missing"),
        ("two_reference_images", "edit", {"prompt": "x", "images": ["{tmp}/init.png", "{tmp}/wide.png"]},
         "images: got 2 images; this model takes at most 1 reference image"),
        ("edit_without_images", "edit", {"prompt": "x"}, "images: required field is missing"),
        ("max_area_with_width", "edit", {"prompt": "x", "images": ["{tmp}/wide.png"], "width": 32, "height": 32,
                                         "max_area": 1024}, "max_area: leave it out when width and height"),
    ]
    field_changes = {"max_area": 1024, "auto_resize": True}
    fields_exempt = {"reference_images": "a Redux folder: test_controlnets.py compares Redux with diffusers' "
                                         "two-step FluxPriorReduxPipeline call"}
    stride_drops = ("max_area",)

    def prepare_inputs(self, tmp_path):
        super().prepare_inputs(tmp_path)
        write_test_image(tmp_path / "odd.png", (40, 40), seed=3)
        write_test_image(tmp_path / "wide.png", (48, 32), seed=4)

    def direct(self, task, request, model_dir):
        return direct_call(task, request, model_dir)


# -- variants ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def schnell_dir(tmp_path_factory) -> Path:
    """A tiny FLUX.1-schnell (no guidance embedding, shift 1.0), built with the plugin's own builder."""
    path = tmp_path_factory.mktemp("flux-schnell") / "model"
    tiny.build(path, "schnell")
    return path


def test_variant_is_read_from_the_transformer_config(schnell_dir, tmp_path):
    assert detect_variant(tiny_model_dir("flux")) == "dev"
    assert detect_variant(schnell_dir) == "schnell"
    assert detect_variant(tmp_path) is None  # no transformer/config.json
    (tmp_path / "model_index.json").write_text('{"_class_name": "FluxPipeline"}')
    (tmp_path / "transformer").mkdir()
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "config.json").write_text('{"latent_channels": 16}')
    (tmp_path / "transformer" / "config.json").write_text(json.dumps({"_class_name": "SD3Transformer2DModel",
                                                                      "in_channels": 64}))
    with pytest.raises(UsageError, match="cannot tell which flux variant"):
        prepare("flux", "txt2img", {"prompt": "x"}, RunOptions(model=str(tmp_path)))


def test_dev_presets_fill_before_anything_loads():
    prepared = prepare("flux", "txt2img", {"prompt": "x"}, RunOptions(model="tiny"))
    assert prepared.variant == "dev"
    assert prepared.preset_fill.patch == {"width": 1024, "height": 1024, "steps": 28, "cfg": 3.5,
                                          "max_sequence_length": 512, "sampler": "Euler"}


def test_schnell_runs_with_its_presets_and_equals_diffusers(schnell_dir, tmp_path):
    result = run_json("flux", "txt2img", {"prompt": "a fox", "width": 32, "height": 32, "seed": 3},
                      tmp_path / "out", str(schnell_dir))
    info = result["info"]
    assert info["model"]["variant"] == "schnell"
    assert info["applied_preset_patch"] == {"steps": 4, "cfg": 0.0, "max_sequence_length": 256, "sampler": "Euler"}
    assert info["steps_done"] == 4
    expected = direct_call("txt2img", info["request"], schnell_dir)
    assert np.array_equal(pixels(result["files"][0]), pixels(expected[0]))


@pytest.mark.parametrize("field, value, message", [
    ("cfg", 3.5, "cfg: got 3.5: FLUX.1-schnell has no guidance embedding"),
    ("max_sequence_length", 512, "max_sequence_length: got 512: FLUX.1-schnell takes at most 256"),
])
def test_schnell_rejects_what_it_would_ignore_before_loading(schnell_dir, tmp_path, field, value, message):
    request = {"prompt": "x", "width": 32, "height": 32, field: value}
    with pytest.raises(ParamError, match=message):  # prepare loads nothing
        prepare("flux", "txt2img", request, RunOptions(model=str(schnell_dir)))
    out = tmp_path / "out"
    result = cli_run(["run", "flux", "txt2img", "--model", str(schnell_dir), "--out", str(out),
                      "--json", json.dumps(request)])
    assert result.exit_code == 2 and message in result.stderr
    assert not out.exists()


# -- behaviour beyond the shared suite ----------------------------------------------------------------


def test_true_cfg_with_empty_negative_prompt_is_not_a_no_op(tmp_path):
    request = {"prompt": "x", "width": 32, "height": 32, "steps": 2, "seed": 1, "max_sequence_length": 16}
    off = run_json("flux", "txt2img", request, tmp_path / "a")
    on = run_json("flux", "txt2img", {**request, "true_cfg": 3.0}, tmp_path / "b")
    assert not np.array_equal(pixels(off["files"][0]), pixels(on["files"][0]))
    expected = direct_call("txt2img", on["info"]["request"], tiny_model_dir("flux"))
    assert np.array_equal(pixels(on["files"][0]), pixels(expected[0]))


def test_img2img_resizes_init_image_when_size_given_and_says_so(tmp_path):
    write_test_image(tmp_path / "init.png", (64, 64), seed=1)
    result = run_json("flux", "img2img", {"prompt": "x", "init_image": str(tmp_path / "init.png"), "width": 48,
                                          "height": 32, "steps": 2, "seed": 1, "max_sequence_length": 16},
                      tmp_path / "out")
    assert Image.open(result["files"][0]).size == (48, 32)
    assert result["info"]["notes"]["resized"]["init_image"] == {"from": [64, 64], "to": [48, 32],
                                                                 "resample": "lanczos"}


def test_truncated_prompt_is_recorded(tmp_path):
    info = run_json("flux", "txt2img", {"prompt": "a very long prompt", "width": 32, "height": 32, "steps": 1,
                                        "seed": 1, "max_sequence_length": 8}, tmp_path / "out")["info"]
    assert info["notes"]["truncated"]["prompt"]["tokenizer_2"]["kept"] == 8  # the T5 window asked for
    assert info["notes"]["truncated"]["prompt"]["tokenizer_2"]["tokens"] > 8
    assert "tokenizer" not in info["notes"]["truncated"]["prompt"]  # within CLIP's 77


def test_tasks_share_components(tmp_path):
    write_test_image(tmp_path / "init.png", (32, 32), seed=1)
    run_json("flux", "txt2img", {"prompt": "x", "width": 32, "height": 32, "steps": 1, "seed": 1,
                                 "max_sequence_length": 8}, tmp_path / "out")
    second = run_json("flux", "img2img", {"prompt": "x", "init_image": str(tmp_path / "init.png"), "steps": 2,
                                          "seed": 1, "max_sequence_length": 8}, tmp_path / "out")
    assert second["info"]["model"]["reused_from_cache"] is True
    family = loaded_family("flux")
    for cls in (FluxImg2ImgPipeline, FluxInpaintPipeline):
        pipe = family.for_class(cls)
        assert pipe.transformer is family.base.transformer and pipe.text_encoder_2 is family.base.text_encoder_2


def test_tiny_model_has_the_real_architecture():
    pipe, config = direct_pipe(FluxPipeline, tiny_model_dir("flux"))
    assert pipe.vae_scale_factor == 8  # like the real VAE: the size rule (16) is the real one
    assert pipe.transformer.config.guidance_embeds is True
    assert config["use_dynamic_shifting"] is True and config["shift"] == 3.0
    ids = pipe.tokenizer_2("Hello, World! 123", padding="max_length", max_length=24).input_ids
    assert ids[-1] == 0 and 1 in ids and max(ids) < pipe.text_encoder_2.config.vocab_size


# -- the diffusers behaviour our validation and sampler policy rest on (diffusers 0.42) -----------------


def test_diffusers_would_round_sizes_silently():
    pipe, _ = direct_pipe(FluxPipeline, tiny_model_dir("flux"))
    image = pipe("x", width=40, height=32, num_inference_steps=1, max_sequence_length=8).images[0]
    assert image.size == (32, 32)  # asked for 40 wide: hence size_multiple = 16, checked before loading


@pytest.mark.parametrize("task, sampler", [("img2img", "UniPC"), ("img2img", "DPM++ 2M"), ("txt2img", "DPM++ 2M")])
def test_samplers_left_out_fail_in_diffusers(schnell_dir, task, sampler):
    # If this starts passing, diffusers has fixed it and flux's allow-list can grow.
    schedulers = {**SCHEDULERS, "DPM++ 2M": (DPMSolverMultistepScheduler, {**FLOW_SIGMAS, "solver_order": 2})}
    model = schnell_dir if task == "txt2img" else tiny_model_dir("flux")  # DPM++ 2M txt2img fails on schnell
    pipe, checkpoint_config = direct_pipe(CLASSES[task], model)
    scheduler_cls, flags = schedulers[sampler]
    pipe.scheduler = scheduler_cls.from_config(checkpoint_config, **flags)
    kwargs = dict(width=32, height=32, num_inference_steps=2, max_sequence_length=8)
    if task == "img2img":
        kwargs.update(image=Image.new("RGB", (32, 32)), strength=0.5)
    with pytest.raises((AttributeError, ValueError, AssertionError)):
        pipe("x", **kwargs)


def test_the_builder_at_the_real_depth_changes_only_the_block_counts(tmp_path):
    """bench/speed.py measures the step caches on the tiny FLUX.1-dev at the real model's depth (a block
    cache's saving depends on it): the same tiny model but for the transformer's block counts, read from
    the reference config the plugin ships."""
    from codex_diffusers import reference_config_dir

    real = json.loads((reference_config_dir("flux") / "transformer" / "config.json").read_text())
    assert (real["num_layers"], real["num_single_layers"]) == (19, 38)
    tiny.build(tmp_path, "dev", num_layers=19, num_single_layers=38)
    assert_configs_differ_only(tmp_path, "flux", {"num_layers": 19, "num_single_layers": 38})


# -- edit: FLUX.1 Kontext is its own checkpoint -------------------------------------------------------------


def test_a_kontext_folder_serves_edit_and_a_flux1_folder_does_not(tmp_path):
    kontext = tmp_path / "kontext"
    shutil.copytree(tiny_model_dir("flux"), kontext)
    index = json.loads((kontext / "model_index.json").read_text())
    (kontext / "model_index.json").write_text(json.dumps({**index, "_class_name": "FluxKontextPipeline"}))
    write_test_image(tmp_path / "wide.png", (48, 32), seed=4)
    request = {"prompt": "x", "images": [str(tmp_path / "wide.png")], "width": 32, "height": 32, "steps": 2,
               "seed": 1, "max_sequence_length": 8}
    result = run_json("flux", "edit", request, tmp_path / "a", str(kontext))
    assert Image.open(result["files"][0]).size == (32, 32)
    assert result["info"]["notes"]["edit_size"] == {"width": 32, "height": 32, "rule": (
        "the request's width and height at 1024 pixels (max_area), each side floored to a multiple of 16: "
        "FluxKontextPipeline's rule")}
    refused = cli_run(["run", "flux", "txt2img", "--model", str(kontext), "--out", str(tmp_path / "b"), "--json",
                       json.dumps({"prompt": "x", "width": 32, "height": 32, "steps": 1})])
    assert refused.exit_code == 2 and "(CODEX_MODEL_FLUX)" in refused.stderr
    assert ("is an edit checkpoint (FluxKontextPipeline); txt2img needs a FluxPipeline checkpoint such as "
            "black-forest-labs/FLUX.1-dev") in refused.stderr, refused.stderr
    flux1 = cli_run(["run", "flux", "edit", "--model", str(tiny_model_dir("flux")), "--out", str(tmp_path / "c"),
                     "--json", json.dumps(request)])
    assert flux1.exit_code == 2 and "black-forest-labs/FLUX.1-Kontext-dev" in flux1.stderr, flux1.stderr
