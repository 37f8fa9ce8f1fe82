"""Request models for sd15 and sdxl. Only pydantic here: `codex schema` must not import torch."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from codex_core.params import Img2ImgParams, InpaintParams, Txt2ImgParams, UpscaleParams

# SD and SDXL VAEs downsample by 8: pixel sizes must be multiples of 8.


class ModeLora(BaseModel):
    """An accelerator LoRA (LCM-LoRA, Turbo or Lightning LoRA) applied for the request's speed mode."""

    model_config = ConfigDict(strict=True, extra="forbid")

    path: str = Field(description="A LoRA .safetensors file in diffusers, kohya or PEFT format.")
    scale: float = Field(1.0, ge=0.0, le=4.0, description="LoRA strength (1.0 as trained; 0 turns it off).")

    @field_validator("path")
    @classmethod
    def _safetensors_file(cls, value: str) -> str:
        if not value.endswith(".safetensors"):
            raise PydanticCustomError("lora_path", "'{path}' is not a .safetensors file (pickle-based LoRAs "
                                      "are not loaded)", {"path": value})
        if not Path(value).expanduser().is_file():
            raise PydanticCustomError("lora_path", "no such file: '{path}'", {"path": value})
        if importlib.util.find_spec("peft") is None:  # diffusers loads LoRAs through PEFT
            raise PydanticCustomError("lora_path", "loading a LoRA needs the python package peft "
                                      "(pip install peft)", {})
        return value


class _ModeLoraField(BaseModel):
    mode_lora: ModeLora | None = Field(
        None, description="An accelerator LoRA for the speed mode: {\"path\": \"x.safetensors\", \"scale\": 1.0}; "
                          "needs mode lcm, turbo or lightning. Unloaded after the run.")

    @model_validator(mode="after")
    def _lora_needs_mode(self):
        if self.mode_lora is not None and getattr(self, "mode", "normal") == "normal":
            raise PydanticCustomError("mode_lora", "mode_lora: needs a speed mode (\"mode\": \"lcm\", \"turbo\" "
                                      "or \"lightning\"); leave it out for a normal run", {})
        return self


class SDTxt2Img(Txt2ImgParams, _ModeLoraField):
    size_multiple = 8


class SDImg2Img(Img2ImgParams, _ModeLoraField):
    size_multiple = 8


class SDInpaint(InpaintParams, _ModeLoraField):
    size_multiple = 8


class SDUpscale(UpscaleParams, _ModeLoraField):
    size_multiple = 8


TASKS = {"txt2img": SDTxt2Img, "img2img": SDImg2Img, "inpaint": SDInpaint, "upscale": SDUpscale}
