"""z_image on tiny random-weight Z-Image models: every task equals a direct diffusers call."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from diffusers import (
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    UniPCMultistepScheduler,
    ZImageImg2ImgPipeline,
    ZImageInpaintPipeline,
    ZImagePipeline,
)
from PIL import Image

from codex_core import RunOptions, UsageError, get_engine, prepare
from codex_diffusers.testing import (  # noqa: F401  (pytest_generate_tests parametrises the suite)
    write_transformer_lora,
    EngineConformance,
    assert_tiny_matches_reference,
    direct_pipe,
    pixels,
    pytest_generate_tests,
    run_json,
    seed_generators,
    tiny_model_dir,
    write_test_image,
)
from codex_zimage import tiny

# What the sampler names in the cases below must mean, written out independently of codex's table.
FLOW_SIGMAS = {"prediction_type": "flow_prediction", "use_flow_sigmas": True}
SCHEDULERS = {
    "Euler": (FlowMatchEulerDiscreteScheduler, {}),
}
CLASSES = {"txt2img": ZImagePipeline, "img2img": ZImageImg2ImgPipeline, "inpaint": ZImageInpaintPipeline}


def direct_call(task: str, request: dict, model_dir: Path) -> list[Image.Image]:
    pipe, checkpoint_config = direct_pipe(CLASSES[task], model_dir)
    scheduler_cls, flags = SCHEDULERS[request["sampler"]]
    pipe.scheduler = scheduler_cls.from_config(checkpoint_config, **flags)
    kwargs = dict(prompt=request["prompt"], guidance_scale=request["cfg"],
                  negative_prompt=request["negative_prompt"] or None,
                  cfg_normalization=request["cfg_normalization"], cfg_truncation=request["cfg_truncation"],
                  num_inference_steps=request["steps"], num_images_per_prompt=request["batch_size"],
                  max_sequence_length=request["max_sequence_length"], generator=seed_generators(request))
    if task == "txt2img":
        kwargs.update(width=request["width"], height=request["height"])
    else:  # the init image's own size
        image = Image.open(request["init_image"]).convert("RGB")
        kwargs.update(image=image, width=image.width, height=image.height, strength=request["strength"])
        if task == "inpaint":
            kwargs["mask_image"] = Image.open(request["mask_image"]).convert("L")
    return pipe(**kwargs).images


class TestZImage(EngineConformance):
    engine = "z_image"
    cases = {
        # real CFG (against the empty prompt), normalised and truncated, a batch of two
        "txt2img": {"prompt": "a red fox in snow", "cfg": 3.0, "cfg_normalization": True,
                    "cfg_truncation": 0.6, "width": 48, "height": 32, "steps": 2, "seed": 42, "batch_size": 2,
                    "max_sequence_length": 48},
        # the Turbo preset's cfg 0 and strength 0.6; keeps the 64x64 init size
        "img2img": {"prompt": "a fox, winter", "init_image": "{tmp}/init.png", "steps": 3, "seed": 7,
                    "max_sequence_length": 48, "cfg_normalization": True},
        "inpaint": {"prompt": "a cat", "init_image": "{tmp}/init.png", "mask_image": "{tmp}/mask.png",
                    "strength": 0.8, "steps": 2, "seed": 5, "cfg": 2.0, "max_sequence_length": 40,
                    "cfg_normalization": True},
    }
    bad_requests = [
        ("size_off_stride", "txt2img", {"prompt": "x", "width": 40}, "nearest valid values: 32 or 48"),
        ("init_image_off_stride", "img2img", {"prompt": "x", "init_image": "{tmp}/odd.png"},
         "init_image: its width 40 is not a multiple of 16"),
        ("negative_prompt_without_cfg", "txt2img", {"prompt": "x", "negative_prompt": "blurry"},
         "negative_prompt: it would be ignored"),
        ("a1111_sampler", "txt2img", {"prompt": "x", "sampler": "Euler a"}, "allowed: Euler"),
        ("unipc", "txt2img", {"prompt": "x", "sampler": "UniPC"}, "sampler: 'UniPC'"),
        ("unknown_key", "txt2img", {"prompt": "x", "cfg_normalisation": True}, "did you mean 'cfg_normalization'"),
        ("true_cfg_is_not_a_z_image_field", "txt2img", {"prompt": "x", "true_cfg": 3.0}, "true_cfg: unknown field"),
        ("cfg_truncation_range", "txt2img", {"prompt": "x", "cfg_truncation": 1.5}, "cfg_truncation"),
        ("max_sequence_length_range", "txt2img", {"prompt": "x", "max_sequence_length": 1025}, "max_sequence_length"),
    ]
    # cfg_normalization and cfg_truncation change the output only where guidance runs (every case sets
    # cfg_normalization, so turning it off is a change)
    field_changes = {"cfg_normalization": (False, {"cfg": 20.0}), "cfg_truncation": (0.0, {"cfg": 3.0})}

    def prepare_inputs(self, tmp_path):
        super().prepare_inputs(tmp_path)
        write_test_image(tmp_path / "odd.png", (40, 40), seed=3)

    def direct(self, task, request, model_dir):
        return direct_call(task, request, model_dir)


# -- variants ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory) -> Path:
    """A tiny Z-Image base (shift 6.0), built with the plugin's own builder."""
    path = tmp_path_factory.mktemp("z-image-base") / "model"
    tiny.build(path, "base")
    return path


