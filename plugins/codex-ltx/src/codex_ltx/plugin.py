"""Registers the ltx_video and ltx2 engines. Imports no torch: the pipelines load on first run."""

from codex_core import hookimpl

from .engines import LTXVideo
from .ltx2 import LTX2


@hookimpl
def codex_register_engines(register):
    register(LTXVideo())
    register(LTX2())
