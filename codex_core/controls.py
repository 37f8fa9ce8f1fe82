"""The ``controls`` request field: control images for ControlNets, several stacking, checked before anything loads.

An engine whose pipelines take ControlNets adds ``ControlFields`` to its params (as it adds a LoRA field); what
each item means to a pipeline (which ControlNet class, how a union model's ``type`` maps to its mode) is the
engine's. Here: the ranges, start <= end, a known preprocessor with valid parameters and its weights in place,
and a control image that opens, every error naming its ``controls.N.<field>``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from .errors import UsageError
from .params import ImagePath

# A1111's sd-webui-controlnet offers up to 10 units ("Multi-ControlNet: ControlNet unit number", at most 10)
MAX_CONTROLS = 10


def _error(loc: tuple, message: str, value: Any) -> ValidationError:
    """A validation error at ``loc`` under the item (pydantic prefixes it with ``controls.N``)."""
    return ValidationError.from_exception_data("ControlSpec", [InitErrorDetails(
        type=PydanticCustomError("control", message), loc=loc, input=value)])


class ControlSpec(BaseModel):
    """One control: a ControlNet, its image and how strongly and when it steers the denoising."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)

    model: str = Field(min_length=1, description="The ControlNet: a name from the controlnet models folders "
                                                 "(`codex models --kind controlnet`), a file or a diffusers folder.")
    image: ImagePath = Field(description="The control image (preprocessed already, unless preprocess is set).")
    type: str | None = Field(None, description="The mode of a union ControlNet (e.g. canny, depth, pose); "
                                               "empty for a single-mode ControlNet.")
    scale: float = Field(1.0, ge=0.0, le=2.0, description="How strongly the control steers (conditioning scale).")
    start: float = Field(0.0, ge=0.0, le=1.0, description="Fraction of the steps at which the control starts.")
    end: float = Field(1.0, ge=0.0, le=1.0, description="Fraction of the steps at which the control stops.")
    resize: bool = Field(False, description="Resize the control image to the output size (recorded); false: it "
                                            "must have the output's size already.")
    preprocess: str | None = Field(None, description="A preprocessor run on the image first (`codex preprocess "
                                                     "--list`); empty: the image is used as given.")
    preprocess_params: dict[str, Any] = Field(default_factory=dict, description="The preprocessor's parameters, "
                                                                                "e.g. {\"low_threshold\": 50}.")

    @field_validator("preprocess")
    @classmethod
    def _known_preprocessor(cls, value: str | None) -> str | None:
        """An unknown name, or an annotator whose weights are missing, is refused here, before anything loads."""
        if value is not None:
            from .preprocessors import get, weight_files

            try:
                weight_files(get(value, "preprocess"), "preprocess")
            except UsageError as exc:
                message = exc.message.removeprefix("preprocess: ") + (f" ({exc.hint})" if exc.hint else "")
                raise PydanticCustomError("preprocess", "{message}", {"message": message}) from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "ControlSpec":
        if self.start > self.end:
            raise _error(("start",), f"{self.start:g} is after end ({self.end:g}); start must be <= end", self.start)
        if self.preprocess is None:
            if self.preprocess_params:
                raise _error(("preprocess_params",), "given without preprocess; set preprocess or leave it out",
                             self.preprocess_params)
            return self
        self._preprocessor_params()
        return self

    def _preprocessor_params(self):
        from .preprocessors import get

        preprocessor = get(self.preprocess)
        try:
            return preprocessor.parameters.model_validate(self.preprocess_params)
        except ValidationError as exc:
            details = []
            for error in exc.errors(include_url=False):
                message = error["msg"]
                if error["type"] == "extra_forbidden":
                    allowed = ", ".join(preprocessor.parameters.model_fields) or "none"
                    message = f"{preprocessor.name} has no such parameter; its parameters: {allowed}"
                details.append(InitErrorDetails(type=PydanticCustomError("preprocess_params", message.replace(
                    "{", "(").replace("}", ")")), loc=("preprocess_params", *error["loc"]), input=error["input"]))
            raise ValidationError.from_exception_data("ControlSpec", details) from None

    def preprocess_settings(self) -> dict[str, Any]:
        """The preprocessor's parameters with its defaults filled in (what provenance records); {} without one."""
        return {} if self.preprocess is None else self._preprocessor_params().model_dump()


class ControlFields(BaseModel):
    """The ``controls`` request field: control images for ControlNets; several stack (multi-ControlNet)."""

    model_config = ConfigDict(strict=True, extra="forbid")

    controls: list[ControlSpec] = Field(default_factory=list, max_length=MAX_CONTROLS, description=(
        "ControlNets for this run: [{\"model\": \"name\", \"image\": \"pose.png\", \"scale\": 0.8}], or with "
        "\"preprocess\": \"canny\" to make the control image from a photo; several stack."),
        # tells a form (codex-ui) to offer its control panel for the field
        json_schema_extra={"x-codex-input": "controls"})
