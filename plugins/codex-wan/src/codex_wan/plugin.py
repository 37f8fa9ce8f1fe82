"""Registers the Wan 2.2 engines. Imports no torch: the pipelines load on first run."""

from codex_core import hookimpl

from .animate import WanAnimate
from .engines import WanI2VA14B, WanT2VA14B, WanTI2V5B
from .vace import WanVACE


@hookimpl
def codex_register_engines(register):
    for engine in (WanTI2V5B(), WanT2VA14B(), WanI2VA14B(), WanVACE()):
        register(engine)
    register(WanAnimate())
