"""Tiny randomly initialised HunyuanVideo 1.5 models of the real architecture (diffusers format).

One folder serves both tasks, because the core keeps one tiny folder per engine: ``<dest>/`` holds
the text-to-video pipeline (``HunyuanVideo15Pipeline``) and ``<dest>/i2v/`` the image-to-video one
(``HunyuanVideo15ImageToVideoPipeline``), as the real models are separate checkpoints.

The component classes are the real ones (see reference_configs/): ``HunyuanVideo15Transformer3DModel``
(patch 1, two double-stream blocks: a step cache needs a first block and the rest; one token-refiner layer), ``AutoencoderKLHunyuanVideo15`` with five
blocks, so spatial stride 16 and temporal stride 4 like the real VAE (the size and frame rules are the
real ones), a ``Qwen2_5_VLTextModel`` (two layers: the pipeline reads the third hidden state from the
end) with a byte-level ``Qwen2Tokenizer`` built offline and a Qwen chat template, a T5 encoder with
transformers' own ``ByT5Tokenizer`` (bytes need no vocabulary file), ``ClassifierFreeGuidance`` and, for
image-to-video, a ``SiglipVisionModel`` with ``SiglipImageProcessorPil``.

``TARGET_SIZE``: the transformer's ``target_size`` (the real 480p checkpoints have 640, the 720p 960),
from which the img2vid pipeline picks its output size; 32 keeps the tiny image-to-video runs at
32x32-pixel scale.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKLHunyuanVideo15,
    ClassifierFreeGuidance,
    FlowMatchEulerDiscreteScheduler,
    HunyuanVideo15ImageToVideoPipeline,
    HunyuanVideo15Pipeline,
    HunyuanVideo15Transformer3DModel,
)
from transformers import (
    ByT5Tokenizer,
    Qwen2_5_VLTextConfig,
    Qwen2_5_VLTextModel,
    Qwen2Tokenizer,
    SiglipImageProcessorPil,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from codex_diffusers.tiny import TINY_VOCAB, t5_encoder

from .v15_params import TINY_TARGET_SIZE

I2V_FOLDER = "i2v"
TEXT_DIM = 16  # the Qwen text model's hidden size = the transformer's text_embed_dim
BYT5_DIM = 16  # the T5 encoder's d_model = text_embed_2_dim
IMAGE_DIM = 16  # SigLIP's hidden size = image_embed_dim
LATENT_CHANNELS = 4  # the real VAE: 32
TARGET_SIZE = TINY_TARGET_SIZE
# The checkpoints' scheduler and guider (diffusers' convert_hunyuan_video1_5_to_diffusers.py, 480p): shift 5.0,
# guidance 6.0
SCHEDULER = {"shift": 5.0}
GUIDANCE_SCALE = 6.0
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# Qwen2.5's chat template, cut to what the pipeline's messages use (a system and a user turn, then the
# assistant's opening with add_generation_prompt)
CHAT_TEMPLATE = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
                 "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _byte_symbols() -> list[str]:
    """The 256 printable stand-ins of byte-level BPE (GPT-2's bytes_to_unicode), in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            symbols[byte] = chr(byte)
        else:
            symbols[byte] = chr(256 + extra)
            extra += 1
    return [symbols[byte] for byte in range(256)]


def qwen2_tokenizer() -> Qwen2Tokenizer:
    """A byte-level Qwen2 tokenizer without merges (every byte one token), Qwen's chat tokens and a chat template,
    built offline; right padding with <|endoftext|> as diffusers' conversion script loads the real one."""
    vocab = {symbol: index for index, symbol in enumerate(_byte_symbols())}
    for token in SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    assert len(vocab) < TINY_VOCAB
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[], unk_token=None, eos_token="<|im_end|>",
                               pad_token="<|endoftext|>", additional_special_tokens=list(SPECIAL_TOKENS[1:]),
                               model_max_length=131072, padding_side="right")
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _text_encoder() -> Qwen2_5_VLTextModel:
    torch.manual_seed(0)
    config = Qwen2_5_VLTextConfig(
        vocab_size=TINY_VOCAB, hidden_size=TEXT_DIM, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=2048, rope_theta=1000000.0, rms_norm_eps=1e-6,
        bos_token_id=256, eos_token_id=258,  # <|endoftext|> and <|im_end|> of qwen2_tokenizer
        rope_scaling={"mrope_section": [1, 1, 0], "rope_type": "default", "type": "default"})
    return Qwen2_5_VLTextModel(config).eval()


def _vae() -> AutoencoderKLHunyuanVideo15:
    torch.manual_seed(0)
    return AutoencoderKLHunyuanVideo15(latent_channels=LATENT_CHANNELS, block_out_channels=(8, 8, 8, 8, 8),
                                       layers_per_block=1, spatial_compression_ratio=16, temporal_compression_ratio=4)


def _transformer(task_type: str) -> HunyuanVideo15Transformer3DModel:
    torch.manual_seed(0)
    return HunyuanVideo15Transformer3DModel(
        in_channels=2 * LATENT_CHANNELS + 1, out_channels=LATENT_CHANNELS, num_attention_heads=2, attention_head_dim=16,
        num_layers=2, num_refiner_layers=1, patch_size=1, patch_size_t=1, text_embed_dim=TEXT_DIM,
        text_embed_2_dim=BYT5_DIM, image_embed_dim=IMAGE_DIM, rope_axes_dim=(4, 6, 6), target_size=TARGET_SIZE,
        task_type=task_type)


def _components(task_type: str) -> dict:
    return dict(text_encoder=_text_encoder(), tokenizer=qwen2_tokenizer(), transformer=_transformer(task_type),
                vae=_vae(), scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER),
                text_encoder_2=t5_encoder(BYT5_DIM), tokenizer_2=ByT5Tokenizer(),
                guider=ClassifierFreeGuidance(guidance_scale=GUIDANCE_SCALE))


def build_t2v(dest: Path) -> None:
    HunyuanVideo15Pipeline(**_components("t2v")).save_pretrained(dest, safe_serialization=True)


def build_i2v(dest: Path) -> None:
    torch.manual_seed(0)
    # 28 px in 14 px patches: 4 image tokens (the real SigLIP, 384 px in 14 px patches, gives 729)
    vision = SiglipVisionModel(SiglipVisionConfig(hidden_size=IMAGE_DIM, intermediate_size=37, num_hidden_layers=1,
                                                  num_attention_heads=2, image_size=28, patch_size=14)).eval()
    processor = SiglipImageProcessorPil(size={"height": 28, "width": 28})
    HunyuanVideo15ImageToVideoPipeline(**_components("i2v"), image_encoder=vision,
                                       feature_extractor=processor).save_pretrained(dest, safe_serialization=True)


def build(dest: Path) -> None:
    build_t2v(dest)
    build_i2v(dest / I2V_FOLDER)
