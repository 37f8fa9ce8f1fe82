"""Request models for ltx2 (LTX-2: video with sound). Only pydantic here: `codex schema` must not import torch.

Shape rules (checked before anything loads): the LTX-2 video VAE compresses 32x in space and 8x in
time and the transformer's patch is 1x1x1, so ``width``/``height`` are multiples of 32 (diffusers
raises otherwise) and ``num_frames`` is 8k+1 (diffusers would silently decode fewer frames); at least 64 px a side
and 2 steps (fewer fail inside diffusers: see the fields).

Guidance, as ``LTX2Pipeline.__call__`` uses it (every term works on the x0 prediction, per modality):
``cfg`` is classifier-free guidance of the video against ``negative_prompt`` and ``audio_cfg`` the
same for the sound (the LTX-2 authors guide audio harder); CFG runs when either is above 1.
``modality_scale`` pushes both away from a pass with the audio<->video cross-attention switched off
(1 = off: one transformer pass fewer per step). ``guidance_rescale`` pulls the guided prediction's
spread back toward the conditional one (0 = off). The audio terms without a field of their own
(modality, rescale) follow the video's value, as the authors set them equal.

``fps`` is the exported video's rate and the pipeline's ``frame_rate``: it sets the clip's duration,
hence the audio's length, and scales the time axis of the video's rotary positions.
``max_sequence_length``: the Gemma-3 prompt window; the text connectors tile their 128 learnable
registers over it, so it is a multiple of 128.
"""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from codex_core import AudioFields, Img2VidParams, Txt2VidParams, VideoFields
from codex_diffusers import LoraFields, NoInitImage

REGISTERS = 128  # num_learnable_registers of the published LTX-2 text connectors (video and audio)


class _LTX2Fields(VideoFields, AudioFields, LoraFields):
    show_after = {"audio_cfg": "cfg", "modality_scale": "audio_cfg", "guidance_rescale": "modality_scale"}
    size_multiple = 32  # VAE stride 32 x transformer patch 1
    frame_multiple = 8

    # The pipeline's schedule is linspace(1, 1/steps): one step is sigma 1.0 alone, and the checkpoint's
    # scheduler stretches sigmas to its terminal value by dividing by (1 - the last sigma): NaN frames and sound.
    steps: int = Field(ge=2, le=1000, description="Denoising steps (at least 2).")
    # The video VAE's decoder pads with reflection, which needs at least 2 latent pixels (64 px at stride 32).
    width: int = Field(ge=64, le=8192, description="Frame width in pixels (a multiple of 32, at least 64).")
    height: int = Field(ge=64, le=8192, description="Frame height in pixels (a multiple of 32, at least 64).")
    fps: float = Field(ge=1.0, le=240.0, description="Frames per second: the exported video's rate, the clip's "
                                                     "duration (hence the sound's) and the model's frame_rate.")
    audio_cfg: float = Field(ge=1.0, le=30.0, description="Classifier-free guidance of the sound against the "
                                                          "negative prompt (the video's is cfg).")
    modality_scale: float = Field(ge=1.0, le=10.0, description="Modality guidance: away from a pass without the "
                                                               "audio-video cross-attention (1 = off).")
    guidance_rescale: float = Field(ge=0.0, le=1.0, description="Rescales the guided prediction toward the "
                                                                "conditional one's spread (0 = off).")
    max_sequence_length: int = Field(ge=REGISTERS, le=1024, description="Prompt tokens the Gemma-3 encoder "
                                                                       "sees (a multiple of 128).")

    @field_validator("max_sequence_length")
    @classmethod
    def _whole_registers(cls, value: int) -> int:
        if value % REGISTERS:
            low = value // REGISTERS * REGISTERS
            raise PydanticCustomError(
                "register_multiple", "{value} is not a multiple of {registers} (the text connectors' learnable "
                "registers); nearest valid values: {nearest}",
                {"value": value, "registers": REGISTERS, "nearest": f"{low} or {low + REGISTERS}"})
        return value


class LTX2Txt2Vid(NoInitImage, _LTX2Fields, Txt2VidParams):
    pass


class LTX2Img2Vid(_LTX2Fields, Img2VidParams):
    """The init image is the first frame; it is resized to width x height (Lanczos) if it differs."""

    show_after = {**_LTX2Fields.show_after, "image_crf": "init_image"}

    # LTX-2 was trained on first frames that went through H.264; diffusers re-encodes the image at this
    # CRF with PyAV before conditioning on it (0: the image as it is).
    image_crf: int = Field(ge=0, le=51, description="H.264 CRF the first frame is re-encoded at, as in training "
                                                    "(0 = not re-encoded; needs PyAV above 0).")


TASKS = {"txt2vid": LTX2Txt2Vid, "img2vid": LTX2Img2Vid}
