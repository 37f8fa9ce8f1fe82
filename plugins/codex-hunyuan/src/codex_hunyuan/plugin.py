"""Registers the hunyuan_video engine. Imports no torch: the pipelines load on first run."""

from codex_core import hookimpl

from .engines import HunyuanVideo


@hookimpl
def codex_register_engines(register):
    register(HunyuanVideo())
