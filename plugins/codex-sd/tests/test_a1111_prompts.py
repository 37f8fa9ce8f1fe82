"""A1111 prompts on sd15/sdxl: <lora:...> tags, (word:1.3) weights through compel, long prompts not cut."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from compel import Compel
from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

from codex_diffusers.testing.checkpoint_writers import write_kohya_sd_lora
from codex_diffusers.testing import cli_run, direct_pipe, pixels, run_json, tiny_model_dir

BASE = {"seed": 3, "width": 32, "height": 32, "steps": 2, "cfg": 7.0, "sampler": "DPM++ 2M", "scheduler": "Karras"}


@pytest.fixture
def models(tmp_path, monkeypatch):
    folder = tmp_path / "models"
    write_kohya_sd_lora(tiny_model_dir("sd15"), folder / "loras" / "ink.safetensors", seed=1)
    monkeypatch.setenv("CODEX_MODELS_DIR", str(folder))
    return folder


def image(result) -> np.ndarray:
    return pixels(result["files"][0])


def test_a_lora_tag_is_the_same_run_as_the_explicit_loras_field(models, tmp_path):
    tagged = run_json("sd15", "txt2img", {**BASE, "prompt": "a red fox <lora:ink:0.7>"}, tmp_path / "a")
    explicit = run_json("sd15", "txt2img", {**BASE, "prompt": "a red fox", "loras": [{"name": "ink", "scale": 0.7}]},
                        tmp_path / "b")
    assert np.array_equal(image(tagged), image(explicit))
    plain = run_json("sd15", "txt2img", {**BASE, "prompt": "a red fox"}, tmp_path / "c")
    assert not np.array_equal(image(tagged), image(plain))
    notes = tagged["info"]["notes"]
    assert notes["prompt_loras"] == [{"tag": "<lora:ink:0.7>", "name": "ink", "scale": 0.7,
                                      "path": str(models / "loras" / "ink.safetensors")}]
    assert tagged["info"]["model"]["files"]["lora:ink"]["scale"] == 0.7
    parameters = cli_run(["info", tagged["files"][0], "--parameters"]).stdout
    sha = tagged["info"]["model"]["files"]["lora:ink"]["sha256"]
    assert f'Lora hashes: "ink: {sha[:12]}"' in parameters  # as A1111 writes it


def test_an_unknown_lora_tag_exits_2_before_loading(models, tmp_path):
    result = cli_run(["run", "sd15", "txt2img", "--model", "tiny", "--out", str(tmp_path / "o"),
                      "--json", json.dumps({**BASE, "prompt": "a fox <lora:nowhere:0.5>"})])
    assert result.exit_code == 2
    assert "prompt: <lora:nowhere:0.5>: no loras file named 'nowhere'" in result.stderr
    assert not (tmp_path / "o").exists()


def test_with_plain_syntax_a_tag_is_just_text(models, tmp_path):
    result = run_json("sd15", "txt2img", {**BASE, "prompt": "a fox <lora:nowhere:0.5>", "prompt_syntax": "plain"},
                      tmp_path / "a")
    assert "prompt_loras" not in result["info"]["notes"]


def _direct_with_embeddings(prompt_embeds, negative_embeds) -> np.ndarray:
    pipe, config = direct_pipe(StableDiffusionPipeline, tiny_model_dir("sd15"), safety_checker=None,
                               feature_extractor=None, requires_safety_checker=False)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", solver_order=2,
                                                             use_karras_sigmas=True)
    result = pipe(prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_embeds, width=32, height=32,
                  num_inference_steps=2, guidance_scale=7.0, generator=torch.Generator("cpu").manual_seed(3))
    return pixels(result.images[0])


def test_a1111_weights_equal_compels_own_syntax_on_a_direct_call(tmp_path):
    ours = run_json("sd15", "txt2img", {**BASE, "prompt": "a (red fox:1.3) in [snow]"}, tmp_path / "a")
    pipe, _ = direct_pipe(StableDiffusionPipeline, tiny_model_dir("sd15"), safety_checker=None,
                          feature_extractor=None, requires_safety_checker=False)
    compel = Compel(tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder, truncate_long_prompts=False)
    with torch.no_grad():
        # compel's syntax for the same weights: (x)1.3, and A1111's [x] is x / 1.1
        positive, negative = compel(["a (red fox)1.3 in (snow)" + repr(1 / 1.1), ""])
    assert np.array_equal(image(ours), _direct_with_embeddings(positive[None], negative[None]))
    assert ours["info"]["notes"]["prompt_encoding"]["via"] == "compel"
    plain = run_json("sd15", "txt2img", {**BASE, "prompt": "a red fox in snow"}, tmp_path / "b")
    assert not np.array_equal(image(ours), image(plain))


def test_a_prompt_without_syntax_is_the_same_in_both_syntaxes(tmp_path):
    a1111 = run_json("sd15", "txt2img", {**BASE, "prompt": "a red fox"}, tmp_path / "a")
    plain = run_json("sd15", "txt2img", {**BASE, "prompt": "a red fox", "prompt_syntax": "plain"}, tmp_path / "b")
    assert np.array_equal(image(a1111), image(plain))


@pytest.mark.parametrize("engine", ["sd15", "sdxl"])
def test_a_200_token_prompt_is_encoded_whole_in_a1111_syntax_and_cut_with_a_note_in_plain(engine, tmp_path):
    words = " ".join(f"fox{i % 10}" for i in range(100))  # "fox3" is 2 CLIP tokens: 200 tokens
    long = run_json(engine, "txt2img", {**BASE, "prompt": words}, tmp_path / "a")["info"]["notes"]
    assert long["prompt_encoding"]["long"] is True and long["prompt_encoding"]["tokens"] >= 3 * 77
    assert "truncated" not in long
    cut = run_json(engine, "txt2img", {**BASE, "prompt": words, "prompt_syntax": "plain"}, tmp_path / "b")
    assert cut["info"]["notes"]["truncated"]["prompt"]["tokenizer"]["kept"] == 77


def test_clip_skip_2_changes_sd15_and_sdxl_refuses_it(tmp_path):
    skip = run_json("sd15", "txt2img", {**BASE, "prompt": "a red fox", "clip_skip": 2}, tmp_path / "a")
    last = run_json("sd15", "txt2img", {**BASE, "prompt": "a red fox"}, tmp_path / "b")
    assert not np.array_equal(image(skip), image(last))
    assert "Clip skip: 2" in cli_run(["info", skip["files"][0], "--parameters"]).stdout
    result = cli_run(["run", "sdxl", "txt2img", "--model", "tiny", "--json",
                      json.dumps({**BASE, "prompt": "x", "clip_skip": 2})])
    assert result.exit_code == 2 and "clip_skip: got 2: engine sdxl takes 1" in result.stderr


def test_replay_warns_when_a_tag_names_other_content_now(models, tmp_path):
    run = run_json("sd15", "txt2img", {**BASE, "prompt": "a red fox <lora:ink:0.7>"}, tmp_path / "a")
    write_kohya_sd_lora(tiny_model_dir("sd15"), models / "loras" / "ink.safetensors", seed=9)  # replaced
    result = cli_run(["replay", run["files"][0], "--out", str(tmp_path / "b"), "--quiet"])
    assert result.exit_code == 0, result.stderr
    assert "warning: lora:ink:" in result.stderr and "other content than the run used" in result.stderr
