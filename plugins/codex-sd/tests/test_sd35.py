"""sd35 on tiny random-weight Stable Diffusion 3.5 models: every task equals a direct diffusers call."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from diffusers import (
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    StableDiffusion3Img2ImgPipeline,
    StableDiffusion3InpaintPipeline,
    StableDiffusion3Pipeline,
    UniPCMultistepScheduler,
)
from PIL import Image

from codex_core import ParamError, RunOptions, UsageError, get_engine, prepare
from codex_diffusers import component_sizes, reference_config_dir
from codex_diffusers.testing import (  # noqa: F401  (pytest_generate_tests parametrises the suite)
    write_transformer_lora,
    EngineConformance,
    assert_tiny_matches_reference,
    cli_run,
    direct_pipe,
    loaded_family,
    pixels,
    pytest_generate_tests,
    run_json,
    seed_generators,
    tiny_model_dir,
    write_test_image,
)
from codex_sd import sd35_tiny

# What the sampler names in the cases below must mean, written out independently of codex's table.
FLOW_SIGMAS = {"prediction_type": "flow_prediction", "use_flow_sigmas": True}
SCHEDULERS = {
    "Euler": (FlowMatchEulerDiscreteScheduler, {}),
    "UniPC": (UniPCMultistepScheduler, FLOW_SIGMAS),
    "DPM++ 2M": (DPMSolverMultistepScheduler, {**FLOW_SIGMAS, "algorithm_type": "dpmsolver++", "solver_order": 2}),
}
CLASSES = {"txt2img": StableDiffusion3Pipeline, "img2img": StableDiffusion3Img2ImgPipeline,
           "inpaint": StableDiffusion3InpaintPipeline}
NO_IMAGE_ENCODER = {"image_encoder": None, "feature_extractor": None}


def direct_call(task: str, request: dict, model_dir: Path) -> list[Image.Image]:
    pipe, checkpoint_config = direct_pipe(CLASSES[task], model_dir, **NO_IMAGE_ENCODER)
    scheduler_cls, flags = SCHEDULERS[request["sampler"]]
    # UniPC and DPM++ take the checkpoint's shift (3.0) as their flow_shift, as codex's flow table does
    if scheduler_cls is not FlowMatchEulerDiscreteScheduler:
        flags = {**flags, "flow_shift": checkpoint_config["shift"]}
    pipe.scheduler = scheduler_cls.from_config(checkpoint_config, **flags)
    kwargs = dict(prompt=request["prompt"], guidance_scale=request["cfg"],
                  negative_prompt=request["negative_prompt"] or None, num_inference_steps=request["steps"],
                  num_images_per_prompt=request["batch_size"], max_sequence_length=request["max_sequence_length"],
                  clip_skip=request["clip_skip"] - 1 if request["clip_skip"] > 1 else None,
                  generator=seed_generators(request))
    if task == "txt2img":
        kwargs.update(width=request["width"], height=request["height"])
        if request.get("skip_guidance_layers"):
            kwargs.update({key: request[key] for key in ("skip_guidance_layers", "skip_layer_guidance_scale",
                                                          "skip_layer_guidance_start", "skip_layer_guidance_stop")})
    else:  # the init image's own size (the SD3 pipelines would default to 1024x1024)
        image = Image.open(request["init_image"]).convert("RGB")
        kwargs.update(image=image, width=image.width, height=image.height, strength=request["strength"])
        if task == "inpaint":
            kwargs["mask_image"] = Image.open(request["mask_image"]).convert("L")
    return pipe(**kwargs).images


class TestSD35(EngineConformance):
    engine = "sd35"
    cases = {
        # real CFG against a negative prompt with UniPC, skip-layer guidance on block 1, clip skip 2, a batch of two
        "txt2img": {"prompt": "a red fox in snow", "negative_prompt": "blurry", "cfg": 4.0, "width": 48, "height": 32,
                    "steps": 3, "seed": 42, "batch_size": 2, "max_sequence_length": 32, "sampler": "UniPC",
                    "clip_skip": 2, "skip_guidance_layers": [1], "skip_layer_guidance_start": 0.0,
                    "skip_layer_guidance_stop": 1.0},
        # Euler, cfg and strength from the Large preset; keeps the 64x64 init size
        "img2img": {"prompt": "a fox, winter", "init_image": "{tmp}/init.png", "steps": 4, "seed": 7,
                    "max_sequence_length": 32, "clip_skip": 2},
        "inpaint": {"prompt": "a cat", "init_image": "{tmp}/init.png", "mask_image": "{tmp}/mask.png",
                    "strength": 0.8, "steps": 3, "seed": 5, "cfg": 5.0, "max_sequence_length": 24, "clip_skip": 2},
    }
    # the txt2img case sets clip skip and skip-layer guidance already: each is changed from the case's value
    field_changes = {"clip_skip": 1, "skip_guidance_layers": [0], "skip_layer_guidance_scale": 5.0,
                     "skip_layer_guidance_start": 0.5, "skip_layer_guidance_stop": 0.6}
    bad_requests = [
        ("size_off_stride", "txt2img", {"prompt": "x", "width": 40}, "nearest valid values: 32 or 48"),
        ("init_image_off_stride", "img2img", {"prompt": "x", "init_image": "{tmp}/odd.png"},
         "init_image: its width 40 is not a multiple of 16"),
        ("negative_prompt_without_cfg", "txt2img", {"prompt": "x", "negative_prompt": "blurry", "cfg": 1.0}, "cfg"),
        ("a1111_sampler", "txt2img", {"prompt": "x", "sampler": "Euler a"}, "allowed: Euler, UniPC, DPM++ 2M"),
        ("unipc_img2img", "img2img", {"prompt": "x", "init_image": "{tmp}/init.png", "sampler": "UniPC"},
         "sampler: 'UniPC'"),
        ("unknown_key", "txt2img", {"prompt": "x", "max_sequence_lenght": 77}, "did you mean 'max_sequence_length'"),
        ("max_sequence_length_range", "txt2img", {"prompt": "x", "max_sequence_length": 513}, "max_sequence_length"),
        ("skip_layers_past_large", "txt2img", {"prompt": "x", "skip_guidance_layers": [38]}, "skip_guidance_layers"),
        ("skip_layers_without_cfg", "txt2img", {"prompt": "x", "cfg": 1.0, "skip_guidance_layers": [1]},
         "skip_guidance_layers: it would be ignored"),
        ("skip_layers_on_img2img", "img2img", {"prompt": "x", "init_image": "{tmp}/init.png",
                                               "skip_guidance_layers": [1]}, "skip_guidance_layers: unknown field"),
        ("true_cfg_is_not_an_sd35_field", "txt2img", {"prompt": "x", "true_cfg": 2.0}, "true_cfg: unknown field"),
    ]

    def prepare_inputs(self, tmp_path):
        super().prepare_inputs(tmp_path)
        write_test_image(tmp_path / "odd.png", (40, 40), seed=3)

    def direct(self, task, request, model_dir):
        return direct_call(task, request, model_dir)


# -- variants ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def medium_dir(tmp_path_factory) -> Path:
    """A tiny SD 3.5 Medium (dual-attention blocks), built with the plugin's own builder."""
    path = tmp_path_factory.mktemp("sd35-medium") / "model"
    sd35_tiny.build(path, "medium")
    return path


