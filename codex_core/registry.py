"""What the loaded plugins contributed: engines, samplers, exporters. Collected once per process."""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, Callable

from .engines import EngineSpec
from .errors import UnknownEngineError
from .plugins import load_plugins, plugin_distributions

# First-party engines and the distribution that provides each, for install hints only: the core
# has no closed list of engines, any installed plugin may register any key.
FIRST_PARTY_PACKAGES = {
    "sd15": "codex-sd",
    "sdxl": "codex-sd",
    "flux": "codex-flux",
    "wan_ti2v_5b": "codex-wan",
    "wan_t2v_14b": "codex-wan",
    "wan_i2v_14b": "codex-wan",
    "hunyuan_video": "codex-hunyuan",
    "svd": "codex-svd",
}

_cache: dict[str, Any] = {}


def clear_cache() -> None:
    _cache.clear()


def _collect(hook_name: str) -> list[tuple[str, Any]]:
    """Call every implementation of a register-style hook, remembering which plugin gave what."""
    pm = load_plugins()
    collected: list[tuple[str, Any]] = []
    for impl in reversed(getattr(pm.hook, hook_name).get_hookimpls()):  # registration order
        def register(item, _plugin=impl.plugin_name):
            collected.append((_plugin, item))

        impl.function(**{name: register for name in impl.argnames})
    return collected


def engines() -> dict[str, EngineSpec]:
    if "engines" not in _cache:
        specs: dict[str, EngineSpec] = {}
        for plugin, spec in _collect("codex_register_engines"):
            if spec.key in specs:
                print(f"codex: warning: engine {spec.key!r} from plugin {plugin!r} ignored; "
                      f"plugin {specs[spec.key].plugin!r} registered it first", file=sys.stderr)
                continue
            dist, version = plugin_distributions.get(plugin, (None, None))
            specs[spec.key] = dataclasses.replace(spec, plugin=plugin, distribution=dist, version=version)
        _cache["engines"] = specs
    return _cache["engines"]


def get_engine(key: str) -> EngineSpec:
    installed = engines()
    if key in installed:
        return installed[key]
    names = ", ".join(sorted(installed)) or "none"
    package = FIRST_PARTY_PACKAGES.get(key)
    hint = (f"engine {key!r} is provided by {package}: pip install {package}" if package
            else "install a plugin package that provides it; `codex plugins` shows what is loaded")
    raise UnknownEngineError(f"unknown engine {key!r}; installed engines: {names}", hint=hint)


def samplers():
    if "samplers" not in _cache:
        from .samplers import SamplerDef, ScheduleType

        items = [item for _, item in _collect("codex_register_samplers")]
        _cache["samplers"] = (
            [i for i in items if isinstance(i, SamplerDef)],
            [i for i in items if isinstance(i, ScheduleType)],
        )
    return _cache["samplers"]


def samplers_for(spec: EngineSpec):
    """The sampler names and schedule types this engine accepts: its family, narrowed by its allow-lists."""
    sampler_defs, schedules = samplers()
    family = spec.sampler_family
    sampler_defs = [s for s in sampler_defs if s.family == family and (spec.samplers is None or s.name in spec.samplers)]
    schedules = [s for s in schedules
                 if s.family == family and (spec.schedule_types is None or s.name in spec.schedule_types)]
    return sampler_defs, schedules


def exporters() -> dict[str, Any]:
    if "exporters" not in _cache:
        table = {}
        for _, exporter in _collect("codex_register_exporters"):
            table.setdefault(exporter.format, exporter)
        _cache["exporters"] = table
    return _cache["exporters"]


def register_commands(cli: Callable) -> None:
    load_plugins().hook.codex_register_commands(cli=cli)
