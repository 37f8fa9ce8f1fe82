"""YAML presets at ``presets/<engine>/[<variant>/]<task>[@<profile>][.<layer>].yaml``. Fill-only.

A field in the request always wins; ``PresetFill.patch`` lists exactly what the presets filled.
Files are read most specific first: the profile the user picked (``--preset NAME``), then the
layers the engine's plan names (speed modes use ``<task>.<mode>.yaml``), then ``<task>.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .errors import CodexError, UsageError

if TYPE_CHECKING:
    from .engine import Engine


@dataclass
class PresetFill:
    request: dict[str, Any]
    patch: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    profile: str | None = None


def _folder(engine: "Engine", variant: str | None) -> Path | None:
    if engine.presets_dir is None:
        return None
    return engine.presets_dir / variant if variant else engine.presets_dir


def preset_paths(engine: "Engine", task: str, layers: tuple[str, ...] = (), variant: str | None = None,
                 profile: str | None = None) -> list[Path]:
    """The preset files that apply, most specific first. A profile must exist; layers and the base are optional."""
    folder = _folder(engine, variant)
    if folder is None:
        if profile:
            raise UsageError(f"--preset {profile}: engine {engine.key} has no presets")
        return []
    found = profiles(engine, task, variant) if profile else []
    if profile and profile not in found:  # a profile is one of these names, never a path
        raise UsageError(f"--preset: {engine.key} {task} has no preset {profile!r}; "
                         f"available: {', '.join(found) or 'none'}")
    names = ([f"{task}@{profile}.yaml"] if profile else []) + [f"{task}.{layer}.yaml" for layer in layers]
    names.append(f"{task}.yaml")
    return [folder / name for name in names if (folder / name).is_file()]


def load_preset(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        data = yaml.safe_load(handle) or {}
    if not isinstance(data, dict):
        raise CodexError(f"preset {path} must be a mapping of field: value, got {type(data).__name__}")
    return data


# A preset value of the key is filled only if the request did not set the field named as value:
# the preset's schedule type belongs to the preset's sampler, so a request that picks its own
# sampler gets that sampler's "Automatic" schedule rather than a schedule chosen for another one.
FILLED_ONLY_WITH = {"scheduler": "sampler"}


def fill(engine: "Engine", task: str, request: dict[str, Any], variant: str | None = None,
         profile: str | None = None, layers: tuple[str, ...] = ()) -> PresetFill:
    result = PresetFill(dict(request), profile=profile)
    for path in preset_paths(engine, task, layers, variant, profile):
        for key, value in load_preset(path).items():
            if FILLED_ONLY_WITH.get(key) in request:
                continue
            if key not in result.request:
                result.request[key] = value
                result.patch[key] = value
        result.files.append(str(path))
    return result


def merged(engine: "Engine", task: str, layers: tuple[str, ...] = (), variant: str | None = None,
           profile: str | None = None) -> dict[str, Any]:
    """Everything the presets would fill into an empty request."""
    return fill(engine, task, {}, variant, profile, layers).patch


def profiles(engine: "Engine", task: str, variant: str | None = None) -> list[str]:
    """Named preset profiles (``<task>@<name>.yaml``) a run can pick with ``--preset``."""
    folder = _folder(engine, variant)
    if folder is None:
        return []
    return sorted(p.name.removesuffix(".yaml").partition("@")[2] for p in folder.glob(f"{task}@*.yaml"))


def mode_layers(mode: str | None) -> tuple[str, ...]:
    """The preset layer of a speed mode: ``<task>.<mode>.yaml`` (the baseline mode has none)."""
    from .engine import BASELINE_MODE

    return (mode,) if mode and mode != BASELINE_MODE else ()
