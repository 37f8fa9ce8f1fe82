"""Tiny randomly initialised Wan 2.2 models of the real architectures (diffusers format).

Component sizes follow diffusers' own Wan 2.2 fast tests (``get_dummy_components`` in diffusers'
tests/pipelines/wan/test_wan_22.py: TI2V-5B and T2V-A14B; test_wan_22_image_to_video.py: I2V-A14B):
- TI2V-5B: the Wan 2.2 VAE (48 latent channels, 12-channel patchified input, spatial stride 16,
  temporal stride 4), one transformer with 48 in/out channels, ``expand_timesteps=True``.
- A14B (T2V / I2V): the Wan 2.1 VAE (16 latent channels, stride 8 x 4), two transformers (high
  noise ``transformer``, low noise ``transformer_2``) switched at ``boundary_ratio``; the I2V
  transformers take 36 input channels (16 noise + 4 mask + 16 image latents). Wan 2.2 I2V has no
  CLIP image encoder.
The schedulers are what diffusers' conversion script (scripts/convert_wan_to_diffusers.py) writes
into the official Wan 2.2 Diffusers repos: UniPC with flow sigmas, flow_shift 5.0 for TI2V-5B and
3.0 for the A14B models (our presets override the shift on every run).
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKLWan,
    UniPCMultistepScheduler,
    WanImageToVideoPipeline,
    WanPipeline,
    WanTransformer3DModel,
)
from transformers import UMT5Config, UMT5EncoderModel

from codex_diffusers.tiny import TINY_VOCAB, t5_tokenizer

TEXT_DIM = 32  # the UMT5 encoder's d_model; the transformers' text_dim must match
CHECKPOINT_SHIFT = {"ti2v_5b": 5.0, "a14b": 3.0}
BOUNDARY_RATIO = {"t2v": 0.875, "i2v": 0.9}



def _text_encoder() -> UMT5EncoderModel:
    torch.manual_seed(0)
    config = UMT5Config(vocab_size=TINY_VOCAB, d_model=TEXT_DIM, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                        relative_attention_num_buckets=8, relative_attention_max_distance=16,
                        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    return UMT5EncoderModel(config).eval()  # eval: no dropout


def _transformer(in_channels: int, out_channels: int, seed: int, num_layers: int = 2) -> WanTransformer3DModel:
    torch.manual_seed(seed)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=in_channels,
        out_channels=out_channels, text_dim=TEXT_DIM, freq_dim=256, ffn_dim=32, num_layers=num_layers,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
    )


def _scheduler(flow_shift: float) -> UniPCMultistepScheduler:
    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000,
                                   flow_shift=flow_shift)


def build_ti2v_5b(dest: Path, num_layers: int = 2) -> None:
    """Write a tiny TI2V-5B into ``dest``; ``num_layers``: the transformer's depth (2 for the tests;
    bench/speed.py builds the real model's 30 at this tiny width, so a block cache skips the share it
    does on the real model)."""
    torch.manual_seed(0)
    vae = AutoencoderKLWan(  # the Wan 2.2 VAE: 48 latent channels, patch 2 -> spatial stride 16
        base_dim=3, z_dim=48, in_channels=12, out_channels=12, is_residual=True, patch_size=2,
        latents_mean=[0.0] * 48, latents_std=[1.0] * 48, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
        scale_factor_spatial=16, scale_factor_temporal=4, temperal_downsample=[False, True, True],
    )
    pipe = WanPipeline(
        tokenizer=t5_tokenizer(), text_encoder=_text_encoder(), vae=vae,
        scheduler=_scheduler(CHECKPOINT_SHIFT["ti2v_5b"]),
        transformer=_transformer(48, 48, seed=0, num_layers=num_layers),
        transformer_2=None, expand_timesteps=True,
    )
    pipe.save_pretrained(dest, safe_serialization=True)


def _build_a14b(dest: Path, pipeline_cls, in_channels: int, boundary_ratio: float) -> None:
    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    extra = {"image_encoder": None, "image_processor": None} if pipeline_cls is WanImageToVideoPipeline else {}
    pipe = pipeline_cls(
        tokenizer=t5_tokenizer(), text_encoder=_text_encoder(), vae=vae,
        scheduler=_scheduler(CHECKPOINT_SHIFT["a14b"]),
        transformer=_transformer(in_channels, 16, seed=0),  # high-noise expert
        transformer_2=_transformer(in_channels, 16, seed=1),  # low-noise expert: different weights
        boundary_ratio=boundary_ratio, **extra,
    )
    pipe.save_pretrained(dest, safe_serialization=True)


def build_t2v_a14b(dest: Path) -> None:
    _build_a14b(dest, WanPipeline, in_channels=16, boundary_ratio=BOUNDARY_RATIO["t2v"])


def build_i2v_a14b(dest: Path) -> None:
    # 36 = 16 noise latents + 4 first-frame mask channels (temporal stride) + 16 image latents
    _build_a14b(dest, WanImageToVideoPipeline, in_channels=36, boundary_ratio=BOUNDARY_RATIO["i2v"])
