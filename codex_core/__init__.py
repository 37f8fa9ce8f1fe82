"""Codex core: plugin discovery, strict requests, presets, sampler policy, orchestration, export.

Nothing in this package knows a model family; engines arrive as plugins (entry-point group
``codex``). Importing this package does not import torch.
"""

from .hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = ["hookimpl", "__version__"]
