"""The shipped single-file config folders: real architectures (on the meta device), real CLIP tokenizers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from codex_sd import single_file
from codex_sd.single_file import VARIANTS, config_folder

# Parameter counts of the reference checkpoints' components.
SD15_UNET = 859_520_964
SDXL_UNET = 2_567_463_684
INPAINT_EXTRA = 5 * 320 * 3 * 3  # conv_in takes 5 more channels (masked-image latents and the mask)
VAE = 83_653_863  # SD 1.5's and SDXL's VAEs share the architecture
CLIP_L = 123_060_480  # CLIP ViT-L/14 text model
CLIP_BIGG_PROJ = 694_659_840  # OpenCLIP ViT-bigG/14 text model with its projection

EXPECTED = {
    "sd15": dict(pipeline="StableDiffusionPipeline", scheduler="PNDMScheduler", unet=SD15_UNET, in_channels=4,
                 scaling_factor=0.18215, sample_size=64),
    "sd15_inpaint": dict(pipeline="StableDiffusionInpaintPipeline", scheduler="DDIMScheduler",
                         unet=SD15_UNET + INPAINT_EXTRA, in_channels=9, scaling_factor=0.18215, sample_size=64),
    "sdxl": dict(pipeline="StableDiffusionXLPipeline", scheduler="EulerDiscreteScheduler", unet=SDXL_UNET,
                 in_channels=4, scaling_factor=0.13025, sample_size=128),
    "sdxl_inpaint": dict(pipeline="StableDiffusionXLInpaintPipeline", scheduler="EulerDiscreteScheduler",
                         unet=SDXL_UNET + INPAINT_EXTRA, in_channels=9, scaling_factor=0.13025, sample_size=128),
}

A_PHOTO_OF_A_CAT = [49406, 320, 1125, 539, 320, 2368, 49407]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory, monkeypatch):
    # One cache per test module: the folders are built once, and never in the user's cache.
    monkeypatch.setenv("CODEX_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "single-file-cache"))


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_variants_are_the_shipped_folders():
    assert set(VARIANTS) == set(EXPECTED)
    shipped = {p.name for p in single_file.DATA_DIR.iterdir() if (p / "model_index.json").is_file()}
    assert shipped == set(VARIANTS)


@pytest.mark.parametrize("variant", VARIANTS)
def test_folder_materialises_complete(variant):
    folder = config_folder(variant)
    assert folder.name == f"{variant}-{single_file.CONFIGS_VERSION}"
    assert folder.parent.parent.name == "single-file-cache"
    index = json.loads((folder / "model_index.json").read_text())
    components = {name: value[1] for name, value in index.items()
                  if isinstance(value, list) and value[0] is not None}
    assert "unet" in components and "vae" in components and "tokenizer" in components
    for name, cls in components.items():
        sub = folder / name
        if cls == "CLIPTokenizer":
            wanted = ["vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"]
        elif name == "scheduler":
            wanted = ["scheduler_config.json"]
        else:
            wanted = ["config.json"]
        for file in wanted:
            assert (sub / file).is_file(), f"{variant}: {name}/{file} missing"
    assert config_folder(variant) == folder  # built once, then reused
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")], "a staging folder was left behind"


def test_unknown_variant():
    with pytest.raises(ValueError, match="sd3"):
        config_folder("sd3")


@pytest.mark.parametrize("variant", VARIANTS)
def test_pipeline_config_reads(variant):
    import diffusers

    folder = config_folder(variant)
    expected = EXPECTED[variant]
    pipeline_cls = getattr(diffusers, expected["pipeline"])
    config = pipeline_cls.load_config(folder)
    assert config["_class_name"] == expected["pipeline"]
    assert config["scheduler"] == ["diffusers", expected["scheduler"]]
    if variant.startswith("sd15"):
        assert config["safety_checker"] == [None, None] and config["feature_extractor"] == [None, None]
        assert config["requires_safety_checker"] is False
    else:
        assert config["text_encoder_2"] == ["transformers", "CLIPTextModelWithProjection"]
        assert config["tokenizer_2"] == ["transformers", "CLIPTokenizer"]
    assert diffusers.pipelines.StableDiffusionPipeline.load_config(folder)["_class_name"] == expected["pipeline"]
    scheduler = getattr(diffusers, expected["scheduler"]).from_pretrained(folder, subfolder="scheduler")
    assert scheduler.config.beta_schedule == "scaled_linear" and scheduler.config.steps_offset == 1
    assert (scheduler.config.beta_start, scheduler.config.beta_end) == (0.00085, 0.012)


@pytest.mark.parametrize("variant", VARIANTS)
def test_components_have_the_real_architecture(variant):
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    folder = config_folder(variant)
    expected = EXPECTED[variant]
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
        text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder"))
        text_encoder_2 = (CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(folder / "text_encoder_2"))
                          if variant.startswith("sdxl") else None)
    assert next(unet.parameters()).device.type == "meta"
    assert unet.config.in_channels == expected["in_channels"] and unet.config.out_channels == 4
    assert unet.config.sample_size == expected["sample_size"]
    assert _count(unet) == expected["unet"]
    assert _count(vae) == VAE
    assert vae.config.scaling_factor == expected["scaling_factor"]
    assert _count(text_encoder) == CLIP_L
    assert text_encoder.config.hidden_act == "quick_gelu"
    if text_encoder_2 is not None:
        assert _count(text_encoder_2) == CLIP_BIGG_PROJ
        assert text_encoder_2.config.hidden_act == "gelu"
        # SDXL's UNet conditions on both encoders' hidden states and bigG's pooled projection
        assert unet.config.cross_attention_dim == text_encoder.config.hidden_size + text_encoder_2.config.hidden_size
        add_time = unet.config.addition_time_embed_dim
        assert unet.config.projection_class_embeddings_input_dim == 6 * add_time + text_encoder_2.config.projection_dim
        assert vae.config.force_upcast is True
    else:
        assert unet.config.cross_attention_dim == text_encoder.config.hidden_size


@pytest.mark.parametrize("variant", VARIANTS)
def test_tokenizers(variant):
    from transformers import CLIPTokenizer

    folder = config_folder(variant)
    names = ["tokenizer", "tokenizer_2"] if variant.startswith("sdxl") else ["tokenizer"]
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith("tokenizer")) == names
    for name in names:
        tokenizer = CLIPTokenizer.from_pretrained(folder / name)
        assert len(tokenizer) == 49408
        assert tokenizer("a photo of a cat").input_ids == A_PHOTO_OF_A_CAT
        assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (49406, 49407, 49407)
        assert tokenizer.model_max_length == 77
        assert tokenizer("A PHOTO of a Cat").input_ids == A_PHOTO_OF_A_CAT  # lower-cased
        padded = tokenizer("a cat", padding="max_length", max_length=77, truncation=True).input_ids
        assert len(padded) == 77
        pad = 0 if name == "tokenizer_2" else 49407  # OpenCLIP bigG pads with "!" (id 0), CLIP ViT-L with EOS
        assert tokenizer.pad_token_id == pad and padded[4:] == [pad] * 73
        assert tokenizer.convert_ids_to_tokens(0) == "!"


def test_vocab_is_clips():
    vocab_text, merges_text = single_file._vocab_and_merges()
    vocab = json.loads(vocab_text)
    assert len(vocab) == 49408 and sorted(vocab.values()) == list(range(49408))
    assert vocab["!"] == 0 and vocab["!</w>"] == 256 and vocab["in"] == 512
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    merges = merges_text.splitlines()
    assert merges[0] == "#version: 0.2" and merges[1] == "i n" and len(merges) == 1 + 48894


def test_generation_imports_neither_torch_nor_transformers(tmp_path):
    code = ("import sys; from codex_sd.single_file import config_folder, VARIANTS\n"
            "[config_folder(v) for v in VARIANTS]\n"
            "print(sorted(m for m in ('torch', 'transformers', 'diffusers') if m in sys.modules))")
    env_cache = tmp_path / "cache"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, "CODEX_CACHE_DIR": str(env_cache)})
    assert result.stdout.strip() == "[]"
    assert sorted(p.name for p in (env_cache / "configs").iterdir()) == sorted(
        f"{v}-{single_file.CONFIGS_VERSION}" for v in VARIANTS)


@pytest.mark.parametrize("variant", VARIANTS)
def test_from_single_file_reads_the_folder_offline(variant, tmp_path):
    """diffusers' own single-file path builds the pipeline from the folder (hub offline in these tests).

    The weight-bearing components are passed in, built on the meta device from the folder's configs,
    so the checkpoint file can be a dummy: what is checked is the config folder, read by diffusers —
    the pipeline class, the scheduler, the tokenizers and the pipeline's own config values.
    """
    import diffusers
    import torch
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    folder = config_folder(variant)
    expected = EXPECTED[variant]
    with init_empty_weights():
        components = dict(
            unet=UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet")),
            vae=AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae")),
            text_encoder=CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder")),
        )
        if variant.startswith("sdxl"):
            components["text_encoder_2"] = CLIPTextModelWithProjection(
                CLIPTextConfig.from_pretrained(folder / "text_encoder_2"))
    checkpoint = tmp_path / "dummy.safetensors"
    save_file({"dummy": torch.zeros(1)}, str(checkpoint))
    pipeline_cls = getattr(diffusers, expected["pipeline"])
    # diffusers' model loaders accept `config` only as a str
    pipe = pipeline_cls.from_single_file(str(checkpoint), config=str(folder), local_files_only=True, **components)
    assert type(pipe).__name__ == expected["pipeline"]
    assert type(pipe.scheduler).__name__ == expected["scheduler"]
    assert pipe.tokenizer("a photo of a cat").input_ids == A_PHOTO_OF_A_CAT
    assert pipe.vae_scale_factor == 8
    if variant.startswith("sdxl"):
        assert pipe.tokenizer_2.pad_token_id == 0
        assert pipe.config.force_zeros_for_empty_prompt is True
        if variant == "sdxl_inpaint":
            assert pipe.config.requires_aesthetics_score is False
    else:
        assert pipe.safety_checker is None and pipe.feature_extractor is None
