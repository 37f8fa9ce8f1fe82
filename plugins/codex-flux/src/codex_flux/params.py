"""Request models for flux. Only pydantic here: `codex schema` must not import torch.

- Sizes are multiples of 16: the VAE downsamples by 8 and the transformer packs latents in 2x2
  patches. diffusers' Flux pipelines would silently round other sizes down; we reject them.
- ``cfg`` is FLUX.1-dev's embedded (distilled) guidance, diffusers' ``guidance_scale``: one
  transformer pass per step. Real classifier-free guidance against ``negative_prompt`` is
  ``true_cfg`` (diffusers' ``true_cfg_scale``, two passes per step); a negative prompt without it
  would be silently ignored by diffusers, so that is an error here.
- No ``flow_shift`` field: FLUX.1 schedulers derive the shift from the image size (dynamic
  shifting, dev) or use the checkpoint's own (schnell); a field would be ignored.
- Variant rules (schnell has no guidance embedding) need the checkpoint: see engines.py.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from codex_core import Img2ImgParams, InpaintParams, Params, Txt2ImgParams
from codex_diffusers import CacheFields, LoraFields, TrueCfgFields

MAX_SEQUENCE_LENGTH = 512  # FluxPipeline refuses more T5 tokens


class _FluxFields(TrueCfgFields, Params, LoraFields, CacheFields):
    negative_prompt: str = Field("", description="What to steer away from; used only with true_cfg above 1.")
    cfg: float = Field(ge=0.0, le=50.0, description="Embedded guidance of FLUX.1-dev (diffusers' guidance_scale; "
                                                    "one pass per step). schnell has none: keep 0.")
    sampler: str | None = Field(None, description="'Euler' (FlowMatchEulerDiscreteScheduler, the checkpoint's own) "
                                                  "or 'UniPC' (txt2img only); `codex samplers flux`.")
    max_sequence_length: int = Field(ge=1, le=MAX_SEQUENCE_LENGTH, description="T5 prompt tokens (longer prompts "
                                                                               "are truncated; info.json says so).")


class _FluxInitImageFields(_FluxFields):
    """img2img and inpaint: Euler only (the engine's task_samplers say so; engines.py says why)."""

    steps_rule: ClassVar[str] = "keep_fraction"  # diffusers' Flux img2img/inpaint: steps - int(steps - steps x strength)


# _FluxFields first, so its Flux descriptions of cfg, negative_prompt and sampler win over the core's.
class FluxTxt2Img(_FluxFields, Txt2ImgParams):
    size_multiple = 16


class FluxImg2Img(_FluxInitImageFields, Img2ImgParams):
    """The output keeps the init image's size unless width and height are given (then it is resized first)."""

    size_multiple = 16


class FluxInpaint(_FluxInitImageFields, InpaintParams):
    """White pixels of mask_image are repainted; the output keeps the init image's size unless width/height are given."""

    size_multiple = 16


TASKS = {"txt2img": FluxTxt2Img, "img2img": FluxImg2Img, "inpaint": FluxInpaint}
