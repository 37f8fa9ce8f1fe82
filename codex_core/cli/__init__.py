"""The ``codex`` command line: ``cli`` (the click group) and ``main`` (the console script), loaded on first use.

The commands live in modules of their own (``listing``, ``reference``, ``run``, ``batch``, ``serve``),
assembled by ``app``; ``options`` turns the run options into click options.
"""

from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS = {"cli": "app", "main": "app", "handle_errors": "base"}
__all__ = list(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
