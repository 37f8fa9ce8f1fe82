"""Registers ``example_gradient``. Imports only codex_core: it has no heavy imports at all."""

from codex_core import hookimpl

from .engine import GradientEngine


@hookimpl
def codex_register_engines(register):
    register(GradientEngine())
