"""Request fields that several diffusers engines share, beyond the core's canonical ones (torch-free).

- ``TrueCfgFields``: true classifier-free guidance for guidance-distilled models (their ``cfg`` is an
  embedded guidance scale): ``true_cfg`` above 1 runs a second, negative-prompt pass per step; a
  negative prompt without it would be silently ignored by diffusers, so it is an error.
- ``flow_shift_field``: the flow-matching shift of the sampler's sigma schedule (the flow samplers
  read it, see the core's sampler table).
- ``NoInitImage``: text-to-video tasks refuse an ``init_image`` with a pointer to image-to-video.
- ``ReferenceImageFields``: image prompts through IP-Adapters (the runtime part: ``ip_adapters``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from codex_core import (INPUT_FILE, ImagePath, UsageError, find_model_file, lookup_model_file, model_folders,
                        read_safetensors_header, user_path)


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


MAX_LORAS = 8
LORA_SCALE = (-4.0, 4.0)  # A1111 users go past 1 and below 0; beyond this range a LoRA only breaks the image


class LoraRef(BaseModel):
    """One LoRA for a run: a ``name`` from the models folders' loras (`codex models --kind loras`) or a ``path``."""

    model_config = ConfigDict(strict=True, extra="forbid")

    name: str | None = Field(None, description="A LoRA in the loras folders, as `codex models --kind loras` names it.")
    path: Annotated[str | None, INPUT_FILE] = Field(None, description="A LoRA .safetensors file (kohya/A1111, "
                                                                      "diffusers/PEFT, or a community layout).")
    scale: float = Field(1.0, ge=LORA_SCALE[0], le=LORA_SCALE[1], description="Strength (1.0 as trained, 0 = off).")
    into: str | None = Field(None, description="Where a model has several denoisers, the one to load it into "
                                               "(Wan 2.2 A14B: transformer, the high-noise expert and the default, "
                                               "or transformer_2, the low-noise expert).")

    @model_validator(mode="after")
    def _one_file(self):
        if (self.name is None) == (self.path is None):
            raise PydanticCustomError("lora", "give exactly one of name (from the loras folders) or path", {})
        if self.path is not None:
            path = request_path(self.path, "path")
            if path.suffix.lower() != ".safetensors":
                raise PydanticCustomError("lora", "path: '{path}' is not a .safetensors file (pickle-based LoRAs are "
                                          "not loaded)", {"path": self.path})
            if not path.is_file():
                raise PydanticCustomError("lora", "path: no such file: '{path}'", {"path": self.path})
        try:
            path = self.file()
            if path.suffix.lower() == ".safetensors":
                read_safetensors_header(path, "path" if self.path is not None else "name")  # refused now, not loaded
        except UsageError as exc:
            message = exc.message + (f" ({exc.hint})" if exc.hint else "")
            raise PydanticCustomError("lora", "{message}", {"message": message}) from None
        return self

    def file(self) -> Path:
        """The LoRA file (a name resolved in the loras folders)."""
        if self.path is not None:
            return Path(self.path).expanduser()
        return find_model_file("loras", self.name, "name").path

    def label(self) -> str:
        return self.name if self.name is not None else Path(self.path).stem


class LoraFields(BaseModel):
    """The ``loras`` request field: LoRAs applied for one run and unloaded after it (several stack)."""

    model_config = ConfigDict(strict=True, extra="forbid")

    loras: list[LoraRef] = Field(default_factory=list, max_length=MAX_LORAS,
                                 description="LoRAs for this run: [{\"name\": \"x\", \"scale\": 0.8}] or "
                                             "[{\"path\": \"x.safetensors\"}]; unloaded after the run.")


class VaeFields(BaseModel):
    """The ``vae`` request field: another VAE for this run (A1111's "SD VAE")."""

    model_config = ConfigDict(strict=True, extra="forbid")

    vae: str | None = Field(None, description="A VAE for this run: a name from the vae folders (`codex models "
                                              "--kind vae`), a .safetensors file (A1111 or diffusers layout) or a "
                                              "diffusers VAE folder; empty: the checkpoint's own.")

    @field_validator("vae")
    @classmethod
    def _vae_exists(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                vae_path(value)
            except UsageError as exc:
                raise PydanticCustomError("vae", "{message}", {"message": exc.message + (
                    f" ({exc.hint})" if exc.hint else "")}) from None
        return value


def request_path(value: str, field: str = "") -> Path:
    """A request field's path, ``~`` expanded; one no file system holds (too long, ``~nosuchuser``) is the field's
    error (a PydanticCustomError, for a validator to raise)."""
    try:
        return user_path(value, field)
    except UsageError as exc:
        raise PydanticCustomError("path", "{message}", {"message": exc.message}) from None


def vae_path(value: str) -> Path:
    """A ``vae`` value as a file or folder: a path, else a name in the vae folders."""
    path = user_path(value)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UsageError(f"'{value}' is a folder without config.json (not a diffusers VAE folder)")
        return path
    if os.path.isfile(path):
        if path.suffix.lower() != ".safetensors":
            raise UsageError(f"'{value}' is not a .safetensors file (pickle-based VAEs are not loaded)")
        read_safetensors_header(path, "vae")  # a damaged header is refused now, not when it loads
        return path
    found = lookup_model_file("vae", value, "vae")
    if found is None:
        raise UsageError(f"no such file or folder '{value}', and no VAE of that name in "
                         f"{', '.join(str(f) for f in model_folders('vae'))}", hint="`codex models --kind vae`")
    if found.path.suffix.lower() == ".safetensors":
        read_safetensors_header(found.path, "vae")
    return found.path


# a few image prompts: each is one more IP-Adapter in the UNet's cross-attention (diffusers stacks them)
MAX_REFERENCE_IMAGES = 4


class ReferenceImage(BaseModel):
    """One image prompt: an image, the IP-Adapter that feeds it to the denoiser, and how strongly.

    Which files fit the engine (the adapter's header, the image encoder) is checked against the engine before
    loading (``ip_adapters.reference_problems``), each problem naming ``reference_images.N.<field>``."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)

    image: ImagePath = Field(description="The image prompt (any size: the image encoder's processor resizes it).")
    model: str = Field(min_length=1, description="The IP-Adapter: a name from the ipadapter models folders "
                                                 "(`codex models --kind ipadapter`) or a .safetensors file, e.g. "
                                                 "h94/IP-Adapter's ip-adapter_sd15.safetensors.")
    # diffusers' IP-Adapter processors start at 1.0, as A1111's ControlNet unit weight does
    scale: float = Field(1.0, ge=0.0, le=2.0, description="How strongly the image steers (the adapter's scale; "
                                                          "0 = off).")
    encoder: str | None = Field(None, description="The image encoder: a CLIPVisionModelWithProjection folder in the "
                                                  "clip_vision models folders (its name) or a path; empty: the one "
                                                  "there whose width the adapter takes.")


class ReferenceImageFields(BaseModel):
    """The ``reference_images`` request field: image prompts through IP-Adapters, loaded for one run."""

    model_config = ConfigDict(strict=True, extra="forbid")

    reference_images: list[ReferenceImage] = Field(
        default_factory=list, max_length=MAX_REFERENCE_IMAGES, description=(
            "Image prompts (IP-Adapter): [{\"image\": \"style.png\", \"model\": \"ip-adapter_sd15\", \"scale\": 0.6}]; "
            "several stack, one adapter each."))
