"""Request models for sd15 and sdxl. Only pydantic here: `codex schema` must not import torch."""

from __future__ import annotations

from codex_core import Img2ImgParams, InpaintParams, Txt2ImgParams, UpscaleParams
from codex_diffusers import A1111PromptFields, LoraFields, ModeFields, VaeFields

# SD and SDXL VAEs downsample by 8: pixel sizes must be multiples of 8.


class SDTxt2Img(Txt2ImgParams, A1111PromptFields, ModeFields, LoraFields, VaeFields):
    size_multiple = 8


class SDImg2Img(Img2ImgParams, A1111PromptFields, ModeFields, LoraFields, VaeFields):
    size_multiple = 8


class SDInpaint(InpaintParams, A1111PromptFields, ModeFields, LoraFields, VaeFields):
    size_multiple = 8


class SDUpscale(UpscaleParams, A1111PromptFields, ModeFields, LoraFields, VaeFields):
    size_multiple = 8


TASKS = {"txt2img": SDTxt2Img, "img2img": SDImg2Img, "inpaint": SDInpaint, "upscale": SDUpscale}
