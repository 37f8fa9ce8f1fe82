"""Request models for z_image. Only pydantic here: `codex schema` must not import torch.

What the diffusers Z-Image pipelines (0.42) do with the guidance arguments, read from their __call__:
- ``cfg`` is ``guidance_scale`` and it is real classifier-free guidance: above 0 every step runs the
  transformer on the prompt and on ``negative_prompt`` ("" when not given) and takes
  ``pos + cfg * (pos - neg)``; at 0 (Z-Image-Turbo, guidance-distilled) one pass per step and the
  negative prompt is never encoded. So a negative prompt with cfg 0 would be ignored: an error here.
- ``cfg_normalization`` caps the guided prediction's norm at the positive prediction's (the pipeline's
  ``cfg_normalization=True``); ``cfg_truncation`` turns guidance off for the steps whose normalised
  time (0 at the first step, 1 at the last) is above it: 1.0 (the default) never does.
- Sizes are multiples of 16 (VAE stride 8 x the transformer's 2x2 patches); the pipeline raises on others.
- ``controls`` (txt2img and inpaint; img2img has no ControlNet pipeline): controls.py.
- The sigma schedule is the pipeline's own (linear 1 -> 1/steps, shifted by the checkpoint's static
  shift): no flow_shift field.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from codex_core import ControlFields, Img2ImgParams, InpaintParams, Params, Txt2ImgParams
from codex_diffusers import CacheFields, LoraFields

# The pipeline pads every prompt to this many Qwen3 tokens by default. The transformer's first rotary axis
# (axes_lens[0] = 1536 positions) numbers the caption tokens and then the image frame, so far longer captions
# would run off its table; 1024 keeps a margin and is twice the pipeline's default.
MAX_SEQUENCE_LENGTH = 1024


class _ZImageFields(Params, LoraFields, CacheFields):
    negative_prompt: str = Field("", description="What to steer away from; used only with cfg above 0 "
                                                 "(Z-Image-Turbo runs at cfg 0).")
    cfg: float = Field(ge=0.0, le=50.0, description="Classifier-free guidance (diffusers' guidance_scale): 0 = off, "
                                                    "one pass per step (Z-Image-Turbo); above 0 each step also runs "
                                                    "negative_prompt and takes pos + cfg x (pos - neg).")
    cfg_normalization: bool = Field(False, description="Cap the guided prediction's norm at the prompt-only "
                                                       "prediction's (diffusers' cfg_normalization; with cfg > 0).")
    cfg_truncation: float = Field(1.0, ge=0.0, le=1.0, description="Guidance only while the step's normalised time "
                                                                   "(0 first step .. 1 last) is at most this; "
                                                                   "1.0 = every step (with cfg > 0).")
    sampler: str | None = Field(None, description="'Euler' (FlowMatchEulerDiscreteScheduler, the checkpoint's own and "
                                                  "the only one the pipelines run); `codex samplers z_image`.")
    max_sequence_length: int = Field(ge=1, le=MAX_SEQUENCE_LENGTH, description="Qwen3 prompt tokens, chat template "
                                                                               "included (longer prompts are "
                                                                               "truncated; info.json says so).")

    @model_validator(mode="after")
    def _negative_prompt_needs_cfg(self):
        if self.negative_prompt and self.cfg == 0.0:
            raise PydanticCustomError(
                "cfg", "negative_prompt: it would be ignored: the Z-Image pipelines encode it only when cfg is above 0 "
                "(got cfg 0.0); set cfg (e.g. 4.0 on Z-Image base, twice the compute per step) or leave "
                "negative_prompt out", {})
        return self


class _ZImageInitImageFields(_ZImageFields):
    steps_rule: ClassVar[str] = "keep_fraction"  # their get_timesteps: steps - int(steps - steps x strength)


# _ZImageFields first, so its descriptions of cfg, negative_prompt and sampler win over the core's.
class ZImageTxt2Img(_ZImageFields, Txt2ImgParams, ControlFields):
    size_multiple = 16


class ZImageImg2Img(_ZImageInitImageFields, Img2ImgParams):
    """The output keeps the init image's size unless width and height are given (then it is resized first)."""

    size_multiple = 16


class ZImageInpaint(_ZImageInitImageFields, InpaintParams, ControlFields):
    """White pixels of mask_image are repainted; the output keeps the init image's size unless width/height are given.

    With controls: the ControlNet inpaint pipeline, from noise (strength 1; controls.py says why)."""

    size_multiple = 16


TASKS = {"txt2img": ZImageTxt2Img, "img2img": ZImageImg2Img, "inpaint": ZImageInpaint}
