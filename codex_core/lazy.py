"""Lazy package attributes (PEP 562): a package's public names load their module on first use.

Both public API packages (``codex_core`` and ``codex_diffusers``) export many names without
importing what defines them, so that importing the package stays cheap (no pydantic for
``codex --help``, no torch ever).
"""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(package: str, namespace: dict[str, Any], exports: dict[str, str]) -> tuple[Callable, Callable]:
    """``(__getattr__, __dir__)`` for ``package`` whose ``exports`` map a name to its submodule, or to
    ``"submodule:attribute"`` where the exported name is not the attribute's own."""

    def __getattr__(name: str):
        if name in exports:
            module, _, attribute = exports[name].partition(":")
            value = getattr(importlib.import_module(f".{module}", package), attribute or name)
            namespace[name] = value  # later lookups skip __getattr__
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(namespace.get("__all__", exports))

    return __getattr__, __dir__
