"""Registers the sd15, sdxl and sd35 engines. Imports no torch: the pipelines load on first run."""

from codex_core import hookimpl

from .engines import StableDiffusion15, StableDiffusionXL
from .sd35 import StableDiffusion35


@hookimpl
def codex_register_engines(register):
    register(StableDiffusion15())
    register(StableDiffusionXL())
    register(StableDiffusion35())
