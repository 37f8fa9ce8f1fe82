"""A tiny randomly initialised Wan 2.2 Animate-14B of the real architecture (diffusers format).

The components of Wan-AI/Wan2.2-Animate-14B-Diffusers as diffusers' conversion script
(scripts/convert_wan_to_diffusers.py, "Wan2.2-Animate-14B") assembles them, at test sizes:
- ``WanAnimateTransformer3DModel``: 36 input channels (16 noise + 4 mask + 16 reference latents), the
  pose patch embedding, the motion encoder (a ladder of res blocks from ``motion_encoder_size`` down to
  4 pixels; here 16 -> 2 blocks, with diffusers' own test channel sizes) and the face encoder and
  face adapters (one per ``inject_face_latents_blocks`` blocks). Sizes follow diffusers' fast test
  (tests/pipelines/wan/test_wan_animate.py), with our UMT5's width as text_dim;
- ``CLIPVisionModel`` image encoder (the real one: ViT-H/14 of laion/CLIP-ViT-H-14-laion2B-s32B-b79K)
  whose hidden width is the transformer's ``image_dim``, and its ``CLIPImageProcessor``;
- the Wan 2.1 VAE (16 latent channels, stride 8 x 4), UMT5 text encoder and tokenizer as for the
  other Wan 2.2 models, and UniPC with flow sigmas at the script's flow_shift 5.0.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan, WanAnimatePipeline, WanAnimateTransformer3DModel
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

from codex_diffusers.tiny import t5_tokenizer

from .tiny import TEXT_DIM, _scheduler, _text_encoder

ANIMATE_SHIFT = 5.0  # what the conversion script writes for Animate (as for TI2V-5B)
IMAGE_DIM = 16  # the CLIP vision encoder's hidden width = the transformer's image_dim
CLIP_SIZE = 32  # the CLIP input size: 4 x 4 patches of 8
FACE_SIZE = 16  # motion_encoder_size: face frames are resized to 16 x 16


def _transformer() -> WanAnimateTransformer3DModel:
    torch.manual_seed(0)
    return WanAnimateTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=36, latent_channels=16,
        out_channels=16, text_dim=TEXT_DIM, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", image_dim=IMAGE_DIM, added_kv_proj_dim=24, rope_max_seq_len=32,
        motion_encoder_channel_sizes={"4": 16, "8": 16, "16": 16}, motion_encoder_size=FACE_SIZE,
        motion_style_dim=8, motion_dim=4, motion_encoder_dim=16, face_encoder_hidden_dim=16,
        face_encoder_num_heads=2, inject_face_latents_blocks=2, motion_encoder_batch_size=8,
    )


def _image_encoder() -> CLIPVisionModel:
    torch.manual_seed(0)
    return CLIPVisionModel(CLIPVisionConfig(
        hidden_size=IMAGE_DIM, intermediate_size=32, projection_dim=IMAGE_DIM, num_hidden_layers=2,
        num_attention_heads=2, image_size=CLIP_SIZE, patch_size=8, hidden_act="gelu", layer_norm_eps=1e-5,
    )).eval()


def _image_processor() -> CLIPImageProcessor:
    # the real preprocessor_config.json's settings (bicubic resize, center crop, OpenAI CLIP mean/std) at 32 px
    return CLIPImageProcessor(size={"shortest_edge": CLIP_SIZE}, crop_size={"height": CLIP_SIZE, "width": CLIP_SIZE},
                              do_center_crop=True, do_normalize=True, do_resize=True, resample=3,
                              image_mean=[0.48145466, 0.4578275, 0.40821073],
                              image_std=[0.26862954, 0.26130258, 0.27577711])


def build_animate_14b(dest: Path) -> None:
    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    pipe = WanAnimatePipeline(
        tokenizer=t5_tokenizer(), text_encoder=_text_encoder(), vae=vae, scheduler=_scheduler(ANIMATE_SHIFT),
        image_processor=_image_processor(), image_encoder=_image_encoder(), transformer=_transformer(),
    )
    pipe.save_pretrained(dest, safe_serialization=True)
    _name_image_processor_like_the_real_repo(Path(dest))


def _name_image_processor_like_the_real_repo(dest: Path) -> None:
    """Without torchvision, transformers 5 builds CLIPImageProcessorPil and saves that name in
    model_index.json. The real repo names CLIPImageProcessor; so does ours, so the tiny model loads
    the way a real checkpoint does (transformers picks the backend when it loads)."""
    index_path = dest / "model_index.json"
    index = json.loads(index_path.read_text(encoding="utf-8"))
    index["image_processor"] = ["transformers", "CLIPImageProcessor"]
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
