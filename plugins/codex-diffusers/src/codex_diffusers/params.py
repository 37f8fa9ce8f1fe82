"""Request fields that several diffusers engines share, beyond the core's canonical ones (torch-free).

- ``TrueCfgFields``: true classifier-free guidance for guidance-distilled models (their ``cfg`` is an
  embedded guidance scale): ``true_cfg`` above 1 runs a second, negative-prompt pass per step; a
  negative prompt without it would be silently ignored by diffusers, so it is an error.
- ``flow_shift_field``: the flow-matching shift of the sampler's sigma schedule (the flow samplers
  read it, see the core's sampler table).
- ``NoInitImage``: text-to-video tasks refuse an ``init_image`` with a pointer to image-to-video.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError


class TrueCfgFields(BaseModel):

    model_config = ConfigDict(strict=True, extra="forbid")  # as the core's params: a mixin must not loosen them
    true_cfg_example: ClassVar[float] = 4.0
    show_after: ClassVar[dict[str, str]] = {"true_cfg": "cfg"}

    true_cfg: float = Field(1.0, ge=1.0, le=50.0, description="True classifier-free guidance against negative_prompt "
                                                              "(diffusers' true_cfg_scale): 1.0 = off; above 1 each "
                                                              "step also runs the model on negative_prompt (empty = "
                                                              "unconditional), twice the cost.")

    @model_validator(mode="after")
    def _negative_prompt_needs_true_cfg(self):
        if getattr(self, "negative_prompt", "") and self.true_cfg <= 1.0:
            raise PydanticCustomError(
                "true_cfg", "negative_prompt: it would be ignored: only true classifier-free guidance uses it and "
                "true_cfg is {true_cfg}; set true_cfg above 1 (e.g. {example}, twice the compute per step) or leave "
                "negative_prompt out", {"true_cfg": self.true_cfg, "example": self.true_cfg_example})
        return self


FLOW_SHIFT_MIN = 0.1  # below it the shifted sigmas collapse towards 0: NaN frames, or an empty schedule that fails


def flow_shift_field(description: str):
    """A ``flow_shift`` field (0.1 to 100): the shift of the flow-matching sigma schedule, as the flow samplers
    apply it. The models' own values are 1 to 17; far below, the schedule collapses (found by
    tests/test_property_requests.py: NaN output at 1e-8, an IndexError after loading near 0)."""
    return Field(ge=FLOW_SHIFT_MIN, le=100.0,
                 description=f"Flow-matching shift of the sampler's sigma schedule ({description}).")


class NoInitImage(BaseModel):
    """For text-to-video: an ``init_image`` would be ignored, so it is an error that says where it belongs."""

    model_config = ConfigDict(strict=True, extra="forbid")
    img2vid_hint: ClassVar[str] = "use task img2vid for image-to-video"

    @model_validator(mode="before")
    @classmethod
    def _no_init_image(cls, data: Any) -> Any:
        if isinstance(data, dict) and "init_image" in data:
            raise PydanticCustomError("init_image", "init_image: txt2vid takes no init image; {hint}",
                                      {"hint": cls.img2vid_hint})
        return data