def test_variant_is_read_from_the_transformer_config(medium_dir, tmp_path):
    engine = get_engine("sd35")
    assert engine.detect_variant(tiny_model_dir("sd35")) == "large"
    assert engine.detect_variant(medium_dir) == "medium"
    assert engine.detect_variant(tmp_path) is None  # no transformer/config.json
    # SD3 Medium (3.0): no QK normalisation, no dual attention: refused before loading, saying what it is
    (tmp_path / "model_index.json").write_text('{"_class_name": "StableDiffusion3Pipeline"}')
    (tmp_path / "transformer").mkdir()
    (tmp_path / "transformer" / "config.json").write_text(json.dumps({"_class_name": "SD3Transformer2DModel",
                                                                      "qk_norm": None, "dual_attention_layers": []}))
    assert engine.detect_variant(tmp_path) is None
    assert "Stable Diffusion 3 (3.0)" in engine.checkpoint_problem(tmp_path)
    with pytest.raises(UsageError):
        prepare("sd35", "txt2img", {"prompt": "x"}, RunOptions(model=str(tmp_path)))


def test_presets_fill_by_variant_before_anything_loads(medium_dir):
    large = prepare("sd35", "txt2img", {"prompt": "x"}, RunOptions(model="tiny"))
    assert large.variant == "large"
    assert large.preset_fill.patch == {"width": 1024, "height": 1024, "steps": 28, "cfg": 3.5,
                                       "max_sequence_length": 256, "sampler": "Euler"}
    medium = prepare("sd35", "txt2img", {"prompt": "x"}, RunOptions(model=str(medium_dir)))
    assert medium.variant == "medium"
    assert (medium.preset_fill.patch["steps"], medium.preset_fill.patch["cfg"]) == (40, 4.5)


