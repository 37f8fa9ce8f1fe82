"""Request models for flux2 and flux2_klein. Only pydantic here: `codex schema` must not import torch.

- Sizes are multiples of 16: the VAE downsamples by 8 and the transformer takes 2x2 latent patches.
  diffusers' FLUX.2 pipelines would silently round other sizes down; we reject them.
- ``cfg``: FLUX.2 [dev] is guidance-distilled, so its ``cfg`` is the embedded guidance
  (diffusers' ``guidance_scale`` fed to the transformer's guidance embedding; one pass per step).
  FLUX.2 [klein] Base runs real classifier-free guidance with it, against the empty prompt (the
  pipeline hard-codes "" as the negative; above 1 each step runs twice); the step-distilled [klein]
  models ignore it (engines.py refuses a value above 1 for them).
- No negative prompt: neither pipeline takes one, so a non-empty ``negative_prompt`` is an error.
- ``max_sequence_length``: the text encoder's window, counted over the chat-templated prompt (the
  system message of [dev] included); at most 512, the pipelines' tokenizer_max_length.
- ``cache`` (step caches): [klein] only, and not First Block Cache (see engines.py).
- edit: reference images as ``image``. Each must be at least 64 px on each side with an aspect ratio
  of at most 8:1 (Flux2ImageProcessor.check_image_input); the output size comes from the first image
  by the pipelines' rule (``edit_size``) unless width/height are given.
"""

from __future__ import annotations

import math
from typing import ClassVar

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from codex_core import EditParams, InpaintParams, Params, Txt2ImgParams
from codex_diffusers import CacheFields, LoraFields

MAX_SEQUENCE_LENGTH = 512  # the pipelines' tokenizer_max_length
SIZE_MULTIPLE = 16  # VAE stride 8 x 2x2 patches
MAX_AREA = 1024 * 1024  # the pipelines scale a reference (and klein's inpaint image) above this to this area
MIN_SIDE, MAX_ASPECT = 64, 8  # Flux2ImageProcessor.check_image_input


def oriented_size(path: str) -> tuple[int, int]:
    """An image file's size as viewers show it (EXIF orientations 5-8 swap the sides), as the core reads it."""
    from PIL import Image

    with Image.open(path) as image:
        width, height = image.size
        return (height, width) if image.getexif().get(0x0112) in (5, 6, 7, 8) else (width, height)


def reference_size(width: int, height: int) -> tuple[int, int, bool]:
    """A reference image's size as the FLUX.2 pipelines use it: scaled to 1024x1024's area when larger
    (``_resize_to_target_area``: int(side x sqrt(area ratio))), then floored to a multiple of 16 (cropped).
    The third value says whether it was scaled."""
    scaled = width * height > MAX_AREA
    if scaled:
        scale = math.sqrt(MAX_AREA / (width * height))
        width, height = int(width * scale), int(height * scale)
    return width // SIZE_MULTIPLE * SIZE_MULTIPLE, height // SIZE_MULTIPLE * SIZE_MULTIPLE, scaled


class _Flux2Fields(Params, LoraFields):
    negative_prompt: str = Field("", description="Not used: FLUX.2 pipelines take no negative prompt; leave it empty.")
    sampler: str | None = Field(None, description="'Euler' (FlowMatchEulerDiscreteScheduler, the checkpoint's own), "
                                                  "'UniPC' or 'DPM++ 2M' (flow variants); `codex samplers ENGINE`.")
    max_sequence_length: int = Field(ge=1, le=MAX_SEQUENCE_LENGTH, description="Text-encoder tokens of the "
                                     "chat-templated prompt (longer prompts are truncated; info.json says so).")

    @model_validator(mode="after")
    def _no_negative_prompt(self):
        if self.negative_prompt:
            raise PydanticCustomError(
                "negative_prompt", "negative_prompt: FLUX.2 pipelines take no negative prompt, so it would be "
                "ignored; leave it out ({guidance})", {"guidance": self.guidance_note})
        return self


