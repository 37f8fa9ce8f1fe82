"""flux2_klein on tiny random-weight FLUX.2 [klein] models: every task equals a direct diffusers call."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from diffusers import (
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    Flux2KleinInpaintPipeline,
    Flux2KleinPipeline,
    UniPCMultistepScheduler,
)
from PIL import Image

from codex_core import ParamError, RunOptions, get_engine, prepare
from codex_diffusers.testing import (  # noqa: F401  (pytest_generate_tests parametrises the suite)
    seed_generators,
    EngineConformance,
    cli_run,
    direct_pipe,
    pixels,
    pytest_generate_tests,
    run_json,
    tiny_model_dir,
    write_test_image,
)
from codex_flux2 import tiny

WINDOW = 32  # Qwen3's template adds a dozen tokens to the prompt

# What the sampler names must mean, written out independently of codex's table (shift: the checkpoint's).
FLOW_SIGMAS = {"prediction_type": "flow_prediction", "use_flow_sigmas": True}
SCHEDULERS = {
    "Euler": (FlowMatchEulerDiscreteScheduler, {}),
    "UniPC": (UniPCMultistepScheduler, FLOW_SIGMAS),
    "DPM++ 2M": (DPMSolverMultistepScheduler, {**FLOW_SIGMAS, "algorithm_type": "dpmsolver++", "solver_order": 2}),
}


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


def klein_direct(task: str, request: dict, model_dir: Path) -> list[Image.Image]:
    if task == "inpaint":  # the init image's own size: the pipeline takes the size from it
        image = Image.open(request["init_image"]).convert("RGB")
        return direct_call(Flux2KleinInpaintPipeline, task, request, model_dir, image=image,
                           mask_image=Image.open(request["mask_image"]).convert("L"), strength=request["strength"])
    return direct_call(Flux2KleinPipeline, task, request, model_dir)



class TestFlux2Klein(EngineConformance):
    engine = "flux2_klein"
    cases = {
        "txt2img": {"prompt": "a red fox in snow", "width": 48, "height": 32, "steps": 2, "seed": 42,
                    "max_sequence_length": WINDOW, "sampler": "DPM++ 2M"},
        "edit": {"prompt": "combine the two images", "images": ["{tmp}/ref_a.png", "{tmp}/ref_b.png"], "steps": 2,
                 "seed": 7, "max_sequence_length": WINDOW},
        "inpaint": {"prompt": "a cat", "init_image": "{tmp}/init.png", "mask_image": "{tmp}/mask.png", "strength": 0.8,
                    "steps": 2, "seed": 5, "max_sequence_length": WINDOW},
    }
    bad_requests = [
        ("size_off_stride", "txt2img", {"prompt": "x", "width": 40}, "nearest valid values: 32 or 48"),
        ("unipc_inpaint", "inpaint", {"prompt": "x", "init_image": "{tmp}/init.png", "mask_image": "{tmp}/mask.png",
                                      "sampler": "UniPC"}, "sampler: 'UniPC'"),
        ("unknown_key", "txt2img", {"prompt": "x", "guidance": 2.0}, "guidance: unknown field"),
        ("too_many_images", "edit", {"prompt": "x", "images": ["{tmp}/ref_b.png"] * 5},
         "images: got 5 images; this model takes at most 4"),
        ("guidance_on_the_distilled_model", "txt2img", {"prompt": "x", "cfg": 4.0},
         "cfg: got 4.0: the step-distilled FLUX.2 [klein] ignores guidance"),
        ("negative_prompt", "edit", {"prompt": "x", "images": ["{tmp}/ref_b.png"], "negative_prompt": "blurry"},
         "negative_prompt: FLUX.2 pipelines take no negative prompt"),
        ("inpaint_over_the_pipelines_area", "inpaint", {"prompt": "x", "init_image": "{tmp}/init.png",
                                                        "mask_image": "{tmp}/mask.png", "width": 1280, "height": 1024},
         "width: 1280x1024 is over 1024x1024's area"),
    ]


    def prepare_inputs(self, tmp_path):
        super().prepare_inputs(tmp_path)
        write_test_image(tmp_path / "ref_a.png", (88, 72), seed=3)
        write_test_image(tmp_path / "ref_b.png", (64, 64), seed=4)

    def direct(self, task, request, model_dir):
        return klein_direct(task, request, model_dir)


# -- variants ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory) -> Path:
    """A tiny FLUX.2 [klein] Base (is_distilled false: real CFG), built with the plugin's own builder."""
    path = tmp_path_factory.mktemp("klein-base") / "model"
    tiny.build_klein(path, distilled=False)
    return path


def _with_text_width(folder: Path, dest: Path, width: int) -> Path:
    shutil.copytree(folder, dest, ignore=shutil.ignore_patterns("*.safetensors"))
    config = json.loads((dest / "transformer" / "config.json").read_text())
    (dest / "transformer" / "config.json").write_text(json.dumps({**config, "joint_attention_dim": width}))
    return dest


def test_variant_is_read_from_the_configs(base_dir, tmp_path):
    engine = get_engine("flux2_klein")
    assert engine.detect_variant(tiny_model_dir("flux2_klein")) == "4b"
    assert engine.detect_variant(base_dir) == "base_4b"
    assert engine.detect_variant(_with_text_width(tiny_model_dir("flux2_klein"), tmp_path / "d", 12288)) == "9b"
    assert engine.detect_variant(_with_text_width(base_dir, tmp_path / "b", 12288)) == "base_9b"
    assert engine.detect_variant(tmp_path / "nothing") is None


