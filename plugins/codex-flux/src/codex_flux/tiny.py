"""Tiny randomly initialised FLUX.1 models of the real architecture (diffusers format).

Component sizes follow diffusers' own Flux fast tests (``get_dummy_components`` in diffusers'
tests/pipelines/flux/test_pipeline_flux.py), with two changes that keep the tiny model honest about
real checkpoints:
- the VAE has four blocks, so ``vae_scale_factor`` is 8 like the real one and the size rule
  (multiples of 16 = VAE stride 8 x 2x2 latent packing) is the real rule;
- the scheduler carries the real checkpoints' configs (dev: dynamic shifting; schnell: shift 1.0).
The variant is the transformer's ``guidance_embeds``: dev has a guidance embedding, schnell not.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from transformers import CLIPTextConfig, CLIPTextModel

from codex_diffusers.tiny import TINY_VOCAB, clip_tokenizer, t5_encoder, t5_tokenizer

TEXT_DIM = 32  # T5 d_model = the transformer's joint_attention_dim
POOLED_DIM = 32  # CLIP hidden size = the transformer's pooled_projection_dim

# scheduler/scheduler_config.json of black-forest-labs/FLUX.1-dev and FLUX.1-schnell
SCHEDULERS = {
    "dev": dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                base_image_seq_len=256, max_image_seq_len=4096),
    "schnell": dict(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False, base_shift=0.5,
                    max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096),
}



def _clip() -> CLIPTextModel:
    torch.manual_seed(0)
    config = CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=POOLED_DIM,
                            intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, vocab_size=TINY_VOCAB,
                            layer_norm_eps=1e-5, max_position_embeddings=77)
    return CLIPTextModel(config).eval()


def _t5():
    return t5_encoder(TEXT_DIM)


def _vae() -> AutoencoderKL:
    torch.manual_seed(0)
    # Four blocks: scale factor 8 like the real VAE. One latent channel feeds the transformer's
    # in_channels 4 after 2x2 packing (the real one: 16 channels -> 64).
    return AutoencoderKL(
        block_out_channels=(4, 4, 8, 8), in_channels=3, out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
        layers_per_block=1, latent_channels=1, norm_num_groups=1, sample_size=32,
        use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035,
    )


def _transformer(guidance_embeds: bool, num_layers: int, num_single_layers: int) -> FluxTransformer2DModel:
    torch.manual_seed(0)
    return FluxTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=num_layers, num_single_layers=num_single_layers, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=TEXT_DIM, pooled_projection_dim=POOLED_DIM,
        axes_dims_rope=[4, 4, 8], guidance_embeds=guidance_embeds,
    )


def build(dest: Path, variant: str = "dev", num_layers: int = 1, num_single_layers: int = 1) -> None:
    """Write a tiny FLUX.1-dev (``variant="dev"``) or FLUX.1-schnell model into ``dest``.

    ``num_layers``/``num_single_layers``: the transformer's depth (1 + 1 for the tests); bench/speed.py
    builds the real model's 19 + 38 at this tiny width, so a block cache skips the share it does on
    the real model.
    """
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULERS[variant]), vae=_vae(),
        text_encoder=_clip(), tokenizer=clip_tokenizer(), text_encoder_2=_t5(), tokenizer_2=t5_tokenizer(),
        transformer=_transformer(variant == "dev", num_layers, num_single_layers),
    )
    pipe.save_pretrained(dest, safe_serialization=True)
