"""Run options as data: how a model is placed and run, each declared once by the package that gives it meaning.

A ``RunOption`` says everything about one option: its flag, default, allowed values or check, help,
what it records in info.json and how `codex replay` reads it back. Plugins register them through
``codex_register_run_options(register)`` (the core registers ``--device``, ``--dtype`` and
``--allow-pickle``; the diffusers kit its offload, VAE, weights, compile and attention options). The
CLI options of `codex run`, `batch`, `grid`, `serve`, `ui` and `replay`, the argv handed to other
ranks, info.json and replay are loops over this table (as pytest's ``pytest_addoption`` lets a
plugin own its command-line options), so an option is spelled in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .errors import UsageError
from .plugins import contribution, first_wins, valid_registrations, warn

if TYPE_CHECKING:
    from .engine import Engine

SCALARS = (bool, int, float, str)


@dataclass(frozen=True)
class RunOption:
    """One run option. Its value is ``runtime.<name>`` in every engine's ``load`` and ``run``."""

    name: str  # the Runtime attribute and the option's parameter name (a Python identifier)
    flag: str  # e.g. "--offload"
    default: Any  # a bool, int, float or str: a bool option is an on/off flag
    help: str
    choices: tuple[str, ...] | None = None  # the allowed values (None: any value the check accepts)
    # (value, runtime) -> why the value cannot run, or None; it may raise UsageError itself to add a hint
    check: Callable[[Any, Any], str | None] | None = None
    noun: str = "value"  # what a value is called in "unknown <noun>" ("mode", "backend", ...)
    metavar: str | None = None
    # further flags that set a value of this option: {"--vae-tiling": "tiled"} (same as --vae-decode tiled)
    shortcuts: Mapping[str, Any] = field(default_factory=dict)
    # runtime -> its entries in info.json (default: {name: value}); {} records nothing
    record: Callable[[Any], dict[str, Any]] | None = None
    # a recorded run's info.json -> the value it ran with (default: info[name], else the default)
    replayed: Callable[[dict[str, Any]], Any] | None = None
    replay: bool = True  # False: `codex replay` does not carry it over (it must be given again, e.g. --allow-pickle)
    served: bool = True  # False: not an option of `codex serve`/`codex ui` workers (--devices gives devices)
    # the engines that honour it (None: every engine); another engine refuses a value other than the default
    applies: Callable[["Engine"], bool] | None = None

    def problems(self) -> list[str]:
        """What is wrong with this declaration (the table skips an option that has any)."""
        found = []
        if not self.name.isidentifier() or self.name.startswith("_"):
            found.append(f"name {self.name!r} is not a Python identifier")
        for flag in (self.flag, *self.shortcuts):
            if not (isinstance(flag, str) and flag.startswith("--") and flag[2:].replace("-", "").isalnum()):
                found.append(f"flag {flag!r} is not of the form --name")
        if not isinstance(self.default, SCALARS):
            found.append(f"default {self.default!r} is not a bool, int, float or str")
        if self.choices is not None and self.default not in self.choices:
            found.append(f"default {self.default!r} is not one of its choices")
        return found

    @property
    def is_flag(self) -> bool:
        return isinstance(self.default, bool)

    def shortcut_name(self, flag: str) -> str:
        """The parameter name of a shortcut flag (--vae-tiling -> vae_tiling)."""
        return flag.lstrip("-").replace("-", "_")

    def validate(self, value: Any, runtime: Any) -> None:
        """A UsageError naming the flag when ``value`` cannot run."""
        if self.choices is not None and value not in self.choices:
            raise UsageError(f"{self.flag}: unknown {self.noun} {value!r}; allowed: {', '.join(self.choices)}")
        if not isinstance(value, type(self.default)) or (isinstance(value, bool) and not self.is_flag):
            raise UsageError(f"{self.flag}: {value!r} is not a {type(self.default).__name__}")
        problem = self.check(value, runtime) if self.check else None
        if problem:
            raise UsageError(f"{self.flag}: {problem}")

    def info(self, runtime: Any) -> dict[str, Any]:
        return self.record(runtime) if self.record else {self.name: getattr(runtime, self.name)}

    def value_in(self, info: dict[str, Any]) -> Any:
        """The value a recorded run ran with (the default when the record predates the option)."""
        value = self.replayed(info) if self.replayed else info.get(self.name)
        return self.default if value is None else value

    def honoured_by(self, engine: "Engine") -> bool:
        return self.applies is None or bool(self.applies(engine))


def table() -> dict[str, RunOption]:
    """Every registered run option by name, in registration order (the core's first)."""
    return contribution("run_options", _collect)


def _collect() -> dict[str, RunOption]:
    valid = valid_registrations("codex_register_run_options", "run option", RunOption)
    winners = first_wins("run option", valid, lambda o: o.name, lambda o: o.flag)
    # the table lists the options in the order the plugins were registered (the core's first: pluggy calls
    # the plugin registered last first), each plugin's in the order it registered them
    plugin_order = list(dict.fromkeys(plugin for plugin, _ in valid))[::-1]
    ordered = sorted(winners.values(), key=lambda entry: plugin_order.index(entry[0]))
    flags: dict[str, str] = {}
    found = {}
    for plugin, option in ordered:
        taken = [flag for flag in (option.flag, *option.shortcuts) if flag in flags]
        if taken:
            warn(f"plugin {plugin!r}'s run option {option.name!r} uses {', '.join(taken)}, which run option "
                  f"{flags[taken[0]]!r} has; skipped")
            continue
        flags.update({flag: option.name for flag in (option.flag, *option.shortcuts)})
        found[option.name] = option
    return found


def for_command(scope: str) -> list[RunOption]:
    """The options a command takes: "run" (run, batch, grid, replay) or "serve" (serve, ui: workers' options)."""
    return [option for option in table().values() if scope != "serve" or option.served]


def recorded(runtime: Any) -> dict[str, Any]:
    """What info.json records of a runtime: each option's entries, in table order."""
    info: dict[str, Any] = {}
    for option in table().values():
        info.update(option.info(runtime))
    return info


def replayed(info: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The values a replay runs with: an override where given, else what the run recorded (options with
    ``replay`` False: the override or the default)."""
    values = {}
    for name, option in table().items():
        if overrides.get(name) is not None:
            values[name] = overrides[name]
        elif option.replay:
            values[name] = option.value_in(info)
    return values


def argv(runtime: Any) -> list[str]:
    """The command-line options that give ``runtime`` again (for the ranks `--processes` starts)."""
    args: list[str] = []
    for option in table().values():
        value = getattr(runtime, option.name)
        if option.is_flag:
            args += [option.flag] if value else []
        else:
            args += [option.flag, str(value)]
    return args


def not_honoured(engine: "Engine", runtime: Any) -> list[str]:
    """The options given a value other than their default that ``engine`` does not honour, one line each."""
    return [f"{option.flag}: engine {engine.key} does not take it (it is {option.flag} "
            f"{getattr(runtime, option.name)!r}; leave it at {option.default!r})"
            for option in table().values()
            if getattr(runtime, option.name) != option.default and not option.honoured_by(engine)]
