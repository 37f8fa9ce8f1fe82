"""Many runs per model load: `codex batch` and `codex grid` (an X/Y/Z plot)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from .. import run_options
from ..errors import UsageError
from .base import echo_json, handle_errors
from .options import RunCommand, runtime_from

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
    # (then the run options from the table, as `codex run` takes them: under several processes, --device
    # auto and cuda mean cuda:LOCAL_RANK)
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
    from .. import batch as batch_module
    from ..batch_lock import batch_lock, takes_the_lock
    from ..batch_ranks import WORKER_ENV, launch
    from ..batch_summary import SUMMARY, summary_line

    runtime = runtime_from(runtime_given)
    from ..parallel import world_size

    if world_size(runtime) > 1:  # its --processes split the items; a job split across ranks is `codex run`'s
        raise UsageError(f"--parallel {runtime.parallel}: not with codex {argv[0]} (it splits the items across "
                         "--processes, not one job)", hint=f"run each job with codex run ... --parallel "
                                                           f"{runtime.parallel} --processes {world_size(runtime)}")
    options = batch_module.BatchOptions(out=out, runtime=runtime, download=download, quiet=quiet, strict=strict,
                                        resume=resume, source=source)
    worker = bool(os.environ.get(WORKER_ENV))
    with batch_lock(out, take=takes_the_lock()):  # one process (or one group of ranks) per --out
        if processes > 1:  # check everything here first: a usage error is one message, not one per rank
            batch_module.validate(found, options)
            batch_module.check_invalid(found, options)
            batch_module.to_run(found, options)
            flags = {"--resume": resume, "--strict": strict, "--download": download, "--quiet": quiet}
            argv += [flag for flag, given in flags.items() if given]
            argv += ["--out", str(out), *run_options.argv(runtime)]
            status = launch(processes, argv)
            path = out / SUMMARY
            if not path.is_file():
                sys.exit(status or 1)
            summary = json.loads(path.read_text(encoding="utf-8"))
        else:
            summary = batch_module.run_batch(found, options)
    if processes == 1 and (os.environ.get("RANK", "0") != "0" or worker):
        return  # rank 0 reports for all ranks; under --processes, the launcher does
    if not quiet:
        click.echo(summary_line(summary), err=True)
    echo_json(summary)
    status = batch_module.exit_status(summary)
    if status:
        sys.exit(status)


@click.command(cls=RunCommand, context_settings={"max_content_width": 100})
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
    crash, --resume runs only the items without a complete run folder. One batch at a time writes an
    --out (<out>/batch.lock): a second exits 2 naming the first's pid.

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
    from ..batch_file import read_batch_file

    found = read_batch_file(file)
    out = out or Path("artifacts/batches") / Path(file).stem
    _run_batch(found, out, ["batch", str(file)], source=str(file), **options)


@click.command(cls=RunCommand, context_settings={"max_content_width": 100})
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
    from .. import grid as grid_module
    from ..batch_items import BatchFile
    from ..requests import read_request

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
