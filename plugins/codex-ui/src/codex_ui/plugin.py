"""Registers `codex ui`. Imports neither Gradio nor the service until the command runs."""

from codex_core import hookimpl


@hookimpl
def codex_register_commands(cli):
    from .command import ui

    cli.add_command(ui)
