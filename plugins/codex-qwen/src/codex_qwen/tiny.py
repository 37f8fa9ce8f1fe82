"""Tiny randomly initialised Qwen-Image models of the real architecture (diffusers format).

Component classes are the real checkpoint's: ``QwenImageTransformer2DModel`` (patch 2),
``AutoencoderKLQwenImage`` (the Wan-style causal VAE with three downsamples, so the stride is 8 like
the real one and the size rule, multiples of 16, is the real rule), ``Qwen2_5_VLForConditionalGeneration``
(Qwen2.5-VL with its vision tower, as Qwen/Qwen-Image ships it) and a ``Qwen2Tokenizer`` built
offline. Widths follow diffusers' own fast tests (``get_dummy_components`` in diffusers'
tests/pipelines/qwenimage/), with the real text encoder's grouped-query attention (more query heads
than key/value heads) and the real scheduler config (Qwen/Qwen-Image's scheduler_config.json).
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKLQwenImage,
    FlowMatchEulerDiscreteScheduler,
    QwenImagePipeline,
    QwenImageTransformer2DModel,
)
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2Tokenizer

from codex_diffusers.tiny import TINY_VOCAB

TEXT_DIM = 32  # the text model's hidden size = the transformer's joint_attention_dim
Z_DIM = 4  # VAE latent channels (the real one: 16); the transformer takes 2x2 patches of them
# The special tokens the pipelines' chat templates and the Qwen2.5-VL config name, after the 256 byte tokens
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")
# scheduler/scheduler_config.json of Qwen/Qwen-Image: a resolution-dependent (dynamic) exponential shift
SCHEDULER = dict(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=0.9,
                 base_image_seq_len=256, max_image_seq_len=8192, shift_terminal=0.02, time_shift_type="exponential")


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
    """A byte-level Qwen2 tokenizer without merges (every byte one token) and Qwen's special tokens.

    Built offline (no hub): the real class with its own pre-tokenizer, a 264-token vocabulary (ids
    below ``TINY_VOCAB``). It saves with ``save_pretrained`` and loads back to the same ids."""
    vocab = {symbol: index for index, symbol in enumerate(_byte_symbols())}
    for token in SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    assert len(vocab) < TINY_VOCAB
    return Qwen2Tokenizer(vocab=vocab, merges=[], unk_token=None, eos_token="<|endoftext|>",
                          pad_token="<|endoftext|>", additional_special_tokens=list(SPECIAL_TOKENS[1:]),
                          model_max_length=131072)


def _text_encoder(tokenizer: Qwen2Tokenizer) -> Qwen2_5_VLForConditionalGeneration:
    torch.manual_seed(0)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    config = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=TINY_VOCAB, hidden_size=TEXT_DIM, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         rope_scaling={"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
                         rope_theta=1000000.0, rms_norm_eps=1e-6, bos_token_id=ids["<|endoftext|>"],
                         eos_token_id=ids["<|im_end|>"]),
        # the vision tower: 14 px patches, 2x2 merged, as the real one (Qwen-Image-Edit feeds it the images)
        vision_config=dict(depth=2, hidden_size=16, intermediate_size=16, num_heads=2, out_hidden_size=TEXT_DIM,
                           fullatt_block_indexes=[1], patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
                           window_size=112),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        vision_token_id=ids["<|vision_pad|>"], bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
    )
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def _vae() -> AutoencoderKLQwenImage:
    torch.manual_seed(0)
    # three downsamples ([1, 2, 4, 4] with two temporal ones): the real stride 8
    return AutoencoderKLQwenImage(base_dim=4, z_dim=Z_DIM, dim_mult=[1, 2, 4, 4], num_res_blocks=1,
                                  temperal_downsample=[False, True, True], latents_mean=[0.0] * Z_DIM,
                                  latents_std=[1.0] * Z_DIM)


def _transformer(num_layers: int = 2) -> QwenImageTransformer2DModel:
    torch.manual_seed(0)
    return QwenImageTransformer2DModel(patch_size=2, in_channels=4 * Z_DIM, out_channels=Z_DIM, num_layers=num_layers,
                                       attention_head_dim=16, num_attention_heads=2, joint_attention_dim=TEXT_DIM,
                                       guidance_embeds=False, axes_dims_rope=(4, 6, 6))


def build(dest: Path) -> None:
    """Write a tiny Qwen-Image (``QwenImagePipeline``: txt2img, img2img and inpaint) into ``dest``."""
    tokenizer = qwen2_tokenizer()
    pipe = QwenImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER), vae=_vae(),
                             text_encoder=_text_encoder(tokenizer), tokenizer=tokenizer, transformer=_transformer())
    pipe.save_pretrained(dest, safe_serialization=True)
