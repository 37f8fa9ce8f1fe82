"""krea2 on tiny random-weight Krea 2 models: txt2img equals a direct diffusers call."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler, Krea2Pipeline, UniPCMultistepScheduler

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
)
from codex_krea import tiny

FLOW_SIGMAS = {"prediction_type": "flow_prediction", "use_flow_sigmas": True}


def direct_call(request: dict, model_dir: Path):
    pipe, checkpoint_config = direct_pipe(Krea2Pipeline, model_dir)
    if request["sampler"] == "Euler":
        pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(checkpoint_config)
    else:  # UniPC with flow sigmas at the checkpoint's shift, as codex's flow table builds it
        pipe.scheduler = UniPCMultistepScheduler.from_config(checkpoint_config, **FLOW_SIGMAS,
                                                             flow_shift=checkpoint_config["shift"])
    return pipe(prompt=request["prompt"], negative_prompt=request["negative_prompt"] or None,
                guidance_scale=request["cfg"], width=request["width"], height=request["height"],
                num_inference_steps=request["steps"], num_images_per_prompt=request["batch_size"],
                max_sequence_length=request["max_sequence_length"], generator=seed_generators(request)).images


class TestKrea2(EngineConformance):
    engine = "krea2"
    cases = {
        # real CFG (Krea convention, against the empty prompt) with UniPC, a batch of two; a short text block. No
        # negative prompt here: every preset is validated over this case, and Turbo's cfg 0 rightly refuses one
        # (test_base_runs_with_its_presets_and_equals_diffusers runs one)
        "txt2img": {"prompt": "a red fox in snow", "cfg": 2.5, "width": 48, "height": 32,
                    "steps": 3, "seed": 42, "batch_size": 2, "max_sequence_length": 24, "sampler": "UniPC"},
    }
    bad_requests = [
        ("size_off_stride", "txt2img", {"prompt": "x", "width": 40}, "nearest valid values: 32 or 48"),
        ("negative_prompt_without_cfg", "txt2img", {"prompt": "x", "negative_prompt": "blurry"},
         "negative_prompt: it would be ignored"),
        ("a1111_sampler", "txt2img", {"prompt": "x", "sampler": "Euler a"}, "allowed: Euler, UniPC"),
        ("dpm", "txt2img", {"prompt": "x", "sampler": "DPM++ 2M"}, "sampler: 'DPM++ 2M'"),
        ("unknown_key", "txt2img", {"prompt": "x", "guidance_scale": 2.0}, "guidance_scale: unknown field"),
        ("max_sequence_length_range", "txt2img", {"prompt": "x", "max_sequence_length": 513}, "max_sequence_length"),
        ("max_sequence_length_below_the_template", "txt2img", {"prompt": "x", "max_sequence_length": 5},
         "max_sequence_length"),
        ("flow_shift_is_not_a_krea_field", "txt2img", {"prompt": "x", "flow_shift": 3.0}, "flow_shift: unknown field"),
    ]

    def direct(self, task, request, model_dir):
        return direct_call(request, model_dir)


# -- variants ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory) -> Path:
    """A tiny Krea 2 Raw (is_distilled false), built with the plugin's own builder."""
    path = tmp_path_factory.mktemp("krea2-base") / "model"
    tiny.build(path, "base")
    return path


def test_variant_is_read_from_the_pipeline_config(base_dir, tmp_path):
    engine = get_engine("krea2")
    assert engine.detect_variant(tiny_model_dir("krea2")) == "distilled"
    assert engine.detect_variant(base_dir) == "base"
    assert engine.detect_variant(tmp_path) is None  # no model_index.json
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "Krea2Pipeline"}))
    assert engine.detect_variant(tmp_path) == "base"  # the pipeline's default is_distilled (False)
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "QwenImagePipeline"}))
    with pytest.raises(UsageError):
        prepare("krea2", "txt2img", {"prompt": "x"}, RunOptions(model=str(tmp_path)))


def test_presets_fill_by_variant_before_anything_loads(base_dir):
    turbo = prepare("krea2", "txt2img", {"prompt": "x"}, RunOptions(model="tiny"))
    assert turbo.variant == "distilled"
    assert turbo.preset_fill.patch == {"width": 1024, "height": 1024, "steps": 8, "cfg": 0.0,
                                       "max_sequence_length": 512, "sampler": "Euler"}
    raw = prepare("krea2", "txt2img", {"prompt": "x"}, RunOptions(model=str(base_dir)))
    assert raw.variant == "base" and (raw.preset_fill.patch["steps"], raw.preset_fill.patch["cfg"]) == (52, 3.5)


