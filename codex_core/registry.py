"""What the loaded plugins contributed: engines, samplers, exporters. Collected once per process.

Every hook is called through pluggy, so hook wrappers and ``tryfirst``/``trylast`` take effect. A
key registered twice (an engine key, an exporter format, a sampler or schedule-type name within
its family) keeps the registration pluggy calls first (the plugin registered last, unless a hook
says ``tryfirst``/``trylast``) and warns, naming both plugins and the winner.
"""

from __future__ import annotations

import json
import sys
from importlib import resources
from typing import Any, Callable

from .engine import Engine
from .errors import UnknownEngineError
from .plugins import hook_errors, load_plugins, plugin_distributions

_cache: dict[str, Any] = {}


def clear_cache() -> None:
    _cache.clear()


def _warn(text: str) -> None:
    print(f"codex: warning: {text}", file=sys.stderr)


def _owners(hook_name: str) -> dict[Any, str]:
    """Code object of each implementation of the hook -> its plugin's name."""
    owners = {}
    for impl in getattr(load_plugins().hook, hook_name).get_hookimpls():
        code = getattr(impl.function, "__code__", None)
        if code is not None:
            owners[code] = impl.plugin_name
    return owners


def _culprit(error: BaseException, owners: dict[Any, str]) -> str | None:
    """The plugin whose hook implementation raised: the deepest frame of the traceback that is one."""
    found, tb = None, error.__traceback__
    while tb is not None:
        found = owners.get(tb.tb_frame.f_code, found)
        tb = tb.tb_next
    return found


def call_hook(hook_name: str, kwargs: dict[str, Any], on_retry: Callable[[], None] = lambda: None,
              owners: dict[Any, str] | None = None) -> None:
    """Call a hook through pluggy; a plugin whose implementation raises is reported and left out.

    pluggy stops a hook call at the first exception, so the call is made again without the plugin
    that raised (``subset_hook_caller``), until it completes: one broken plugin costs the others
    nothing. Its error shows in `codex plugins` and as a warning. ``on_retry`` runs before each new
    call (to forget what the failed call collected).
    """
    pm, excluded = load_plugins(), []
    owners = owners if owners is not None else _owners(hook_name)
    while True:
        caller = pm.subset_hook_caller(hook_name, remove_plugins=excluded) if excluded else getattr(pm.hook, hook_name)
        try:
            caller(**kwargs)
            return
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # SystemExit from a plugin too: it must not end `codex --help`
            name = _culprit(exc, owners)
            if name is None:
                raise
            error = f"{hook_name} raised {type(exc).__name__}: {exc}"
            hook_errors[name] = "; ".join(filter(None, [hook_errors.get(name), error]))
            _warn(f"plugin {name!r}: {error}; skipped")
            excluded.append(pm.get_plugin(name))
            on_retry()


def _collect(hook_name: str) -> list[tuple[str | None, Any]]:
    """Call a register-style hook; return (plugin name, item) in pluggy's call order.

    pluggy passes the same ``register`` to every implementation and does not say which one is
    running, so ``register`` finds its caller on the stack: the frame of a hook implementation's
    code (its own frame or, through helpers, an outer one).
    """
    owners = _owners(hook_name)
    collected: list[tuple[str | None, Any]] = []

    def register(item):
        frame = sys._getframe(1)
        while frame is not None and frame.f_code not in owners:
            frame = frame.f_back
        collected.append((owners[frame.f_code] if frame is not None else None, item))

    call_hook(hook_name, {"register": register}, on_retry=collected.clear, owners=owners)
    return collected


def _first_wins(kind: str, items: list[tuple[str | None, Any]], key: Callable[[Any], Any],
                label: Callable[[Any], str]) -> dict[Any, tuple[str | None, Any]]:
    table: dict[Any, tuple[str | None, Any]] = {}
    for plugin, item in items:
        name = key(item)
        if name in table:
            winner = table[name][0]
            _warn(f"{kind} {label(item)!r} is registered by plugin {winner!r} and by plugin {plugin!r}; "
                  f"{winner!r} wins (pluggy calls it first)")
            continue
        table[name] = (plugin, item)
    return table


def engines() -> dict[str, Engine]:
    if "engines" not in _cache:
        valid = []
        for plugin, engine in _collect("codex_register_engines"):
            problems = engine.problems() if isinstance(engine, Engine) else [
                f"got {type(engine).__name__}, not a codex_core.Engine instance"]
            if problems:
                _warn(f"plugin {plugin!r} registered an invalid engine ({'; '.join(problems)}); skipped")
                continue
            valid.append((plugin, engine))
        table = {}
        for key, (plugin, engine) in _first_wins("engine", valid, lambda e: e.key, lambda e: e.key).items():
            engine.plugin = plugin
            engine.distribution, engine.version = plugin_distributions.get(plugin, (None, None))
            table[key] = engine
        _cache["engines"] = table
    return _cache["engines"]


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
    if "catalog" not in _cache:
        text = resources.files("codex_core").joinpath("engine_catalog.json").read_text(encoding="utf-8")
        _cache["catalog"] = json.loads(text)["engines"]
    return _cache["catalog"]


def samplers():
    if "samplers" not in _cache:
        from .samplers import SamplerDef, ScheduleType

        items = _collect("codex_register_samplers")
        for plugin, item in items:
            if not isinstance(item, (SamplerDef, ScheduleType)):
                _warn(f"plugin {plugin!r} registered {type(item).__name__} as a sampler; skipped")
        defs = [(p, i) for p, i in items if isinstance(i, SamplerDef)]
        types = [(p, i) for p, i in items if isinstance(i, ScheduleType)]
        by_name = lambda item: (item.family, item.name.casefold())  # noqa: E731
        _cache["samplers"] = (
            [item for _, item in _first_wins("sampler", defs, by_name, lambda i: f"{i.family}:{i.name}").values()],
            [item for _, item in _first_wins("schedule type", types, by_name, lambda i: f"{i.family}:{i.name}").values()],
        )
    return _cache["samplers"]


def samplers_for(engine: Engine):
    """The sampler names and schedule types this engine accepts: its family, narrowed by its allow-lists."""
    sampler_defs, schedules = samplers()
    family = engine.sampler_family
    sampler_defs = [s for s in sampler_defs
                    if s.family == family and (engine.samplers is None or s.name in engine.samplers)]
    schedules = [s for s in schedules
                 if s.family == family and (engine.schedule_types is None or s.name in engine.schedule_types)]
    return sampler_defs, schedules


def exporters() -> dict[str, Any]:
    if "exporters" not in _cache:
        from .exporters import Exporter

        items = []
        for plugin, exporter in _collect("codex_register_exporters"):
            if isinstance(exporter, Exporter):
                items.append((plugin, exporter))
            else:
                _warn(f"plugin {plugin!r} registered {type(exporter).__name__} as an exporter; skipped")
        table = _first_wins("exporter", items, lambda e: e.format, lambda e: e.format)
        _cache["exporters"] = {name: exporter for name, (_, exporter) in table.items()}
    return _cache["exporters"]


def register_commands(cli: Callable) -> None:
    call_hook("codex_register_commands", {"cli": cli})
