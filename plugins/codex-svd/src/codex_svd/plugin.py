"""Registers the svd engine. Imports no torch: the pipeline loads on first run."""

from codex_core import hookimpl

from .engines import StableVideoDiffusion


@hookimpl
def codex_register_engines(register):
    register(StableVideoDiffusion())
