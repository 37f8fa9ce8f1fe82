"""Request models for the Wan 2.2 engines. Only pydantic here: `codex schema` must not import torch.

Shape rules (checked before anything loads; diffusers' Wan pipelines would round silently):
- ``num_frames`` = 4k+1: the Wan VAEs compress time by 4 (the first frame stands alone).
- ``width``/``height``: multiples of 32 for TI2V-5B (Wan 2.2 VAE stride 16 x transformer patch 2),
  16 for the A14B models (Wan 2.1 VAE stride 8 x patch 2).
"""

from __future__ import annotations


from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from codex_core import Img2VidParams, ImagePath, Txt2VidParams
from codex_diffusers import CacheFields, LoraFields, NoInitImage, flow_shift_field


def _flow_shift():
    return flow_shift_field("the Wan authors use 5.0 for TI2V-5B and I2V-A14B, 12.0 for T2V-A14B")


def _cfg_2():
    return Field(ge=0.0, le=50.0, description="Classifier-free guidance of the low-noise expert (transformer_2); "
                                              "cfg is the high-noise expert's.")


def _boundary_ratio():
    return Field(gt=0.0, lt=1.0, description="Where denoising switches from the high-noise to the low-noise expert, "
                                             "as a fraction of the 1000 training timesteps.")


def _cfg_2_needs_guidance(model):
    # diffusers turns classifier-free guidance on or off for the whole run from guidance_scale (the
    # high-noise expert's) alone: with cfg <= 1 a cfg_2 above 1 would be silently ignored.
    if model.cfg <= 1.0 < model.cfg_2:
        raise PydanticCustomError(
            "cfg_2", "cfg_2: {cfg_2} would be ignored: with cfg {cfg} <= 1 guidance is off for both experts; "
            "set cfg above 1, or cfg_2 to 1 or less", {"cfg": model.cfg, "cfg_2": model.cfg_2})
    return model


class _WanTxt2Vid(NoInitImage, Txt2VidParams, LoraFields, CacheFields):
    frame_multiple = 4
    flow_shift: float = _flow_shift()


class _WanImg2Vid(Img2VidParams, LoraFields, CacheFields):
    """The init image is the first frame; it is resized to width x height (Lanczos) if it differs."""

    frame_multiple = 4
    flow_shift: float = _flow_shift()


# -- wan_ti2v_5b ---------------------------------------------------------------------------------


class WanTI2VTxt2Vid(_WanTxt2Vid):
    size_multiple = 32


class WanTI2VImg2Vid(_WanImg2Vid):
    size_multiple = 32


# -- wan_t2v_14b / wan_i2v_14b: cfg drives the high-noise expert, cfg_2 the low-noise one ----------


class WanA14BTxt2Vid(_WanTxt2Vid):
    img2vid_hint = "image-to-video is engine wan_i2v_14b (task img2vid)"
    show_after = {"cfg_2": "cfg"}
    size_multiple = 16
    cfg_2: float = _cfg_2()
    boundary_ratio: float = _boundary_ratio()

    @model_validator(mode="after")
    def _cfg_2_applies(self):
        return _cfg_2_needs_guidance(self)


class WanA14BImg2Vid(_WanImg2Vid):
    show_after = {"cfg_2": "cfg"}
    size_multiple = 16
    cfg_2: float = _cfg_2()
    boundary_ratio: float = _boundary_ratio()

    @model_validator(mode="after")
    def _cfg_2_applies(self):
        return _cfg_2_needs_guidance(self)


class WanA14BFlf2Vid(WanA14BImg2Vid):
    """First and last frame (WanImageToVideoPipeline's ``last_image``): ``init_image`` is the first frame,
    ``last_image`` the last; both are resized to width x height (Lanczos) when their size differs."""

    last_image: ImagePath = Field(description="The last frame.")

    @model_validator(mode="after")
    def _room_between(self):
        # the pipeline puts num_frames - 2 empty frames between the two; one frame has no last frame
        if self.num_frames < 5:
            raise PydanticCustomError("num_frames", "num_frames: {value} leaves no room for a last frame; "
                                      "flf2vid needs at least 5", {"value": self.num_frames})
        return self


TI2V_5B_TASKS = {"txt2vid": WanTI2VTxt2Vid, "img2vid": WanTI2VImg2Vid}
T2V_A14B_TASKS = {"txt2vid": WanA14BTxt2Vid}
I2V_A14B_TASKS = {"img2vid": WanA14BImg2Vid, "flf2vid": WanA14BFlf2Vid}
