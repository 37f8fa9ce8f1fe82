"""Request models for chroma. Only pydantic here: `codex schema` must not import torch.

What the diffusers Chroma pipelines (0.42) do with the guidance arguments, read from their __call__:
- ``cfg`` is ``guidance_scale`` and it is real classifier-free guidance: above 1 every step runs the
  transformer on the prompt and on ``negative_prompt`` ("" when not given) and takes
  ``neg + cfg * (pos - neg)``; at 1 one pass per step and the negative prompt is never encoded. Chroma
  has no embedded guidance (its transformer has no guidance embedding), so cfg below 1 would mean
  nothing: the range starts at 1, and a negative prompt with cfg 1 is an error (it would be ignored).
- ``ChromaInpaintPipeline`` also takes ``true_cfg_scale``, but its __call__ never reads it (diffusers
  0.42): no field for it (tests/test_chroma.py pins that it changes nothing).
- Sizes are multiples of 16: the VAE downsamples by 8 and the transformer packs latents in 2x2 patches;
  the pipelines would silently round other sizes down. ``max_sequence_length``: at most 512 T5 tokens
  (the pipelines refuse more).
- No ``flow_shift`` field: the scheduler's dynamic shift follows the image size (the pipeline's mu).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from codex_core import Img2ImgParams, InpaintParams, Params, Txt2ImgParams
from codex_diffusers import CacheFields, LoraFields

MAX_SEQUENCE_LENGTH = 512  # the Chroma pipelines' check_inputs refuse more T5 tokens


class _ChromaFields(Params, LoraFields, CacheFields):
    negative_prompt: str = Field("", description="What to steer away from; used only with cfg above 1.")
    cfg: float = Field(ge=1.0, le=50.0, description="Classifier-free guidance against negative_prompt (diffusers' "
                                                    "guidance_scale): 1 = off, one pass per step; above 1 two passes.")
    sampler: str | None = Field(None, description="'Euler' (FlowMatchEulerDiscreteScheduler, the checkpoint's own) "
                                                  "or 'UniPC' (txt2img only); `codex samplers chroma`.")
    max_sequence_length: int = Field(ge=1, le=MAX_SEQUENCE_LENGTH, description="T5 prompt tokens (longer prompts "
                                                                               "are truncated; info.json says so).")

    @model_validator(mode="after")
    def _negative_prompt_needs_cfg(self):
        if self.negative_prompt and self.cfg <= 1.0:
            raise PydanticCustomError(
                "cfg", "negative_prompt: it would be ignored: the Chroma pipelines encode it only when cfg is above 1 "
                "(got cfg {cfg}); set cfg above 1 (e.g. 3.0, the Chroma1-HD card's) or leave negative_prompt out",
                {"cfg": self.cfg})
        return self


class _ChromaInitImageFields(_ChromaFields):
    """img2img and inpaint: Euler only (the engine's task_samplers say so; engines.py says why)."""

    steps_rule: ClassVar[str] = "keep_fraction"  # their get_timesteps: steps - int(steps - steps x strength)


# _ChromaFields first, so its descriptions of cfg, negative_prompt and sampler win over the core's.
class ChromaTxt2Img(_ChromaFields, Txt2ImgParams):
    size_multiple = 16


class ChromaImg2Img(_ChromaInitImageFields, Img2ImgParams):
    """The output keeps the init image's size unless width and height are given (then it is resized first)."""

    size_multiple = 16


class ChromaInpaint(_ChromaInitImageFields, InpaintParams):
    """White pixels of mask_image are repainted; the output keeps the init image's size unless width/height are given."""

    size_multiple = 16


TASKS = {"txt2img": ChromaTxt2Img, "img2img": ChromaImg2Img, "inpaint": ChromaInpaint}
