"""Tiny randomly initialised Chroma models of the real architecture (diffusers format).

Chroma1 is FLUX.1-schnell's architecture without the CLIP text encoder and with its modulations
produced by a small "distilled guidance" approximator: a ``ChromaTransformer2DModel``, a T5 v1.1
encoder with its tokenizer, FLUX.1's ``AutoencoderKL`` and a ``FlowMatchEulerDiscreteScheduler``. The
optional IP-Adapter components (image_encoder, feature_extractor) are left out, as in the published
repos. Sizes follow codex_flux's tiny FLUX.1 (the VAE has four blocks, so ``vae_scale_factor`` is 8 and
the size rule, multiples of 16, is the real rule); the approximator is 32 wide with one layer.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, ChromaPipeline, ChromaTransformer2DModel, FlowMatchEulerDiscreteScheduler

from codex_diffusers.tiny import t5_encoder, t5_tokenizer

TEXT_DIM = 32  # T5 d_model = the transformer's joint_attention_dim

# FLUX.1-dev's scheduler config (dynamic shifting), which the diffusers-format Chroma repos carry over
SCHEDULER = dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                 base_image_seq_len=256, max_image_seq_len=4096)


def _t5():
    # output_past: a legacy key the published config carries, so the tiny config has the real one's keys
    return t5_encoder(TEXT_DIM, output_past=True)


def _vae() -> AutoencoderKL:
    torch.manual_seed(0)
    # one latent channel feeds the transformer's in_channels 4 after 2x2 packing (the real one: 16 -> 64)
    return AutoencoderKL(
        block_out_channels=(4, 4, 8, 8), in_channels=3, out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
        layers_per_block=1, latent_channels=1, norm_num_groups=1, sample_size=32,
        use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.1159, scaling_factor=0.3611,
    )


def _transformer() -> ChromaTransformer2DModel:
    torch.manual_seed(0)
    # the approximator's input: 16 channels (timestep, guidance and modulation-index embeddings; the real: 64)
    return ChromaTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=TEXT_DIM, axes_dims_rope=(4, 4, 8), approximator_num_channels=16,
        approximator_hidden_dim=32, approximator_layers=1,
    )


def build(dest: Path) -> None:
    """Write a tiny Chroma model into ``dest``."""
    pipe = ChromaPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER), vae=_vae(), text_encoder=_t5(),
                          tokenizer=t5_tokenizer(), transformer=_transformer(), image_encoder=None,
                          feature_extractor=None)
    pipe.save_pretrained(dest, safe_serialization=True)
