"""Registers the flux engine. Imports no torch: the pipelines load on first run."""

from codex_core import hookimpl

from .engines import Flux


@hookimpl
def codex_register_engines(register):
    register(Flux())
