"""Speed modes: few-step runs that need a distilled checkpoint or an accelerator LoRA (torch-free).

An engine that honours speed modes mixes ``SpeedModes`` into its class and ``ModeFields`` into its
params models, lists the modes in ``modes``, and ships a preset ``<task>.<mode>.yaml`` per mode.

A requested mode runs when the engine honours it and either the request brings an accelerator LoRA
(``mode_lora``, applied for that run only) or the checkpoint supports it by itself
(``checkpoint_modes``, read from its configs before anything loads). Otherwise the run goes on in
normal mode with the normal presets, a warning and ``info.mode_ignored_reason`` saying what would
enable it. Either way ``info`` records ``mode``, ``mode_requested`` and ``mode_ignored_reason``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from codex_core import BASELINE_MODE, INPUT_FILE, Job, Plan, PlanContext

# The speed modes the kit knows; an engine honours a subset (``modes``).
SPEED_MODES = (BASELINE_MODE, "lcm", "turbo", "lightning")
SpeedMode = Literal["normal", "lcm", "turbo", "lightning"]


class ModeLora(BaseModel):
    """An accelerator LoRA (LCM-LoRA, Turbo or Lightning LoRA) applied for the request's speed mode."""

    model_config = ConfigDict(strict=True, extra="forbid")

    path: Annotated[str, INPUT_FILE] = Field(description="A LoRA .safetensors file in diffusers, kohya or PEFT format.")
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


class ModeFields(BaseModel):
    """The ``mode`` and ``mode_lora`` request fields."""

    model_config = ConfigDict(strict=True, extra="forbid")  # as the core's params: a mixin must not loosen them

    show_after: ClassVar[dict[str, str]] = {"mode_lora": "mode"}

    mode: SpeedMode = Field(BASELINE_MODE, description="Speed mode (`codex presets --matrix` shows which engine and "
                                                       "task honours which).")
    mode_lora: ModeLora | None = Field(
        None, description="An accelerator LoRA for the speed mode: {\"path\": \"x.safetensors\", \"scale\": 1.0}; "
                          "needs mode lcm, turbo or lightning. Unloaded after the run.")

    @model_validator(mode="after")
    def _lora_needs_mode(self):
        if self.mode_lora is not None and self.mode == BASELINE_MODE:
            raise PydanticCustomError("mode_lora", "mode_lora: needs a speed mode (\"mode\": \"lcm\", \"turbo\" "
                                      "or \"lightning\"); leave it out for a normal run", {})
        return self


class SpeedModes:
    """Engine mixin: the speed-mode plan (``Engine.plan``) and the per-run accelerator LoRA."""

    modes: ClassVar[tuple[str, ...]]
    # What would enable a mode the checkpoint does not support (quoted in info.mode_ignored_reason).
    mode_hints: ClassVar[Mapping[str, str]] = {}

    def checkpoint_modes(self, folder: Path) -> set[str]:
        """The honoured modes a checkpoint folder supports by itself, read from its configs (no torch)."""
        return set(self.modes)

    def plan(self, task: str, request: dict[str, Any], context: PlanContext) -> Plan:
        mode = request.get("mode", BASELINE_MODE)
        if not isinstance(mode, str) or mode not in SPEED_MODES:  # the validator reports a bad value
            return Plan()
        reason = self._ignored_reason(mode, request, context)
        info = {"mode": BASELINE_MODE if reason else mode, "mode_requested": mode, "mode_ignored_reason": reason}
        if reason is None:
            return Plan(layers=() if mode == BASELINE_MODE else (mode,), info=info)
        # validated as asked, run as normal with the normal presets; the LoRA was for the mode that does not run
        return Plan(overrides={"mode": BASELINE_MODE, "mode_lora": None}, info=info, warnings=[reason])

    def _ignored_reason(self, mode: str, request: dict[str, Any], context: PlanContext) -> str | None:
        if mode == BASELINE_MODE:
            return None
        if mode not in self.modes:
            return (f"mode {mode!r} is not supported by engine {self.key}: {self.unsupported_reason(mode)} "
                    f"(it honours: {', '.join(self.all_modes)}); ran in normal mode with the normal presets")
        if request.get("mode_lora") is not None:
            return None
        source = context.source()
        if mode in self.checkpoint_modes(source.path):
            return None
        hint = self.mode_hints.get(mode)
        return (f"mode {mode!r} is not supported by the checkpoint {source.label}; ran in normal mode with the "
                f"normal presets" + (f". To enable it: {hint}" if hint else ""))

    def run_loras(self, job: Job) -> list:
        """The request's LoRAs, then the accelerator LoRA of the speed mode (``mode_lora``) when the mode runs."""
        loras = super().run_loras(job)
        lora = getattr(job.params, "mode_lora", None)
        if lora is None or job.params.mode == BASELINE_MODE:
            return loras
        from .lora import RunLora

        job.notes["mode_lora"] = {"path": lora.path, "scale": lora.scale, "mode": job.params.mode,
                                  "unloaded_after_run": False}
        return [*loras, RunLora("mode_lora", Path(lora.path).expanduser(), lora.scale)]
