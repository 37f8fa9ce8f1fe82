"""qwen_image on a tiny random-weight Qwen-Image: every task equals a direct diffusers call."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from diffusers import (
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    QwenImageImg2ImgPipeline,
    QwenImageInpaintPipeline,
    QwenImagePipeline,
    UniPCMultistepScheduler,
)
from PIL import Image

from codex_core import RunOptions, get_engine, prepare
from codex_diffusers.testing import (  # noqa: F401  (pytest_generate_tests parametrises the suite)
    EngineConformance,
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

# What the sampler names in the cases below must mean, written out independently of codex's table.
FLOW_SIGMAS = {"prediction_type": "flow_prediction", "use_flow_sigmas": True}
SCHEDULERS = {
    "Euler": (FlowMatchEulerDiscreteScheduler, {}),
    "UniPC": (UniPCMultistepScheduler, FLOW_SIGMAS),
}
CLASSES = {"txt2img": QwenImagePipeline, "img2img": QwenImageImg2ImgPipeline, "inpaint": QwenImageInpaintPipeline}


def direct_call(task: str, request: dict, model_dir: Path) -> list[Image.Image]:
    """The model card's call: true_cfg_scale with a negative prompt (blank when none) is the guidance."""
    pipe, checkpoint_config = direct_pipe(CLASSES[task], model_dir)
    scheduler_cls, flags = SCHEDULERS[request["sampler"]]
    pipe.scheduler = scheduler_cls.from_config(checkpoint_config, **flags)
    kwargs = dict(prompt=request["prompt"], true_cfg_scale=request["cfg"],
                  negative_prompt=request["negative_prompt"] if request["cfg"] > 1 else None,
                  num_inference_steps=request["steps"], num_images_per_prompt=request["batch_size"],
                  max_sequence_length=request["max_sequence_length"], generator=seed_generators(request))
    if task == "txt2img":
        kwargs.update(width=request["width"], height=request["height"])
    else:  # the init image's own size (the pipelines would default to 1024x1024)
        image = Image.open(request["init_image"]).convert("RGB")
        kwargs.update(image=image, width=image.width, height=image.height, strength=request["strength"])
        if task == "inpaint":
            kwargs["mask_image"] = Image.open(request["mask_image"]).convert("L")
    return pipe(**kwargs).images


class TestQwenImage(EngineConformance):
    engine = "qwen_image"
    cases = {
        # real CFG against a negative prompt with UniPC, a batch of two
        "txt2img": {"prompt": "a red fox in snow", "negative_prompt": "blurry", "cfg": 3.0, "width": 48,
                    "height": 32, "steps": 2, "seed": 42, "batch_size": 2, "max_sequence_length": 32,
                    "sampler": "UniPC"},
        # Euler, cfg 4.0 (blank negative prompt) and strength from the presets; keeps the 64x64 init size
        "img2img": {"prompt": "a fox, winter", "init_image": "{tmp}/init.png", "steps": 3, "seed": 7,
                    "max_sequence_length": 32},
        # cfg 1: no guidance, one pass per step
        "inpaint": {"prompt": "a cat", "init_image": "{tmp}/init.png", "mask_image": "{tmp}/mask.png",
                    "strength": 0.8, "steps": 3, "seed": 5, "cfg": 1.0, "max_sequence_length": 24},
    }
    bad_requests = [
        ("size_off_stride", "txt2img", {"prompt": "x", "width": 40}, "nearest valid values: 32 or 48"),
        ("init_image_off_stride", "img2img", {"prompt": "x", "init_image": "{tmp}/odd.png"},
         "init_image: its width 40 is not a multiple of 16"),
        ("negative_prompt_without_cfg", "txt2img", {"prompt": "x", "negative_prompt": "blurry", "cfg": 1.0},
         "negative_prompt: it would be ignored"),
        ("cfg_below_1", "txt2img", {"prompt": "x", "cfg": 0.5}, "cfg"),
        ("one_step", "txt2img", {"prompt": "x", "steps": 1}, "steps"),
        ("a1111_sampler", "txt2img", {"prompt": "x", "sampler": "Euler a"}, "allowed: Euler, UniPC"),
        ("unipc_img2img", "img2img", {"prompt": "x", "init_image": "{tmp}/init.png", "sampler": "UniPC"},
         "sampler: 'UniPC'"),
        ("dpm_txt2img", "txt2img", {"prompt": "x", "sampler": "DPM++ 2M"}, "sampler: 'DPM++ 2M'"),
        ("unknown_key", "txt2img", {"prompt": "x", "true_cfg": 2.0}, "true_cfg: unknown field"),
        ("max_sequence_length_range", "txt2img", {"prompt": "x", "max_sequence_length": 1025},
         "max_sequence_length"),
        ("img2img_without_init_image", "img2img", {"prompt": "x"}, "init_image: required field is missing"),
    ]

    def prepare_inputs(self, tmp_path):
        super().prepare_inputs(tmp_path)
        write_test_image(tmp_path / "odd.png", (40, 40), seed=3)

    def direct(self, task, request, model_dir):
        return direct_call(task, request, model_dir)


