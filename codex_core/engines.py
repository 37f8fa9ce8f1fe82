"""What an engine declares, as data. The code that loads and runs models is imported only on use."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .params import MODES, TASKS, VIDEO_TASKS, ParamsBase

if TYPE_CHECKING:
    from .engine_api import Engine


@dataclass(frozen=True)
class EngineSpec:
    """One engine key.

    ``engine`` is a ``"module:Class"`` path to an :class:`codex_core.engine_api.Engine`; it is
    imported only when a run needs it, so listing engines never imports torch.
    """

    key: str
    family: str
    tasks: Mapping[str, type[ParamsBase]]
    engine: str
    sampler_family: str | None = "discrete"  # "discrete", "flow" or None (no sampler fields)
    modes: tuple[str, ...] = ("normal",)  # modes this engine honours; others run as normal, with a reason
    # Why a mode the engine does not honour is unsupported (shown by `codex presets --matrix`); a
    # mode missing here gets a generic reason.
    mode_unsupported: Mapping[str, str] = field(default_factory=dict)
    # Which honoured modes a checkpoint folder supports by itself, read from its configs (no torch):
    # ``detect_modes(model_folder) -> set of modes``. None: every honoured mode is assumed supported.
    detect_modes: Callable[[Path], set[str]] | None = None
    # What would enable a mode the checkpoint does not support (e.g. "pass mode_lora with ..."): the
    # text goes into info.mode_ignored_reason.
    mode_hints: Mapping[str, str] = field(default_factory=dict)
    default_repo: str | None = None
    model_marker: str | None = "model_index.json"  # the file that marks a loadable model folder
    tiny_version: str | None = None  # set when the engine can build a tiny random-weight model
    # Checkpoint variants whose presets differ (e.g. flux "dev"/"schnell"): presets live in
    # presets/<engine>/<variant>/. ``detect_variant(model_folder)`` reads configs only (no torch).
    variants: tuple[str, ...] = ()
    detect_variant: Callable[[Path], str] | None = None
    tiny_variant: str | None = None
    # Optional allow-lists within the sampler family, for checkpoints only some samplers suit
    # (e.g. SVD's continuous-time Euler); None allows every name of the family.
    samplers: tuple[str, ...] | None = None
    schedule_types: tuple[str, ...] | None = None
    # Checks that depend on the checkpoint variant (e.g. flux schnell ignores cfg): called after
    # validation with (task, params, variant); returns problems as "field: message" lines.
    check_request: Callable[[str, Any, str | None], list[str]] | None = None
    # Tasks that need their own checkpoint (e.g. an image-to-video model): task -> default repo id.
    task_default_repos: Mapping[str, str] = field(default_factory=dict)
    gpu_dtype: str = "float16"
    presets_dir: Path | None = None
    description: str = ""
    # Filled in by the registry from the plugin that registered the spec.
    plugin: str | None = None
    distribution: str | None = None
    version: str | None = None
    _engine_cache: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        unknown = set(self.tasks) - set(TASKS)
        if unknown:
            raise ValueError(f"engine {self.key!r}: unknown tasks {sorted(unknown)}; tasks are {', '.join(TASKS)}")
        bad_modes = (set(self.modes) | set(self.mode_unsupported) | set(self.mode_hints)) - set(MODES)
        if bad_modes:
            raise ValueError(f"engine {self.key!r}: unknown modes {sorted(bad_modes)}; modes are {', '.join(MODES)}")

    def unsupported_reason(self, mode: str) -> str | None:
        """None for a mode this engine honours; otherwise why it does not."""
        if mode in self.modes:
            return None
        return self.mode_unsupported.get(mode) or f"engine {self.key} does not implement mode {mode!r}"

    def params_model(self, task: str) -> type[ParamsBase]:
        return self.tasks[task]

    def output_kind(self, task: str) -> str:
        return "video" if task in VIDEO_TASKS else "image"

    def load_engine(self) -> "Engine":
        """Import and instantiate the engine class once per process."""
        if "instance" not in self._engine_cache:
            module_name, _, class_name = self.engine.partition(":")
            cls = getattr(importlib.import_module(module_name), class_name)
            self._engine_cache["instance"] = cls(self)
        return self._engine_cache["instance"]

    def describe(self) -> dict[str, Any]:
        return {
            "engine": self.key,
            "family": self.family,
            "tasks": list(self.tasks),
            "modes": list(self.modes),
            "sampler_family": self.sampler_family,
            "default_repo": self.default_repo,
            "tiny_model": self.tiny_version is not None,
            "variants": list(self.variants),
            "task_default_repos": dict(self.task_default_repos),
            "plugin": self.plugin,
            "distribution": self.distribution,
            "version": self.version,
            "description": self.description,
        }
