"""Registers the krea2 engine. Imports no torch: the pipeline loads on first run."""

from codex_core import hookimpl

from .engines import Krea2


@hookimpl
def codex_register_engines(register):
    register(Krea2())