def test_medium_runs_with_its_presets_and_equals_diffusers(medium_dir, tmp_path):
    result = run_json("sd35", "txt2img", {"prompt": "a fox", "width": 32, "height": 32, "seed": 3, "steps": 2,
                                          "max_sequence_length": 16, "skip_guidance_layers": [1]},
                      tmp_path / "out", str(medium_dir))
    info = result["info"]
    assert info["model"]["variant"] == "medium" and info["request"]["cfg"] == 4.5
    expected = direct_call("txt2img", info["request"], medium_dir)
    assert np.array_equal(pixels(result["files"][0]), pixels(expected[0]))


def test_skip_layers_past_medium_are_refused_before_loading(medium_dir):
    with pytest.raises(ParamError, match="SD 3.5 Medium has 24 transformer blocks"):
        prepare("sd35", "txt2img", {"prompt": "x", "skip_guidance_layers": [7, 30]}, RunOptions(model=str(medium_dir)))


def test_skip_layers_past_the_loaded_transformer_exit_2(tmp_path):
    """The tiny Large has 2 blocks: block 7 exists in the real model, not in this one; diffusers would skip nothing."""
    out = tmp_path / "out"
    result = cli_run(["run", "sd35", "txt2img", "--model", "tiny", "--out", str(out), "--json", json.dumps(
        {"prompt": "x", "width": 32, "height": 32, "steps": 1, "max_sequence_length": 8, "skip_guidance_layers": [7]})])
    assert result.exit_code == 2 and "skip_guidance_layers: got [7]: this checkpoint's transformer has 2 blocks" \
        in result.stderr
    assert not out.exists() or not any(out.iterdir())


# -- behaviour beyond the shared suite ----------------------------------------------------------------


def test_cfg_is_real_guidance_and_skip_layers_change_the_image(tmp_path):
    request = {"prompt": "x", "width": 32, "height": 32, "steps": 2, "seed": 1, "max_sequence_length": 16}
    off = run_json("sd35", "txt2img", {**request, "cfg": 1.0}, tmp_path / "a")
    on = run_json("sd35", "txt2img", {**request, "cfg": 3.0}, tmp_path / "b")
    slg = run_json("sd35", "txt2img", {**request, "cfg": 3.0, "skip_guidance_layers": [0],
                                       "skip_layer_guidance_start": 0.0, "skip_layer_guidance_stop": 1.0},
                   tmp_path / "c")
    images = [pixels(result["files"][0]) for result in (off, on, slg)]
    assert not np.array_equal(images[0], images[1]) and not np.array_equal(images[1], images[2])
    for result, image in zip((off, slg), (images[0], images[2])):
        assert np.array_equal(image, pixels(direct_call("txt2img", result["info"]["request"], tiny_model_dir("sd35"))[0]))


def test_truncated_prompt_is_recorded(tmp_path):
    info = run_json("sd35", "txt2img", {"prompt": "a very long prompt", "width": 32, "height": 32, "steps": 1,
                                        "seed": 1, "max_sequence_length": 8}, tmp_path / "out")["info"]
    assert info["notes"]["truncated"]["prompt"]["tokenizer_3"] == {"tokens": 16, "kept": 8}  # the T5 window asked for
    assert set(info["notes"]["truncated"]["prompt"]) == {"tokenizer_3"}  # within CLIP's 77


