"""What the loaded plugins contributed: engines, samplers, exporters. Collected once per process.

Every hook is called through pluggy, so hook wrappers and ``tryfirst``/``trylast`` take effect. A
key registered twice (an engine key, an exporter format, a sampler or schedule-type name within
its family) keeps the registration pluggy calls first (the plugin registered last, unless a hook
says ``tryfirst``/``trylast``) and warns, naming both plugins and the winner.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any, Callable

from .engine import Engine
from .errors import UnknownEngineError
from .plugins import (call_hook, clear_contributions, collect, contribution, first_wins, plugin_distributions,
                      valid_registrations, warn)


def clear_cache() -> None:
    """Collect the plugins' contributions again on next use (after registering a plugin in a test)."""
    clear_contributions()


def engines() -> dict[str, Engine]:
    return contribution("engines", _collect_engines)


def _collect_engines() -> dict[str, Engine]:
    valid = valid_registrations("codex_register_engines", "engine", Engine)
    table = {}
    for key, (plugin, engine) in first_wins("engine", valid, lambda e: e.key, lambda e: e.key).items():
        engine.plugin = plugin
        engine.distribution, engine.version = plugin_distributions.get(plugin, (None, None))
        table[key] = engine
    return table


def get_engine(key: str) -> Engine:
    installed = engines()
    if key in installed:
        return installed[key]
    from .plugins import skipped

    names = ", ".join(sorted(installed)) or "none"
    package = known_engine_packages().get(key)
    if package and package in skipped:  # installed, but the allow/deny lists left it out
        hint = f"engine {key!r} is provided by {package}, which is installed but {skipped[package]}"
    elif package:
        hint = f"engine {key!r} is provided by {package}: pip install {package}"
    else:
        hint = "install a plugin package that provides it; `codex plugins` shows what is loaded"
    raise UnknownEngineError(f"unknown engine {key!r}; installed engines: {names}", hint=hint)


def known_engine_packages() -> dict[str, str]:
    """Engine key -> distribution of the project's own plugin packages, for install hints only.

    The core has no list of engines: this is data (engine_catalog.json) generated from the plugins'
    entry points by `codex docs engine-catalog`, so that a missing engine can still name its package
    when that package is not installed. tests/test_catalog.py fails when it is stale.
    """
    def read() -> dict[str, str]:
        text = resources.files("codex_core").joinpath("engine_catalog.json").read_text(encoding="utf-8")
        return json.loads(text)["engines"]

    return contribution("catalog", read)


def samplers():
    """Every family's sampler names and schedule types: ``(SamplerDef list, ScheduleType list)``."""
    found = contribution("samplers", _collect_samplers)
    return found[0], found[1]


def sampler_names():
    """Every registered name of another tool's vocabulary (``SamplerName``: A1111's, Forge's), every family's."""
    return contribution("samplers", _collect_samplers)[2]


def _collect_samplers():
    from .samplers import SamplerDef, SamplerName, ScheduleType

    items = collect("codex_register_samplers")
    for plugin, item in items:
        if not isinstance(item, (SamplerDef, ScheduleType, SamplerName)):
            warn(f"plugin {plugin!r} registered {type(item).__name__} as a sampler; skipped")
    by_name = lambda item: (item.family, item.name.casefold())  # noqa: E731
    label = lambda item: f"{item.family}:{item.name}"  # noqa: E731

    def of(kind, what, key=by_name):
        chosen = [(p, i) for p, i in items if isinstance(i, kind)]
        return [item for _, item in first_wins(what, chosen, key, label).values()]

    names = of(SamplerName, "sampler name", lambda i: (i.vocabulary, i.kind, i.family, i.name.casefold()))
    return of(SamplerDef, "sampler"), of(ScheduleType, "schedule type"), names


def samplers_for(engine: Engine, task: str | None = None):
    """The sampler names and schedule types this engine accepts (for ``task``, where it narrows them per task):
    its family, narrowed by its allow-lists."""
    sampler_defs, schedules = samplers()
    family = engine.sampler_family
    allowed = engine.task_samplers.get(task, engine.samplers) if task else engine.samplers
    sampler_defs = [s for s in sampler_defs if s.family == family and (allowed is None or s.name in allowed)]
    schedules = [s for s in schedules
                 if s.family == family and (engine.schedule_types is None or s.name in engine.schedule_types)]
    return sampler_defs, schedules


def sampler_names_for(engine: Engine):
    """The other vocabularies' names of this engine's sampler family, and what the family runs for each."""
    return [n for n in sampler_names() if n.family == engine.sampler_family]


def exporters() -> dict[str, Any]:
    return contribution("exporters", _collect_exporters)


def _collect_exporters() -> dict[str, Any]:
    from .exporters import Exporter

    items = []
    for plugin, exporter in collect("codex_register_exporters"):
        if isinstance(exporter, Exporter):
            items.append((plugin, exporter))
        else:
            warn(f"plugin {plugin!r} registered {type(exporter).__name__} as an exporter; skipped")
    table = first_wins("exporter", items, lambda e: e.format, lambda e: e.format)
    return {name: exporter for name, (_, exporter) in table.items()}


def register_commands(cli: Callable) -> None:
    call_hook("codex_register_commands", {"cli": cli})
