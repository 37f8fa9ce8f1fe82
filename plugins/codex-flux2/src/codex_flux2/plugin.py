"""Registers the flux2 and flux2_klein engines. Imports no torch: the pipelines load on first run."""

from codex_core import hookimpl

from .engines import Flux2, Flux2Klein


@hookimpl
def codex_register_engines(register):
    register(Flux2())
    register(Flux2Klein())