def test_base_runs_with_its_presets_and_equals_diffusers(base_dir, tmp_path):
    """Raw computes its shift from the image size (Turbo pins it) and runs real CFG against the negative prompt."""
    request = {"prompt": "a fox", "negative_prompt": "blurry", "width": 32, "height": 32, "seed": 3, "steps": 2,
               "max_sequence_length": 16}
    result = run_json("krea2", "txt2img", request, tmp_path / "out", str(base_dir))
    info = result["info"]
    assert info["model"]["variant"] == "base" and info["request"]["cfg"] == 3.5
    assert np.array_equal(pixels(result["files"][0]), pixels(direct_call(info["request"], base_dir)[0]))


# -- behaviour beyond the shared suite ----------------------------------------------------------------


def test_truncation_counts_the_prompts_own_window(tmp_path):
    """max_sequence_length 16 leaves the prompt 11 tokens (5 are the template's assistant suffix)."""
    info = run_json("krea2", "txt2img", {"prompt": "a very long prompt", "width": 32, "height": 32, "steps": 1,
                                         "seed": 1, "max_sequence_length": 16}, tmp_path / "out")["info"]
    assert info["notes"]["truncated"]["prompt"]["tokenizer"]["kept"] == 11
    pipe, _ = direct_pipe(Krea2Pipeline, tiny_model_dir("krea2"))
    embeds, mask = pipe.get_text_hidden_states("a very long prompt", max_sequence_length=16)
    assert mask.shape[1] == 16 and int(mask[0, :11].sum()) == 11  # the prompt's 11 tokens, all real text


def test_tiny_model_has_the_real_architecture():
    pipe, config = direct_pipe(Krea2Pipeline, tiny_model_dir("krea2"))
    assert pipe.vae_scale_factor * pipe.patch_size == 16  # the size rule (16) is the real one
    assert type(pipe.text_encoder).__name__ == "Qwen3VLModel" and type(pipe.tokenizer).__name__ == "Qwen2Tokenizer"
    assert pipe.transformer.config.num_text_layers == len(pipe.config.text_encoder_select_layers)
    assert config["use_dynamic_shifting"] is True and config["max_image_seq_len"] == 6400
    # the chat template's system prefix is 34 tokens, as the pipeline assumes when it drops them
    prefix = pipe.tokenizer(pipe.prompt_template_encode_prefix).input_ids
    suffix = pipe.tokenizer(pipe.prompt_template_encode_suffix).input_ids
    assert (len(prefix), len(suffix)) == (pipe.prompt_template_encode_start_idx,
                                          pipe.prompt_template_encode_num_suffix_tokens)


# -- the diffusers behaviour our validation and sampler policy rest on (diffusers 0.42) -----------------


def test_diffusers_would_round_sizes_up_silently():
    pipe, _ = direct_pipe(Krea2Pipeline, tiny_model_dir("krea2"))
    image = pipe("x", width=40, height=32, num_inference_steps=1, max_sequence_length=8).images[0]
    assert image.size == (48, 32)  # asked for 40 wide: hence size_multiple = 16, checked before loading


def test_diffusers_ignores_the_negative_prompt_at_cfg_0():
    pipe, _ = direct_pipe(Krea2Pipeline, tiny_model_dir("krea2"))
    images = [pixels(pipe("x", negative_prompt=negative, guidance_scale=0.0, width=32, height=32,
                          num_inference_steps=1, max_sequence_length=8,
                          generator=seed_generators({"seed": 1})).images[0]) for negative in (None, "other")]
    assert np.array_equal(*images)  # hence a negative prompt at cfg 0 is an error


def test_dpm_fails_and_unipc_runs_the_models_schedule():
    """If this changes, diffusers has changed how Krea2Pipeline sets timesteps: revisit the allow-list."""
    pipe, checkpoint_config = direct_pipe(Krea2Pipeline, tiny_model_dir("krea2"))
    kwargs = dict(width=32, height=32, num_inference_steps=4, max_sequence_length=8)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(checkpoint_config, **FLOW_SIGMAS, solver_order=2)
    with pytest.raises(ValueError, match="custom sigmas"):
        pipe("x", **kwargs)
    euler = FlowMatchEulerDiscreteScheduler.from_config(checkpoint_config)
    unipc = UniPCMultistepScheduler.from_config(checkpoint_config, **FLOW_SIGMAS, flow_shift=checkpoint_config["shift"])
    schedules = []
    for scheduler in (euler, unipc):
        pipe.scheduler = scheduler
        pipe("x", **kwargs)
        schedules.append(np.asarray(scheduler.sigmas, dtype=np.float64))
    # the same mu-shifted sigmas (UniPC moves the first off 1.0 by 1e-6 to keep its log finite)
    assert np.allclose(*schedules, atol=1e-5) and not np.allclose(schedules[0], np.linspace(1, 0, 5))


