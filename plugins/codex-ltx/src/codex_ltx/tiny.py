"""A tiny randomly initialised LTX-Video model of the real architecture (diffusers format).

The real 2B model at about 1/32 of its widths: an LTXVideoTransformer3DModel with the same block
structure (4 heads x 8 instead of 32 x 64, 2 layers instead of 28), the LTX-Video 0.9.5 VAE layout
(timestep-conditioned decoder, no noise injection) with the real compression, 32x in space and 8x
in time, so shape rules and latent sizes are what a real checkpoint sees; a T5 v1.1-style encoder
(gated-gelu, untied) whose width is the transformer's caption_channels; and the scheduler config of
Lightricks/LTX-Video (flow matching with resolution-dependent shifting and a terminal sigma of 0.1).
diffusers' own LTX fast tests use a 4x/4x VAE and download a tokenizer; this builds everything offline.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXPipeline, LTXVideoTransformer3DModel
from transformers import T5Config, T5EncoderModel

from codex_diffusers.tiny import TINY_VOCAB, t5_tokenizer

TEXT_DIM = 32  # T5 d_model = the transformer's caption_channels
# scheduler/scheduler_config.json of Lightricks/LTX-Video
SCHEDULER = dict(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05,
                 base_image_seq_len=1024, max_image_seq_len=4096, invert_sigmas=False, shift_terminal=0.1)
TOKENIZER_MAX_LENGTH = 128  # as diffusers' LTX conversion script saves the T5 tokenizer


def _transformer() -> LTXVideoTransformer3DModel:
    torch.manual_seed(0)
    return LTXVideoTransformer3DModel(
        in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=4, attention_head_dim=8,
        cross_attention_dim=32, num_layers=2, activation_fn="gelu-approximate", qk_norm="rms_norm_across_heads",
        norm_elementwise_affine=False, norm_eps=1e-6, caption_channels=TEXT_DIM, attention_bias=True,
        attention_out_bias=True,
    )


def _vae() -> AutoencoderKLLTXVideo:
    torch.manual_seed(0)
    return AutoencoderKLLTXVideo(  # the 0.9.5 layout (convert_ltx_to_diffusers.py) with every width / 32
        in_channels=3, out_channels=3, latent_channels=8, block_out_channels=(4, 8, 16, 32, 64),
        down_block_types=("LTXVideo095DownBlock3D",) * 4, decoder_block_out_channels=(8, 16, 32),
        layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, True, True), decoder_spatio_temporal_scaling=(True, True, True),
        decoder_inject_noise=(False, False, False, False),
        downsample_type=("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
        upsample_residual=(True, True, True), upsample_factor=(2, 2, 2), timestep_conditioning=True,
        patch_size=4, patch_size_t=1, resnet_norm_eps=1e-6, scaling_factor=1.0, encoder_causal=True,
        decoder_causal=False,
        # explicit, as in the real config: the default formula would give 64 and 16 for this layout
        spatial_compression_ratio=32, temporal_compression_ratio=8,
    )


def _text_encoder() -> T5EncoderModel:
    torch.manual_seed(0)
    config = T5Config(vocab_size=TINY_VOCAB, d_model=TEXT_DIM, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                      relative_attention_num_buckets=32, relative_attention_max_distance=128,
                      feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0,
                      layer_norm_epsilon=1e-6, is_encoder_decoder=False, use_cache=False, pad_token_id=0,
                      eos_token_id=1, decoder_start_token_id=0)
    return T5EncoderModel(config).eval()


def build(dest: Path) -> None:
    pipe = LTXPipeline(transformer=_transformer(), vae=_vae().eval(), text_encoder=_text_encoder(),
                       tokenizer=t5_tokenizer(TOKENIZER_MAX_LENGTH), scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER))
    pipe.save_pretrained(dest, safe_serialization=True)
