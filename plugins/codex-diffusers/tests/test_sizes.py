"""Component sizes before loading: from safetensors headers, or from the shipped reference configs on the meta device."""

import importlib
import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

from codex_core.testing import tiny_model_dir
from codex_core import read_safetensors_header
from codex_diffusers.sizes import component_sizes, reference_config_dir
from codex_diffusers.testing import assert_tiny_matches_reference

# Published parameter counts of the reference models' components.
PUBLISHED = {
    "wan_ti2v_5b": {"transformer": 5.0e9, "text_encoder": 5.7e9},  # Wan2.2 TI2V-5B; UMT5-XXL encoder
    "wan_t2v_14b": {"transformer": 14e9, "transformer_2": 14e9, "text_encoder": 5.7e9},  # A14B: 14B per expert
    "wan_i2v_14b": {"transformer": 14e9, "transformer_2": 14e9, "text_encoder": 5.7e9},
    # Wan2.1-VACE-14B: the "14B" Wan 2.1 transformer (14.29B, as one A14B expert) + 3.05B of VACE context blocks
    "wan_vace": {"transformer": 14.29e9 + 3.05e9, "text_encoder": 5.7e9},
    # Wan2.2 Animate-14B: "14B" names the backbone; its transformer with image cross-attention, face adapters and
    # motion/face encoders counts 17.3B (treksis/video-lab's card); CLIP ViT-H/14 image tower 632M (open_clip)
    "wan_animate": {"transformer": 17.3e9, "image_encoder": 632e6, "text_encoder": 5.7e9},
    "flux": {"transformer": 11.9e9, "text_encoder_2": 4.7e9, "text_encoder": 123e6},  # FLUX.1-dev, T5-XXL, CLIP-L
    "hunyuan_video": {"transformer": 12.8e9, "text_encoder": 7.5e9, "text_encoder_2": 123e6},  # Llama-3-8B w/o head
    "sdxl": {"unet": 2.57e9, "text_encoder": 123e6, "text_encoder_2": 695e6},
    "sd15": {"unet": 860e6, "text_encoder": 123e6},
    # Qwen-Image: the card's "20B" MMDiT is 20.43B (40.86 GB of bf16 shards); Qwen2.5-VL-7B-Instruct 8.29B; VAE 127M
    "qwen_image": {"transformer": 20.43e9, "text_encoder": 8.29e9, "vae": 127e6},
    # FLUX.2 [klein] 4B: its 3.9B transformer (BFL's "4B"), Qwen3-4B; [dev] and the 9B: codex-flux2's own tests
    "flux2_klein": {"transformer": 3.9e9, "text_encoder": 4.0e9},
    "z_image": {"transformer": 6.15e9, "text_encoder": 4.0e9},  # Z-Image-Turbo: 6.15B DiT; Qwen3-4B (tied head)
    "chroma": {"transformer": 8.9e9, "text_encoder": 4.7e9},  # Chroma1-HD: 8.9B; T5-XXL encoder
    # SD 3.5 Large: "8.1 billion parameters" (model card); CLIP-L and bigG with projections, T5-XXL encoder
    "sd35": {"transformer": 8.1e9, "text_encoder": 123e6, "text_encoder_2": 695e6, "text_encoder_3": 4.7e9},
    # Krea 2: "12.9B parameters" (the Krea-2 diffusers model cards); Qwen3-VL-4B-Instruct: 4.44B (its hub listing)
    "krea2": {"transformer": 12.9e9, "text_encoder": 4.44e9},
    # LTX-2: "19B" audio-video transformer (model card; ltx-core: 14B video + 5B audio stream), Gemma-3 12B
    # (google/gemma-3-12b-it: 12.2B with its SigLIP tower)
    "ltx2": {"transformer": 19e9, "text_encoder": 12.2e9},
    # HunyuanVideo 1.5: "8.3B parameters" (the model card); Qwen2.5-VL-7B's language model without its head: Qwen2.5-7B's
    # published 7.61B less the 0.545B lm_head (152064 x 3584)
    "hunyuan_video_15": {"transformer": 8.3e9, "text_encoder": 7.07e9},
}


@pytest.mark.parametrize("engine", sorted(PUBLISHED))
def test_shipped_reference_configs_have_the_published_sizes(engine):
    folder = reference_config_dir(engine)
    sizes = component_sizes(folder)
    assert {"vae"} <= set(sizes) and "scheduler" not in sizes and "tokenizer" not in sizes
    for name, published in PUBLISHED[engine].items():
        size = sizes[name]
        assert size.source == "config"
        assert size.parameters == pytest.approx(published, rel=0.03), (engine, name, size.parameters)
        index = json.loads((folder / "model_index.json").read_text())
        assert size.class_name == index[name][1]


