"""Request models for qwen_image. Only pydantic here: `codex schema` must not import torch.

Read from diffusers 0.42's QwenImage pipelines (``pipeline_qwenimage*.py``):

- Sizes are multiples of 16: the VAE downsamples by 8 (``2 ** len(temperal_downsample)``) and the
  transformer packs latents in 2x2 patches. The pipelines would round other sizes down with a
  warning; we reject them before loading.
- Guidance: Qwen-Image is not guidance-distilled (its transformer has no guidance embedding;
  ``guidance_scale`` is only "for future guidance-distilled models" and is ignored with a warning).
  Its classifier-free guidance is ``true_cfg_scale`` against ``negative_prompt``, two transformer
  passes per step, and it runs only when a negative prompt is given (even an empty one). So here
  ``cfg`` is that real CFG: above 1 codex passes the negative prompt ("" when none: the model card
  uses a blank one), at 1 it passes none and each step is one pass (e.g. with a Lightning LoRA).
  A negative prompt at cfg 1 would be silently ignored by diffusers: an error here.
- ``steps`` >= 2: the checkpoint's scheduler stretches its sigmas to end at ``shift_terminal`` 0.02,
  which divides zero by zero at one step (a NaN, black image).
- ``controls`` (txt2img and inpaint; img2img has no ControlNet pipeline): controls.py.
- ``max_sequence_length``: the prompt embedding is cut to this many tokens after the chat template's
  system prompt is dropped (``encode_prompt``); the pipelines refuse more than 1024.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from codex_core import ControlFields, Img2ImgParams, InpaintParams, Params, Txt2ImgParams
from codex_diffusers import CacheFields, LoraFields

MAX_SEQUENCE_LENGTH = 1024  # QwenImagePipeline.check_inputs refuses more
SIZE_MULTIPLE = 16  # VAE stride 8 x the transformer's 2x2 patches


class _QwenFields(Params, LoraFields, CacheFields):
    steps: int = Field(ge=2, le=1000, description="Denoising steps (at least 2: the scheduler's terminal stretch "
                                                  "is undefined at 1).")
    cfg: float = Field(ge=1.0, le=50.0, description="Classifier-free guidance against negative_prompt (diffusers' "
                                                    "true_cfg_scale; two passes per step). 1 = off, one pass.")
    negative_prompt: str = Field("", description="What to steer away from; used when cfg is above 1 (empty: "
                                                 "the unconditional prompt).")
    sampler: str | None = Field(None, description="'Euler' (FlowMatchEulerDiscreteScheduler, the checkpoint's own) "
                                                  "or 'UniPC' (txt2img only); `codex samplers qwen_image`.")
    max_sequence_length: int = Field(ge=1, le=MAX_SEQUENCE_LENGTH,
                                     description="Prompt tokens the transformer sees (longer prompts are truncated; "
                                                 "info.json says so).")

    @model_validator(mode="after")
    def _negative_prompt_needs_cfg(self):
        if self.negative_prompt and self.cfg <= 1.0:
            raise PydanticCustomError(
                "cfg", "negative_prompt: it would be ignored: Qwen-Image uses it only for classifier-free guidance "
                "and cfg is {cfg}; set cfg above 1 (the model card uses 4.0, twice the compute per step) or leave "
                "negative_prompt out", {"cfg": self.cfg})
        return self


class _QwenInitImageFields(_QwenFields):
    """img2img and inpaint: Euler only (the engine's task_samplers say so; engines.py says why)."""

    # QwenImageImg2ImgPipeline/QwenImageInpaintPipeline.get_timesteps: steps - int(steps - steps x strength)
    steps_rule: ClassVar[str] = "keep_fraction"


# _QwenFields first, so its descriptions of cfg, negative_prompt and sampler win over the core's.
class QwenTxt2Img(_QwenFields, Txt2ImgParams, ControlFields):
    size_multiple = SIZE_MULTIPLE


class QwenImg2Img(_QwenInitImageFields, Img2ImgParams):
    """The output keeps the init image's size unless width and height are given (then it is resized first)."""

    size_multiple = SIZE_MULTIPLE


class QwenInpaint(_QwenInitImageFields, InpaintParams, ControlFields):
    """White pixels of mask_image are repainted; the output keeps the init image's size unless width/height are given.

    With controls: an inpainting ControlNet on the init image, from noise (controls.py says why)."""

    size_multiple = SIZE_MULTIPLE


TASKS = {"txt2img": QwenTxt2Img, "img2img": QwenImg2Img, "inpaint": QwenInpaint}
