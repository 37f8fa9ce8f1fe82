"""Registers the chroma engine. Imports no torch: the pipelines load on first run."""

from codex_core import hookimpl

from .engines import Chroma


@hookimpl
def codex_register_engines(register):
    register(Chroma())
