"""Speed modes: few-step runs that need a distilled checkpoint or an accelerator LoRA (torch-free).

The modes are the engine's own vocabulary (e.g. SDXL's lcm, turbo and lightning; another engine's
hyper): an engine that honours speed modes mixes ``SpeedModes`` into its class and lists them in
``modes`` (and the modes it knows but does not honour in ``mode_unsupported``, with the reason),
mixes ``mode_fields(*modes)`` into its params models (``mode`` is then an enum of normal and those
modes, shown by `codex schema`; ``SpeedModes.problems`` checks the two lists agree), and ships a
preset ``<task>.<mode>.yaml`` per honoured mode.

A requested mode runs when the engine honours it and either the request brings an accelerator LoRA
(``mode_lora``, applied for that run only) or the checkpoint supports it by itself
(``checkpoint_modes``, read from its configs before anything loads). Otherwise the run goes on in
normal mode with the normal presets, a warning and ``info.mode_ignored_reason`` saying what would
enable it. Either way ``info`` records ``mode``, ``mode_requested`` and ``mode_ignored_reason``.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Mapping, get_args

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator
from pydantic_core import PydanticCustomError

from codex_core import BASELINE_MODE, INPUT_FILE, Job, Plan, PlanContext

from .params import request_path


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
        if not request_path(value).is_file():
            raise PydanticCustomError("lora_path", "no such file: '{path}'", {"path": value})
        if importlib.util.find_spec("peft") is None:  # diffusers loads LoRAs through PEFT
            raise PydanticCustomError("lora_path", "loading a LoRA needs the python package peft "
                                      "(pip install peft)", {})
        return value


MODE_DESCRIPTION = "Speed mode (`codex presets --matrix` shows which engine and task honours which)."


class _ModeFields(BaseModel):
    """The ``mode`` and ``mode_lora`` request fields: the base of ``mode_fields(*modes)``, which makes ``mode`` an
    enum of the engine's modes."""

    model_config = ConfigDict(strict=True, extra="forbid")  # as the core's params: a mixin must not loosen them

    show_after: ClassVar[dict[str, str]] = {"mode_lora": "mode"}

    mode: str = Field(BASELINE_MODE, description=MODE_DESCRIPTION)
    mode_lora: ModeLora | None = Field(None, description="An accelerator LoRA for the speed mode: {\"path\": "
                                                         "\"x.safetensors\", \"scale\": 1.0}. Unloaded after the run.")

    @model_validator(mode="after")
    def _lora_needs_mode(self):
        if self.mode_lora is not None and self.mode == BASELINE_MODE:
            modes = _one_of([f'"{mode}"' for mode in speed_modes(type(self))])
            raise PydanticCustomError("mode_lora", "mode_lora: needs a speed mode (\"mode\": {modes}); leave it out "
                                      "for a normal run", {"modes": modes})
        return self


@functools.cache
def mode_fields(*modes: str) -> type[BaseModel]:
    """The params mixin with the ``mode`` and ``mode_lora`` fields, ``mode`` one of normal and ``modes``: every
    mode the engine honours or declares unsupported (``SpeedModes.problems`` checks). The same modes give the
    same class."""
    names = tuple(dict.fromkeys((BASELINE_MODE, *modes)))
    listed = _one_of(names[1:])
    return create_model(
        "ModeFields", __base__=_ModeFields, __module__=__name__,
        mode=(Literal[names], Field(BASELINE_MODE, description=MODE_DESCRIPTION)),
        mode_lora=(ModeLora | None, Field(None, description="An accelerator LoRA for the speed mode: {\"path\": "
                                                            "\"x.safetensors\", \"scale\": 1.0}; needs mode "
                                                            f"{listed}. Unloaded after the run.")))


def _one_of(words) -> str:
    """"a", "a or b", "a, b or c"."""
    return " or ".join(", ".join(words).rsplit(", ", 1))


def speed_modes(model: type[BaseModel]) -> tuple[str, ...]:
    """The speed modes a params model's ``mode`` field allows besides normal (its enum; none if not an enum)."""
    field = model.model_fields.get("mode")
    return tuple(mode for mode in get_args(field.annotation) if mode != BASELINE_MODE) if field else ()


class SpeedModes:
    """Engine mixin: the speed-mode plan (``Engine.plan``) and the per-run accelerator LoRA."""

    modes: ClassVar[tuple[str, ...]]
    # What would enable a mode the checkpoint does not support (quoted in info.mode_ignored_reason).
    mode_hints: ClassVar[Mapping[str, str]] = {}

    @property
    def known_modes(self) -> tuple[str, ...]:
        """Normal, the modes the engine honours, then those it declares unsupported: its ``mode`` field's values."""
        return tuple(dict.fromkeys((BASELINE_MODE, *self.modes, *self.mode_unsupported)))

    def problems(self) -> list[str]:
        found = list(super().problems())
        known = self.known_modes[1:]  # normal is every engine's
        for task, model in dict(self.tasks).items():
            if not (isinstance(model, type) and issubclass(model, BaseModel)):
                continue  # the engine's own check says so
            allowed = speed_modes(model)
            if set(allowed) != set(known):
                found.append(f"task {task!r}: its mode field allows {', '.join(allowed) or 'no speed mode'} besides "
                             f"normal, the engine knows {', '.join(known) or 'none'} (modes and mode_unsupported): "
                             f"mix mode_fields({', '.join(map(repr, known))}) into its params")
        return found

    def checkpoint_modes(self, folder: Path) -> set[str]:
        """The honoured modes a checkpoint folder supports by itself, read from its configs (no torch)."""
        return set(self.modes)

    def plan(self, task: str, request: dict[str, Any], context: PlanContext) -> Plan:
        mode = request.get("mode", BASELINE_MODE)
        if not isinstance(mode, str) or mode not in self.known_modes:  # the validator reports a bad value
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