def test_presets_fill_the_model_cards_values_before_anything_loads():
    prepared = prepare("qwen_image", "txt2img", {"prompt": "x"}, RunOptions(model="tiny"))
    assert prepared.preset_fill.patch == {"width": 1328, "height": 1328, "steps": 50, "cfg": 4.0,
                                          "max_sequence_length": 512, "sampler": "Euler"}


def test_cfg_1_runs_one_pass_per_step_and_cfg_above_runs_two(tmp_path):
    """cfg is the pipelines' true_cfg_scale: above 1 the negative (here blank) prompt gets its own transformer pass;
    both equal the direct call that passes true_cfg_scale=cfg and negative_prompt "" (cfg > 1) or None."""
    from codex_diffusers.testing import AttentionCalls

    request = {"prompt": "x", "width": 32, "height": 32, "steps": 2, "seed": 1, "max_sequence_length": 16}
    run_json("qwen_image", "txt2img", request | {"cfg": 1.0}, tmp_path / "load")  # loads the model
    for cfg, passes in ((1.0, 1), (4.0, 2)):
        with AttentionCalls("qwen_image") as attention:
            result = run_json("qwen_image", "txt2img", {**request, "cfg": cfg}, tmp_path / str(cfg))
        assert attention.calls == 2 * 2 * passes  # two transformer blocks, two steps
        expected = direct_call("txt2img", result["info"]["request"], tiny_model_dir("qwen_image"))
        assert np.array_equal(pixels(result["files"][0]), pixels(expected[0]))


def test_truncated_prompt_is_recorded(tmp_path):
    info = run_json("qwen_image", "txt2img", {"prompt": "a very long prompt", "width": 32, "height": 32, "steps": 2,
                                              "seed": 1, "max_sequence_length": 8}, tmp_path / "out")["info"]
    assert info["notes"]["truncated"]["prompt"]["tokenizer"] == {"tokens": 18, "kept": 8}  # one token per byte


def test_tasks_share_components(tmp_path):
    write_test_image(tmp_path / "init.png", (32, 32), seed=1)
    run_json("qwen_image", "txt2img", {"prompt": "x", "width": 32, "height": 32, "steps": 2, "seed": 1,
                                       "max_sequence_length": 8}, tmp_path / "out")
    second = run_json("qwen_image", "img2img", {"prompt": "x", "init_image": str(tmp_path / "init.png"), "steps": 2,
                                                "seed": 1, "max_sequence_length": 8}, tmp_path / "out")
    assert second["info"]["model"]["reused_from_cache"] is True
    family = loaded_family("qwen_image")
    for cls in (QwenImageImg2ImgPipeline, QwenImageInpaintPipeline):
        pipe = family.for_class(cls)
        assert pipe.transformer is family.base.transformer and pipe.text_encoder is family.base.text_encoder


def test_tiny_model_has_the_real_architecture():
    pipe, config = direct_pipe(QwenImagePipeline, tiny_model_dir("qwen_image"))
    assert pipe.vae_scale_factor == 8  # like the real VAE: the size rule (16) is the real one
    assert pipe.transformer.config.guidance_embeds is False and pipe.transformer.config.patch_size == 2
    assert config["use_dynamic_shifting"] is True and config["time_shift_type"] == "exponential"
    encoder = pipe.text_encoder.config
    assert encoder.text_config.num_attention_heads > encoder.text_config.num_key_value_heads  # grouped-query
    assert encoder.vision_config.out_hidden_size == encoder.text_config.hidden_size  # the vision tower is there
    template = pipe.prompt_template_encode.format("Hello, World!")
    ids = pipe.tokenizer(template).input_ids
    assert ids[0] == pipe.tokenizer.convert_tokens_to_ids("<|im_start|>") and max(ids) < encoder.text_config.vocab_size
    # the pipeline drops the system prompt by a token count of the real tokenizer (34); ours has more tokens
    assert len(pipe.tokenizer(template.split("<|im_start|>user")[0]).input_ids) >= pipe.prompt_template_encode_start_idx


