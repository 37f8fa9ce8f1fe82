"""Request models for ltx_video. Only pydantic here: `codex schema` must not import torch.

Shape rules (checked before anything loads): the LTX VAE compresses 32x in space and 8x in time,
so ``width``/``height`` are multiples of 32 (diffusers raises otherwise) and ``num_frames`` is 8k+1
(diffusers would silently round 10 frames down to 9).

``fps`` is the exported video's rate and the pipeline's ``frame_rate``: the transformer scales
the time axis of its rotary position embedding by it, so it conditions the motion too.
``cfg`` is classifier-free guidance against ``negative_prompt`` (LTX-Video is not guidance-distilled).
``decode_timestep`` / ``decode_noise_scale``: the timestep-conditioned VAE (LTX-Video 0.9.1 and
later) decodes from a slightly re-noised latent; 0.9.0's VAE ignores both.
"""

from __future__ import annotations

from pydantic import Field

from codex_core import Img2VidParams, Txt2VidParams, VideoFields
from codex_diffusers import CacheFields, LoraFields, NoInitImage


class _LTXFields(VideoFields, LoraFields, CacheFields):
    show_after = {"decode_timestep": "cfg", "decode_noise_scale": "cfg"}
    size_multiple = 32
    frame_multiple = 8

    # diffusers' FlowMatchEulerDiscreteScheduler stretches the schedule to the checkpoint's terminal
    # sigma (shift_terminal 0.1), which divides by zero for a single step and fails after loading.
    steps: int = Field(ge=2, le=1000, description="Denoising steps (at least 2: the checkpoint's scheduler "
                                                  "stretches its schedule to a terminal sigma).")
    fps: float = Field(ge=1.0, le=240.0, description="Frames per second: the exported video's rate and the model's "
                                                     "frame_rate conditioning (the time scale of its positions).")
    decode_timestep: float = Field(ge=0.0, le=1.0, description="Timestep the VAE decodes at (timestep-conditioned "
                                                               "VAEs, LTX-Video 0.9.1+; the authors use 0.05).")
    decode_noise_scale: float = Field(ge=0.0, le=1.0, description="Noise mixed into the latents before decoding "
                                                                  "(timestep-conditioned VAEs; the authors use 0.025).")


class LTXTxt2Vid(NoInitImage, _LTXFields, Txt2VidParams):
    pass


class LTXImg2Vid(_LTXFields, Img2VidParams):
    """The init image is the first frame; it is resized to width x height (Lanczos) if it differs."""


TASKS = {"txt2vid": LTXTxt2Vid, "img2vid": LTXImg2Vid}