def test_base_runs_real_cfg_with_its_presets_and_equals_diffusers(base_dir, tmp_path):
    result = run_json("flux2_klein", "txt2img", {"prompt": "a fox", "width": 32, "height": 32, "seed": 3, "steps": 2,
                                                 "max_sequence_length": WINDOW}, tmp_path / "out", str(base_dir))
    info = result["info"]
    assert info["model"]["variant"] == "base_4b"
    assert info["applied_preset_patch"] == {"cfg": 4.0, "sampler": "Euler"}
    expected = direct_call(Flux2KleinPipeline, "txt2img", info["request"], base_dir)
    assert np.array_equal(pixels(result["files"][0]), pixels(expected[0]))
    off = run_json("flux2_klein", "txt2img", {**info["request"], "cfg": 1.0}, tmp_path / "off", str(base_dir))
    assert not np.array_equal(pixels(off["files"][0]), pixels(result["files"][0]))  # guidance really ran


def test_distilled_presets_fill_before_anything_loads():
    prepared = prepare("flux2_klein", "txt2img", {"prompt": "x"}, RunOptions(model="tiny"))
    assert prepared.variant == "4b"
    assert prepared.preset_fill.patch == {"width": 1024, "height": 1024, "steps": 4, "cfg": 1.0,
                                          "max_sequence_length": 512, "sampler": "Euler"}


def test_cfg_on_a_distilled_model_is_refused_before_loading(tmp_path):
    with pytest.raises(ParamError, match="ignores guidance"):
        prepare("flux2_klein", "txt2img", {"prompt": "x", "width": 32, "height": 32, "cfg": 3.0},
                RunOptions(model="tiny"))


def test_a_dev_checkpoint_is_not_a_klein_one():
    problem = get_engine("flux2_klein").checkpoint_problem(tiny_model_dir("flux2"))
    assert "Flux2Pipeline checkpoint" in problem
    problem = get_engine("flux2").checkpoint_problem(tiny_model_dir("flux2_klein"))
    assert "Flux2KleinPipeline checkpoint" in problem


# -- the diffusers behaviour the sampler policy rests on (diffusers 0.42) -----------------------------------


def test_unipc_fails_in_the_inpaint_pipeline():
    # If this starts passing, diffusers has fixed it and the inpaint allow-list can grow.
    pipe, config = direct_pipe(Flux2KleinInpaintPipeline, tiny_model_dir("flux2_klein"))
    pipe.scheduler = UniPCMultistepScheduler.from_config(config, **FLOW_SIGMAS)
    try:
        with pytest.raises(AttributeError, match="scale_noise"):
            pipe(prompt="x", image=Image.new("RGB", (64, 64)), mask_image=Image.new("L", (64, 64), 255),
                 num_inference_steps=2, max_sequence_length=WINDOW)
    finally:  # the direct pipe is shared by the session's other tests
        pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(config)


def test_inpaint_takes_its_size_from_the_image_not_width_and_height():
    pipe, _ = direct_pipe(Flux2KleinInpaintPipeline, tiny_model_dir("flux2_klein"))
    image = pipe(prompt="x", image=Image.new("RGB", (64, 64)), mask_image=Image.new("L", (64, 64), 255), width=96,
                 height=96, num_inference_steps=2, strength=1.0, max_sequence_length=WINDOW).images[0]
    assert image.size == (64, 64)  # hence the kit resizes the init image to the target size first


def test_cli_exit_2_for_a_base_only_value_on_the_distilled_model(tmp_path):
    out = tmp_path / "out"
    result = cli_run(["run", "flux2_klein", "edit", "--model", "tiny", "--out", str(out), "--json",
                      json.dumps({"prompt": "x", "images": [write_test_image(tmp_path / "a.png", (64, 64))],
                                  "cfg": 2.0})])
    assert result.exit_code == 2 and "cfg: got 2.0" in result.stderr and not out.exists()


def test_first_block_cache_is_refused_before_loading_and_fails_in_diffusers(tmp_path):
    out = tmp_path / "out"
    result = cli_run(["run", "flux2_klein", "txt2img", "--model", "tiny", "--out", str(out), "--json",
                      json.dumps({"prompt": "x", "width": 32, "height": 32, "cache": {"type": "first_block"}})])
    assert result.exit_code == 2 and "cache.type: 'first_block' fails" in result.stderr and not out.exists()
    # the diffusers behaviour behind it: if this starts passing, diffusers has fixed it and the refusal can go
    from diffusers import FirstBlockCacheConfig

    pipe = Flux2KleinPipeline.from_pretrained(tiny_model_dir("flux2_klein"))
    pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=0.05))
    with pytest.raises(TypeError):
        pipe(prompt="x", width=32, height=32, num_inference_steps=2, max_sequence_length=WINDOW)


def test_taylorseer_runs_on_klein(tmp_path):
    info = run_json("flux2_klein", "txt2img", {"prompt": "x", "width": 32, "height": 32, "steps": 4, "seed": 1,
                                               "max_sequence_length": WINDOW,
                                               "cache": {"type": "taylorseer", "cache_interval": 2}},
                    tmp_path / "out")["info"]
    assert info["notes"]["cache"]["type"] == "taylorseer" and info["notes"]["cache"]["removed_after_run"] is True
