"""A tiny randomly initialised Wan 2.1 VACE model of the real architecture (diffusers format).

The sizes follow diffusers' own VACE fast test (``get_dummy_components`` in diffusers'
tests/pipelines/wan/test_wan_vace.py), at two blocks: the Wan 2.1 VAE (16 latent channels, spatial
stride 8, temporal stride 4) and a ``WanVACETransformer3DModel`` whose context blocks sit at blocks 0 and 1
(the real model's every fifth of 40) and read 96 channels: 16 + 16 latents of the kept and the generated
parts of the video, and 64 = 8 x 8 mask channels (the mask folded by the VAE's spatial stride). The
scheduler is what diffusers' conversion script (scripts/convert_wan_to_diffusers.py) writes into
Wan-AI/Wan2.1-VACE-14B-diffusers: UniPC with flow sigmas and flow_shift 3.0 (our presets override the
shift on every run).
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKLWan, WanVACEPipeline, WanVACETransformer3DModel

from codex_diffusers.tiny import t5_tokenizer

from .tiny import CHECKPOINT_SHIFT, TEXT_DIM, _scheduler, _text_encoder

# 2 x 16 latent channels (inactive and reactive video) + 8 x 8 mask channels (the VAE's spatial stride squared)
VACE_IN_CHANNELS = 96


def _vace_transformer() -> WanVACETransformer3DModel:
    torch.manual_seed(0)
    return WanVACETransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
        text_dim=TEXT_DIM, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32, vace_layers=[0, 1], vace_in_channels=VACE_IN_CHANNELS,
    )


def build_vace(dest: Path) -> None:
    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    pipe = WanVACEPipeline(
        tokenizer=t5_tokenizer(), text_encoder=_text_encoder(), vae=vae,
        scheduler=_scheduler(CHECKPOINT_SHIFT["a14b"]),  # 3.0, as for every Wan 2.1 model the script converts
        transformer=_vace_transformer(), transformer_2=None,
    )
    pipe.save_pretrained(dest, safe_serialization=True)
