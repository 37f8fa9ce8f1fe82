"""The ``codex`` command line. Commands that need no model never import torch or diffusers."""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import click

from . import __version__
from .errors import CodexError, UsageError

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


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())


class _Group(click.Group):
    """Lists each command with its whole first sentence, wrapped, where click would cut it at the width."""

    group_class = type  # subgroups (`codex docs`) list their commands the same way

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, command.get_short_help_str(limit=1000)) for name in self.list_commands(ctx)
                if (command := self.get_command(ctx, name)) is not None and not command.hidden]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="codex")
def cli():
    """Run image and video diffusion models from the command line.

    Engines come from installed plugin packages; `codex engines` lists them. ENGINE below is one
    of those keys.

    \b
    Examples:
      codex engines                                    # what is installed
      codex presets ENGINE txt2img                     # the defaults a request starts from
      codex run ENGINE txt2img --model tiny --json '{"prompt": "a red fox"}'
      codex run ENGINE txt2img --model ./models/mine --json @request.json
      codex info artifacts/images/<run-id>/0000.png    # what made an image
    """


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@handle_errors
def engines(as_json: bool):
    """List installed engines with their tasks, modes and plugin package."""
    from .registry import engines as installed

    found = installed()
    if as_json:
        _echo_json([engine.describe() for engine in found.values()])
        return
    if not found:
        click.echo("no engines installed; install an engine plugin package (`codex plugins` shows what is loaded)")
        return
    rows = [[e.key, ", ".join(e.tasks), ", ".join(e.all_modes) or "-", f"{e.distribution} {e.version}"]
            for e in sorted(found.values(), key=lambda e: e.key)]
    _table(rows, ["engine", "tasks", "modes", "package"])


@cli.command()
@click.option("--kind", type=click.Choice(["checkpoints", "diffusion_models", "loras", "vae", "embeddings"]),
              multiple=True, help="Only these kinds (repeatable).")
