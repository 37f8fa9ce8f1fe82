"""Request models for sd15 and sdxl. Only pydantic here: `codex schema` must not import torch."""

from codex_core.params import Img2ImgParams, InpaintParams, Txt2ImgParams, UpscaleParams

# SD and SDXL VAEs downsample by 8: pixel sizes must be multiples of 8.


class SDTxt2Img(Txt2ImgParams):
    size_multiple = 8


class SDImg2Img(Img2ImgParams):
    size_multiple = 8


class SDInpaint(InpaintParams):
    size_multiple = 8


class SDUpscale(UpscaleParams):
    size_multiple = 8


TASKS = {"txt2img": SDTxt2Img, "img2img": SDImg2Img, "inpaint": SDInpaint, "upscale": SDUpscale}