def test_a_guidance_distilled_transformer_is_refused_before_loading(tmp_path):
    folder = tmp_path / "distilled"
    folder.mkdir()
    source = tiny_model_dir("qwen_image")
    (folder / "model_index.json").write_text((source / "model_index.json").read_text())
    (folder / "transformer").mkdir()
    config = json.loads((source / "transformer" / "config.json").read_text())
    (folder / "transformer" / "config.json").write_text(json.dumps({**config, "guidance_embeds": True}))
    out = tmp_path / "out"
    result = cli_run(["run", "qwen_image", "txt2img", "--model", str(folder), "--out", str(out), "--json",
                      json.dumps({"prompt": "x", "width": 32, "height": 32, "steps": 2})])
    assert result.exit_code == 2 and "guidance-distilled (guidance_embeds: true)" in result.stderr
    assert not out.exists()


# -- the diffusers behaviour our validation and sampler policy rest on (diffusers 0.42) -----------------


def test_diffusers_would_round_sizes_silently():
    pipe, _ = direct_pipe(QwenImagePipeline, tiny_model_dir("qwen_image"))
    image = pipe("x", width=40, height=32, num_inference_steps=2, max_sequence_length=8).images[0]
    assert image.size == (32, 32)  # asked for 40 wide: hence size_multiple = 16, checked before loading


def test_diffusers_runs_true_cfg_only_with_a_negative_prompt_and_ignores_guidance_scale():
    """Why cfg maps to true_cfg_scale with a negative prompt ("" when none) and guidance_scale is never passed."""
    pipe, config = direct_pipe(QwenImagePipeline, tiny_model_dir("qwen_image"))
    pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(config)
    passes = []
    hook = pipe.transformer.register_forward_pre_hook(lambda module, args: passes.append(1))

    def run(**kwargs):
        passes.clear()
        image = pipe("x", width=32, height=32, num_inference_steps=2, max_sequence_length=8,
                     generator=seed_generators({"seed": 3}), **kwargs).images[0]
        return len(passes), pixels(image)

    try:
        plain = run(true_cfg_scale=1.0)
        assert plain[0] == 2  # one pass per step
        assert run(true_cfg_scale=4.0)[0] == 2  # no negative prompt: no guidance at all
        assert run(true_cfg_scale=4.0, negative_prompt="")[0] == 4  # a blank one: guidance, two passes per step
        ignored = run(true_cfg_scale=1.0, negative_prompt="blurry")
        assert ignored[0] == 2 and np.array_equal(ignored[1], plain[1])
        distilled_only = run(true_cfg_scale=1.0, guidance_scale=7.0)  # no guidance embedding: ignored
        assert distilled_only[0] == 2 and np.array_equal(distilled_only[1], plain[1])
    finally:
        hook.remove()


def test_diffusers_makes_nan_at_one_step_with_the_checkpoints_scheduler():
    """Why steps >= 2: shift_terminal stretches the schedule by 0/0 at one step (the output is NaN, black)."""
    pipe, config = direct_pipe(QwenImagePipeline, tiny_model_dir("qwen_image"))
    assert config["shift_terminal"] == 0.02
    pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(config)
    with np.errstate(invalid="ignore"):
        latents = pipe("x", width=32, height=32, num_inference_steps=1, max_sequence_length=8,
                       output_type="latent").images
    assert latents.isnan().all()


@pytest.mark.parametrize("task, sampler", [("img2img", "UniPC"), ("inpaint", "UniPC"), ("txt2img", "DPM++ 2M")])
def test_samplers_left_out_fail_in_diffusers(task, sampler):
    # If this starts passing, diffusers has fixed it and the allow-list can grow.
    schedulers = {**SCHEDULERS, "DPM++ 2M": (DPMSolverMultistepScheduler, {**FLOW_SIGMAS, "solver_order": 2})}
    pipe, checkpoint_config = direct_pipe(CLASSES[task], tiny_model_dir("qwen_image"))
    scheduler_cls, flags = schedulers[sampler]
    pipe.scheduler = scheduler_cls.from_config(checkpoint_config, **flags)
    kwargs = dict(width=32, height=32, num_inference_steps=2, max_sequence_length=8)
    if task != "txt2img":
        kwargs.update(image=Image.new("RGB", (32, 32)), strength=0.5)
    if task == "inpaint":
        kwargs["mask_image"] = Image.new("L", (32, 32), 255)
    with pytest.raises((AttributeError, ValueError, AssertionError, TypeError)):
        pipe("x", **kwargs)


def test_engine_is_listed_with_its_tasks():
    engine = get_engine("qwen_image")
    assert set(engine.tasks) == {"txt2img", "img2img", "inpaint"}
    assert engine.default_repo == "Qwen/Qwen-Image"
