"""Registers the __NAME__ engine. Imports no torch: the pipeline loads on first run."""

from codex_core import hookimpl

from .engines import __CLASS__


@hookimpl
def codex_register_engines(register):
    register(__CLASS__())
