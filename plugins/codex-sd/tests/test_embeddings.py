"""Textual-inversion embeddings used by name in the prompt (A1111 syntax): diffusers' pixels, then gone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline
from safetensors.torch import save_file

from codex_diffusers.testing import cli_run, direct_pipe, pixels, run_json, tiny_model_dir

REQUEST = {"seed": 6, "width": 32, "height": 32, "steps": 2, "cfg": 7.0, "sampler": "DPM++ 2M", "scheduler": "Karras"}
PIPELINES = {"sd15": (StableDiffusionPipeline, {"safety_checker": None, "feature_extractor": None,
                                                "requires_safety_checker": False}),
             "sdxl": (StableDiffusionXLPipeline, {})}


@pytest.fixture
def embeddings(tmp_path, monkeypatch):
    """Two-vector embeddings as A1111 saves them: emb_params (SD 1.x), clip_l + clip_g (SDXL)."""
    folder = tmp_path / "models" / "embeddings"
    folder.mkdir(parents=True)
    generator = torch.Generator().manual_seed(8)
    vectors = {"sd15": {"emb_params": torch.randn(2, 32, generator=generator)},
               "sdxl": {"clip_l": torch.randn(2, 32, generator=generator),
                        "clip_g": torch.randn(2, 48, generator=generator)}}
    save_file(vectors["sd15"], folder / "FoxStyle.safetensors")
    save_file(vectors["sdxl"], folder / "FoxStyleXL.safetensors")
    monkeypatch.setenv("CODEX_MODELS_DIR", str(tmp_path / "models"))
    return vectors


def direct(engine: str, prompt: str, vectors: dict, name: str) -> np.ndarray:
    cls, options = PIPELINES[engine]
    pipe, config = direct_pipe(cls, tiny_model_dir(engine), **options)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", solver_order=2,
                                                             use_karras_sigmas=True)
    encoders = [("vectors" if engine == "sd15" else "clip_l", pipe.tokenizer, pipe.text_encoder)]
    if engine == "sdxl":
        encoders.append(("clip_g", pipe.tokenizer_2, pipe.text_encoder_2))
    originals = [(encoder, encoder.get_input_embeddings(), encoder.config.vocab_size) for _, _, encoder in encoders]
    for key, tokenizer, encoder in encoders:
        tensor = vectors["emb_params"] if key == "vectors" else vectors[key]
        pipe.load_textual_inversion(tensor, token=name, tokenizer=tokenizer, text_encoder=encoder)
    try:
        image = pipe(prompt=prompt, width=32, height=32, num_inference_steps=2, guidance_scale=7.0,
                     generator=torch.Generator("cpu").manual_seed(6)).images[0]
    finally:
        for _, tokenizer, encoder in encoders:
            pipe.unload_textual_inversion(tokens=[name, f"{name}_1"], tokenizer=tokenizer, text_encoder=encoder)
        for encoder, embedding, vocab_size in originals:
            encoder.set_input_embeddings(embedding)
            encoder.config.vocab_size = vocab_size
    return pixels(image)


@pytest.mark.parametrize("engine, name", [("sd15", "FoxStyle"), ("sdxl", "FoxStyleXL")])
def test_an_embedding_named_in_the_prompt_gives_diffusers_pixels_and_is_unloaded(engine, name, embeddings, tmp_path):
    base = run_json(engine, "txt2img", {**REQUEST, "prompt": "a fox"}, tmp_path / "a")
    used = run_json(engine, "txt2img", {**REQUEST, "prompt": f"a {name} fox"}, tmp_path / "b")
    assert np.array_equal(pixels(used["files"][0]), direct(engine, f"a {name} fox", embeddings[engine], name))
    assert used["info"]["notes"]["embeddings"] == [name]
    sha = used["info"]["model"]["files"][f"embedding:{name}"]["sha256"]
    assert f'TI hashes: "{name}: {sha[:12]}"' in cli_run(["info", used["files"][0], "--parameters"]).stdout
    again = run_json(engine, "txt2img", {**REQUEST, "prompt": "a fox"}, tmp_path / "c")
    assert np.array_equal(pixels(again["files"][0]), pixels(base["files"][0]))


def test_an_embedding_for_the_other_family_exits_2(embeddings, tmp_path):
    result = cli_run(["run", "sd15", "txt2img", "--model", "tiny", "--out", str(tmp_path / "o"),
                      "--json", json.dumps({**REQUEST, "prompt": "a FoxStyleXL fox"})])
    assert result.exit_code == 2 and "embedding FoxStyleXL" in result.stderr and "an SDXL embedding" in result.stderr
    assert not (tmp_path / "o").exists()
