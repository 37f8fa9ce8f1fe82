"""What a request may say: `codex schema`, `codex presets` (and its matrix) and `codex docs`."""

from __future__ import annotations

import click

from ..errors import UsageError
from .base import Group, echo_json, echo_table, handle_errors


@click.command()
@click.argument("engine")
@click.argument("task")
@click.option("--variant", help="Checkpoint variant whose presets to show as defaults (engines whose presets differ "
                                "per variant) [default: the engine's tiny model's, else its first].")
@handle_errors
def schema(engine: str, task: str, variant: str | None):
    """Print the JSON Schema of a request for ENGINE and TASK.

    Fields a preset fills are shown with the preset value as their default.

    \b
    Examples:
      codex schema ENGINE img2img
      codex schema ENGINE txt2img --variant VARIANT
    """
    from ..schema import request_schema

    echo_json(request_schema(engine, task, variant))


@click.command()
@click.argument("engine", required=False)
@click.argument("task", required=False)
@click.option("--mode", default="normal", show_default=True, help="Speed mode whose preset to show.")
@click.option("--variant", help="Checkpoint variant (engines whose presets differ per variant; default: all).")
@click.option("--preset", "profile", help="A named preset profile, as `codex run --preset` takes it.")
@click.option("--matrix", is_flag=True, help="Every engine x task x mode: its preset, or why it is unsupported.")
@click.option("--json", "as_json", is_flag=True, help="With --matrix: print JSON instead of a table.")
@handle_errors
def presets(engine: str | None, task: str | None, mode: str, variant: str | None, profile: str | None,
            matrix: bool, as_json: bool):
    """Show the preset values that fill a request's missing fields.

    \b
    Examples:
      codex presets ENGINE
      codex presets ENGINE upscale
      codex presets ENGINE txt2img --mode MODE
      codex presets --matrix            # all engines (or: codex presets ENGINE --matrix)
    """
    from .. import presets as presets_module
    from ..registry import engines as installed, get_engine

    if matrix:
        _print_matrix([get_engine(engine)] if engine else list(installed().values()), task, as_json)
        return
    if not engine:
        raise UsageError("presets: name an ENGINE (`codex engines` lists them), or pass --matrix")
    found = get_engine(engine)
    tasks = [task] if task else list(found.tasks)
    for name in tasks:
        if name not in found.tasks:
            raise UsageError(f"engine {engine!r} has no task {name!r}; its tasks: {', '.join(found.tasks)}")
    if variant:
        from ..schema import check_variant

        check_variant(found, variant)
    reason = found.unsupported_reason(mode)
    if reason:
        raise UsageError(f"--mode: {reason}; engine {engine} honours: {', '.join(found.all_modes) or 'no modes'}")
    layers = presets_module.mode_layers(mode)
    result = {}
    for name in tasks:
        for chosen in ([variant] if variant else list(found.variants) or [None]):
            files = presets_module.preset_paths(found, name, layers, chosen, profile)
            key = f"{name} ({chosen})" if chosen else name
            result[key] = {"files": [str(f) for f in files],
                           "values": presets_module.merged(found, name, layers, chosen, profile),
                           "profiles": presets_module.profiles(found, name, chosen)}
    echo_json(result)


def _print_matrix(specs, task: str | None, as_json: bool) -> None:
    from ..matrix import matrix_table, mode_matrix, unsupported_reasons

    rows = [row for row in mode_matrix(specs) if task is None or row["task"] == task]
    if as_json:
        echo_json(rows)
        return
    header, table = matrix_table(rows)
    echo_table(table, header)
    reasons = unsupported_reasons(rows)
    if reasons:
        click.echo("")
        for engine, mode, reason in reasons:
            click.echo(f"{engine} {mode}: {reason}")


@click.group(cls=Group)
def docs():
    """Generate the checked-in reference docs (no torch needed)."""


@docs.command("param-matrix")
@handle_errors
def docs_param_matrix():
    """Print docs/param-matrix.md: fields, types, ranges, defaults and presets per engine and task.

    \b
    Example:
      codex docs param-matrix > docs/param-matrix.md
    """
    from ..matrix import param_matrix_markdown

    click.echo(param_matrix_markdown(), nl=False)


@docs.command("samplers")
@handle_errors
def docs_samplers():
    """Print docs/samplers.md: each engine's samplers and schedule types, and what every A1111/Forge name runs there.

    \b
    Example:
      codex docs samplers > docs/samplers.md
    """
    from ..sampler_docs import samplers_markdown

    click.echo(samplers_markdown(), nl=False)


@docs.command("engine-catalog")
@handle_errors
def docs_engine_catalog():
    """Print codex_core/engine_catalog.json: the project's engines and their packages (install hints).

    \b
    Example:
      codex docs engine-catalog > codex_core/engine_catalog.json
    """
    from ..matrix import engine_catalog_json

    click.echo(engine_catalog_json(), nl=False)
