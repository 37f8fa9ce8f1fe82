"""Tiny randomly initialised Stable Diffusion 3.5 models of the real architecture (diffusers format).

Component sizes follow diffusers' own SD3 fast tests (``get_dummy_components`` in diffusers'
tests/pipelines/stable_diffusion_3/), with changes that keep the tiny model honest about the real
checkpoints:
- the transformer patchifies by 2 and the VAE has four blocks (scale factor 8) with 16 latent
  channels, so the size rule (multiples of 16) and the latent preview format are the real ones;
- QK normalisation (``qk_norm="rms_norm"``) as in every SD 3.5 transformer; Medium adds dual-attention
  blocks (``dual_attention_layers``), which is how its variant is told apart;
- the two CLIP encoders have different widths, as CLIP-L (768) and OpenCLIP bigG (1280) do; their
  hidden states are concatenated and zero-padded to the T5 width (the transformer's
  ``joint_attention_dim``), their projections concatenated into ``pooled_projection_dim``;
- the scheduler carries the published config (FlowMatchEulerDiscreteScheduler, shift 3.0).
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
from transformers import CLIPTextConfig, CLIPTextModelWithProjection

from codex_diffusers.tiny import TINY_VOCAB, clip_tokenizer, t5_encoder, t5_tokenizer

CLIP_L, CLIP_G = 16, 32  # hidden = projection width of text_encoder (CLIP-L) and text_encoder_2 (bigG)
T5_WIDTH = 64  # >= CLIP_L + CLIP_G: the CLIP states are padded to it
SCHEDULER = dict(num_train_timesteps=1000, shift=3.0)  # scheduler/scheduler_config.json of the SD 3.5 repos
VAE_SCALING = dict(scaling_factor=1.5305, shift_factor=0.0609)  # vae/config.json of the SD 3.5 repos


def _clip(width: int, seed: int, hidden_act: str) -> CLIPTextModelWithProjection:
    """``hidden_act``: OpenAI's CLIP-L uses quick_gelu, OpenCLIP bigG gelu."""
    torch.manual_seed(seed)
    config = CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=width, intermediate_size=37,
                            num_attention_heads=4, num_hidden_layers=2, vocab_size=TINY_VOCAB, layer_norm_eps=1e-5,
                            max_position_embeddings=77, projection_dim=width, hidden_act=hidden_act)
    return CLIPTextModelWithProjection(config).eval()


def _t5():
    return t5_encoder(T5_WIDTH)


def _vae() -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=(4, 4, 8, 8), in_channels=3, out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
        layers_per_block=1, latent_channels=16, norm_num_groups=2, sample_size=32,
        use_quant_conv=False, use_post_quant_conv=False, **VAE_SCALING,
    )


def _transformer(variant: str) -> SD3Transformer2DModel:
    torch.manual_seed(0)
    return SD3Transformer2DModel(
        sample_size=32, patch_size=2, in_channels=16, out_channels=16, num_layers=2, attention_head_dim=16,
        num_attention_heads=2, caption_projection_dim=32, joint_attention_dim=T5_WIDTH,
        pooled_projection_dim=CLIP_L + CLIP_G, pos_embed_max_size=32, qk_norm="rms_norm",
        dual_attention_layers=(0,) if variant == "medium" else (),
    )


def build(dest: Path, variant: str = "large") -> None:
    """Write a tiny SD 3.5 Large (``variant="large"``) or Medium (dual-attention blocks) into ``dest``."""
    pipe = StableDiffusion3Pipeline(
        transformer=_transformer(variant), scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER), vae=_vae(),
        text_encoder=_clip(CLIP_L, 0, "quick_gelu"), tokenizer=clip_tokenizer(), text_encoder_2=_clip(CLIP_G, 1, "gelu"),
        tokenizer_2=clip_tokenizer(), text_encoder_3=_t5(), tokenizer_3=t5_tokenizer(),
    )
    pipe.save_pretrained(dest, safe_serialization=True)
