"""Tiny randomly initialised Krea 2 models of the real architecture (diffusers format).

- text encoder: a ``Qwen3VLModel`` (vision tower included, as the real Qwen3-VL-4B is loaded) with two
  decoder layers and interleaved mRoPE; the pipeline taps hidden states 0, 1 and 2
  (``text_encoder_select_layers``), so the transformer's ``num_text_layers`` is 3 (the real one: 12 of 37);
- tokenizer: a byte-level BPE ``Qwen2Tokenizer`` built offline (``qwen_tokenizer``) whose vocabulary
  holds the words of Krea 2's chat template, so the template's system prefix is 34 tokens as with the
  real Qwen tokenizer: the pipeline drops exactly that many (``prompt_template_encode_start_idx``);
- VAE: ``AutoencoderKLQwenImage`` with the real stride 8 (three downsamplings), 16 latent channels and
  the published per-channel latent statistics;
- transformer: ``Krea2Transformer2DModel`` with grouped-query attention (2 query heads, 1 key/value
  head) and the 3-axis rotary split, taking 16 channels x 2x2 patches = 64 inputs like the real one;
- scheduler: the Krea 2 FlowMatchEulerDiscreteScheduler config (dynamic shifting, 256..6400 tokens).
The variant is the pipeline's ``is_distilled`` (Turbo: true, Raw: false).
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, Krea2Pipeline, Krea2Transformer2DModel
from transformers import Qwen3VLConfig, Qwen3VLModel

from codex_diffusers.tiny import TINY_VOCAB

TEXT_WIDTH = 16
SELECT_LAYERS = (0, 1, 2)  # every hidden state of a 2-layer encoder (embeddings + 2 layers)
# scheduler/scheduler_config.json of Krea 2 in diffusers layout (Krea2Pipeline's docstring names the values)
SCHEDULER = dict(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                 base_image_seq_len=256, max_image_seq_len=6400, time_shift_type="exponential")
# The words of Krea2Pipeline's chat template, each one token for the real Qwen tokenizer ("Ġ" = a leading space)
TEMPLATE_WORDS = ("system", "Describe", "Ġthe", "Ġimage", "Ġby", "Ġdetailing", "Ġcolor", "Ġshape", "Ġsize",
                  "Ġtexture", "Ġquantity", "Ġtext", "Ġspatial", "Ġrelationships", "Ġof", "Ġobjects", "Ġand",
                  "Ġbackground", "user", "assistant")
SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def _byte_chars() -> list[str]:
    """GPT-2's byte-to-unicode table: the 256 symbols byte-level BPE spells every byte with."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, extra = [], 0
    for byte in range(256):
        if byte in printable:
            chars.append(chr(byte))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def qwen_tokenizer():
    """A byte-level BPE Qwen2Tokenizer (the class AutoTokenizer gives for Qwen3-VL) built offline.

    Every byte has a token, so any text tokenizes without an unknown token; merges build the template
    words whole. ``<|endoftext|>`` pads, as in Qwen's tokenizers. Every id is below ``TINY_VOCAB``."""
    from transformers import Qwen2Tokenizer

    vocab = {char: index for index, char in enumerate(_byte_chars())}
    merges = []
    for word in TEMPLATE_WORDS:
        for end in range(2, len(word) + 1):
            left, right = word[:end - 1], word[end - 1]
            if word[:end] not in vocab:
                vocab[word[:end]] = len(vocab)
                merges.append((left, right))
    for token in SPECIAL:
        vocab[token] = len(vocab)
    assert len(vocab) < TINY_VOCAB
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, eos_token="<|im_end|>",
                               pad_token="<|endoftext|>", model_max_length=131072)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    return tokenizer


def _text_encoder() -> Qwen3VLModel:
    torch.manual_seed(0)
    config = Qwen3VLConfig(
        text_config=dict(vocab_size=TINY_VOCAB, hidden_size=TEXT_WIDTH, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=1024,
                         rope_parameters={"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [2, 1, 1],
                                          "mrope_interleaved": True}, tie_word_embeddings=True),
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, patch_size=16,
                           out_hidden_size=TEXT_WIDTH, num_position_embeddings=16, deepstack_visual_indexes=[0]),
        image_token_id=TINY_VOCAB - 4, video_token_id=TINY_VOCAB - 3, vision_start_token_id=TINY_VOCAB - 2,
        vision_end_token_id=TINY_VOCAB - 1, tie_word_embeddings=True)
    return Qwen3VLModel(config).eval()


def _vae() -> AutoencoderKLQwenImage:
    torch.manual_seed(0)
    # three downsamplings (temperal_downsample has three entries): the real stride 8
    return AutoencoderKLQwenImage(base_dim=4, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                  temperal_downsample=[False, True, True])


def _transformer(num_layers: int = 2) -> Krea2Transformer2DModel:
    torch.manual_seed(0)
    return Krea2Transformer2DModel(
        in_channels=16 * 2 * 2, num_layers=num_layers, attention_head_dim=16, num_attention_heads=2,
        num_key_value_heads=1, intermediate_size=32, timestep_embed_dim=32, text_hidden_dim=TEXT_WIDTH,
        num_text_layers=len(SELECT_LAYERS), text_num_attention_heads=2, text_num_key_value_heads=2,
        text_intermediate_size=32, num_layerwise_text_blocks=1, num_refiner_text_blocks=1, axes_dims_rope=(4, 6, 6))


def build(dest: Path, variant: str = "distilled") -> None:
    """Write a tiny Krea 2 Turbo (``variant="distilled"``) or Raw (``"base"``) into ``dest``."""
    pipe = Krea2Pipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER), vae=_vae(), text_encoder=_text_encoder(),
        tokenizer=qwen_tokenizer(), transformer=_transformer(), text_encoder_select_layers=SELECT_LAYERS,
        is_distilled=variant == "distilled", patch_size=2,
    )
    pipe.save_pretrained(dest, safe_serialization=True)
