"""What every command shares: errors as one line and an exit status, JSON and table output, the command group."""

from __future__ import annotations

import functools
import json
import os
import sys
from typing import Any

import click

from ..errors import CodexError

EXIT_INTERRUPTED = 130


class _CodexClickError(click.ClickException):
    def __init__(self, error: CodexError):
        super().__init__(str(error))
        self.exit_code = error.exit_code

    def show(self, file=None) -> None:
        click.echo(f"codex: error: {self.message}", err=True)


def handle_errors(func):
    """Wrap a command so that errors reach the user as one line and an exit status (plugin commands use it too).

    CodexError: its exit code (2 usage, 1 other); Ctrl-C / SIGTERM: 130; anything else: 1, with the
    traceback when CODEX_DEBUG is set.
    """
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except CodexError as exc:
            raise _CodexClickError(exc) from None
        except KeyboardInterrupt:
            click.echo("\ncodex: interrupted; no partial output was kept", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except BrokenPipeError:  # e.g. `codex presets --matrix | head`: the reader has gone, not an error
            sys.stderr.close()
            os._exit(0)
        except Exception as exc:  # an engine or library failure: short message, traceback on request
            if os.environ.get("CODEX_DEBUG"):
                raise
            click.echo(f"codex: error: {type(exc).__name__}: {exc}\n  (set CODEX_DEBUG=1 for the traceback)",
                       err=True)
            sys.exit(1)

    return wrapper


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def echo_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())


class Group(click.Group):
    """Lists each command with its whole first sentence, wrapped, where click would cut it at the width."""

    group_class = type  # subgroups (`codex docs`) list their commands the same way

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, command.get_short_help_str(limit=1000)) for name in self.list_commands(ctx)
                if (command := self.get_command(ctx, name)) is not None and not command.hidden]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