# No step cache for [dev]: Flux2Pipeline (diffusers 0.42) calls its transformer outside a cache context, so every
# cache hook fails there ("No cache context is set"); tests/test_flux2.py pins it. [klein]'s pipelines have one.
class _DevFields(_Flux2Fields):
    guidance_note: ClassVar[str] = "FLUX.2 [dev]'s cfg is an embedded guidance scale"
    cfg: float = Field(ge=0.0, le=50.0, description="Embedded guidance of FLUX.2 [dev] (diffusers' guidance_scale; "
                                                    "one pass per step).")


class _KleinFields(_Flux2Fields, CacheFields):
    guidance_note: ClassVar[str] = "[klein] Base guides against the empty prompt with cfg above 1"
    cfg: float = Field(ge=0.0, le=50.0, description="[klein] Base: classifier-free guidance against the empty "
                                                    "prompt above 1 (two passes per step). The step-distilled "
                                                    "models take none: keep 1.")


class _Edit(EditParams):
    """The first image is edited and sets the output size (see ``edit_size``) unless width/height are given."""

    size_multiple = SIZE_MULTIPLE

    def edit_size(self, first: tuple[int, int]) -> tuple[int, int, str]:
        if self.width is not None:
            return self.width, self.height, "the request's width and height"
        width, height, scaled = reference_size(*first)
        how = "scaled to 1024x1024's area, then " if scaled else ""
        return width, height, (f"the first image's size ({first[0]}x{first[1]}), {how}floored to a multiple of "
                               f"{SIZE_MULTIPLE} (Flux2 pipelines)")

    @model_validator(mode="after")
    def _references_fit(self):
        for index, path in enumerate(self.images):
            width, height = oriented_size(path)
            if min(width, height) < MIN_SIDE:
                raise PydanticCustomError(
                    "image_size", "images.{index}: {width}x{height} is too small: FLUX.2 takes reference images of "
                    "at least {least} px on each side", {"index": index, "width": width, "height": height,
                                                           "least": MIN_SIDE})
            if max(width, height) > MAX_ASPECT * min(width, height):
                raise PydanticCustomError(
                    "image_size", "images.{index}: {width}x{height} is wider than {ratio}:1, the most FLUX.2 takes",
                    {"index": index, "width": width, "height": height, "ratio": MAX_ASPECT})
        return self


# _DevFields/_KleinFields first, so their descriptions of cfg, negative_prompt and sampler win over the core's.
class Flux2Txt2Img(_DevFields, Txt2ImgParams):
    size_multiple = SIZE_MULTIPLE


class Flux2Edit(_DevFields, _Edit):
    # FLUX.2 [dev] combines up to 10 reference images (BFL's FLUX.2 announcement and model card); the
    # pipeline itself sets no limit.
    max_images = 10


class KleinTxt2Img(_KleinFields, Txt2ImgParams):
    size_multiple = SIZE_MULTIPLE


class KleinEdit(_KleinFields, _Edit):
    # BFL's API takes at most 4 reference images for [klein] (input_image ... input_image_4); the pipeline
    # itself sets no limit.
    max_images = 4


class KleinInpaint(_KleinFields, InpaintParams):
    """White pixels of mask_image are repainted; Euler only (engines.py says why).

    Flux2KleinInpaintPipeline takes its output size from the init image (scaled down to 1024x1024's area
    when larger) whatever width/height say; the kit resizes the image to the target size first, so a
    target above that area would come out smaller: refused."""

    size_multiple = SIZE_MULTIPLE
    steps_rule: ClassVar[str] = "keep_fraction"  # its get_timesteps: steps - int(steps - steps x strength)

    @model_validator(mode="after")
    def _area(self):
        width, height = self.target_size()
        if width * height > MAX_AREA:
            field = "width" if self.width is not None else "init_image"
            raise PydanticCustomError(
                "image_size", "{field}: {width}x{height} is over 1024x1024's area, which Flux2KleinInpaintPipeline "
                "scales down to; give a size of at most 1048576 pixels", {"field": field, "width": width,
                                                                            "height": height})
        return self


FLUX2_TASKS = {"txt2img": Flux2Txt2Img, "edit": Flux2Edit}
KLEIN_TASKS = {"txt2img": KleinTxt2Img, "edit": KleinEdit, "inpaint": KleinInpaint}
