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

from pydantic import Field

from codex_core import Img2VidParams, Txt2VidParams
from codex_diffusers import CacheFields, LoraFields, NoInitImage, TrueCfgFields, flow_shift_field


def _cfg():
    return Field(ge=0.0, le=50.0, description="Embedded guidance scale (diffusers guidance_scale; HunyuanVideo is "
                                              "guidance-distilled). Checkpoints without a guidance embedding "
                                              "(HunyuanVideo-I2V-33ch) ignore it, which info.json notes.")


def _flow_shift():
    return flow_shift_field("7.0 for HunyuanVideo; 2-5 suit low resolutions, 7-12 high ones")


class _HunyuanFields(TrueCfgFields, LoraFields, CacheFields):
    true_cfg_example = 6.0


class HunyuanTxt2Vid(NoInitImage, _HunyuanFields, Txt2VidParams):
    size_multiple = 16
    frame_multiple = 4
    cfg: float = _cfg()
    flow_shift: float = _flow_shift()


class HunyuanImg2Vid(_HunyuanFields, Img2VidParams):
    """The init image conditions the video; it is resized to width x height (Lanczos) if it differs."""

    size_multiple = 16
    frame_multiple = 4
    cfg: float = _cfg()
    flow_shift: float = _flow_shift()


TASKS = {"txt2vid": HunyuanTxt2Vid, "img2vid": HunyuanImg2Vid}
