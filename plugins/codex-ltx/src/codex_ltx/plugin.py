"""Registers the ltx_video engine. Imports no torch: the pipelines load on first run."""

from codex_core import hookimpl

from .engines import LTXVideo


@hookimpl
def codex_register_engines(register):
    register(LTXVideo())
