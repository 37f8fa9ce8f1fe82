"""Plugin discovery and hook calls: default plugins plus the ``codex`` entry-point group, loaded lazily and once.

``CODEX_LOAD_PLUGINS=a,b`` loads only those entry points ("" loads none); ``CODEX_DISABLE_PLUGINS``
skips some. Names match the entry-point name or the distribution name. A plugin that fails to
import is recorded in ``load_errors`` and reported; it does not stop the others.

The plugin manager knows which plugin's hook implementation is running (``running_plugin``): every
implementation is wrapped, when its plugin is registered, so that what it registers and what it
raises are attributed to it. A register-style hook is called once through pluggy (wrappers,
``tryfirst`` and ``trylast`` take effect) with one ``register`` callback for all.
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import importlib.metadata
import inspect
import os
import re
import sys
from typing import Any, Callable

import pluggy

from . import hookspecs

DEFAULT_PLUGINS = (
    "codex_core.default_plugins.run_options",
    "codex_core.default_plugins.exporters",
    "codex_core.default_plugins.preprocessors",
)

_running: contextvars.ContextVar[str | None] = contextvars.ContextVar("codex_running_plugin", default=None)
PLUGIN_ATTRIBUTE = "__codex_plugin__"  # set on an exception raised inside a plugin's hook implementation


def running_plugin() -> str | None:
    """The name of the plugin whose hook implementation is running now (None outside one)."""
    return _running.get()


class _Attributed:
    """A hook wrapper's generator, resumed as its plugin (pluggy drives it with next/send/throw)."""

    def __init__(self, generator, name: str):
        self.generator, self.name = generator, name

    def __iter__(self):
        return self

    def __next__(self):
        return self.send(None)

    def send(self, value):
        return _as_plugin(self.name, self.generator.send, value)

    def throw(self, *exc):
        return _as_plugin(self.name, self.generator.throw, *exc)

    def close(self):
        return self.generator.close()

    @property
    def gi_code(self):  # pluggy names a misbehaving wrapper by its code
        return self.generator.gi_code


