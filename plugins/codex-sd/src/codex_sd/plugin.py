"""Registers the sd15 and sdxl engines. Imports no torch: the pipelines load on first run."""

from codex_core import hookimpl

from .engines import StableDiffusion15, StableDiffusionXL


@hookimpl
def codex_register_engines(register):
    register(StableDiffusion15())
    register(StableDiffusionXL())
