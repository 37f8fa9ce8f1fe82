"""Plugin discovery: default plugins plus the ``codex`` entry-point group, loaded lazily and once.

``CODEX_LOAD_PLUGINS=a,b`` loads only those entry points ("" loads none); ``CODEX_DISABLE_PLUGINS``
skips some. Names match the entry-point name or the distribution name. A plugin that fails to
import is recorded in ``load_errors`` and reported; it does not stop the others.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys

import pluggy

from . import hookspecs

DEFAULT_PLUGINS = (
    "codex_core.default_plugins.samplers",
    "codex_core.default_plugins.exporters",
)

pm = pluggy.PluginManager("codex")
pm.add_hookspecs(hookspecs)

load_errors: dict[str, str] = {}  # plugin name -> why it failed to import
hook_errors: dict[str, str] = {}  # plugin name -> which of its hooks raised what (the plugin is then left out)
plugin_distributions: dict[str, tuple[str, str]] = {}  # plugin name -> (distribution, version)
_loaded = False


def _names(variable: str) -> set[str] | None:
    value = os.environ.get(variable)
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


# What the allow/deny lists left out this process: entry-point or distribution name -> why.
skipped: dict[str, str] = {}


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
    seen: set[str] = set()
    for entry_point in importlib.metadata.entry_points(group="codex"):
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
            _warn(f'error importing plugin "{entry_point.name}" ({dist}): {type(exc).__name__}: {exc}; skipped')
            continue
        plugin_distributions[entry_point.name] = (dist, entry_point.dist.version if entry_point.dist else "?")
    for variable, listed in (("CODEX_LOAD_PLUGINS", allowed or set()), ("CODEX_DISABLE_PLUGINS", disabled)):
        unknown = sorted(listed - seen)
        if unknown:
            _warn(f"{variable} names {', '.join(repr(n) for n in unknown)}, which no installed plugin is called; "
                  f"installed plugins: {', '.join(sorted(seen)) or 'none'}")
    return pm


def _warn(text: str) -> None:
    print(f"codex: warning: {text}", file=sys.stderr)


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def reset_for_tests() -> None:
    """Forget loaded plugins so the next call discovers them again (tests only)."""
    global _loaded
    for name, _ in list(pm.list_name_plugin()):
        pm.unregister(name=name)
    load_errors.clear()
    hook_errors.clear()
    skipped.clear()
    plugin_distributions.clear()
    _loaded = False
    from . import registry

    registry.clear_cache()


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