def test_tiny_models_are_the_real_architecture(base_dir):
    """Component classes and config keys of the tiny Turbo and Raw equal the shipped reference configs' (sizes aside)."""
    assert_tiny_matches_reference("krea2")
    assert_tiny_matches_reference("krea2", folder=base_dir)


def test_packed_latents_come_back_as_one_images_channels():
    """Krea2Pipeline packs 2x2 latent patches: a preview unpacks them as the pipeline does, to the first image's
    [C, h, w] (the wan21 coefficients' space is checked with the other engines' in the kit's test_previews.py)."""
    import torch
    from types import SimpleNamespace

    engine = get_engine("krea2")
    pipe, _ = direct_pipe(Krea2Pipeline, tiny_model_dir("krea2"))
    known = torch.randn(2, 16, 4, 6)  # [B, C, h, w] latents of a 48x32 image
    packed = pipe._pack_latents(known, 2, 16, 4, 6)
    job = SimpleNamespace(params=engine.params_model("txt2img").model_construct(width=48, height=32))
    assert torch.equal(engine.preview_latents(pipe, packed, job), known[0])


# -- LoRAs (diffusers' Krea2LoraLoaderMixin) ----------------------------------------------------------


def write_krea_lora(folder: Path, dest: Path) -> Path:
    return write_transformer_lora("Krea2Pipeline", folder, dest, ["to_q", "to_k", "to_v", "to_out.0"],
                                  "tiny_krea2_lora.safetensors")


def test_a_lora_changes_the_image_as_diffusers_loads_it_and_is_undone(tmp_path):
    request = {"prompt": "a fox", "width": 32, "height": 32, "seed": 3, "steps": 2, "max_sequence_length": 16}
    lora = write_krea_lora(tiny_model_dir("krea2"), tmp_path)
    assert get_engine("krea2").lora_problem(lora) is None  # `codex models --kind loras` lists it for krea2
    plain = run_json("krea2", "txt2img", request, tmp_path / "a")
    with_lora = run_json("krea2", "txt2img", {**request, "loras": [{"path": str(lora), "scale": 0.8}]}, tmp_path / "b")
    again = run_json("krea2", "txt2img", request, tmp_path / "c")
    assert not np.array_equal(pixels(plain["files"][0]), pixels(with_lora["files"][0]))
    assert np.array_equal(pixels(plain["files"][0]), pixels(again["files"][0]))  # undone after its run
    pipe = Krea2Pipeline.from_pretrained(tiny_model_dir("krea2"))
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(lora), adapter_name="x")
    pipe.set_adapters(["x"], adapter_weights=[0.8])
    info = with_lora["info"]["request"]
    expected = pipe(prompt=info["prompt"], guidance_scale=info["cfg"], width=32, height=32, num_inference_steps=2,
                    max_sequence_length=16, generator=seed_generators(info)).images[0]
    assert np.array_equal(pixels(with_lora["files"][0]), pixels(expected))


def test_a_turbo_marked_only_in_its_transformer_config_runs_turbos_schedule(base_dir, tmp_path):
    """A conversion whose transformer/config.json says is_distilled (model_index.json silent) is Turbo: detected so,
    and run with Turbo's fixed shift as diffusers runs it when model_index.json says so."""
    folder = tmp_path / "converted"
    shutil.copytree(base_dir, folder)
    index = json.loads((folder / "model_index.json").read_text())
    del index["is_distilled"]
    (folder / "model_index.json").write_text(json.dumps(index))
    config = json.loads((folder / "transformer" / "config.json").read_text())
    (folder / "transformer" / "config.json").write_text(json.dumps({**config, "is_distilled": True}))
    assert get_engine("krea2").detect_variant(folder) == "distilled"
    request = {"prompt": "a fox", "width": 32, "height": 32, "seed": 3, "steps": 2, "max_sequence_length": 16}
    result = run_json("krea2", "txt2img", request, tmp_path / "out", str(folder))
    pipe = Krea2Pipeline.from_pretrained(base_dir, is_distilled=True)  # the same weights, flagged as diffusers reads it
    pipe.set_progress_bar_config(disable=True)
    info = result["info"]["request"]
    expected = pipe(prompt="a fox", guidance_scale=info["cfg"], width=32, height=32, num_inference_steps=2,
                    max_sequence_length=16, generator=seed_generators(info)).images[0]
    assert info["cfg"] == 0.0 and np.array_equal(pixels(result["files"][0]), pixels(expected))
