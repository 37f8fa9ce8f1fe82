"""Tiny randomly initialised SD 1.5 and SDXL models of the real architectures (diffusers format).

Component sizes follow diffusers' own fast tests; the VAE keeps four blocks so its scale factor
is 8 like the real one, and the schedulers carry the real checkpoints' configs.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from codex_diffusers.tiny import TINY_VOCAB, clip_tokenizer

# The schedulers of stable-diffusion-v1-5 and stable-diffusion-xl-base-1.0.
SD15_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True,
                      steps_offset=1, set_alpha_to_one=False)
SDXL_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
                      timestep_spacing="leading", interpolation_type="linear", prediction_type="epsilon")

# SDXL's second text encoder (OpenCLIP bigG in the real model) is wider than the first: diffusers'
# single-file loader tells the two apart by hidden size (768 vs 1280), so a tiny SDXL whose encoders
# had the same width would load encoder 1's weights into encoder 2 from an A1111 checkpoint.
SDXL_TE2_HIDDEN = 48
SDXL_TE2_PROJECTION = 32


def _vae() -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=[4, 4, 8, 8],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=4,
        norm_num_groups=2,
        layers_per_block=1,
        sample_size=64,
    )


def _text_config(hidden: int, projection_dim: int | None = None, hidden_act: str = "quick_gelu") -> CLIPTextConfig:
    # hidden_act: OpenAI's CLIP ViT-L (SD 1.5, SDXL's text_encoder) uses quick_gelu; OpenCLIP bigG (SDXL's
    # text_encoder_2) uses gelu
    extra = {"projection_dim": projection_dim} if projection_dim else {}
    return CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=hidden, intermediate_size=37,
                          num_attention_heads=4, num_hidden_layers=2, vocab_size=TINY_VOCAB, layer_norm_eps=1e-5,
                          max_position_embeddings=77, hidden_act=hidden_act, **extra)


def build_sd15(dest: Path, time_cond_proj_dim: int | None = None) -> None:
    """``time_cond_proj_dim`` set: an LCM-style UNet that embeds the guidance scale (as LCM checkpoints do)."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, norm_num_groups=2, time_cond_proj_dim=time_cond_proj_dim,
    )
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(_text_config(32)).eval()
    pipe = StableDiffusionPipeline(
        vae=_vae(), text_encoder=text_encoder, tokenizer=clip_tokenizer(), unet=unet,
        scheduler=PNDMScheduler(**SD15_SCHEDULER), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(dest, safe_serialization=True)


def build_sdxl(dest: Path, time_cond_proj_dim: int | None = None) -> None:
    """``time_cond_proj_dim`` set: an LCM-style UNet that embeds the guidance scale (as LCM checkpoints do)."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
        # 6 * addition_time_embed_dim + text_encoder_2's projection (its pooled output)
        projection_class_embeddings_input_dim=6 * 8 + SDXL_TE2_PROJECTION,
        cross_attention_dim=32 + SDXL_TE2_HIDDEN,  # text_encoder hidden + text_encoder_2 hidden
        norm_num_groups=1, time_cond_proj_dim=time_cond_proj_dim,
    )
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(_text_config(32)).eval()
    torch.manual_seed(1)
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(SDXL_TE2_HIDDEN, SDXL_TE2_PROJECTION, "gelu")).eval()
    pipe = StableDiffusionXLPipeline(
        vae=_vae(), text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=clip_tokenizer(),
        tokenizer_2=clip_tokenizer(), unet=unet, scheduler=EulerDiscreteScheduler(**SDXL_SCHEDULER),
    )
    pipe.save_pretrained(dest, safe_serialization=True)