@click.option("--engine", help="Only files this engine can use.")
@click.option("--no-hash", is_flag=True, help="Skip the sha256 (hashing a large file takes seconds, once; cached).")
@click.option("--roots", "show_roots", is_flag=True, help="Show the folders searched, and where each is configured.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@handle_errors
def models(kind, engine, no_hash, show_roots, as_json):
    """List the model files in the models folders: kind, name, family, engines, size and hash.

    The folders: $CODEX_MODELS_DIR (default ./models) with checkpoints/, diffusion_models/, loras/,
    vae/, embeddings/, plus roots from the config file ($CODEX_CONFIG or ~/.config/codex/config.yaml),
    e.g. an A1111, Forge or ComfyUI install used in place. HASH is A1111's "Model hash" (sha256, first
    10 hex digits). NAME is what --model, --component and a request's loras/vae/embeddings accept.

    \b
    Examples:
      codex models
      codex models --kind loras --engine ENGINE
      codex models --roots
    """
    from . import model_files

    if engine:
        from .registry import get_engine

        get_engine(engine)  # an unknown engine is an error, not an empty list
    if show_roots:
        rows = [[root.origin, root.layout, kind_name, str(folder), "yes" if folder.is_dir() else "missing"]
                for root in model_files.roots() for kind_name in model_files.KINDS for folder in root.folders(kind_name)]
        if as_json:
            _echo_json([dict(zip(["origin", "layout", "kind", "folder", "exists"], row)) for row in rows])
        else:
            _table(rows, ["configured by", "layout", "kind", "folder", "exists"])
        return
    rows = model_files.describe(kind or model_files.KINDS, engine, hashes=not no_hash,
                                progress=lambda text: click.echo(f"codex: {text}", err=True))
    if as_json:
        _echo_json(rows)
        return
    if not rows:
        where = ", ".join(str(folder) for folder in model_files.folders("checkpoints"))
        click.echo(f"no model files found (checkpoints are looked for in {where}; `codex models --roots` "
                   "shows every folder searched)")
        return
    table = [[r["kind"], r["name"], r["family"] or "-", ", ".join(r["engines"]) or (r["problem"] or "-"),
              _size(r["bytes"]), r["hash"] or "-"] for r in rows]
    _table(table, ["kind", "name", "family", "engines", "size", "hash"])


def _size(count: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return str(count)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@handle_errors
def plugins(as_json: bool):
    """List loaded plugins, the hooks they implement and any import errors."""
    from .plugins import describe_plugins

    rows = describe_plugins()
    if as_json:
        _echo_json(rows)
        return
    for row in rows:
        if "error" in row:
            click.echo(f"{row['name']}  FAILED TO LOAD: {row['error']}")
        else:
            click.echo(f"{row['name']}  ({row['distribution']} {row['version']})  hooks: {', '.join(row['hooks'])}")


@cli.command()
@click.argument("engine")
@click.argument("task")
@handle_errors
def schema(engine: str, task: str):
    """Print the JSON Schema of a request for ENGINE and TASK.

    Fields a preset fills are shown with the preset value as their default.

    \b
    Example:
      codex schema ENGINE img2img
    """
    from .schema import request_schema

    _echo_json(request_schema(engine, task))


@cli.command()
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
    from . import presets as presets_module
    from .registry import engines as installed, get_engine

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
    if variant and variant not in found.variants:
        raise UsageError(f"--variant: {engine} has no variant {variant!r}; "
                         f"its variants: {', '.join(found.variants) or 'none'}")
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
    _echo_json(result)


def _print_matrix(specs, task: str | None, as_json: bool) -> None:
    from .matrix import matrix_table, mode_matrix, unsupported_reasons

    rows = [row for row in mode_matrix(specs) if task is None or row["task"] == task]
    if as_json:
        _echo_json(rows)
        return
    header, table = matrix_table(rows)
    _table(table, header)
    reasons = unsupported_reasons(rows)
    if reasons:
        click.echo("")
        for engine, mode, reason in reasons:
            click.echo(f"{engine} {mode}: {reason}")


@cli.group()
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
    from .matrix import param_matrix_markdown

    click.echo(param_matrix_markdown(), nl=False)


@docs.command("engine-catalog")
@handle_errors
def docs_engine_catalog():
    """Print codex_core/engine_catalog.json: the project's engines and their packages (install hints).

    \b
    Example:
      codex docs engine-catalog > codex_core/engine_catalog.json
    """
    from .matrix import engine_catalog_json

    click.echo(engine_catalog_json(), nl=False)


@cli.command()
@click.argument("engine")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@handle_errors
def samplers(engine: str, as_json: bool):
    """List the sampler and schedule-type names ENGINE accepts, and what they map to."""
    from . import samplers as samplers_module
    from .registry import get_engine, samplers_for

    found = get_engine(engine)
    if not found.sampler_family:
        click.echo(f"engine {engine} has no sampler choice")
        return
    table = samplers_module.describe(found.sampler_family, *samplers_for(found))
    if as_json:
        _echo_json(table)
        return
    rows = [[r["sampler"], r["class"] + (f" {r['flags']}" if r["flags"] else ""), ", ".join(r["schedule_types"])]
            for r in table["samplers"]]
    _table(rows, ["sampler", "diffusers scheduler", "schedule types (\"scheduler\" field)"])


# How a model is placed and run (codex_core.runtime.Runtime): shared by run, batch and grid.
RUNTIME_OPTIONS = {
    "device": click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps."),
    "dtype": click.option("--dtype", default="auto", show_default=True, help="auto, fp32, fp16 or bf16."),
    "offload": click.option("--offload", default="none", show_default=True,
                 help="Weights off the GPU between uses: none, model (per component), group (per block, prefetched), "
                      "sequential (per layer) or auto (the fastest that fits the GPU's free memory, from the "
                      "model's sizes before loading; info.memory_plan says why)."),
    "vae": click.option("--vae-decode", "vae", default="full", show_default=True,
                 help="full, tiled (large images/videos with less memory), sliced (a batch one at a time), "
                      "tiled+sliced or auto (tiled+sliced when the memory plan is tight)."),
    "vae_tiling": click.option("--vae-tiling", is_flag=True, help="Same as --vae-decode tiled."),
    "weights": click.option("--weights", default="auto", show_default=True,
                 help="The denoiser's weight storage: auto (the dtype), fp8 or fp8_e5m2 (float8, each layer cast up "
                      "to the dtype as it runs: about half the memory of bf16 weights), int8 (torchao weight-only; "
                      "pip install 'codex-diffusers[int8]')."),
    "compile_mode": click.option("--compile", "compile_mode", default="off", show_default=True,
                 help="torch.compile the denoiser: off, regional (its repeated blocks: diffusers' "
                      "compile_repeated_blocks; the first run compiles) or full."),
    "compile_backend": click.option("--compile-backend", default="inductor", show_default=True,
                 help="torch.compile backend for --compile (inductor; eager or aot_eager to debug)."),
    "attention": click.option("--attention", default="default", show_default=True,
                 help="Attention backend of the denoiser (diffusers set_attention_backend): default, native, "
                      "_native_math, _native_efficient, _native_flash, _native_cudnn, flex, flash, sage, xformers, ..."),
    "allow_pickle": click.option("--allow-pickle", is_flag=True, help="Allow pickle-based weights (.bin/.ckpt). Only for files you trust."),
}


def runtime_options(command, leave_out: tuple[str, ...] = ()):
    for name, option in reversed(RUNTIME_OPTIONS.items()):
        if name not in leave_out:
            command = option(command)
    return command


def runtime_from(device="auto", dtype="auto", offload="none", vae="full", vae_tiling=False, weights="auto",
                 compile_mode="off", compile_backend="inductor", attention="default", allow_pickle=False):
    """The Runtime of the RUNTIME_OPTIONS as given (checked: a bad value is a UsageError naming its option)."""
    from .runtime import Runtime

    if vae_tiling and vae not in ("full", "tiled"):
        raise UsageError(f"--vae-tiling with --vae-decode {vae}: give one of them")
    return Runtime(device=device, dtype=dtype, offload=offload, vae="tiled" if vae_tiling else vae,
                   allow_pickle=allow_pickle, weights=weights, compile=compile_mode, compile_backend=compile_backend,
                   attention=attention).check()


def runtime_argv(runtime) -> list[str]:
    """The options that give ``runtime`` again (for the ranks `--processes` starts)."""
    argv = ["--device", runtime.device, "--dtype", runtime.dtype, "--offload", runtime.offload, "--vae-decode",
            runtime.vae, "--weights", runtime.weights, "--compile", runtime.compile, "--compile-backend",
            runtime.compile_backend, "--attention", runtime.attention]
    return argv + (["--allow-pickle"] if runtime.allow_pickle else [])


@cli.command(context_settings={"max_content_width": 100})
@click.argument("engine")
@click.argument("task")
@click.option("--json", "request", default="{}", metavar="JSON|@FILE|-",
              help="The request: inline JSON, @path to a JSON file, or - for stdin.")
@click.option("--model", help="Model: a diffusers folder, a single-file checkpoint (.safetensors/.gguf), a name "
                                "from `codex models`, a hub repo id (local cache only), or 'tiny'.")
@click.option("--config", "config", metavar="DIR",
              help="For a single-file checkpoint: a diffusers folder with its configs and tokenizers "
                   "[default: the ones the engine ships].")
@click.option("--component", "components", multiple=True, metavar="NAME=FILE",
              help="Load one component from its own file (a name from `codex models` or a path), e.g. "
                   "transformer=wan22-5b-Q8_0.gguf; repeatable. `codex engines --json` lists each engine's.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Output root [default: ./artifacts/images or ./artifacts/videos].")
@click.option("--format", "formats", help="Output formats, comma separated [default: png for images].")
@runtime_options
@click.option("--download", is_flag=True, help="Allow fetching a hub repo id that is not in the local cache.")
@click.option("--quiet", "-q", is_flag=True, help="No progress or log lines on stderr.")
@click.option("--preset", help="A named preset profile (presets/<engine>/<task>@NAME.yaml), e.g. a lighter size.")
@click.option("--server", metavar="URL", help="Run on a `codex serve` at URL instead of here (e.g. "
                                              "http://127.0.0.1:7861); with --out the outputs are downloaded.")
@click.option("--token", envvar="CODEX_SERVE_TOKEN", help="With --server: its bearer token (or CODEX_SERVE_TOKEN).")
@handle_errors
def run(engine, task, request, model, config, components, out, formats, download, quiet, preset, server, token,
        **runtime_given):
    """Validate a request, run ENGINE on TASK, write outputs and print the result as JSON.

    Missing fields are filled from the engine's presets (`codex presets ENGINE TASK`); the result's
    info.applied_preset_patch lists exactly what was filled.

    \b
    Examples (ENGINE: a key from `codex engines`):
      codex run ENGINE txt2img --model tiny --json '{"prompt": "a red fox", "seed": 1}'
      codex run ENGINE img2img --model ./models/mine --json '{"prompt": "winter", "init_image": "in.png"}'
      codex run ENGINE txt2img --json @request.json --out ./renders
      echo '{"prompt": "a cat"}' | codex run ENGINE txt2img --json -

    \b
    Models: --model FOLDER | FILE.safetensors | NAME | ORG/NAME | tiny; without it CODEX_MODEL_<ENGINE>,
    then ./models/<engine>/ (CODEX_MODELS_DIR), then the engine's default repo id in the local Hugging
    Face cache. NAME: a checkpoint in the models folders (`codex models`), e.g. an A1111 install's.
    Exit codes: 0 ok, 2 invalid request or model not found (nothing written), 1 failure, 130 interrupted.
    """
    from .orchestrator import RunOptions, execute, prepare

    format_list = tuple(f.strip() for f in formats.split(",") if f.strip()) if formats else None
    if server:
        from .requests import read_request
        from .serve.client import run_remote

        given = {**runtime_given, "config": config, "components": components, "download": download}
        local_only = [param.opts[0] for param in click.get_current_context().command.params
                      if param.name in given and given[param.name] not in (param.default, (), None, False)]
        if local_only:
            raise UsageError(f"{', '.join(local_only)}: not with --server (the service decides how it runs models)")
        spec = {"engine": engine, "task": task, "request": read_request(request), "model": model,
                "formats": list(format_list) if format_list else None, "preset": preset}
        _echo_json(run_remote(server, token, spec, out, quiet))
        return
    options = RunOptions(model=model, out=out, runtime=runtime_from(**runtime_given), download=download,
                         formats=format_list, quiet=quiet, preset=preset, config=config, components=tuple(components))
    from .requests import read_request

    result = execute(prepare(engine, task, read_request(request), options), options)
    if not quiet:
        click.echo(f"codex: wrote {result.run_dir}", err=True)
    _echo_json(result.as_json())


@cli.command()
@click.argument("file", type=click.Path(exists=True, path_type=Path))
@click.option("--parameters", is_flag=True, help="Print only the A1111-style parameters text.")
@handle_errors
def info(file: Path, parameters: bool):
    """Print the parameters embedded in an output (a PNG, an MP4/WebM, an info.json or a run folder).

    A damaged record (corrupt, truncated or misshapen JSON) exits 2 saying what is wrong, after
    printing whatever else the file holds that could be read.
    """
    from .inspect_outputs import inspect

    result = inspect(file)
    if parameters:
        if "parameters" not in result.data:
            raise UsageError("; ".join(result.problems) or f"{file}: has no A1111 'parameters' text")
        click.echo(result.data["parameters"])
    elif result.data:
        _echo_json(result.data)  # what could be read is shown even when another part is damaged
    if result.problems:
        raise UsageError("; ".join(result.problems))


@cli.command(context_settings={"max_content_width": 100})
@click.argument("file", type=click.Path(exists=True, path_type=Path))
@click.option("--check", is_flag=True, help="Compare the new output with the original, pixel by pixel.")
@click.option("--model", help="Use this model instead of the recorded one (a folder, a hub repo id or 'tiny').")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Output root [default: ./artifacts/images or ./artifacts/videos].")
@click.option("--device", help="Device instead of the recorded one: auto, cpu, cuda, cuda:N or mps.")
@click.option("--dtype", help="Dtype instead of the recorded one: auto, fp32, fp16 or bf16.")
@click.option("--download", is_flag=True, help="Allow fetching a hub repo id that is not in the local cache.")
@click.option("--allow-pickle", is_flag=True, help="Allow pickle-based weights (.bin/.ckpt). Only for files you trust.")
@click.option("--quiet", "-q", is_flag=True, help="No progress or log lines on stderr.")
@handle_errors
def replay(file, check, model, out, device, dtype, download, allow_pickle, quiet):
    """Run the request recorded in FILE again and write a new run, like `codex run`.

    FILE is a PNG, an MP4/WebM, an info.json or a run folder. The same engine, task, effective
    request (seed included), model, device, dtype, preset profile and output formats are used
    unless an option overrides them; a warning says when the model's fingerprint differs from the
    recorded one. Input files (init images, LoRAs) are read where the original run found them,
    whatever the current folder; a warning names any whose content changed (sha256) or that is
    gone. The new info.json names the original in `replay_of`.

    \b
    With --check the new output is compared with the original (each image; for videos the frames/
    PNGs, or the decoded MP4/WebM frames) and the JSON gets
    "check": {"identical": ..., "max_pixel_difference": ..., "compared": N}, and
    "changed_inputs" when an input is not what the original run read.
    Exit codes: 0 ok (with --check: identical), 1 failure or (with --check) different,
    2 unusable FILE or request, 130 interrupted.

    \b
    Examples:
      codex replay artifacts/images/<run-id>/0000.png --check
      codex replay artifacts/videos/<run-id> --device cuda --dtype bf16
    """
    from . import replay as replay_module
    from .orchestrator import RunOptions, execute, prepare

    old = replay_module.load(file)
    info = old.info
    runtime = replay_module.runtime_of(info, device, dtype, allow_pickle)
    located = replay_module.model_files_of(info, replay_module.request_with_inputs(info))
    for line in located.moved:
        click.echo(f"codex: {line}", err=True)
    for line in located.missing:
        click.echo(f"codex: warning: {line}", err=True)
    options = RunOptions(model=model or located.model or replay_module.model_argument(info), out=out,
                         runtime=runtime, download=download, formats=replay_module.formats_of(info), quiet=quiet,
                         preset=info.get("preset_profile"), config=None if model else located.config,
                         components=located.components,
                         replay_of={"run_id": info.get("run_id"), "path": str(file),
                                    "model_fingerprint": (info.get("model") or {}).get("fingerprint")})
    changed = replay_module.changed_inputs(info)
    for entry in changed:
        state = "is gone" if entry["reason"] == "gone" else "has changed (sha256)"
        click.echo(f"codex: warning: input {entry['field']} ({entry['path']}) {state} since run "
                   f"{info.get('run_id')}; the output may differ", err=True)
    prepared = prepare(info["engine"], info["task"], located.request, options)
    result = execute(prepared, options)
    if not quiet:
        click.echo(f"codex: wrote {result.run_dir} (replay of {info.get('run_id') or file})", err=True)
    data = result.as_json()
    if check:
        outcome = replay_module.compare(old, result.run_dir, prepared.engine.output_kind(prepared.task))
        if changed:
            outcome["changed_inputs"] = changed
        click.echo(replay_module.check_line(outcome), err=True)
        data["check"] = outcome
        _echo_json(data)
        if not outcome["identical"]:
            sys.exit(1)
        return
    _echo_json(data)


BATCH_OPTIONS = [
    click.option("--out", type=click.Path(file_okay=False, path_type=Path),
                 help="The batch folder: one run folder per item (<out>/<id>/) and batch.json "
                      "[default: ./artifacts/batches/<FILE name> or ./artifacts/grids/<grid id>]."),
    click.option("--resume", is_flag=True, help="Finish a batch in --out: skip the items whose run folder is complete."),
    click.option("--strict", is_flag=True, help="Refuse the whole batch when any item is invalid (default: run the "
                                                "valid ones and list the others in batch.json)."),
    click.option("--processes", default=1, show_default=True, type=click.IntRange(1, 4096),
                 help="Split the items across N processes (torchrun on this command; one GPU each when there are "
                      "GPUs, else N CPU processes)."),
    # the runtime options as `codex run` takes them (under several processes, --device auto and cuda mean
    # cuda:LOCAL_RANK)
    *RUNTIME_OPTIONS.values(),
    click.option("--download", is_flag=True, help="Allow fetching a hub repo id that is not in the local cache."),
    click.option("--quiet", "-q", is_flag=True, help="No progress or log lines on stderr."),
]


def batch_options(command):
    """The options `codex batch` and `codex grid` share."""
    for option in reversed(BATCH_OPTIONS):
        command = option(command)
    return command


def _run_batch(found, out: Path, argv: list[str], resume, strict, processes, download, quiet, source: str,
               **runtime_given) -> None:
    """Validate, then run the batch here or as --processes ranks; prints the summary and exits with its status."""
    from . import batch as batch_module

    runtime = runtime_from(**runtime_given)
    options = batch_module.BatchOptions(out=out, runtime=runtime, download=download, quiet=quiet, strict=strict,
                                        resume=resume, source=source)
    worker = bool(os.environ.get(batch_module.WORKER_ENV))
    if processes > 1:  # check everything here first: a usage error is one message, not one per rank
        batch_module.validate(found, options)
        batch_module.check_invalid(found, options)
        batch_module.to_run(found, options)
        flags = {"--resume": resume, "--strict": strict, "--download": download, "--quiet": quiet}
        argv += [flag for flag, given in flags.items() if given]
        argv += ["--out", str(out), *runtime_argv(runtime)]
        status = batch_module.launch(processes, argv)
        path = out / batch_module.SUMMARY
        if not path.is_file():
            sys.exit(status or 1)
        summary = json.loads(path.read_text(encoding="utf-8"))
    else:
        summary = batch_module.run_batch(found, options)
        if os.environ.get("RANK", "0") != "0" or worker:
            return  # rank 0 reports for all ranks; under --processes, the launcher does
    if not quiet:
        click.echo(batch_module.summary_line(summary), err=True)
    _echo_json(summary)
    status = batch_module.exit_status(summary)
    if status:
        sys.exit(status)


@cli.command(context_settings={"max_content_width": 100})
@click.argument("file", type=click.Path(path_type=Path))
@batch_options
@handle_errors
def batch(file, out, **options):
    """Run every request of FILE, each model loaded once; resumable, and across processes with --processes.

    FILE is JSON Lines (.jsonl: one {"engine", "task", "request", "model"?, "formats"?, "preset"?, "id"?}
    a line, what `codex run` takes) or YAML (.yaml: a list of such items, and/or items: and grid:).
    Every item is validated first; an invalid one is reported by its line (--strict: nothing runs).
    Items run grouped by model; each writes <out>/<id>/ as `codex run` would, and <out>/batch.json
    (id, status, run folder or error, timings per item) is rewritten after every item. An item
    without an id gets the first 12 hex digits of the sha256 of its JSON. After Ctrl-C, a kill or a
    crash, --resume runs only the items without a complete run folder.

    \b
    Examples:
      codex batch prompts.jsonl --out ./renders/night
      codex batch prompts.jsonl --out ./renders/night --resume
      codex batch sweep.yaml --strict
      codex batch prompts.jsonl --processes 4              # 4 ranks (torchrun), one GPU each
      torchrun --nproc_per_node 8 -m codex_core.cli batch prompts.jsonl --out /shared/run1

    \b
    A line of prompts.jsonl:
      {"id": "fox-1", "engine": "ENGINE", "task": "txt2img", "model": "tiny", "request": {"prompt": "a fox", "seed": 1}}
    Exit codes: 0 every item done, 1 an item failed or was invalid (the others ran), 2 unusable FILE,
    options or (--strict) an invalid item: nothing run, 130 interrupted (--resume finishes it).
    """
    from . import batch as batch_module

    found = batch_module.read_batch_file(file)
    out = out or Path("artifacts/batches") / Path(file).stem
    _run_batch(found, out, ["batch", str(file)], source=str(file), **options)


@cli.command(context_settings={"max_content_width": 100})
@click.argument("engine")
@click.argument("task")
@click.option("--json", "request", default="{}", metavar="JSON|@FILE|-",
              help="The request every cell starts from: inline JSON, @path to a JSON file, or - for stdin.")
@click.option("--x", "x_axis", required=True, metavar="FIELD=V1,V2,...", help="Across: a request field and its values, "
              "or prompt_sr=SEARCH,REPLACE1,... (A1111's Prompt S/R); a JSON list after = keeps commas in values.")
@click.option("--y", "y_axis", metavar="FIELD=V1,V2,...", help="Down: as --x.")
@click.option("--z", "z_axis", metavar="FIELD=V1,V2,...", help="One grid per value, side by side: as --x.")
@click.option("--id", "grid_id", help="The grid's id (names its image and its cells' run folders) [default: a hash].")
@click.option("--model", help="Model, as `codex run --model` takes it.")
@click.option("--format", "formats", help="Output formats of the cells, comma separated [default: png].")
@click.option("--preset", help="A named preset profile, as `codex run --preset` takes it.")
@batch_options
@handle_errors
def grid(engine, task, request, x_axis, y_axis, z_axis, grid_id, model, formats, preset, out, **options):
    """Sweep a request over up to three axes (an X/Y/Z plot) and write a labelled grid image or video.

    Each cell is one run (its own run folder, as `codex run` writes it); <out>/grids/<id>.png puts
    the cells' first images in a grid, x across, y down, z side by side, the values on the margins
    and the axes in its PNG text chunk "codex_grid". For a video task, <out>/grids/<id>.mp4 plays
    the cells side by side in the same grid (the axes in its comment tag). Every cell is validated
    first: any invalid cell refuses the grid (exit 2). Resumable and splittable like `codex batch`.

    \b
    Examples:
      codex grid ENGINE txt2img --model tiny --json '{"prompt": "a red fox"}' --x seed=1,2,3 --y cfg=5,7
      codex grid ENGINE txt2img --json @fox.json --x 'sampler=Euler a,DPM++ 2M' --y steps=10,20,30
      codex grid ENGINE txt2img --json '{"prompt": "a red fox"}' --x prompt_sr=red,blue,green --z seed=1,2
      codex grid ENGINE txt2vid --json '{"prompt": "a fox running"}' --x seed=1,2 --format frames
    """
    from . import grid as grid_module
    from .batch import BatchFile
    from .requests import read_request

    data = read_request(request)
    if not isinstance(data, dict):
        raise UsageError(f"--json: the request must be a JSON object of field: value, got {type(data).__name__}")
    axes = [grid_module.parse_axis_option(name, text) for name, text in (("x", x_axis), ("y", y_axis), ("z", z_axis))
            if text]
    if z_axis and not y_axis:
        raise UsageError("--z: needs --y (x across, y down, z side by side)")
    spec = {"engine": engine, "task": task, "request": data}
    spec.update({k: v for k, v in (("model", model), ("preset", preset)) if v})
    if formats:
        spec["formats"] = [f.strip() for f in formats.split(",") if f.strip()]
    found = grid_module.make_grid(spec, axes, 1, grid_id, "grid")
    out = out or Path("artifacts/grids") / found.id
    argv = ["grid", engine, task, "--json", json.dumps(data), "--id", found.id]
    for name, text in (("--x", x_axis), ("--y", y_axis), ("--z", z_axis), ("--model", model),
                       ("--format", formats), ("--preset", preset)):
        if text:
            argv += [name, text]
    options["strict"] = True  # a grid with holes is no comparison: any invalid cell refuses the grid
    _run_batch(BatchFile(found.items(), [], [found]), out, argv, source=f"codex grid {engine} {task}", **options)


LOOPBACK = ("127.0.0.1", "localhost", "::1")


SERVE_OPTIONS = [
    click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; any but loopback needs --token."),
    click.option("--port", default=7861, show_default=True, type=int, help="Port to listen on."),
    click.option("--token", envvar="CODEX_SERVE_TOKEN", help="Bearer token every route but /v1/health requires "
                                                             "(or CODEX_SERVE_TOKEN)."),
    click.option("--insecure", is_flag=True, help="Allow a non-loopback bind without --token (anyone on the network "
                                                  "can run jobs)."),
    click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("codex-serve"),
                 show_default=True, help="The job database, inputs and outputs."),
    click.option("--input-root", "input_roots", multiple=True, type=click.Path(file_okay=False, path_type=Path),
                 help="A folder requests may name files in (repeatable); the models roots are always readable."),
    click.option("--max-body-bytes", default=64 * 1024 * 1024, show_default=True, type=int),
    click.option("--max-image-pixels", default=16384 * 16384, show_default=True, type=int),
    click.option("--max-batch-size", default=8, show_default=True, type=int),
    click.option("--max-queue", default=100, show_default=True, type=int, help="Queued jobs before 429."),
    click.option("--devices", default="auto", show_default=True,
                 help="One worker per device, comma separated (e.g. cuda:0,cuda:1); auto: the best device."),
]


def serve_options(command):
    """The options of `codex serve`, for every command that runs the service (`codex ui` too): its own, then
    how its workers run models (`codex run`'s runtime options but --device, which --devices gives, and
    --allow-pickle: a served request never loads pickle weights)."""
    command = runtime_options(command, leave_out=("device", "allow_pickle"))
    for option in reversed(SERVE_OPTIONS):
        command = option(command)
    return command


def check_bind(host: str, token: str | None, insecure: bool) -> None:
    """A non-loopback bind needs a token, or --insecure (with a warning)."""
    if host not in LOOPBACK and not token:
        if not insecure:
            raise UsageError(f"--host {host}: binding a non-loopback address needs --token (or CODEX_SERVE_TOKEN)",
                             hint="pass --token SECRET, or --insecure to let anyone on the network run jobs")
        click.echo(f"codex: WARNING: serving on {host} WITHOUT A TOKEN (--insecure): anyone who can reach "
                   "this port can run jobs and read their outputs", err=True)


def build_service(host, port, token, insecure, state_dir, input_roots, max_body_bytes, max_image_pixels,
                  max_batch_size, max_queue, devices, **runtime_given):
    """The service app from `codex serve`'s options, checked (UsageError names the option)."""
    try:
        import uvicorn  # noqa: F401  (checked here: the service cannot run without it)

        from .serve.app import Settings, create_app
    except ImportError as exc:
        raise UsageError(f"codex serve needs the service packages ({exc.name} is missing)",
                         hint="pip install 'codex-core[serve]'") from None
    check_bind(host, token, insecure)
    from dataclasses import replace

    runtime = runtime_from(**runtime_given)  # the workers', each on its own device
    device_list = [device.strip() for device in devices.split(",") if device.strip()]
    for device in device_list:
        replace(runtime, device=device).check()
    if len(set(device_list)) != len(device_list) or not device_list:
        raise UsageError(f"--devices: {devices!r}: give each device once (workers on one device would share, and "
                         "race on, its loaded models)")
    settings = Settings(state_dir.resolve(), token, [Path(root).expanduser() for root in input_roots],
                        max_body_bytes, max_image_pixels, max_batch_size, max_queue, device_list, runtime)
    app = create_app(settings)
    for entry in app.state.recovered:
        click.echo(f"codex: job {entry['id']} was running when the service stopped: {entry['action']}", err=True)
    return app


@cli.command(context_settings={"max_content_width": 100})
@serve_options
@handle_errors
def serve(host, port, **options):
    """Run the service: a durable job queue and the /v1 HTTP API (OpenAPI at /docs).

    Models stay loaded between jobs. A job accepted with 202 is never lost: after a crash or kill
    and a restart, queued jobs run, and a job that was running is run once more (info.attempt 2).
    With codex-ui installed, `codex ui` runs the same service with the web UI on it.

    \b
    Examples:
      codex serve
      codex serve --port 8000 --state-dir /srv/codex --input-root ~/pictures
      CODEX_SERVE_TOKEN=secret codex serve --host 0.0.0.0
    """
    import uvicorn

    app = build_service(host, port, **options)
    click.echo(f"codex: serving on http://{host}:{port} (state {app.state.settings.state_dir}; API docs at /docs)",
               err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt  # unwind through the same cleanup as Ctrl-C


def main(argv: list[str] | None = None) -> None:
    from .registry import register_commands

    signal.signal(signal.SIGTERM, _on_sigterm)
    register_commands(cli)
    try:
        cli.main(args=argv, prog_name="codex")
    except SystemExit as exc:
        _exit_without_teardown(exc.code)
        raise


def _exit_without_teardown(code) -> None:
    """End a process that loaded torch at once: the exit handlers run and the streams are flushed, then
    ``os._exit`` skips the interpreter's teardown of torch, diffusers and transformers, which takes ~1.5 s
    (a fifth of a cold tiny `codex run`) and does nothing for a process that is ending. Everything codex
    writes is closed and renamed into place before this. CODEX_FULL_EXIT=1 keeps the normal exit."""
    if "torch" not in sys.modules or os.environ.get("CODEX_FULL_EXIT"):
        return
    import atexit

    if code is not None and not isinstance(code, int):  # SystemExit("message"): what Python would print
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (codex run ... | head): nothing more to say
            pass
    os._exit(code or 0)


if __name__ == "__main__":
    main()
