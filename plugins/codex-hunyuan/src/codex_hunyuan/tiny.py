"""Tiny randomly initialised HunyuanVideo models of the real architectures (diffusers format).

One folder serves both tasks, because the core keeps one tiny folder per engine:
``<dest>/`` holds the text-to-video pipeline (``HunyuanVideoPipeline``) and ``<dest>/i2v/`` the
image-to-video one (``HunyuanVideoImageToVideoPipeline``), as the real models are two checkpoints.

Component sizes follow diffusers' own fast tests (``get_dummy_components`` in diffusers'
tests/pipelines/hunyuan_video/test_hunyuan_video.py and test_hunyuan_image2video.py): a
HunyuanVideo transformer with patch 1 (the real one has patch 2), the 3D causal VAE with four
blocks (spatial stride 8, temporal stride 4, like the real one), a Llama text encoder (hidden 16;
LLaVA for I2V, whose CLIP vision tower sees 224 px images as 7x7 = 49 patches) and a CLIP text
encoder (hidden 8). The I2V transformer follows HunyuanVideo-I2V-33ch by default (latent_concat:
2 x 4 latent channels + 1 mask channel, no guidance embedding); ``image_condition_type=
"token_replace"`` builds the layout of hunyuanvideo-community/HunyuanVideo-I2V instead.

The real checkpoints' prompt templates (a long system prompt, cropped off after encoding) need the
real tokenizer; the tiny models use the short templates of diffusers' fast tests. That choice is
written into the folder as ``codex_tiny.json`` (pipeline call arguments) and the engine reads it,
so the tiny model runs through the same code as a real one.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKLHunyuanVideo,
    FlowMatchEulerDiscreteScheduler,
    HunyuanVideoImageToVideoPipeline,
    HunyuanVideoPipeline,
    HunyuanVideoTransformer3DModel,
)
from transformers import (
    CLIPImageProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPVisionConfig,
    LlamaConfig,
    LlamaModel,
    LlamaTokenizer,
    LlavaConfig,
    LlavaForConditionalGeneration,
)

from codex_diffusers.tiny import TINY_VOCAB, clip_tokenizer

from .engines import CALL_FILE, I2V_FOLDER

TEXT_DIM = 16  # Llama hidden size = the transformer's text_embed_dim
POOLED_DIM = 8  # CLIP hidden size = the transformer's pooled_projection_dim
LATENT_CHANNELS = 4
PAD_ID, IMAGE_ID = 100, 101  # what the LLaVA config says; the tokenizer must agree
# Pipeline call arguments for the tiny models (the real ones use diffusers' default templates).
T2V_CALL = {"prompt_template": {"template": "{}", "crop_start": 0}, "max_sequence_length": 64}
I2V_CALL = {"prompt_template": {"template": "{}", "crop_start": 0, "image_emb_len": 49, "image_emb_start": 5,
                                "image_emb_end": 54},
            "max_sequence_length": 64}
# The scheduler diffusers' conversion script writes into hunyuanvideo-community's repos (flow_shift 7.0).
SCHEDULER = {"shift": 7.0}

_CHARS = string.ascii_letters + string.digits + string.punctuation


def llama_tokenizer() -> LlamaTokenizer:
    """A character-level Llama tokenizer built offline.

    A ``tokenizers`` BPE model with no merges over single characters (and the ``▁`` word-start
    marker), a ``<s>`` BOS post-processor and right padding (as diffusers' conversion script
    loads the real one), wrapped as transformers' Llama tokenizer. ``<pad>`` is id 100 and
    ``<image>`` id 101 like the tiny LLaVA config; every id is below ``TINY_VOCAB``.
    """
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import BPE

    vocab = {"<s>": 0, "<unk>": 1, "</s>": 2, "<pad>": PAD_ID, "<image>": IMAGE_ID}
    free = (i for i in range(TINY_VOCAB) if i not in vocab.values())
    for token in ["\u2581", *_CHARS]:
        vocab[token] = next(free)
    backend = Tokenizer(BPE(vocab=vocab, merges=[], unk_token="<unk>", fuse_unk=True))
    metaspace = dict(replacement="\u2581", prepend_scheme="first", split=False)
    backend.pre_tokenizer = pre_tokenizers.Metaspace(**metaspace)
    backend.decoder = decoders.Metaspace(**metaspace)
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                           special_tokens=[("<s>", 0)])
    return LlamaTokenizer(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                          pad_token="<pad>", additional_special_tokens=["<image>"], padding_side="right")


def _llama_config() -> LlamaConfig:
    return LlamaConfig(bos_token_id=0, eos_token_id=2, pad_token_id=PAD_ID, hidden_size=TEXT_DIM,
                       intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, vocab_size=TINY_VOCAB)


def _clip_text_encoder() -> CLIPTextModel:
    torch.manual_seed(0)
    config = CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=POOLED_DIM,
                            intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                            vocab_size=TINY_VOCAB, max_position_embeddings=77)
    return CLIPTextModel(config).eval()


def _vae() -> AutoencoderKLHunyuanVideo:
    torch.manual_seed(0)
    return AutoencoderKLHunyuanVideo(
        latent_channels=LATENT_CHANNELS, down_block_types=("HunyuanVideoDownBlock3D",) * 4,
        up_block_types=("HunyuanVideoUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
        norm_num_groups=4, spatial_compression_ratio=8, temporal_compression_ratio=4,
    )


def _transformer(in_channels: int, guidance_embeds: bool, image_condition_type: str | None):
    torch.manual_seed(0)
    return HunyuanVideoTransformer3DModel(
        in_channels=in_channels, out_channels=LATENT_CHANNELS, num_attention_heads=2, attention_head_dim=10,
        num_layers=1, num_single_layers=1, num_refiner_layers=1, patch_size=1, patch_size_t=1,
        guidance_embeds=guidance_embeds, text_embed_dim=TEXT_DIM, pooled_projection_dim=POOLED_DIM,
        rope_axes_dim=(2, 4, 4), image_condition_type=image_condition_type,
    )


def _write_call(dest: Path, call: dict) -> None:
    (dest / CALL_FILE).write_text(json.dumps(call, indent=2) + "\n", encoding="utf-8")


def build_t2v(dest: Path) -> None:
    torch.manual_seed(0)
    text_encoder = LlamaModel(_llama_config()).eval()
    pipe = HunyuanVideoPipeline(
        text_encoder=text_encoder, tokenizer=llama_tokenizer(),
        transformer=_transformer(LATENT_CHANNELS, guidance_embeds=True, image_condition_type=None),
        vae=_vae(), scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER),
        text_encoder_2=_clip_text_encoder(), tokenizer_2=clip_tokenizer(),
    )
    pipe.save_pretrained(dest, safe_serialization=True)
    _write_call(dest, T2V_CALL)


def build_i2v(dest: Path, image_condition_type: str = "latent_concat") -> None:
    if image_condition_type == "latent_concat":  # noise latents + image latents + first-frame mask
        transformer = _transformer(2 * LATENT_CHANNELS + 1, guidance_embeds=False,
                                   image_condition_type=image_condition_type)
    else:  # token_replace: the first latent frame is the image's; guidance-distilled like T2V
        transformer = _transformer(LATENT_CHANNELS, guidance_embeds=True, image_condition_type=image_condition_type)
    vision = CLIPVisionConfig(hidden_size=8, intermediate_size=37, projection_dim=32, num_attention_heads=4,
                              num_hidden_layers=2, image_size=224, patch_size=32)  # 7 x 7 = 49 image tokens
    torch.manual_seed(0)
    text_encoder = LlavaForConditionalGeneration(LlavaConfig(
        vision_config=vision, text_config=_llama_config(), pad_token_id=PAD_ID, image_token_index=IMAGE_ID)).eval()
    image_processor = CLIPImageProcessor(size=224, crop_size=224, do_center_crop=True, do_normalize=True,
                                         do_resize=True, resample=3, image_mean=[0.48145466, 0.4578275, 0.40821073],
                                         image_std=[0.26862954, 0.26130258, 0.27577711])
    pipe = HunyuanVideoImageToVideoPipeline(
        text_encoder=text_encoder, tokenizer=llama_tokenizer(), transformer=transformer, vae=_vae(),
        scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER), text_encoder_2=_clip_text_encoder(),
        tokenizer_2=clip_tokenizer(), image_processor=image_processor,
    )
    pipe.save_pretrained(dest, safe_serialization=True)
    _write_call(dest, I2V_CALL)


def build(dest: Path) -> None:
    build_t2v(dest)
    build_i2v(dest / I2V_FOLDER)