def _as_plugin(name: str, function: Callable, *args, **kwargs):
    token = _running.set(name)
    try:
        return function(*args, **kwargs)
    except (StopIteration, GeneratorExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        if getattr(exc, PLUGIN_ATTRIBUTE, None) is None:  # the innermost plugin is the culprit
            try:
                setattr(exc, PLUGIN_ATTRIBUTE, name)
            except AttributeError:
                pass
        raise
    finally:
        _running.reset(token)


def _attributed(function: Callable, name: str) -> Callable:
    @functools.wraps(function)
    def call(*args, **kwargs):
        result = _as_plugin(name, function, *args, **kwargs)
        return _Attributed(result, name) if inspect.isgenerator(result) else result

    return call


class PluginManager(pluggy.PluginManager):
    """pluggy's manager, with each hook implementation run as its plugin (see ``running_plugin``)."""

    def register(self, plugin, name: str | None = None) -> str | None:
        registered = super().register(plugin, name)
        if registered is not None:
            for caller in self.get_hookcallers(plugin) or []:
                for impl in caller.get_hookimpls():
                    if impl.plugin is plugin and not hasattr(impl.function, "__codex_attributed__"):
                        impl.function = _attributed(impl.function, registered)
                        impl.function.__codex_attributed__ = True
        return registered


pm = PluginManager("codex")
pm.add_hookspecs(hookspecs)

load_errors: dict[str, str] = {}  # plugin name -> why it failed to import
hook_errors: dict[str, str] = {}  # plugin name -> which of its hooks raised what (the plugin is then left out)
plugin_distributions: dict[str, tuple[str, str]] = {}  # plugin name -> (distribution, version)
# What the allow/deny lists left out this process: entry-point or distribution name -> why.
skipped: dict[str, str] = {}
# What the hooks contributed (engines, samplers, exporters, run options), collected once per process.
contributions: dict[str, Any] = {}
_loaded = False


def _names(variable: str) -> set[str] | None:
    value = os.environ.get(variable)
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


def load_plugins() -> pluggy.PluginManager:
    global _loaded
    if _loaded:
        return pm
    _loaded = True
    for module_name in DEFAULT_PLUGINS:
        if not pm.has_plugin(module_name):
            pm.register(importlib.import_module(module_name), name=module_name)
            plugin_distributions[module_name] = ("codex-core", _version("codex-core"))

    allowed = _names("CODEX_LOAD_PLUGINS")
    disabled = _names("CODEX_DISABLE_PLUGINS") or set()
    entry_points = list(importlib.metadata.entry_points(group="codex"))
    if allowed is not None:
        allowed |= _required(allowed, entry_points)
    seen: set[str] = set()
    for entry_point in entry_points:
        dist = entry_point.dist.name if entry_point.dist else "?"
        names = {entry_point.name, dist}
        seen |= names
        if allowed is not None and not names & allowed:
            skipped[dist] = "not in CODEX_LOAD_PLUGINS"
            continue
        if names & disabled:
            skipped[dist] = "named in CODEX_DISABLE_PLUGINS"
            continue
        if pm.has_plugin(entry_point.name):
            continue
        try:
            module = entry_point.load()
            pm.register(module, name=entry_point.name)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # SystemExit too: a broken plugin must not take the others (or the CLI) down
            load_errors[entry_point.name] = f"{type(exc).__name__}: {exc}"
            warn(f'error importing plugin "{entry_point.name}" ({dist}): {type(exc).__name__}: {exc}; skipped')
            continue
        plugin_distributions[entry_point.name] = (dist, entry_point.dist.version if entry_point.dist else "?")
    for variable, listed in (("CODEX_LOAD_PLUGINS", allowed or set()), ("CODEX_DISABLE_PLUGINS", disabled)):
        unknown = sorted(listed - seen)
        if unknown:
            warn(f"{variable} names {', '.join(repr(n) for n in unknown)}, which no installed plugin is called; "
                  f"installed plugins: {', '.join(sorted(seen)) or 'none'}")
    return pm


def _required(allowed: set[str], entry_points) -> set[str]:
    """The plugin distributions the allowed ones depend on, transitively: an engine on the diffusers kit
    loads with the kit's plugin (its run options and sampler tables), whatever the allow-list names."""
    plugin_dists = {ep.dist.name.lower(): ep.dist for ep in entry_points if ep.dist}
    names = {ep.dist.name.lower() for ep in entry_points if ep.dist and {ep.name, ep.dist.name} & allowed}
    todo, found = list(names), set()
    while todo:
        for text in plugin_dists[todo.pop()].requires or []:
            name = re.match(r"[A-Za-z0-9_.-]*", text).group(0).lower().replace("_", "-")
            if name in plugin_dists and ";" not in text and name not in names | found:  # not an extra's
                found.add(name)
                todo.append(name)
    return {plugin_dists[name].name for name in found}


def warn(text: str) -> None:
    print(f"codex: warning: {text}", file=sys.stderr)


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def call_hook(hook_name: str, kwargs: dict[str, Any], on_retry: Callable[[], None] = lambda: None) -> None:
    """Call a hook through pluggy; a plugin whose implementation raises is reported and left out.

    pluggy stops a hook call at the first exception, so the call is made again without the plugin
    that raised (``subset_hook_caller``), until it completes: one broken plugin costs the others
    nothing. Its error shows in `codex plugins` and as a warning. ``on_retry`` runs before each new
    call (to forget what the failed call collected).
    """
    manager, excluded = load_plugins(), []
    while True:
        caller = (manager.subset_hook_caller(hook_name, remove_plugins=excluded) if excluded
                  else getattr(manager.hook, hook_name))
        try:
            caller(**kwargs)
            return
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # SystemExit from a plugin too: it must not end `codex --help`
            name = getattr(exc, PLUGIN_ATTRIBUTE, None)
            if name is None or manager.get_plugin(name) is None:
                raise
            error = f"{hook_name} raised {type(exc).__name__}: {exc}"
            hook_errors[name] = "; ".join(filter(None, [hook_errors.get(name), error]))
            warn(f"plugin {name!r}: {error}; skipped")
            excluded.append(manager.get_plugin(name))
            on_retry()


def collect(hook_name: str) -> list[tuple[str | None, Any]]:
    """Call a register-style hook; (plugin name, item) for each registration, in pluggy's call order."""
    collected: list[tuple[str | None, Any]] = []

    def register(item):
        collected.append((running_plugin(), item))

    call_hook(hook_name, {"register": register}, on_retry=collected.clear)
    return collected


def valid_registrations(hook_name: str, kind: str, cls: type) -> list[tuple[str | None, Any]]:
    """(plugin, item) for each registration of a register-style hook that is a ``cls`` with no ``problems()``;
    the others are skipped with a warning naming the plugin and what is wrong."""
    valid = []
    for plugin, item in collect(hook_name):
        problems = item.problems() if isinstance(item, cls) else [
            f"got {type(item).__name__}, not a {cls.__module__.split('.')[0]}.{cls.__name__} instance"]
        if problems:
            warn(f"plugin {plugin!r} registered an invalid {kind} ({'; '.join(problems)}); skipped")
            continue
        valid.append((plugin, item))
    return valid


def first_wins(kind: str, items: list[tuple[str | None, Any]], key: Callable[[Any], Any],
               label: Callable[[Any], str]) -> dict[Any, tuple[str | None, Any]]:
    """One registration per key: the first in pluggy's call order wins, and a warning names both plugins."""
    table: dict[Any, tuple[str | None, Any]] = {}
    for plugin, item in items:
        name = key(item)
        if name in table:
            winner = table[name][0]
            warn(f"{kind} {label(item)!r} is registered by plugin {winner!r} and by plugin {plugin!r}; "
                  f"{winner!r} wins (pluggy calls it first)")
            continue
        table[name] = (plugin, item)
    return table


def contribution(key: str, build: Callable[[], Any]) -> Any:
    """What ``build`` collects from the plugins, once per process (``reset_for_tests`` forgets it)."""
    if key not in contributions:
        contributions[key] = build()
    return contributions[key]


def clear_contributions() -> None:
    contributions.clear()


def reset_for_tests() -> None:
    """Forget loaded plugins so the next call discovers them again (tests only)."""
    global _loaded
    for name, _ in list(pm.list_name_plugin()):
        pm.unregister(name=name)
    load_errors.clear()
    hook_errors.clear()
    skipped.clear()
    plugin_distributions.clear()
    contributions.clear()
    _loaded = False


def describe_plugins() -> list[dict]:
    load_plugins()
    rows = []
    for name, plugin in sorted(pm.list_name_plugin()):
        dist, version = plugin_distributions.get(name, ("?", "?"))
        hooks = sorted(impl.name for impl in pm.get_hookcallers(plugin) or [])
        row = {"name": name, "distribution": dist, "version": version, "hooks": hooks}
        if name in hook_errors:
            row["error"] = hook_errors[name]
        rows.append(row)
    for name, error in sorted(load_errors.items()):
        rows.append({"name": name, "error": error})
    return rows
