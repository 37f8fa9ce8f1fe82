"""YAML presets at ``presets/<engine>/<task>[.<mode>].yaml``. Fill-only: a field in the request wins."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .engines import EngineSpec
from .errors import CodexError, UsageError


def locate(module_file: str, engine: str) -> Path | None:
    """Find an engine's presets for a plugin module.

    ``CODEX_PRESETS_DIR`` wins; a wheel carries them as ``<package>/presets/<engine>``; a source
    checkout (editable install) uses the repository's ``presets/<engine>``, the one place they are
    edited.
    """
    override = os.environ.get("CODEX_PRESETS_DIR")
    if override:
        return Path(override) / engine
    package_dir = Path(module_file).resolve().parent
    for base in (package_dir, *package_dir.parents):
        candidate = base / "presets" / engine
        if candidate.is_dir():
            return candidate
    return None


@dataclass
class PresetFill:
    request: dict[str, Any]
    patch: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    profile: str | None = None


def preset_paths(spec: EngineSpec, task: str, mode: str = "normal", variant: str | None = None,
                 profile: str | None = None) -> list[Path]:
    """Most specific first: ``<task>@<profile>.yaml``, ``<task>.<mode>.yaml``, then ``<task>.yaml``.

    A profile is a named set of settings the user picks with ``--preset`` (e.g. a lighter resolution);
    it must exist, while mode and base files are optional.
    """
    if spec.presets_dir is None:
        if profile:
            raise UsageError(f"--preset {profile}: engine {spec.key} has no presets")
        return []
    folder = spec.presets_dir / variant if variant else spec.presets_dir
    if profile and not (folder / f"{task}@{profile}.yaml").is_file():
        found = profiles(spec, task, variant)
        raise UsageError(f"--preset: {spec.key} {task} has no preset {profile!r}; "
                         f"available: {', '.join(found) or 'none'}")
    names = ([f"{task}@{profile}.yaml"] if profile else []) + ([f"{task}.{mode}.yaml"] if mode != "normal" else [])
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


def fill(spec: EngineSpec, task: str, request: dict[str, Any], variant: str | None = None,
         profile: str | None = None) -> PresetFill:
    mode = request.get("mode", "normal")
    result = PresetFill(dict(request), profile=profile)
    for path in preset_paths(spec, task, mode if isinstance(mode, str) else "normal", variant, profile):
        for key, value in load_preset(path).items():
            if FILLED_ONLY_WITH.get(key) in request:
                continue
            if key not in result.request:
                result.request[key] = value
                result.patch[key] = value
        result.files.append(str(path))
    return result


def merged(spec: EngineSpec, task: str, mode: str = "normal", variant: str | None = None,
           profile: str | None = None) -> dict[str, Any]:
    return fill(spec, task, {"mode": mode} if mode != "normal" else {}, variant, profile).patch


def profiles(spec: EngineSpec, task: str, variant: str | None = None) -> list[str]:
    """Named preset profiles (``<task>@<name>.yaml``) a run can pick with ``--preset``."""
    if spec.presets_dir is None:
        return []
    folder = spec.presets_dir / variant if variant else spec.presets_dir
    return sorted(p.name.removesuffix(".yaml").partition("@")[2] for p in folder.glob(f"{task}@*.yaml"))
