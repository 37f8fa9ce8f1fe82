"""Request model for svd img2vid. Only pydantic here: `codex schema` must not import torch.

SVD is conditioned on the init image alone (CLIP image embedding + VAE latents): it takes no prompt,
negative prompt or single cfg. Guidance ramps linearly over the frames from ``min_cfg`` (first frame)
to ``max_cfg`` (last frame), as diffusers' StableVideoDiffusionPipeline and Stability's sampler do.

Shape rules, checked before anything loads:
- ``width``/``height``: multiples of 8 (the VAE's stride; the pipeline raises on anything else).
- ``num_frames``: any count; SVD's VAE does not compress time, so there is no k*stride+1 rule.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from codex_core import ImageOnlyImg2VidParams

# Fields of text-conditioned engines that SVD has no use for: say what to use instead.
NOT_FOR_SVD = {
    "prompt": "SVD is conditioned on init_image alone and takes no text prompt",
    "negative_prompt": "SVD takes no (negative) text prompt; its unconditional branch zeroes the image conditioning",
    "cfg": "SVD's guidance ramps over the frames: set min_cfg (first frame) and max_cfg (last frame)",
}


class SVDImg2Vid(ImageOnlyImg2VidParams):
    """The init image is resized to width x height (Lanczos) when its size differs; info.json says so."""

    size_multiple = 8
    frame_multiple = 1

    num_frames: int = Field(ge=1, le=1024, description="Frames in the video (the checkpoint was trained on 14 "
                                                       "(SVD) or 25 (SVD-XT)).")
    fps: float = Field(ge=1.0, le=240.0, description="Frames per second: the exported video's rate and the model's "
                                                     "fps conditioning (diffusers passes fps - 1, as SVD was trained; "
                                                     "Stability's sampler warns outside 6-31).")
    min_cfg: float = Field(ge=0.0, le=50.0, description="Guidance of the first frame; it ramps linearly to max_cfg.")
    max_cfg: float = Field(ge=0.0, le=50.0, description="Guidance of the last frame; at or below 1 guidance is off.")
    motion_bucket_id: int = Field(ge=0, le=1023, description="How much motion to condition on (higher: more; "
                                                             "Stability's sampler warns above 255).")
    noise_aug_strength: float = Field(ge=0.0, le=1.0, description="Noise added to the init image before encoding; "
                                                                  "more gives more motion and less likeness.")
    decode_chunk_size: int = Field(ge=1, le=1024, description="Frames the temporal VAE decodes at once: more is "
                                                              "smoother and uses more memory; >= num_frames decodes "
                                                              "all at once.")

    @model_validator(mode="before")
    @classmethod
    def _no_text_fields(cls, data: Any) -> Any:
        # extra="forbid" would reject these too, but only as "unknown field": say what SVD takes instead,
        # one error per field.
        given = [name for name in NOT_FOR_SVD if isinstance(data, dict) and name in data]
        if given:
            raise ValidationError.from_exception_data(cls.__name__, [
                InitErrorDetails(type=PydanticCustomError("not_for_svd", NOT_FOR_SVD[name]), loc=(name,),
                                 input=data[name]) for name in given])
        return data

    @model_validator(mode="after")
    def _guidance_ramp_applies(self):
        if self.min_cfg > self.max_cfg:
            raise PydanticCustomError(
                "cfg_ramp", "min_cfg: {min_cfg} is above max_cfg {max_cfg}; guidance ramps from min_cfg (first "
                "frame) up to max_cfg (last frame)", {"min_cfg": self.min_cfg, "max_cfg": self.max_cfg})
        # One frame's ramp is min_cfg alone, but diffusers prepares the image conditioning for guidance
        # from max_cfg and then decides from the ramp: min_cfg <= 1 < max_cfg fails after loading
        # (found by tests/test_property_requests.py).
        if self.num_frames == 1 and self.min_cfg != self.max_cfg:
            raise PydanticCustomError(
                "cfg_ramp", "num_frames: a single frame takes one guidance value, but min_cfg {min_cfg} and max_cfg "
                "{max_cfg} differ; set them equal (or ask for more frames)",
                {"min_cfg": self.min_cfg, "max_cfg": self.max_cfg})
        # diffusers turns guidance on or off for the whole video from max_cfg alone: a ramp that ends
        # at or below 1 would run without guidance, silently ignoring min_cfg.
        if self.max_cfg <= 1.0 and self.min_cfg != self.max_cfg:
            raise PydanticCustomError(
                "cfg_ramp", "min_cfg: {min_cfg} would be ignored: with max_cfg {max_cfg} <= 1 guidance is off for "
                "every frame; set max_cfg above 1, or min_cfg equal to max_cfg",
                {"min_cfg": self.min_cfg, "max_cfg": self.max_cfg})
        return self


TASKS = {"img2vid": SVDImg2Vid}
