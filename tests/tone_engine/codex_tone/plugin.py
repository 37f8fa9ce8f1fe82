"""The tone plugin: its one engine."""

from codex_core import hookimpl

from .engine import ToneEngine


@hookimpl
def codex_register_engines(register):
    register(ToneEngine())