def test_tasks_share_components(tmp_path):
    write_test_image(tmp_path / "init.png", (32, 32), seed=1)
    run_json("sd35", "txt2img", {"prompt": "x", "width": 32, "height": 32, "steps": 1, "seed": 1,
                                 "max_sequence_length": 8}, tmp_path / "out")
    second = run_json("sd35", "img2img", {"prompt": "x", "init_image": str(tmp_path / "init.png"), "steps": 2,
                                          "seed": 1, "max_sequence_length": 8}, tmp_path / "out")
    assert second["info"]["model"]["reused_from_cache"] is True
    family = loaded_family("sd35")
    for cls in (StableDiffusion3Img2ImgPipeline, StableDiffusion3InpaintPipeline):
        pipe = family.for_class(cls)
        assert pipe.transformer is family.base.transformer and pipe.text_encoder_3 is family.base.text_encoder_3


def test_tiny_model_has_the_real_architecture():
    pipe, config = direct_pipe(StableDiffusion3Pipeline, tiny_model_dir("sd35"), **NO_IMAGE_ENCODER)
    assert pipe.vae_scale_factor * pipe.patch_size == 16  # like the real model: the size rule (16) is the real one
    assert pipe.transformer.config.qk_norm == "rms_norm" and not pipe.transformer.config.dual_attention_layers
    assert pipe.vae.config.latent_channels == 16 and config["shift"] == 3.0
    assert type(pipe.text_encoder).__name__ == type(pipe.text_encoder_2).__name__ == "CLIPTextModelWithProjection"
    assert pipe.text_encoder.config.hidden_size != pipe.text_encoder_2.config.hidden_size  # CLIP-L vs bigG


# -- the diffusers behaviour our validation and sampler policy rest on (diffusers 0.42) -----------------


def test_diffusers_refuses_sizes_off_the_rule():
    pipe, _ = direct_pipe(StableDiffusion3Pipeline, tiny_model_dir("sd35"), **NO_IMAGE_ENCODER)
    with pytest.raises(ValueError, match="divisible by 16"):
        pipe("x", width=40, height=32, num_inference_steps=1, max_sequence_length=8)


def test_diffusers_ignores_the_negative_prompt_at_cfg_1():
    pipe, _ = direct_pipe(StableDiffusion3Pipeline, tiny_model_dir("sd35"), **NO_IMAGE_ENCODER)
    images = [pixels(pipe("x", negative_prompt=negative, guidance_scale=1.0, width=32, height=32, num_inference_steps=1,
                          max_sequence_length=8, generator=seed_generators({"seed": 1})).images[0])
              for negative in (None, "something else")]
    assert np.array_equal(*images)  # hence a negative prompt at cfg <= 1 is an error


@pytest.mark.parametrize("task, sampler", [("img2img", "UniPC"), ("img2img", "DPM++ 2M"), ("inpaint", "UniPC")])
def test_samplers_left_out_fail_in_diffusers(task, sampler):
    # If this starts passing, diffusers has fixed it and sd35's allow-list can grow.
    pipe, checkpoint_config = direct_pipe(CLASSES[task], tiny_model_dir("sd35"), **NO_IMAGE_ENCODER)
    scheduler_cls, flags = SCHEDULERS[sampler]
    pipe.scheduler = scheduler_cls.from_config(checkpoint_config, **flags)
    kwargs = dict(width=32, height=32, num_inference_steps=2, max_sequence_length=8, image=Image.new("RGB", (32, 32)),
                  strength=0.5)
    if task == "inpaint":
        kwargs["mask_image"] = Image.new("L", (32, 32), 255)
    with pytest.raises(AttributeError, match="scale_noise"):
        pipe("x", **kwargs)


def test_tiny_models_are_the_real_architectures(medium_dir):
    """Component classes and config keys of the tiny Large and Medium equal the shipped reference configs' (sizes aside)."""
    assert_tiny_matches_reference("sd35", "large")
    assert_tiny_matches_reference("sd35", "medium", folder=medium_dir)


