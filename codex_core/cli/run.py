"""Running models here: `codex run`, `codex replay`, and `codex info` on what they wrote."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import UsageError
from .base import echo_json, handle_errors
from .options import ReplayCommand, RunCommand, changed_options, option_values, runtime_from


@click.command(cls=RunCommand, context_settings={"max_content_width": 100})
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
                   "transformer=model-Q8_0.gguf; repeatable. `codex engines --json` lists each engine's.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Output root [default: ./artifacts/images or ./artifacts/videos].")
@click.option("--format", "formats", help="Output formats, comma separated [default: png for images].")
@click.option("--download", is_flag=True, help="Allow fetching a hub repo id that is not in the local cache.")
@click.option("--quiet", "-q", is_flag=True, help="No progress or log lines on stderr.")
@click.option("--preset", help="A named preset profile (presets/<engine>/<task>@NAME.yaml), e.g. a lighter size.")
@click.option("--processes", default=1, show_default=True, type=click.IntRange(1, 4096),
              help="With --parallel: start this many ranks (torchrun on this command, one GPU each) that run the "
                   "job together; rank 0 writes. It must be the layout's size (ulysses x ring).")
@click.option("--server", metavar="URL", help="Run on a `codex serve` at URL instead of here (e.g. "
                                              "http://127.0.0.1:7861); with --out the outputs are downloaded.")
@click.option("--token", envvar="CODEX_SERVE_TOKEN", help="With --server: its bearer token (or CODEX_SERVE_TOKEN).")
@handle_errors
def run(engine, task, request, model, config, components, out, formats, download, quiet, preset, processes, server,
        token, **runtime_given):
    """Validate a request, run ENGINE on TASK, write outputs and print the result as JSON.

    Missing fields are filled from the engine's presets (`codex presets ENGINE TASK`); the result's
    info.applied_preset_patch lists exactly what was filled.

    \b
    Examples (ENGINE: a key from `codex engines`):
      codex run ENGINE txt2img --model tiny --json '{"prompt": "a red fox", "seed": 1}'
      codex run ENGINE img2img --model ./models/mine --json '{"prompt": "winter", "init_image": "in.png"}'
      codex run ENGINE txt2img --json @request.json --out ./renders
      echo '{"prompt": "a cat"}' | codex run ENGINE txt2img --json -
      codex run ENGINE txt2vid --parallel ulysses=2 --processes 2 --json @request.json   # one job, 2 GPUs

    \b
    Models: --model FOLDER | FILE.safetensors | NAME | ORG/NAME | tiny; without it CODEX_MODEL_<ENGINE>,
    then ./models/<engine>/ (CODEX_MODELS_DIR), then the engine's default repo id in the local Hugging
    Face cache. NAME: a checkpoint in the models folders (`codex models`), e.g. an A1111 install's.
    Exit codes: 0 ok, 2 invalid request or model not found (nothing written), 1 failure, 130 interrupted.
    """
    from ..orchestrator import RunOptions, execute, prepare

    format_list = tuple(f.strip() for f in formats.split(",") if f.strip()) if formats else None
    if server:
        from ..requests import read_request
        from ..serve.client import run_remote

        local_only = ([flag for flag, value in (("--config", config), ("--component", components)) if value]
                      + changed_options(runtime_given) + (["--download"] if download else []))
        local_only += ["--processes"] if processes > 1 else []
        if local_only:
            raise UsageError(f"{', '.join(local_only)}: not with --server (the service decides how it runs models)")
        spec = {"engine": engine, "task": task, "request": read_request(request), "model": model,
                "formats": list(format_list) if format_list else None, "preset": preset}
        echo_json(run_remote(server, token, spec, out, quiet))
        return
    from ..parallel import rank, world_size
    from .ranks import check_ranks

    runtime = runtime_from(runtime_given)
    check_ranks(runtime, processes)
    launching = processes if processes > 1 else None
    if world_size(runtime) > 1 and rank() != 0:
        quiet = True  # rank 0 reports for the ranks
    options = RunOptions(model=model, out=out, runtime=runtime, download=download,
                         formats=format_list, quiet=quiet, preset=preset, config=config, components=tuple(components))
    from ..requests import read_request

    request_data = read_request(request)
    if launching:
        from .ranks import run_as_ranks

        sys.exit(run_as_ranks(engine, task, request_data, options, processes))
    result = execute(prepare(engine, task, request_data, options), options)
    if not result.written:
        return  # a rank after the first of a --parallel run: it computed with rank 0, which writes and reports
    if not quiet:
        click.echo(f"codex: wrote {result.run_dir}", err=True)
    echo_json(result.as_json())


@click.command()
@click.argument("file", type=click.Path(exists=True, path_type=Path))
@click.option("--parameters", is_flag=True, help="Print only the A1111-style parameters text.")
@handle_errors
def info(file: Path, parameters: bool):
    """Print the parameters embedded in an output (a PNG, an MP4/WebM, an info.json or a run folder).

    A damaged record (corrupt, truncated or misshapen JSON) exits 2 saying what is wrong, after
    printing whatever else the file holds that could be read.
    """
    from ..inspect_outputs import inspect

    result = inspect(file)
    if parameters:
        if "parameters" not in result.data:
            raise UsageError("; ".join(result.problems) or f"{file}: has no A1111 'parameters' text")
        click.echo(result.data["parameters"])
    elif result.data:
        echo_json(result.data)  # what could be read is shown even when another part is damaged
    if result.problems:
        raise UsageError("; ".join(result.problems))


@click.command(cls=ReplayCommand, context_settings={"max_content_width": 100})
@click.argument("file", type=click.Path(exists=True, path_type=Path))
@click.option("--check", is_flag=True, help="Compare the new output with the original, pixel by pixel.")
@click.option("--model", help="Use this model instead of the recorded one (a folder, a hub repo id or 'tiny').")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Output root [default: ./artifacts/images or ./artifacts/videos].")
@click.option("--download", is_flag=True, help="Allow fetching a hub repo id that is not in the local cache.")
@click.option("--quiet", "-q", is_flag=True, help="No progress or log lines on stderr.")
@click.option("--processes", default=1, show_default=True, type=click.IntRange(1, 4096),
              help="For a --parallel run: start this many ranks (torchrun on this command, one GPU each) that "
                   "replay it together; rank 0 writes. It must be the layout's size (or give --parallel off).")
@handle_errors
def replay(file, check, model, out, download, quiet, processes, **overrides):
    """Run the request recorded in FILE again and write a new run, like `codex run`.

    FILE is a PNG, an MP4/WebM, an info.json or a run folder. The same engine, task, effective
    request (seed included), model, run options (device, dtype, ...: each as recorded unless given
    here; --allow-pickle must be given again), preset profile and output formats are used unless an
    option overrides them; a warning says when the model's fingerprint differs from the
    recorded one. Input files (init images, LoRAs) are read where the original run found them,
    whatever the current folder; a warning names any whose content changed (sha256) or that is
    gone. The new info.json names the original in `replay_of`.

    \b
    With --check the new output is compared with the original (each image; for videos the frames/
    PNGs, or the decoded MP4/WebM frames, and a sound track by the sha256 of its PCM) and the JSON gets
    "check": {"identical": ..., "max_pixel_difference": ..., "compared": N}, "audio" when either
    run exported sound, and "changed_inputs" when an input is not what the original run read.
    Exit codes: 0 ok (with --check: identical), 1 failure or (with --check) different,
    2 unusable FILE or request, 130 interrupted.

    \b
    Examples:
      codex replay artifacts/images/<run-id>/0000.png --check
      codex replay artifacts/videos/<run-id> --device cuda --dtype bf16
      codex replay artifacts/videos/<run-id> --processes 2 --check   # a --parallel ulysses=2 run, on 2 GPUs
    """
    from .. import replay as replay_module
    from ..orchestrator import RunOptions, execute, prepare

    old = replay_module.load(file)
    info = old.info
    runtime = replay_module.runtime_of(info, option_values(overrides))
    from ..parallel import rank, world_size
    from .ranks import check_ranks

    check_ranks(runtime, processes)
    if world_size(runtime) > 1 and rank() != 0:
        quiet = True  # rank 0 reports for the ranks
    located = replay_module.model_files_of(info, replay_module.request_with_inputs(info))
    for line in located.moved:
        click.echo(f"codex: {line}", err=True)
    for line in located.missing:
        click.echo(f"codex: warning: {line}", err=True)
    options = RunOptions(model=model or located.model or replay_module.model_argument(info), out=out,
                         runtime=runtime, download=download, formats=replay_module.formats_of(info), quiet=quiet,
                         preset=info.get("preset_profile"), config=None if model else located.config,
                         components=located.components,
                         # a run recorded without info.seeds drew its batch from one generator: replay it so
                         seed_rule="per_image" if "seeds" in info else "shared",
                         replay_of={"run_id": info.get("run_id"), "path": str(file),
                                    "model_fingerprint": (info.get("model") or {}).get("fingerprint")})
    changed = replay_module.changed_inputs(info)
    for entry in changed:
        state = "is gone" if entry["reason"] == "gone" else "has changed (sha256)"
        click.echo(f"codex: warning: input {entry['field']} ({entry['path']}) {state} since run "
                   f"{info.get('run_id')}; the output may differ", err=True)
    if processes > 1:
        from .ranks import replay_as_ranks

        sys.exit(replay_as_ranks(file, info["engine"], info["task"], located.request, options, processes, check,
                                 model, download))
    prepared = prepare(info["engine"], info["task"], located.request, options)
    result = execute(prepared, options)
    if not result.written:
        return  # a rank after the first of a --parallel replay under torchrun: rank 0 writes, checks and reports
    if not quiet:
        click.echo(f"codex: wrote {result.run_dir} (replay of {info.get('run_id') or file})", err=True)
    data = result.as_json()
    if check:
        outcome = replay_module.compare(old, result.run_dir, prepared.engine.output_kind(prepared.task))
        if changed:
            outcome["changed_inputs"] = changed
        click.echo(replay_module.check_line(outcome), err=True)
        data["check"] = outcome
        echo_json(data)
        if not outcome["identical"]:
            sys.exit(1)
        return
    echo_json(data)
