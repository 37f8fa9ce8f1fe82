"""STARTING POINT: the template's tiny PixArt-Sigma; build your family's tiny model here instead.

A tiny randomly initialised PixArt-Sigma of the real architecture (diffusers format), built offline.

The real model at toy widths: the transformer with ada_norm_single and learned sigma (out_channels =
2 x in_channels), a 4-block VAE (scale factor 8 like the real SDXL VAE), a T5 v1.1-style encoder
whose width is the transformer's caption_channels, an offline tokenizer, and the real checkpoint's
DPM-Solver scheduler config.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, PixArtSigmaPipeline, PixArtTransformer2DModel
from transformers import T5Config, T5EncoderModel

from codex_diffusers.tiny import TINY_VOCAB, t5_tokenizer

TEXT_DIM = 32  # T5 d_model = the transformer's caption_channels
# scheduler/scheduler_config.json of PixArt-alpha/PixArt-Sigma-XL-2-1024-MS
SCHEDULER = dict(algorithm_type="dpmsolver++", beta_end=0.02, beta_schedule="linear", beta_start=0.0001,
                 lower_order_final=True, num_train_timesteps=1000, prediction_type="epsilon", solver_order=2,
                 solver_type="midpoint", steps_offset=0, timestep_spacing="linspace", use_karras_sigmas=False)


def build(dest: Path) -> None:
    torch.manual_seed(0)
    transformer = PixArtTransformer2DModel(
        sample_size=8, num_layers=2, num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16,
        caption_channels=TEXT_DIM, in_channels=4, out_channels=8, patch_size=2, attention_bias=True,
        activation_fn="gelu-approximate", num_embeds_ada_norm=1000, norm_type="ada_norm_single",
        norm_elementwise_affine=False, norm_eps=1e-6, use_additional_conditions=False,
    ).eval()
    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[8, 8, 16, 16], layers_per_block=1,
        latent_channels=4, norm_num_groups=8, sample_size=64, scaling_factor=0.13025,
    ).eval()
    torch.manual_seed(0)
    text_encoder = T5EncoderModel(T5Config(
        vocab_size=TINY_VOCAB, d_model=TEXT_DIM, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=32, relative_attention_max_distance=128, feed_forward_proj="gated-gelu",
        tie_word_embeddings=False, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )).eval()
    pipe = PixArtSigmaPipeline(tokenizer=t5_tokenizer(300), text_encoder=text_encoder, vae=vae,
                               transformer=transformer, scheduler=DPMSolverMultistepScheduler(**SCHEDULER))
    pipe.save_pretrained(dest, safe_serialization=True)
