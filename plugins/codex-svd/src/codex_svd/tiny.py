"""A tiny randomly initialised Stable Video Diffusion model of the real architecture (diffusers format).

Component sizes follow diffusers' own SVD fast test, except where the real model matters:
- the VAE keeps four blocks, so its scale factor is 8 like the real one (the fast test's two-block
  VAE has 2) and latent sizes, size rules and the UNet's input are what a real checkpoint sees;
- the CLIP image encoder takes 224x224 images, because the pipeline resizes every init image to
  224x224 before encoding it (the fast test passes tensors, which skip that resize);
- the scheduler is the real checkpoints' EulerDiscreteScheduler config, and the UNet says
  ``num_frames=14`` like stable-video-diffusion-img2vid (the ``svd`` variant).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKLTemporalDecoder,
    EulerDiscreteScheduler,
    StableVideoDiffusionPipeline,
    UNetSpatioTemporalConditionModel,
)
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

# scheduler/scheduler_config.json of stabilityai/stable-video-diffusion-img2vid(-xt), less the keys
# EulerDiscreteScheduler does not take (clip_sample, set_alpha_to_one, skip_prk_steps).
SVD_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", interpolation_type="linear",
                     num_train_timesteps=1000, prediction_type="v_prediction", sigma_max=700.0, sigma_min=0.002,
                     steps_offset=1, timestep_spacing="leading", timestep_type="continuous", trained_betas=None,
                     use_karras_sigmas=True)
IMAGE_EMBED_DIM = 32  # the image encoder's projection_dim = the UNet's cross_attention_dim


def build(dest: Path, num_frames: int = 14) -> None:
    torch.manual_seed(0)
    unet = UNetSpatioTemporalConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=96, in_channels=8, out_channels=4,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        cross_attention_dim=IMAGE_EMBED_DIM, num_attention_heads=8,
        projection_class_embeddings_input_dim=96,  # 3 added time ids (fps, motion bucket, noise aug) x 32
        addition_time_embed_dim=32, num_frames=num_frames,
    )
    torch.manual_seed(0)
    vae = AutoencoderKLTemporalDecoder(  # 32 channels: the encoder's group norm has 32 groups
        block_out_channels=[32, 32, 32, 32], down_block_types=["DownEncoderBlock2D"] * 4, layers_per_block=1,
        in_channels=3, out_channels=3, latent_channels=4,
    )
    torch.manual_seed(0)
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, projection_dim=IMAGE_EMBED_DIM, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=37, image_size=224, patch_size=14,
    )).eval()
    pipe = StableVideoDiffusionPipeline(
        vae=vae, image_encoder=image_encoder, unet=unet, scheduler=EulerDiscreteScheduler(**SVD_SCHEDULER),
        feature_extractor=CLIPImageProcessor(crop_size=224, size=224),
    )
    pipe.save_pretrained(dest, safe_serialization=True)
    _name_feature_extractor_like_the_real_repos(Path(dest))


def _name_feature_extractor_like_the_real_repos(dest: Path) -> None:
    """Without torchvision, transformers 5 builds CLIPImageProcessorPil and saves that name in
    model_index.json. The real repos name CLIPImageProcessor; so does ours, so loading the tiny model
    takes the same path as a real checkpoint (transformers picks the backend when it loads)."""
    index_path = dest / "model_index.json"
    index = json.loads(index_path.read_text(encoding="utf-8"))
    index["feature_extractor"] = ["transformers", "CLIPImageProcessor"]
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
