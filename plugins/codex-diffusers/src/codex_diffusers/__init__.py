"""The diffusers kit: what every Codex engine on diffusers pipelines shares.

Engine authors import from here (and from ``codex_core``)::

    from codex_diffusers import DiffusersEngine, SpeedModes, mode_fields, TrueCfgFields, read_config

Importing this package imports no torch: ``DiffusersEngine`` loads torch and diffusers only when a
model loads. The kit's API for engine plugins is what this package exports (``__all__``) and the
modules in ``API_MODULES``: ``codex_diffusers.tiny`` (offline tokenizers for tiny test models),
``codex_diffusers.lora`` (a LoRA for one run, undone after it), ``codex_diffusers.testing`` (the
conformance suite every engine's tests subclass) and its ``checkpoint_writers`` (test data: the
files users have, written from tiny models). ``API_VERSION`` versions it as ``codex_core``'s does;
tests/test_plugin_api.py fails when an engine plugin imports anything else of the kit.
"""

from __future__ import annotations

from codex_core import lazy_exports

__version__ = "0.1.0"
API_VERSION = "1.3"
API_MODULES = ("codex_diffusers.tiny", "codex_diffusers.lora", "codex_diffusers.testing",
               "codex_diffusers.testing.checkpoint_writers")

_EXPORTS = {
    "DiffusersEngine": "engine", "DiffusersModel": "engine", "CANONICAL_ARGUMENTS": "engine",
    "SpeedModes": "modes", "mode_fields": "modes", "ModeLora": "modes",
    "TrueCfgFields": "params", "LoraFields": "params", "VaeFields": "params", "LoraRef": "params",
    "flow_shift_field": "params", "NoInitImage": "params", "LORA_SCALE": "params",
    "read_config": "configs", "CacheFields": "caches",
    # ControlNets declared per family, and the field they read (codex_core.ControlFields)
    "ControlNets": "controlnets", "controlnet_path": "controlnets",
    # image prompts through IP-Adapters (codex_diffusers.ip_adapters declares and runs them)
    "ReferenceImage": "params", "ReferenceImageFields": "params", "IPAdapters": "ip_adapters",
    # the reference models' configs a plugin ships, and the components' sizes before loading
    "reference_config_dir": "sizes", "component_sizes": "sizes",
    # what an engine's denoisers split across ranks under --parallel
    "ContextParallel": "context_parallel", "gathered_order": "context_parallel",
}

__all__ = ["__version__", "API_VERSION", "API_MODULES", *_EXPORTS]


__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
