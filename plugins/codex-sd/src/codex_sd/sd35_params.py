"""Request models for sd35 (Stable Diffusion 3.5). Only pydantic here: `codex schema` must not import torch.

What diffusers' StableDiffusion3 pipelines do with each field (diffusers 0.42, read from their __call__):

- Sizes are multiples of 16: ``check_inputs`` raises unless height and width divide by
  ``vae_scale_factor`` (8) x the transformer's ``patch_size`` (2).
- ``cfg`` is diffusers' ``guidance_scale`` and it is real classifier-free guidance: above 1 each step
  runs the transformer on the negative prompt too (``do_classifier_free_guidance`` is
  ``guidance_scale > 1``). At 1 or below the negative prompt is never encoded, so a negative prompt
  then is an error here rather than silently ignored (SD 3.5 Large Turbo runs at cfg 0).
- ``max_sequence_length``: the T5 tokens of the prompt (the pipeline refuses more than 512). The two
  CLIP encoders always see 77 tokens.
- ``clip_skip`` counts as A1111 and Forge count it: 1 is what the model was trained on (SD3 reads the
  penultimate CLIP layer by design), 2 one layer before that (diffusers' ``clip_skip=1``). diffusers
  applies it to the prompt only, not to the negative prompt.
- Skip-layer guidance (txt2img only: the img2img and inpaint pipelines do not take it): an extra
  transformer pass per step without ``skip_guidance_layers``, between ``skip_layer_guidance_start``
  and ``_stop`` (fractions of the steps), pushed away from by ``skip_layer_guidance_scale``. diffusers
  runs it only when cfg is above 1; Stability recommends layers 7, 8, 9 for SD 3.5 Medium.
- img2img and inpaint count their steps as ``steps - int(steps - steps x strength)`` (``get_timesteps``).
- No ``cache`` field: SD3Transformer2DModel has no diffusers cache hooks (CacheMixin).
- ``controls`` (txt2img, inpaint): SD3 ControlNets (SD3ControlNetModel; sd35.py declares the pipelines).
  diffusers has no SD3 ControlNet img2img pipeline. Its ControlNet inpainting pipeline is for inpainting
  ControlNets (alimama-creative/SD3-Controlnet-Inpainting): the control image is the image to repaint, masked
  by ``mask_image``, and the image is denoised from noise (no strength); StableDiffusion3ControlNetPipeline
  takes no skip-layer guidance.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from codex_core import ControlFields, Img2ImgParams, InpaintParams, Params, Txt2ImgParams
from codex_diffusers import LoraFields

MAX_SEQUENCE_LENGTH = 512  # StableDiffusion3Pipeline.check_inputs refuses more T5 tokens
CLIP_LAYERS = 12  # CLIP ViT-L/14's text encoder, the shallower of the two CLIP encoders
MAX_TRANSFORMER_LAYERS = 38  # SD 3.5 Large's joint blocks (Medium has 24); checked per variant in the engine


class _SD35Fields(Params, LoraFields):
    negative_prompt: str = Field("", description="What to steer away from (used when cfg is above 1: real "
                                                 "classifier-free guidance).")
    cfg: float = Field(ge=0.0, le=50.0, description="Classifier-free guidance (diffusers' guidance_scale): above 1 "
                                                    "each step also runs the negative prompt; 0 or 1 = off (Turbo).")
    sampler: str | None = Field(None, description="'Euler' (FlowMatchEulerDiscreteScheduler, the checkpoint's own); "
                                                  "txt2img also 'UniPC' and 'DPM++ 2M'; `codex samplers sd35`.")
    max_sequence_length: int = Field(ge=1, le=MAX_SEQUENCE_LENGTH, description="T5 prompt tokens (longer prompts "
                                                                               "are truncated; info.json says so).")
    clip_skip: int = Field(1, ge=1, le=CLIP_LAYERS, description="A1111's Clip skip for the prompt: 1 = the layer SD 3.5 "
                                                                "was trained on (the penultimate), 2 = one before it.")

    @model_validator(mode="after")
    def _negative_prompt_needs_cfg(self):
        if self.negative_prompt and self.cfg <= 1.0:
            raise PydanticCustomError(
                "cfg", "negative_prompt: it would be ignored: diffusers runs classifier-free guidance only when cfg "
                "is above 1 and cfg is {cfg}; raise cfg (e.g. 3.5) or leave negative_prompt out", {"cfg": self.cfg})
        return self


class SkipLayerGuidanceFields(BaseModel):
    """Skip-layer guidance, StableDiffusion3Pipeline's own (txt2img only)."""

    model_config = ConfigDict(strict=True, extra="forbid")  # as the core's params: a mixin must not loosen them
    show_after: ClassVar[dict[str, str]] = {"skip_guidance_layers": "cfg"}

    skip_guidance_layers: list[int] | None = Field(
        None, min_length=1, max_length=MAX_TRANSFORMER_LAYERS,
        description="Transformer blocks to skip in an extra guidance pass per step (e.g. [7, 8, 9] for SD 3.5 "
                    "Medium); empty: no skip-layer guidance. Needs cfg above 1.")
    skip_layer_guidance_scale: float = Field(2.8, ge=0.0, le=10.0, description="Strength of skip-layer guidance.")
    skip_layer_guidance_start: float = Field(0.01, ge=0.0, le=1.0, description="Fraction of the steps where "
                                                                               "skip-layer guidance starts.")
    skip_layer_guidance_stop: float = Field(0.2, ge=0.0, le=1.0, description="Fraction of the steps where it stops.")

    @model_validator(mode="after")
    def _skip_layers_make_sense(self):
        layers = self.skip_guidance_layers
        if layers is None:
            return self
        if any(layer < 0 or layer >= MAX_TRANSFORMER_LAYERS for layer in layers) or len(set(layers)) != len(layers):
            raise PydanticCustomError(
                "skip_guidance_layers", "skip_guidance_layers: got {layers}: block indices from 0 to {last}, each "
                "once", {"layers": layers, "last": MAX_TRANSFORMER_LAYERS - 1})
        if self.skip_layer_guidance_start >= self.skip_layer_guidance_stop:
            raise PydanticCustomError(
                "skip_layer_guidance", "skip_layer_guidance_start: {start} is not below skip_layer_guidance_stop "
                "{stop}: skip-layer guidance would never run", {"start": self.skip_layer_guidance_start,
                                                                 "stop": self.skip_layer_guidance_stop})
        if getattr(self, "cfg", 0.0) <= 1.0:
            raise PydanticCustomError(
                "skip_guidance_layers", "skip_guidance_layers: it would be ignored: diffusers runs skip-layer guidance "
                "only with classifier-free guidance, and cfg is {cfg}; raise cfg above 1 or leave it out",
                {"cfg": getattr(self, "cfg", None)})
        return self


class _SD35InitImageFields(_SD35Fields):
    """img2img and inpaint: Euler only (the engine's task_samplers say so; sd35.py says why)."""

    steps_rule: ClassVar[str] = "keep_fraction"  # get_timesteps: steps - int(steps - steps x strength)


# _SD35Fields first, so its SD 3.5 descriptions of cfg, negative_prompt and sampler win over the core's.
class SD35Txt2Img(_SD35Fields, Txt2ImgParams, SkipLayerGuidanceFields, ControlFields):
    size_multiple = 16


class SD35Img2Img(_SD35InitImageFields, Img2ImgParams):
    """The output keeps the init image's size unless width and height are given (then it is resized first)."""

    size_multiple = 16


class SD35Inpaint(_SD35InitImageFields, InpaintParams, ControlFields):
    """White pixels of mask_image are repainted; the output keeps the init image's size unless width/height are given."""

    size_multiple = 16


TASKS = {"txt2img": SD35Txt2Img, "img2img": SD35Img2Img, "inpaint": SD35Inpaint}