@pytest.mark.parametrize("engine", sorted(PUBLISHED))
def test_each_tiny_model_is_its_reference_models_architecture_at_another_size(engine):
    assert_tiny_matches_reference(engine)


def test_a_tiny_model_of_another_architecture_is_told_apart(tmp_path):
    """The check fails on a real difference: SDXL's text_encoder_2 with OpenAI CLIP's activation."""
    folder = tmp_path / "sdxl"
    shutil.copytree(tiny_model_dir("sdxl"), folder)
    config = json.loads((folder / "text_encoder_2" / "config.json").read_text())
    (folder / "text_encoder_2" / "config.json").write_text(json.dumps({**config, "hidden_act": "quick_gelu"}))
    with pytest.raises(AssertionError, match="text_encoder_2: hidden_act: the real model has 'gelu', the tiny one "
                                             "'quick_gelu'"):
        assert_tiny_matches_reference("sdxl", folder=folder)


def test_reference_config_dir_finds_each_engines_variant():
    assert reference_config_dir("wan_ti2v_5b").parts[-2:] == ("reference_configs", "ti2v_5b")
    assert reference_config_dir("flux", "dev") == reference_config_dir("flux")
    with pytest.raises(LookupError, match="schnell"):
        reference_config_dir("flux", "schnell")
    with pytest.raises(LookupError, match="no reference configs"):
        reference_config_dir("svd")


@pytest.mark.parametrize("engine", ["wan_ti2v_5b", "flux"])
def test_header_sizes_of_a_tiny_model_equal_the_loaded_parameters(engine, tmp_path):
    folder = tiny_model_dir(engine)
    index = json.loads((folder / "model_index.json").read_text())
    sizes = component_sizes(folder)
    assert set(sizes) == {name for name in index if (folder / name / "config.json").is_file()}
    for name, size in sizes.items():
        library, class_name = index[name]
        model = getattr(importlib.import_module(library), class_name).from_pretrained(folder / name)
        parameters = list(model.parameters())
        assert size.source == "safetensors"
        assert size.parameters == sum(p.numel() for p in parameters), name
        assert size.bytes == sum(p.numel() * p.element_size() for p in parameters), name
        assert size.dtype == "float32" and size.bytes_by_dtype == {"float32": size.bytes}

    # without the weight files, the same counts come from the configs (meta device)
    configs = tmp_path / "configs"
    shutil.copytree(folder, configs, ignore=shutil.ignore_patterns("*.safetensors"))
    from_configs = component_sizes(configs)
    assert {name: size.parameters for name, size in from_configs.items()} == \
        {name: size.parameters for name, size in sizes.items()}
    assert {size.source for size in from_configs.values()} == {"config"}


def test_headers_only_bytes_by_dtype_shards_and_variants(tmp_path):
    folder = tmp_path / "model"
    (folder / "transformer").mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "SomePipeline", "transformer": ["diffusers", "SomeModel"],
        "scheduler": ["diffusers", "SomeScheduler"], "image_encoder": [None, None]}))
    shard_1 = {"a": torch.zeros(10, 20, dtype=torch.bfloat16), "b": torch.zeros(5, dtype=torch.float32)}
    shard_2 = {"c": torch.zeros(3, 4, 5, dtype=torch.float8_e4m3fn)}
    save_file(shard_1, folder / "transformer" / "m-00001-of-00002.safetensors")
    save_file(shard_2, folder / "transformer" / "m-00002-of-00002.safetensors")
    (folder / "transformer" / "m.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "m-00001-of-00002.safetensors", "b": "m-00001-of-00002.safetensors",
        "c": "m-00002-of-00002.safetensors"}}))
    size = component_sizes(folder)["transformer"]
    assert (size.parameters, size.bytes) == (200 + 5 + 60, 400 + 20 + 60)
    assert size.bytes_by_dtype == {"bfloat16": 400, "float32": 20, "float8_e4m3fn": 60}
    assert size.dtype == "bfloat16" and size.class_name == "SomeModel"
    assert set(read_safetensors_header(folder / "transformer" / "m-00002-of-00002.safetensors")) >= {"c"}

    # a plain file next to an fp16 variant of the same weights: counted once
    vae = folder / "vae"
    vae.mkdir()
    save_file({"w": torch.zeros(8)}, vae / "diffusion_pytorch_model.safetensors")
    save_file({"w": torch.zeros(8, dtype=torch.float16)}, vae / "diffusion_pytorch_model.fp16.safetensors")
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "vae": ["diffusers", "AutoencoderKL"]}))
    size = component_sizes(folder)["vae"]
    assert (size.parameters, size.bytes, size.dtype) == (8, 32, "float32")
