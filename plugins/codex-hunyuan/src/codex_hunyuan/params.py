"""Request models for hunyuan_video. Only pydantic here: `codex schema` must not import torch.

Shape rules (checked before anything loads; diffusers raises on sizes and rounds frames silently):
- ``width``/``height``: multiples of 16 (the VAE's spatial stride 8 x the transformer's patch 2).
- ``num_frames`` = 4k+1: the causal VAE compresses time by 4 (the first frame stands alone).

Guidance: HunyuanVideo is guidance-distilled, so ``cfg`` is the *embedded* guidance scale (diffusers'
``guidance_scale``, fed to the transformer; one pass per step). ``true_cfg`` is diffusers'
``true_cfg_scale``: above 1 it adds a second, negative-prompt pass per step (real classifier-free
guidance, twice the cost). A negative prompt does nothing without it, so one is rejected unless
``true_cfg`` > 1.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from codex_core.params import Img2VidParams, Txt2VidParams


def _cfg():
    return Field(ge=0.0, le=50.0, description="Embedded guidance scale (diffusers guidance_scale; HunyuanVideo is "
                                              "guidance-distilled). Checkpoints without a guidance embedding "
                                              "(HunyuanVideo-I2V-33ch) ignore it, which info.json notes.")


def _true_cfg():
    return Field(1.0, ge=1.0, le=50.0, description="True classifier-free guidance (diffusers true_cfg_scale): above 1 "
                                                   "each step also runs the transformer on negative_prompt (empty = "
                                                   "unconditional), doubling the cost; 1 = off.")


def _flow_shift():
    return Field(gt=0.0, le=100.0, description="Flow-matching shift of the sigma schedule (7.0 for HunyuanVideo; "
                                               "2-5 suit low resolutions, 7-12 high ones).")


def _check_negative_prompt(model):
    if model.negative_prompt and model.true_cfg <= 1.0:
        raise PydanticCustomError(
            "true_cfg", "negative_prompt: it would be ignored: only true classifier-free guidance uses it and "
            "true_cfg is {true_cfg}; set true_cfg above 1 (e.g. 6.0, twice the compute) or leave negative_prompt out",
            {"true_cfg": model.true_cfg})
    return model


class HunyuanTxt2Vid(Txt2VidParams):
    size_multiple = 16
    frame_multiple = 4
    cfg: float = _cfg()
    true_cfg: float = _true_cfg()
    flow_shift: float = _flow_shift()

    @model_validator(mode="before")
    @classmethod
    def _no_init_image(cls, data: Any) -> Any:
        # an init image would be ignored: an error that points at image-to-video instead
        if isinstance(data, dict) and "init_image" in data:
            raise PydanticCustomError("init_image", "init_image: txt2vid takes no init image; use task img2vid")
        return data

    @model_validator(mode="after")
    def _negative_prompt_needs_true_cfg(self):
        return _check_negative_prompt(self)


class HunyuanImg2Vid(Img2VidParams):
    """The init image conditions the video; it is resized to width x height (Lanczos) if it differs."""

    size_multiple = 16
    frame_multiple = 4
    cfg: float = _cfg()
    true_cfg: float = _true_cfg()
    flow_shift: float = _flow_shift()

    @model_validator(mode="after")
    def _negative_prompt_needs_true_cfg(self):
        return _check_negative_prompt(self)


TASKS = {"txt2vid": HunyuanTxt2Vid, "img2vid": HunyuanImg2Vid}
