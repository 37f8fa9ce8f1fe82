"""Tiny randomly initialised Z-Image models of the real architecture (diffusers format).

The real checkpoints (Tongyi-MAI/Z-Image-Turbo, Tongyi-MAI/Z-Image) hold a ``ZImageTransformer2DModel``,
a ``Qwen3Model`` text encoder with a ``Qwen2Tokenizer`` (byte-level BPE and a ChatML chat template: the
pipeline wraps each prompt in it), FLUX.1's ``AutoencoderKL`` layout and a ``FlowMatchEulerDiscreteScheduler``.
The tiny one has the same classes at width 32 with:
- a VAE of four blocks, so ``vae_scale_factor`` is 8 like the real one and the size rule (multiples of
  16 = VAE stride 8 x the transformer's 2x2 patches) is the real rule;
- the real scheduler configs: static shift 3.0 (Turbo) or 6.0 (base), which is also how the variant
  is told apart (the transformer, text encoder and VAE configs of the two are the same);
- a byte-level BPE tokenizer built offline (no merges) whose ids stay below the encoder's vocabulary.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
from transformers import Qwen3Config, Qwen3Model

from codex_diffusers.tiny import TINY_VOCAB

TEXT_DIM = 32  # Qwen3 hidden size = the transformer's cap_feat_dim
LATENT_CHANNELS = 4  # the real VAE has 16; the transformer's in_channels follows the VAE

# scheduler/scheduler_config.json of Tongyi-MAI/Z-Image-Turbo (shift 3.0) and Tongyi-MAI/Z-Image (shift 6.0)
SCHEDULERS = {
    "turbo": dict(num_train_timesteps=1000, use_dynamic_shifting=False, shift=3.0),
    "base": dict(num_train_timesteps=1000, use_dynamic_shifting=False, shift=6.0),
}

# The part of Qwen3's chat template the pipeline uses (one user message, add_generation_prompt, thinking
# enabled: no empty <think> block), in the same ChatML form as the real tokenizer_config.json.
CHAT_TEMPLATE = (
    "{%- for message in messages %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]


def qwen_tokenizer():
    """A byte-level BPE tokenizer shaped like Qwen2/Qwen3's, built offline: the 256 byte symbols, no
    merges (every byte is a token), the ChatML special tokens, ``<|endoftext|>`` as padding."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE
    from transformers import Qwen2TokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {symbol: index for index, symbol in enumerate(sorted(alphabet))}
    backend = Tokenizer(BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    tokenizer = Qwen2TokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   unk_token=None, bos_token=None, model_max_length=131072)
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS[1:]})
    tokenizer.chat_template = CHAT_TEMPLATE
    assert len(tokenizer) < TINY_VOCAB
    return tokenizer


def _text_encoder() -> Qwen3Model:
    torch.manual_seed(0)
    config = Qwen3Config(vocab_size=TINY_VOCAB, hidden_size=TEXT_DIM, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=1024,
                         rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True)
    return Qwen3Model(config).eval()


def _vae() -> AutoencoderKL:
    torch.manual_seed(0)
    # FLUX.1's VAE layout (no quant convs, its scaling and shift factors) with four blocks: stride 8
    return AutoencoderKL(
        block_out_channels=(4, 4, 8, 8), in_channels=3, out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
        layers_per_block=1, latent_channels=LATENT_CHANNELS, norm_num_groups=1, sample_size=32,
        use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.1159, scaling_factor=0.3611,
    )


def _transformer() -> ZImageTransformer2DModel:
    torch.manual_seed(0)
    # head dim 16 = sum(axes_dims); the real one: 30 heads x 128 = 3840, axes 32/48/48
    return ZImageTransformer2DModel(
        all_patch_size=(2,), all_f_patch_size=(1,), in_channels=LATENT_CHANNELS, dim=32, n_layers=1,
        n_refiner_layers=1, n_heads=2, n_kv_heads=2, norm_eps=1e-5, qk_norm=True, cap_feat_dim=TEXT_DIM,
        rope_theta=256.0, t_scale=1000.0, axes_dims=[4, 6, 6], axes_lens=[1536, 512, 512],
    )


def build(dest: Path, variant: str = "turbo") -> None:
    """Write a tiny Z-Image-Turbo (``variant="turbo"``) or Z-Image base model into ``dest``."""
    pipe = ZImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULERS[variant]), vae=_vae(),
                          text_encoder=_text_encoder(), tokenizer=qwen_tokenizer(), transformer=_transformer())
    pipe.save_pretrained(dest, safe_serialization=True)
