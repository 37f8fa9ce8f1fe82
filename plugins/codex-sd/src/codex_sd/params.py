"""Request models for sd15 and sdxl. Only pydantic here: `codex schema` must not import torch."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from codex_core import ControlFields, Img2ImgParams, InpaintParams, Txt2ImgParams, UpscaleParams
from codex_diffusers import LoraFields, ReferenceImageFields, VaeFields, mode_fields


class A1111PromptFields(BaseModel):
    """``prompt_syntax`` and ``clip_skip`` for the CLIP-conditioned (SD 1.x / SDXL) pipelines (``A1111Prompts``)."""

    model_config = ConfigDict(strict=True, extra="forbid")  # as the core's params: a mixin must not loosen them
    show_after: ClassVar[dict[str, str]] = {"prompt_syntax": "negative_prompt"}

    prompt_syntax: Literal["a1111", "plain"] = Field(
        "a1111", description="a1111: (word:1.2) / [word] weights, BREAK, <lora:NAME:0.8> tags and prompts past "
                             "75 tokens in chunks, as A1111 reads them; plain: the text as it is, cut at the "
                             "encoder's 77 tokens (with a warning).")
    clip_skip: int = Field(1, ge=1, le=12, description="A1111's Clip skip: 1 = the last CLIP layer, 2 = the one "
                                                       "before it.")


# Every speed mode sd15 or sdxl knows: sdxl honours all three, sd15 declares lightning unsupported (engines.py).
SDModeFields = mode_fields("lcm", "turbo", "lightning")

# SD and SDXL VAEs downsample by 8: pixel sizes must be multiples of 8.


class SDTxt2Img(Txt2ImgParams, A1111PromptFields, SDModeFields, LoraFields, VaeFields, ControlFields,
                ReferenceImageFields):
    size_multiple = 8


class SDImg2Img(Img2ImgParams, A1111PromptFields, SDModeFields, LoraFields, VaeFields, ControlFields,
                ReferenceImageFields):
    size_multiple = 8


class SDInpaint(InpaintParams, A1111PromptFields, SDModeFields, LoraFields, VaeFields, ControlFields,
                ReferenceImageFields):
    size_multiple = 8


class SDUpscale(UpscaleParams, A1111PromptFields, SDModeFields, LoraFields, VaeFields):
    size_multiple = 8


TASKS = {"txt2img": SDTxt2Img, "img2img": SDImg2Img, "inpaint": SDInpaint, "upscale": SDUpscale}
