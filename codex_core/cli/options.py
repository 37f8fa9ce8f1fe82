"""The run options on the command line: click options generated from the one table (``codex_core.run_options``).

A command that runs models is a ``RunCommand`` (`codex run`, `batch`, `grid`) or a ``ServeCommand``
(`codex serve`, `codex ui`: the workers' options, without ``--device`` and ``--allow-pickle``). Their
run options are added when the command is used (for parsing and for ``--help``), so an option a plugin
registers appears without the command knowing it. ``ReplayCommand`` takes each as an override of the
recorded value.
"""

from __future__ import annotations

from typing import Any

import click

from .. import run_options
from ..errors import UsageError
from ..runtime import Runtime

BEFORE = "download"  # the run options are listed before this option where the command has it


def _click_option(option: run_options.RunOption, replay: bool = False) -> list[click.Option]:
    if option.is_flag:
        made = [click.Option([option.flag, option.name], is_flag=True, default=None if replay else option.default,
                             help=option.help)]
    else:
        help_text = f"{option.help} [default: as recorded]" if replay else option.help
        made = [click.Option([option.flag, option.name], type=type(option.default), metavar=option.metavar,
                             default=None if replay else option.default, show_default=not replay, help=help_text)]
    for flag, value in option.shortcuts.items():
        made.append(click.Option([flag, option.shortcut_name(flag)], is_flag=True, default=None if replay else False,
                                 help=f"Same as {option.flag} {value}."))
    return made


class RunCommand(click.Command):
    """A command that takes the run options (``scope``: which ones, see ``run_options.for_command``)."""

    scope = "run"
    replay = False

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        params = super().get_params(ctx)
        names = [param.name for param in params]
        help_option = self.get_help_option(ctx)
        where = (names.index(BEFORE) if BEFORE in names
                 else params.index(help_option) if help_option in params else len(params))
        added = [made for option in run_options.for_command(self.scope) for made in _click_option(option, self.replay)]
        return [*params[:where], *added, *params[where:]]


class ServeCommand(RunCommand):
    scope = "serve"


class ReplayCommand(RunCommand):
    replay = True


def run_option_names(scope: str = "run") -> set[str]:
    """The parameter names the run options take on a command (shortcut flags included)."""
    return {name for option in run_options.for_command(scope)
            for name in (option.name, *map(option.shortcut_name, option.shortcuts))}


def split_runtime(given: dict[str, Any], scope: str = "run") -> tuple[dict[str, Any], dict[str, Any]]:
    """(the run options' values, the command's other parameters) of a command's keyword arguments."""
    names = run_option_names(scope)
    return ({k: v for k, v in given.items() if k in names}, {k: v for k, v in given.items() if k not in names})


def option_values(given: dict[str, Any], scope: str = "run") -> dict[str, Any]:
    """The values of the run options as given (shortcut flags resolved; None: not given)."""
    values: dict[str, Any] = {}
    for option in run_options.for_command(scope):
        value = given.get(option.name)
        for flag, meant in option.shortcuts.items():
            if given.get(option.shortcut_name(flag)):
                if value not in (None, option.default, meant):
                    raise UsageError(f"{flag} with {option.flag} {value}: give one of them")
                value = meant
        values[option.name] = value
    return values


def runtime_from(given: dict[str, Any], scope: str = "run") -> Runtime:
    """The Runtime of the run options as given (checked: a bad value is a UsageError naming its option)."""
    values = {name: value for name, value in option_values(given, scope).items() if value is not None}
    return Runtime.of(values).check()


def changed_options(given: dict[str, Any], scope: str = "run") -> list[str]:
    """The flags of the run options given a value other than their default."""
    table = run_options.table()
    return [table[name].flag for name, value in option_values(given, scope).items()
            if value is not None and value != table[name].default]
