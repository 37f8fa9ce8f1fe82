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
- ``controls`` (txt2img, img2img, inpaint): FLUX.1 ControlNets (codex_diffusers.controlnets; engines.py
  declares the pipelines). ``reference_images`` (txt2img): FLUX.1 Redux, the family's image variation
  (redux.py): each image's SigLIP tokens join the prompt's, weighted by its ``scale``.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from codex_core import ControlFields, EditParams, ImagePath, Img2ImgParams, InpaintParams, Params, Txt2ImgParams
from codex_diffusers import CacheFields, LoraFields, TrueCfgFields

MAX_SEQUENCE_LENGTH = 512  # FluxPipeline refuses more T5 tokens
MAX_REFERENCE_IMAGES = 8  # FluxPriorReduxPipeline sums the weighted tokens of a list of images (one call)


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


class ReferenceImage(BaseModel):
    """An image prompt: its content steers the output (FLUX.1 Redux: the image's tokens join the prompt's)."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)

    image: ImagePath = Field(description="The reference image (any size: the image encoder resizes it).")
    scale: float = Field(1.0, ge=0.0, le=2.0, description="Weight of this image's tokens together with the "
                                                          "prompt's (FluxPriorReduxPipeline's prompt_embeds_scale).")
    model: str = Field(min_length=1, description="The Redux model: a FLUX.1-Redux-dev diffusers folder "
                                                 "(image_encoder, feature_extractor, image_embedder), by path or "
                                                 "by its name in the clip_vision models folders.")


class ReduxFields(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    reference_images: list[ReferenceImage] = Field(default_factory=list, max_length=MAX_REFERENCE_IMAGES, description=(
        "Image prompts through FLUX.1 Redux: [{\"image\": \"style.png\", \"scale\": 1.0, \"model\": "
        "\"FLUX.1-Redux-dev\"}]; several are weighted and summed, all through one Redux model."))

    @model_validator(mode="after")
    def _one_redux_model(self):
        refs = self.reference_images
        other = next((index for index, ref in enumerate(refs) if ref.model != refs[0].model), None)
        if other is not None:
            raise PydanticCustomError(
                "reference_images", "reference_images.{index}.model: got '{other}'; every reference image goes "
                "through one Redux model (one FluxPriorReduxPipeline call), here '{first}'",
                {"index": other, "other": refs[other].model, "first": refs[0].model})
        return self


# _FluxFields first, so its Flux descriptions of cfg, negative_prompt and sampler win over the core's.
class FluxTxt2Img(_FluxFields, Txt2ImgParams, ControlFields, ReduxFields):
    size_multiple = 16


class FluxImg2Img(_FluxInitImageFields, Img2ImgParams, ControlFields):
    """The output keeps the init image's size unless width and height are given (then it is resized first)."""

    size_multiple = 16


class FluxInpaint(_FluxInitImageFields, InpaintParams, ControlFields):
    """White pixels of mask_image are repainted; the output keeps the init image's size unless width/height are given."""

    size_multiple = 16


KONTEXT_AREA = 1024 * 1024  # FluxKontextPipeline's max_area default: FLUX.1 Kontext works at about one megapixel


class FluxEdit(_FluxFields, EditParams):
    """FLUX.1 Kontext: edit one reference image by instruction (FluxKontextPipeline).

    The output size: FluxKontextPipeline scales width x height to ``max_area`` pixels at the same aspect
    ratio, each side floored to a multiple of 16. Without width/height, diffusers would start from its
    default 1024x1024 and make every edit square; we start from the reference image's size instead (the
    output keeps its aspect ratio, as BFL's and ComfyUI's Kontext workflows do) and pass it.
    """

    size_multiple = 16
    max_images = 1  # FluxKontextPipeline conditions on one image (a list would be a batch)
    show_after = {"max_area": "height", "auto_resize": "max_area"}

    max_area: int | None = Field(None, ge=256, le=4096 * 4096, description=(
        "Output area in pixels at the reference image's aspect ratio, each side floored to a multiple of 16 (not "
        f"with width/height, which set the size). Default: {KONTEXT_AREA}, about one megapixel, Kontext's own."))
    auto_resize: bool = Field(True, description="Resize the reference image to the nearest of the resolutions "
                                                "Kontext was trained on (diffusers' default); false: use it at its "
                                                "own size, floored to multiples of 16.")

    @model_validator(mode="after")
    def _one_size(self):
        if self.max_area is not None and self.width is not None:
            raise PydanticCustomError(
                "size_twice", "max_area: leave it out when width and height are given (they are the output size); "
                "max_area sets the area of an output that takes the image's aspect ratio", {})
        return self

    def area(self) -> int:
        if self.max_area is not None:
            return self.max_area
        return self.width * self.height if self.width is not None else KONTEXT_AREA

    def edit_size(self, first: tuple[int, int]) -> tuple[int, int, str]:
        """FluxKontextPipeline's arithmetic: width x height scaled to max_area at its aspect ratio, floored to 16."""
        start, source = ((self.width, self.height), "the request's width and height") if self.width is not None \
            else (first, f"the image's aspect ratio ({first[0]}x{first[1]})")
        aspect = start[0] / start[1]
        width = round((self.area() * aspect) ** 0.5) // 16 * 16
        height = round((self.area() / aspect) ** 0.5) // 16 * 16
        return width, height, (f"{source} at {self.area()} pixels (max_area), each side floored to a multiple "
                               "of 16: FluxKontextPipeline's rule")


TASKS = {"txt2img": FluxTxt2Img, "img2img": FluxImg2Img, "inpaint": FluxInpaint, "edit": FluxEdit}
