"""Registers the z_image engine. Imports no torch: the pipelines load on first run."""

from codex_core import hookimpl

from .engines import ZImage


@hookimpl
def codex_register_engines(register):
    register(ZImage())
