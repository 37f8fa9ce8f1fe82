"""Request models for hunyuan_video_15 (HunyuanVideo 1.5). Only pydantic here: `codex schema` must not import torch.

Shape rules (checked before anything loads; diffusers floors sizes and frames silently):
- ``width``/``height``: multiples of 16 (the VAE's spatial stride 16 x the transformer's patch 1).
- ``num_frames`` = 4k+1: the causal VAE compresses time by 4 (the first frame stands alone).

Guidance: HunyuanVideo 1.5 is not guidance-distilled. ``cfg`` is real classifier-free guidance: the
pipelines take no ``guidance_scale`` argument; the scale lives in the pipeline's ``guider``
(``ClassifierFreeGuidance``), which the engine replaces for one run. At 1.0 the guider is off (one
transformer pass per step, what the distilled checkpoints use) and a negative prompt would be ignored,
so one is rejected unless ``cfg`` > 1.

img2vid takes no size: ``HunyuanVideo15ImageToVideoPipeline`` picks the bucket of the checkpoint's
``target_size`` closest to the init image's aspect ratio and crops the image to it. ``bucket_size``
is that arithmetic (diffusers' ``generate_crop_size_list`` and ``get_closest_ratio``, themselves
copied from the authors' hyvideo/utils/data_utils.py); the engine fills ``width``/``height`` with it
before the run, so they are what the video has.
"""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from codex_core import Img2VidParams, Txt2VidParams
from codex_diffusers import CacheFields, NoInitImage, flow_shift_field

SIZE_MULTIPLE = 16  # VAE spatial stride 16 x transformer patch 1
# The tiny model's transformer target_size (v15_tiny): small buckets, so tiny image-to-video runs stay 32 px wide
TINY_TARGET_SIZE = 32


def crop_sizes(base_size: int, patch_size: int = SIZE_MULTIPLE, max_ratio: float = 4.0) -> list[tuple[int, int]]:
    """The buckets of ``base_size``: (height, width) pairs of about base_size^2 pixels, aspect ratios up to 4."""
    patches = round((base_size / patch_size) ** 2)
    sizes, wp, hp = [], patches, 1
    while wp > 0:
        if max(wp, hp) / min(wp, hp) <= max_ratio:
            sizes.append((wp * patch_size, hp * patch_size))
        if (hp + 1) * wp <= patches:
            hp += 1
        else:
            wp -= 1
    return sizes


def bucket_size(image_width: int, image_height: int, target_size: int) -> tuple[int, int]:
    """(width, height) the img2vid pipeline makes from an image of this size for a checkpoint of ``target_size``.

    As diffusers does: ratios are rounded to 5 places; an image at least as tall as wide takes the
    nearest bucket no taller than itself, a wider one the nearest no wider (ties: the first listed)."""
    sizes = crop_sizes(target_size)
    aspect = image_height / image_width
    ratios = [round(h / w, 5) - aspect for h, w in sizes]
    allowed = [(i, d) for i, d in enumerate(ratios) if (d <= 0 if aspect >= 1 else d >= 0)]
    height, width = sizes[min(allowed, key=lambda pair: abs(pair[1]))[0]]
    return width, height


def _cfg():
    return Field(ge=1.0, le=20.0, description="Classifier-free guidance scale (the pipeline's guider; 1.0 = off, one "
                                              "transformer pass per step, as the distilled checkpoints run).")


def _flow_shift():
    return flow_shift_field("the checkpoint's own: 5.0 for 480p, 9.0 for 720p text-to-video, 7.0 for 720p "
                            "image-to-video")


class _Hy15Fields(CacheFields):  # no LoraFields: the pipelines have no LoRA loader (see v15.py)
    @model_validator(mode="after")
    def _negative_prompt_needs_cfg(self):
        if self.negative_prompt and self.cfg <= 1.0:
            raise PydanticCustomError(
                "cfg", "negative_prompt: it would be ignored: the guider is off at cfg {cfg}; set cfg above 1 (e.g. "
                "6.0, twice the compute per step) or leave negative_prompt out", {"cfg": self.cfg})
        return self


class Hy15Txt2Vid(NoInitImage, _Hy15Fields, Txt2VidParams):
    size_multiple = SIZE_MULTIPLE
    frame_multiple = 4
    cfg: float = _cfg()
    flow_shift: float = _flow_shift()


class Hy15Img2Vid(_Hy15Fields, Img2VidParams):
    """The size comes from the init image (the pipeline's bucket rule; see ``bucket_size``)."""

    size_multiple = SIZE_MULTIPLE
    frame_multiple = 4
    cfg: float = _cfg()
    flow_shift: float = _flow_shift()
    width: int | None = Field(None, ge=16, le=8192, description="Leave out: the pipeline sizes the video from the "
                                                                "init image (the bucket of the checkpoint's target "
                                                                "size nearest its aspect ratio). Given, it must be "
                                                                "that width.")
    height: int | None = Field(None, ge=16, le=8192, description="Leave out (see width). Given, it must be the "
                                                                 "bucket's height.")


TASKS = {"txt2vid": Hy15Txt2Vid, "img2vid": Hy15Img2Vid}
