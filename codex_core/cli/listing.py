"""What is installed and where: `codex engines`, `plugins`, `models` and `samplers`."""

from __future__ import annotations

import click

from .base import echo_json, echo_table, handle_errors


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@handle_errors
def engines(as_json: bool):
    """List installed engines with their tasks, modes and plugin package."""
    from ..registry import engines as installed

    found = installed()
    if as_json:
        echo_json([engine.describe() for engine in found.values()])
        return
    if not found:
        click.echo("no engines installed; install an engine plugin package (`codex plugins` shows what is loaded)")
        return
    rows = [[e.key, ", ".join(e.tasks), ", ".join(e.all_modes) or "-", f"{e.distribution} {e.version}"]
            for e in sorted(found.values(), key=lambda e: e.key)]
    echo_table(rows, ["engine", "tasks", "modes", "package"])


@click.command()
@click.option("--kind", type=click.Choice(["checkpoints", "diffusion_models", "loras", "vae", "embeddings", "controlnet",
                                           "annotators", "clip_vision", "ipadapter"]),
              multiple=True, help="Only these kinds (repeatable).")
@click.option("--engine", help="Only files this engine can use.")
@click.option("--no-hash", is_flag=True, help="Skip the sha256 (hashing a large file takes seconds, once; cached).")
@click.option("--roots", "show_roots", is_flag=True, help="Show the folders searched, and where each is configured.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@handle_errors
def models(kind, engine, no_hash, show_roots, as_json):
    """List the model files in the models folders: kind, name, family, engines, size and hash.

    The folders: $CODEX_MODELS_DIR (default ./models) with checkpoints/, diffusion_models/, loras/,
    vae/, embeddings/, controlnet/, annotators/, clip_vision/, ipadapter/, plus roots from the config file
    ($CODEX_CONFIG or ~/.config/codex/config.yaml), e.g. an A1111, Forge or ComfyUI install used in
    place. HASH is A1111's "Model hash" (sha256, first 10 hex digits). NAME is what --model, --component
    and a request's loras/vae/embeddings (and controls[].model) accept.

    \b
    Examples:
      codex models
      codex models --kind loras --engine ENGINE
      codex models --roots
    """
    from .. import model_files

    if engine:
        from ..registry import get_engine

        get_engine(engine)  # an unknown engine is an error, not an empty list
    if show_roots:
        rows = [[root.origin, root.layout, kind_name, str(folder), "yes" if folder.is_dir() else "missing"]
                for root in model_files.roots() for kind_name in model_files.KINDS for folder in root.folders(kind_name)]
        if as_json:
            echo_json([dict(zip(["origin", "layout", "kind", "folder", "exists"], row)) for row in rows])
        else:
            echo_table(rows, ["configured by", "layout", "kind", "folder", "exists"])
        return
    found = model_files.scan_folders(kind or model_files.KINDS)
    rows = model_files.describe(kind or model_files.KINDS, engine, hashes=not no_hash,
                                progress=lambda text: click.echo(f"codex: {text}", err=True), found=found)
    _warn_skipped(found, listed=engine is None)
    if as_json:
        echo_json(rows)
        return
    if not rows:
        where = ", ".join(str(folder) for folder in model_files.folders("checkpoints"))
        click.echo(f"no model files found (checkpoints are looked for in {where}; `codex models --roots` "
                   "shows every folder searched)")
        return
    table = [[r["kind"], r["name"] if r["name"] is not None else r["path"], r["family"] or "-",
              ", ".join(r["engines"]) or (r["problem"] or "-"), _size(r["bytes"]), r["hash"] or "-"] for r in rows]
    echo_table(table, ["kind", "name", "family", "engines", "size", "hash"])


def _warn_skipped(found, listed: bool) -> None:
    """One warning line for what the scan skipped (the rows say why, one each, when they are listed)."""
    if found.timed_out:
        folders = [str(skip.path) for skip in found.skipped if skip.out_of_time]
        click.echo(f"codex: warning: the scan stopped after its time budget of {found.seconds:g} s "
                   f"(CODEX_SCAN_SECONDS raises it); not scanned, or in part: {', '.join(folders)}", err=True)
    others = [skip for skip in found.skipped if not skip.out_of_time]
    if others:
        shown = "; ".join(f"{skip.path}: {skip.reason.removeprefix('skipped: ')}" for skip in others[:3])
        more = f"; and {len(others) - 3} more" if len(others) > 3 else ""
        where = "" if listed else " (`codex models` without --engine lists each)"
        click.echo(f"codex: warning: the scan skipped {len(others)}: {shown}{more}{where}", err=True)


def _size(count: int | None) -> str:
    if count is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return str(count)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@handle_errors
def plugins(as_json: bool):
    """List loaded plugins, the hooks they implement and any import errors."""
    from ..plugins import describe_plugins

    rows = describe_plugins()
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        if "error" in row:
            click.echo(f"{row['name']}  FAILED TO LOAD: {row['error']}")
        else:
            click.echo(f"{row['name']}  ({row['distribution']} {row['version']})  hooks: {', '.join(row['hooks'])}")



@click.command()
@click.argument("engine")
@click.option("--task", help="The task whose samplers to list (default: the engine's first; a task may take fewer).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@handle_errors
def samplers(engine: str, task: str | None, as_json: bool):
    """List the sampler and schedule-type names ENGINE accepts, what they map to, and what each A1111/Forge name
    runs there.

    \b
    "exact": the same sampler runs (a request takes the name as it is). "nearest": it runs only for a request
    with "sampler_fallback": "nearest" (the A1111 API's requests), which reports the difference in info.json's
    sampler_warning.
    """
    from .. import samplers as samplers_module
    from ..errors import UsageError
    from ..registry import get_engine, sampler_names_for, samplers_for

    found = get_engine(engine)
    if not found.sampler_family:
        click.echo(f"engine {engine} has no sampler choice")
        return
    task = task or next(iter(found.tasks))
    if task not in found.tasks:
        raise UsageError(f"--task: engine {engine!r} has no task {task!r}; its tasks: {', '.join(found.tasks)}")
    table = samplers_module.describe(found.sampler_family, *samplers_for(found, task), sampler_names_for(found),
                                     engine, task)
    if as_json:
        echo_json({"engine": engine, "task": task, **table})
        return
    rows = [[r["sampler"], r["class"] + (f" {r['flags']}" if r["flags"] else ""), ", ".join(r["schedule_types"])]
            for r in table["samplers"]]
    echo_table(rows, ["sampler", "diffusers scheduler", "schedule types (\"scheduler\" field)"])
    click.echo("")
    names = [[r["kind"], r["name"] + (f" ({', '.join(r['aliases'])})" if r["aliases"] else ""), r["runs"] or "-",
              "exact" if r["exact"] else "nearest"] for r in table["names"]]
    echo_table(names, ["A1111/Forge", "name (aliases)", f"runs on {engine} {task}", ""])
    notes = [r["note"] for r in table["names"] if not r["exact"]]
    if notes:
        click.echo("")
        click.echo("\n".join(notes))

