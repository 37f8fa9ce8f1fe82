"""The diffusers kit: what every Codex engine on diffusers pipelines shares.

Engine authors import from here (and from ``codex_core``)::

    from codex_diffusers import DiffusersEngine, SpeedModes, mode_fields, TrueCfgFields, read_config

Importing this package imports no torch: ``DiffusersEngine`` loads torch and diffusers only when a
model loads. The heavy helpers live in submodules: ``codex_diffusers.pipelines`` (load, place,
schedule, call), ``codex_diffusers.tiny`` (offline tokenizers for tiny test models),
``codex_diffusers.testing`` (the conformance suite every engine's tests subclass).
"""

from __future__ import annotations

from codex_core.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "DiffusersEngine": "engine", "DiffusersModel": "engine", "CANONICAL_ARGUMENTS": "engine",
    "SpeedModes": "modes", "mode_fields": "modes", "ModeLora": "modes",
    "TrueCfgFields": "params", "LoraFields": "params", "VaeFields": "params", "LoraRef": "params",
    "flow_shift_field": "params", "NoInitImage": "params",
    "read_config": "configs", "CacheFields": "caches",
}

__all__ = ["__version__", *_EXPORTS]


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