def test_medium_reference_configs_have_the_published_size():
    """Large's counts are checked with the other engines' (plugins/codex-diffusers/tests/test_sizes.py)."""
    sizes = component_sizes(reference_config_dir("sd35", "medium"))
    assert sizes["transformer"].parameters == pytest.approx(2.5e9, rel=0.02)  # "2.5 billion parameters" (model card)


# -- LoRAs (diffusers' SD3LoraLoaderMixin) -------------------------------------------------------------


def write_sd35_lora(folder: Path, dest: Path) -> Path:
    return write_transformer_lora("StableDiffusion3Pipeline", folder, dest, ["to_q", "to_k", "to_v", "to_out.0"],
                                  "tiny_sd35_lora.safetensors")


def test_a_lora_changes_the_image_as_diffusers_loads_it_and_is_undone(tmp_path):
    request = {"prompt": "a fox", "width": 32, "height": 32, "seed": 3, "steps": 2, "max_sequence_length": 16}
    lora = write_sd35_lora(tiny_model_dir("sd35"), tmp_path)
    assert get_engine("sd35").lora_problem(lora) is None  # `codex models --kind loras` lists it for sd35
    plain = run_json("sd35", "txt2img", request, tmp_path / "a")
    with_lora = run_json("sd35", "txt2img", {**request, "loras": [{"path": str(lora), "scale": 0.8}]}, tmp_path / "b")
    again = run_json("sd35", "txt2img", request, tmp_path / "c")
    assert not np.array_equal(pixels(plain["files"][0]), pixels(with_lora["files"][0]))
    assert np.array_equal(pixels(plain["files"][0]), pixels(again["files"][0]))  # undone after its run
    pipe = StableDiffusion3Pipeline.from_pretrained(tiny_model_dir("sd35"), **NO_IMAGE_ENCODER)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(lora), adapter_name="x")
    pipe.set_adapters(["x"], adapter_weights=[0.8])
    info = with_lora["info"]["request"]
    expected = pipe(prompt=info["prompt"], guidance_scale=info["cfg"], width=32, height=32, num_inference_steps=2,
                    max_sequence_length=16, generator=seed_generators(info)).images[0]
    assert np.array_equal(pixels(with_lora["files"][0]), pixels(expected))


@pytest.mark.parametrize("task", ["img2img", "inpaint"])
def test_a_batch_from_one_init_image_gives_image_i_the_one_image_run_of_seed_plus_i(task, tmp_path):
    """diffusers' SD3 img2img/inpaint do not repeat one init image for a batch of per-seed generators (the call
    fails); the engine passes a copy per image, so image 1 is the one-image run of seed + 1."""
    inputs = {"init_image": str(write_test_image(tmp_path / "init.png", (32, 32), seed=1))}
    if task == "inpaint":
        inputs["mask_image"] = str(write_test_image(tmp_path / "mask.png", (32, 32), mode="L"))
    request = {"prompt": "a fox", **inputs, "steps": 2, "seed": 5}
    batch = run_json("sd35", task, {**request, "batch_size": 2}, tmp_path / "batch")
    single = run_json("sd35", task, {**request, "seed": 6}, tmp_path / "single")
    assert batch["info"]["seeds"] == [5, 6]
    difference = np.abs(pixels(batch["files"][1]).astype(int) - pixels(single["files"][0]).astype(int))
    assert difference.max() <= 1  # a batch of 2 takes other CPU kernels: at most one level of rounding


def test_clip_skip_beyond_the_checkpoints_clip_layers_exits_2(tmp_path):
    result = cli_run(["run", "sd35", "txt2img", "--model", "tiny", "--out", str(tmp_path / "out"), "--json",
                      json.dumps({"prompt": "x", "width": 16, "height": 16, "steps": 1, "clip_skip": 3})])
    assert result.exit_code == 2 and "clip_skip: got 3: this checkpoint's CLIP text encoders have 2 layers" in \
        result.stderr, result.stderr