def test_variant_is_read_from_the_scheduler_shift(base_dir, tmp_path):
    engine = get_engine("z_image")
    assert_tiny_matches_reference("z_image", folder=base_dir)  # the base tiny model is the real architecture too
    assert engine.detect_variant(tiny_model_dir("z_image")) == "turbo"
    assert engine.detect_variant(base_dir) == "base"
    # the two differ only there: the transformer, text encoder and VAE configs are the same
    for name in ("transformer", "text_encoder", "vae"):
        assert (json.loads((base_dir / name / "config.json").read_text())
                == json.loads((tiny_model_dir("z_image") / name / "config.json").read_text())), name
    assert engine.detect_variant(tmp_path) is None  # no configs
    (tmp_path / "model_index.json").write_text('{"_class_name": "ZImagePipeline"}')
    for name, config in (("transformer", {"_class_name": "ZImageTransformer2DModel"}),
                         ("scheduler", {"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 4.5})):
        (tmp_path / name).mkdir()
        (tmp_path / name / ("scheduler_config.json" if name == "scheduler" else "config.json")).write_text(
            json.dumps(config))
    with pytest.raises(UsageError, match="cannot tell which z_image variant"):
        prepare("z_image", "txt2img", {"prompt": "x"}, RunOptions(model=str(tmp_path)))


def test_turbo_presets_fill_before_anything_loads():
    prepared = prepare("z_image", "txt2img", {"prompt": "x"}, RunOptions(model="tiny"))
    assert prepared.variant == "turbo"
    assert prepared.preset_fill.patch == {"width": 1024, "height": 1024, "steps": 9, "cfg": 0.0,
                                          "max_sequence_length": 512, "sampler": "Euler"}


def test_base_runs_with_its_presets_and_equals_diffusers(base_dir, tmp_path):
    request = {"prompt": "a fox", "negative_prompt": "blurry", "width": 32, "height": 32, "seed": 3, "steps": 2,
               "max_sequence_length": 32}
    result = run_json("z_image", "txt2img", request, tmp_path / "out", str(base_dir))
    info = result["info"]
    assert info["model"]["variant"] == "base"
    assert info["applied_preset_patch"] == {"cfg": 4.0, "sampler": "Euler"}
    expected = direct_call("txt2img", info["request"], base_dir)
    assert np.array_equal(pixels(result["files"][0]), pixels(expected[0]))


# -- behaviour beyond the shared suite ----------------------------------------------------------------


def test_truncated_prompt_is_recorded(tmp_path):
    info = run_json("z_image", "txt2img", {"prompt": "a very long prompt indeed", "width": 32, "height": 32,
                                           "steps": 1, "seed": 1, "max_sequence_length": 8}, tmp_path / "out")["info"]
    assert info["notes"]["truncated"]["prompt"]["tokenizer"]["kept"] == 8
    assert info["notes"]["truncated"]["prompt"]["tokenizer"]["tokens"] > 8


def test_tiny_model_has_the_real_architecture():
    pipe, config = direct_pipe(ZImagePipeline, tiny_model_dir("z_image"))
    assert pipe.vae_scale_factor == 8  # like the real VAE: the size rule (16) is the real one
    assert type(pipe.text_encoder).__name__ == "Qwen3Model" and type(pipe.tokenizer).__name__ == "Qwen2Tokenizer"
    assert config["shift"] == 3.0 and config["use_dynamic_shifting"] is False
    text = pipe.tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                              add_generation_prompt=True, enable_thinking=True)
    assert text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"  # Qwen3's ChatML
    ids = pipe.tokenizer(text, padding="max_length", max_length=24).input_ids
    assert max(ids) < pipe.text_encoder.config.vocab_size


# -- the diffusers behaviour our validation and sampler policy rest on (diffusers 0.42) -----------------


def test_cfg_zero_never_encodes_the_negative_prompt():
    """Why a negative prompt with cfg 0 is refused: the pipeline's output does not depend on it."""
    pipe, config = direct_pipe(ZImagePipeline, tiny_model_dir("z_image"))
    pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(config)
    images = [pixels(pipe("x", negative_prompt=negative, guidance_scale=0.0, width=32, height=32,
                          num_inference_steps=2, max_sequence_length=16,
                          generator=seed_generators({"seed": 1})).images[0]) for negative in ("a", "b c d")]
    assert np.array_equal(images[0], images[1])


@pytest.mark.parametrize("task, sampler", [("txt2img", "UniPC"), ("img2img", "UniPC"), ("inpaint", "UniPC"),
                                           ("txt2img", "DPM++ 2M")])
def test_samplers_left_out_fail_in_diffusers(task, sampler):
    # If this starts passing, diffusers has fixed it and z_image's allow-list can grow.
    schedulers = {**SCHEDULERS, "UniPC": (UniPCMultistepScheduler, {**FLOW_SIGMAS, "flow_shift": 3.0}),
                  "DPM++ 2M": (DPMSolverMultistepScheduler, {**FLOW_SIGMAS, "solver_order": 2})}
    pipe, checkpoint_config = direct_pipe(CLASSES[task], tiny_model_dir("z_image"))
    scheduler_cls, flags = schedulers[sampler]
    pipe.scheduler = scheduler_cls.from_config(checkpoint_config, **flags)
    kwargs = dict(width=32, height=32, num_inference_steps=2, max_sequence_length=8)
    if task != "txt2img":
        kwargs.update(image=Image.new("RGB", (32, 32)), strength=0.5)
    if task == "inpaint":
        kwargs["mask_image"] = Image.new("L", (32, 32), 255)
    with pytest.raises((AttributeError, ValueError, TypeError)):
        pipe("x", **kwargs)


# -- the tiny model against the real model's configs ---------------------------------------------------------


def test_tiny_model_has_the_reference_models_classes_and_architecture():
    assert_tiny_matches_reference("z_image")


# -- LoRAs ------------------------------------------------------------------------------------------------


def write_lora(dest: Path) -> Path:
    return write_transformer_lora("ZImagePipeline", tiny_model_dir("z_image"), dest, ["to_q", "to_k", "to_v"],
                                  "tiny_lora.safetensors", diffusers_keys=True)


def test_a_lora_changes_the_output_and_is_undone_after_the_run(tmp_path):
    lora = write_lora(tmp_path)
    assert get_engine("z_image").lora_problem(lora) is None  # codex models lists it as a z_image LoRA
    request = {"prompt": "a fox", "width": 32, "height": 32, "seed": 3, "steps": 2, "max_sequence_length": 16}
    plain = run_json("z_image", "txt2img", request, tmp_path / "a")
    styled = run_json("z_image", "txt2img", {**request, "loras": [{"path": str(lora), "scale": 1.0}]}, tmp_path / "b")
    again = run_json("z_image", "txt2img", request, tmp_path / "c")
    assert not np.array_equal(pixels(plain["files"][0]), pixels(styled["files"][0]))
    assert np.array_equal(pixels(plain["files"][0]), pixels(again["files"][0]))
    assert styled["info"]["notes"]["loras"]["count"] == 1
