"""chroma on a tiny random-weight Chroma model: every task equals a direct diffusers call."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from diffusers import (
    ChromaImg2ImgPipeline,
    ChromaInpaintPipeline,
    ChromaPipeline,
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    UniPCMultistepScheduler,
)
from PIL import Image

from codex_core import RunOptions, get_engine, prepare
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

# What the sampler names in the cases below must mean, written out independently of codex's table.
FLOW_SIGMAS = {"prediction_type": "flow_prediction", "use_flow_sigmas": True}
SCHEDULERS = {
    "Euler": (FlowMatchEulerDiscreteScheduler, {}),
    "UniPC": (UniPCMultistepScheduler, FLOW_SIGMAS),
}
CLASSES = {"txt2img": ChromaPipeline, "img2img": ChromaImg2ImgPipeline, "inpaint": ChromaInpaintPipeline}


def inpaint_ready(pipe):
    """ChromaInpaintPipeline reads transformer.config.guidance_embeds, which a Chroma transformer's config
    lacks (diffusers 0.42); the engine registers False (the truth: no guidance embedding), and so does this."""
    if "guidance_embeds" not in pipe.transformer.config:
        pipe.transformer.register_to_config(guidance_embeds=False)
    return pipe


def direct_call(task: str, request: dict, model_dir: Path) -> list[Image.Image]:
    pipe, checkpoint_config = direct_pipe(CLASSES[task], model_dir)
    scheduler_cls, flags = SCHEDULERS[request["sampler"]]
    if scheduler_cls is UniPCMultistepScheduler:  # codex gives UniPC the checkpoint's shift
        flags = {**flags, "flow_shift": checkpoint_config["shift"]}
    pipe.scheduler = scheduler_cls.from_config(checkpoint_config, **flags)
    kwargs = dict(prompt=request["prompt"], guidance_scale=request["cfg"],
                  negative_prompt=request["negative_prompt"] or None,
                  num_inference_steps=request["steps"], num_images_per_prompt=request["batch_size"],
                  max_sequence_length=request["max_sequence_length"], generator=seed_generators(request))
    if task == "txt2img":
        kwargs.update(width=request["width"], height=request["height"])
    else:  # the init image's own size (the Chroma pipelines would default to 1024x1024)
        image = Image.open(request["init_image"]).convert("RGB")
        kwargs.update(image=image, width=image.width, height=image.height, strength=request["strength"])
        if task == "inpaint":
            inpaint_ready(pipe)
            kwargs["mask_image"] = Image.open(request["mask_image"]).convert("L")
    return pipe(**kwargs).images


class TestChroma(EngineConformance):
    engine = "chroma"
    cases = {
        # real CFG against a negative prompt with UniPC, a batch of two
        "txt2img": {"prompt": "a red fox in snow", "negative_prompt": "blurry", "cfg": 3.0, "width": 48,
                    "height": 32, "steps": 3, "seed": 42, "batch_size": 2, "max_sequence_length": 32,
                    "sampler": "UniPC"},
        # Euler, cfg and strength from the preset; keeps the 64x64 init size
        "img2img": {"prompt": "a fox, winter", "init_image": "{tmp}/init.png", "steps": 4, "seed": 7,
                    "max_sequence_length": 32},
        "inpaint": {"prompt": "a cat", "negative_prompt": "a dog", "init_image": "{tmp}/init.png",
                    "mask_image": "{tmp}/mask.png", "strength": 0.8, "steps": 3, "seed": 5, "cfg": 5.0,
                    "max_sequence_length": 24},
    }
    bad_requests = [
        ("size_off_stride", "txt2img", {"prompt": "x", "width": 40}, "nearest valid values: 32 or 48"),
        ("init_image_off_stride", "img2img", {"prompt": "x", "init_image": "{tmp}/odd.png"},
         "init_image: its width 40 is not a multiple of 16"),
        ("negative_prompt_without_cfg", "txt2img", {"prompt": "x", "negative_prompt": "blurry", "cfg": 1.0},
         "negative_prompt: it would be ignored"),
        ("cfg_below_1", "txt2img", {"prompt": "x", "cfg": 0.5}, "cfg"),
        ("a1111_sampler", "txt2img", {"prompt": "x", "sampler": "Euler a"}, "allowed: Euler, UniPC"),
        ("unipc_img2img", "img2img", {"prompt": "x", "init_image": "{tmp}/init.png", "sampler": "UniPC"},
         "sampler: 'UniPC'"),
        ("unknown_key", "txt2img", {"prompt": "x", "negative_promt": "y"}, "did you mean 'negative_prompt'"),
        ("true_cfg_is_not_a_chroma_field", "inpaint", {"prompt": "x", "init_image": "{tmp}/init.png",
                                                       "mask_image": "{tmp}/mask.png", "true_cfg": 3.0},
         "true_cfg: unknown field"),
        ("max_sequence_length_range", "txt2img", {"prompt": "x", "max_sequence_length": 513}, "max_sequence_length"),
    ]

    def prepare_inputs(self, tmp_path):
        super().prepare_inputs(tmp_path)
        write_test_image(tmp_path / "odd.png", (40, 40), seed=3)

    def direct(self, task, request, model_dir):
        return direct_call(task, request, model_dir)


# -- behaviour beyond the shared suite ----------------------------------------------------------------


def test_presets_fill_before_anything_loads():
    prepared = prepare("chroma", "txt2img", {"prompt": "x"}, RunOptions(model="tiny"))
    assert prepared.preset_fill.patch == {"width": 1024, "height": 1024, "steps": 40, "cfg": 3.0,
                                          "max_sequence_length": 512, "sampler": "Euler"}


def test_truncated_prompt_is_recorded(tmp_path):
    info = run_json("chroma", "txt2img", {"prompt": "a very long prompt", "width": 32, "height": 32, "steps": 1,
                                          "seed": 1, "max_sequence_length": 8}, tmp_path / "out")["info"]
    assert info["notes"]["truncated"]["prompt"]["tokenizer"] == {"tokens": 16, "kept": 8}


def test_tiny_model_has_the_real_architecture():
    pipe, config = direct_pipe(ChromaPipeline, tiny_model_dir("chroma"))
    assert pipe.vae_scale_factor == 8  # like the real VAE: the size rule (16) is the real one
    assert pipe.image_encoder is None and pipe.feature_extractor is None
    assert config["use_dynamic_shifting"] is True
    ids = pipe.tokenizer("Hello, World! 123", padding="max_length", max_length=24).input_ids
    assert ids[-1] == 0 and 1 in ids and max(ids) < pipe.text_encoder.config.vocab_size


# -- the diffusers behaviour our validation and sampler policy rest on (diffusers 0.42) -----------------


def test_inpaint_fails_on_a_chroma_config_without_guidance_embeds():
    """Why the engine registers guidance_embeds=False: without it ChromaInpaintPipeline cannot run."""
    pipe = ChromaInpaintPipeline.from_pretrained(tiny_model_dir("chroma"))
    assert "guidance_embeds" not in pipe.transformer.config
    with pytest.raises(AttributeError, match="guidance_embeds"):
        pipe("x", image=Image.new("RGB", (32, 32)), mask_image=Image.new("L", (32, 32), 255), width=32, height=32,
             num_inference_steps=2, max_sequence_length=8)


def test_inpaint_ignores_true_cfg_scale():
    """ChromaInpaintPipeline takes true_cfg_scale but never reads it: hence no true_cfg field."""
    pipe, config = direct_pipe(ChromaInpaintPipeline, tiny_model_dir("chroma"))
    inpaint_ready(pipe).scheduler = FlowMatchEulerDiscreteScheduler.from_config(config)
    images = [pixels(pipe("x", negative_prompt="y", true_cfg_scale=scale, guidance_scale=3.0,
                          image=Image.new("RGB", (32, 32), "red"), mask_image=Image.new("L", (32, 32), 255),
                          width=32, height=32, num_inference_steps=2, max_sequence_length=8,
                          generator=seed_generators({"seed": 1})).images[0]) for scale in (1.0, 6.0)]
    assert np.array_equal(images[0], images[1])


def test_diffusers_would_round_sizes_silently():
    pipe, config = direct_pipe(ChromaPipeline, tiny_model_dir("chroma"))
    pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(config)
    image = pipe("x", width=40, height=32, num_inference_steps=1, max_sequence_length=8).images[0]
    assert image.size == (32, 32)  # asked for 40 wide: hence size_multiple = 16, checked before loading


@pytest.mark.parametrize("task, sampler", [("img2img", "UniPC"), ("inpaint", "UniPC"), ("txt2img", "DPM++ 2M")])
def test_samplers_left_out_fail_in_diffusers(task, sampler):
    # If this starts passing, diffusers has fixed it and chroma's allow-list can grow.
    schedulers = {**SCHEDULERS, "DPM++ 2M": (DPMSolverMultistepScheduler, {**FLOW_SIGMAS, "solver_order": 2})}
    pipe, checkpoint_config = direct_pipe(CLASSES[task], tiny_model_dir("chroma"))
    scheduler_cls, flags = schedulers[sampler]
    pipe.scheduler = scheduler_cls.from_config(checkpoint_config, **flags)
    kwargs = dict(width=32, height=32, num_inference_steps=2, max_sequence_length=8)
    if task != "txt2img":
        kwargs.update(image=Image.new("RGB", (32, 32)), strength=0.5)
    if task == "inpaint":
        inpaint_ready(pipe)
        kwargs["mask_image"] = Image.new("L", (32, 32), 255)
    with pytest.raises((AttributeError, ValueError, TypeError)):
        pipe("x", **kwargs)


# -- the tiny model against the real model's configs ---------------------------------------------------------


def test_tiny_model_has_the_reference_models_classes_and_architecture():
    assert_tiny_matches_reference("chroma")


# -- LoRAs ------------------------------------------------------------------------------------------------


def write_lora(dest: Path) -> Path:
    return write_transformer_lora("ChromaPipeline", tiny_model_dir("chroma"), dest, ["to_q", "to_k", "to_v"],
                                  "tiny_lora.safetensors", diffusers_keys=True)


def test_a_lora_changes_the_output_and_is_undone_after_the_run(tmp_path):
    lora = write_lora(tmp_path)
    assert get_engine("chroma").lora_problem(lora) is None  # codex models lists it as a chroma LoRA
    request = {"prompt": "a fox", "width": 32, "height": 32, "seed": 3, "steps": 2, "max_sequence_length": 16}
    plain = run_json("chroma", "txt2img", request, tmp_path / "a")
    styled = run_json("chroma", "txt2img", {**request, "loras": [{"path": str(lora), "scale": 1.0}]}, tmp_path / "b")
    again = run_json("chroma", "txt2img", request, tmp_path / "c")
    assert not np.array_equal(pixels(plain["files"][0]), pixels(styled["files"][0]))
    assert np.array_equal(pixels(plain["files"][0]), pixels(again["files"][0]))
    assert styled["info"]["notes"]["loras"]["count"] == 1
