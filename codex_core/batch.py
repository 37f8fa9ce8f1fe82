"""`codex batch`: many requests per model load, resumable, and split across processes.

A batch file is JSON Lines (one item a line) or YAML (a list of items, or a mapping with ``items:``
and ``grid:``). An item is ``{engine, task, request, model?, formats?, preset?, id?}``, exactly what
`codex run` takes. Every item is validated first (``orchestrator.prepare``: nothing loads); then the
items run grouped by model, so each model loads once (the process-wide model cache keeps it between
items; ``info.model.reused_from_cache`` says so), each into ``<out>/<id>/``, the folder `codex run`
would write (staged and renamed into place when complete, ``info.json`` last). ``<out>/batch.json``
is rewritten atomically after every item.

Resume: an item is complete when ``<out>/<id>/info.json`` exists (the run folder only appears once
everything in it is written), so ``--resume`` after Ctrl-C, SIGKILL or a crash reruns only the items
without one; a folder whose info.json is unreadable is run again and replaced.

One process (or group of ranks) writes a batch folder at a time: ``batch_lock`` holds ``<out>/batch.lock``.

Data-parallel: under ``torchrun`` (or ``accelerate launch``; ``--processes N`` starts torchrun on
this command) the items still to run are split between ranks (``batch_ranks``). Each rank writes
``.parts/rank-R.json``; rank 0 merges them into ``batch.json`` (``batch_summary``).

The items and their parsing are ``batch_items`` and ``batch_file``; this module validates and runs.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .batch_items import BatchFile, Invalid, Item
from .batch_ranks import build_tiny_models, distributed, partial_state, rank_runtime
from .batch_summary import SUMMARY, BatchProgress, Summary, item_record, record_of_info
from .errors import CodexError, ParamError, UsageError
from .runtime import Runtime


@dataclass
class BatchOptions:
    out: Path
    runtime: Runtime = field(default_factory=Runtime)
    download: bool = False
    quiet: bool = False
    strict: bool = False
    resume: bool = False
    source: str = ""  # the batch file, as given (recorded in batch.json)


# -- validating -------------------------------------------------------------------------------------

def validate(batch: BatchFile, options: BatchOptions) -> dict[str, Any]:
    """Prepare every item (nothing loads): id -> Prepared; the items that fail move to ``batch.invalid``."""
    from .orchestrator import prepare

    prepared, kept = {}, []
    for item in batch.items:
        try:
            prepared[item.id] = prepare(item.engine, item.task, item.request, run_options(item, options))
        except CodexError as exc:
            text = exc.message
            if isinstance(exc, ParamError):
                text = f"invalid request for {exc.engine} {exc.task}: " + "; ".join(exc.problems)
            text = f"{item.where()}: {text}" + (f" (hint: {exc.hint})" if exc.hint else "")
            batch.invalid.append(Invalid(item.line, item.id, text))
            continue
        kept.append(item)
    batch.items = kept
    batch.invalid.sort(key=lambda bad: bad.line)
    return prepared


def run_options(item: Item, options: BatchOptions, runtime: Runtime | None = None, on_progress=None):
    from .orchestrator import RunOptions

    return RunOptions(model=item.model, out=options.out, runtime=runtime or options.runtime, download=options.download,
                      formats=item.formats, quiet=True, preset=item.preset, run_id=item.id, on_progress=on_progress)


def group_key(item: Item) -> tuple[str, str]:
    return (item.engine, item.model or "")


def in_model_order(items: list[Item]) -> list[Item]:
    """Items grouped by model (engine + model; the runtime is the batch's), groups in order of first appearance."""
    order: dict[tuple[str, str], int] = {}
    for item in items:
        order.setdefault(group_key(item), len(order))
    return sorted(items, key=lambda item: order[group_key(item)])  # sorted is stable: file order within a group


# -- completeness -----------------------------------------------------------------------------------

def completed(out: Path, item: Item) -> dict[str, Any] | None:
    """The info.json of the item's run folder when it is complete (written last, renamed into place), else None
    (a folder without a readable info.json is run again, and replaced: ``_run_item``).

    A complete folder of another request under the same id is an error, not a skip.
    """
    path = out / item.id / "info.json"
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict):
        return None
    if (info.get("engine"), info.get("task"), info.get("request_in")) != (item.engine, item.task, item.request):
        raise UsageError(f"{item.where()}: {out / item.id} holds the run of another request (the item changed "
                         "since it ran)", hint=f"give the item a new id, or delete {out / item.id}")
    return info


def check_invalid(batch: BatchFile, options: BatchOptions) -> None:
    """With --strict any invalid item, and without it a batch with no valid item, refuses the whole batch."""
    if batch.invalid and (options.strict or not batch.items):
        lines = "\n".join(f"  - {bad.error}" for bad in batch.invalid)
        why = "--strict" if options.strict else "no valid item"
        raise UsageError(f"{len(batch.invalid)} invalid item(s) ({why}: nothing was run):\n{lines}")


def to_run(batch: BatchFile, options: BatchOptions) -> tuple[list[Item], list[tuple[Item, dict[str, Any]]]]:
    """(the items still to run, in model order; the complete ones with their info). Reads, writes nothing."""
    out = options.out
    if not options.resume and (out / SUMMARY).exists():
        raise UsageError(f"--out: {str(out)!r} already holds a batch ({SUMMARY})",
                         hint="pass --resume to finish it, or choose another --out")
    todo, finished = [], []
    for item in in_model_order(batch.items):
        info = completed(out, item)
        if info is not None:
            finished.append((item, info))
            continue
        if not options.resume and (out / item.id).exists():
            raise UsageError(f"{item.where()}: {out / item.id} exists", hint="pass --resume, or choose another --out")
        todo.append(item)
    return todo, finished


def run_batch(batch: BatchFile, options: BatchOptions) -> dict[str, Any]:
    """Validate, run (this rank's share of) the items, write batch.json; returns the summary (rank 0's merge)."""
    prepared = validate(batch, options)
    check_invalid(batch, options)
    out = options.out
    state = partial_state() if distributed() else None
    rank, world = (state.process_index, state.num_processes) if state else (0, 1)
    summary = Summary(batch, options, rank, world)
    todo, finished = to_run(batch, options)
    for item, info in finished:
        summary.set(record_of_info(item, out, info, "skipped", None), mine=False)
    if state is not None:
        if rank == 0:
            build_tiny_models(todo)
        state.wait_for_everyone()  # every rank has seen the same finished items before any rank writes one
    out.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        summary.save()
        for bad in batch.invalid if not options.quiet else ():
            print(f"codex: warning: {bad.error} (not run; listed in {SUMMARY})", file=sys.stderr)
    progress = BatchProgress(len(batch.items), len(batch.items) - len(todo),
                             enabled=not options.quiet and rank == 0)
    if state is not None:
        with state.split_between_processes(todo) as share:
            mine = list(share)
        runtime = rank_runtime(options.runtime, state)
        if not options.quiet:
            progress.write(f"codex: rank {rank}/{world}: {len(mine)} of {len(todo)} items on {runtime.device}")
    else:
        mine, runtime = todo, options.runtime
    try:
        for item in mine:
            _run_item(item, prepared[item.id], options, runtime, summary, progress, rank if state else None)
    finally:
        progress.close()
    if state is not None:
        summary.save(finished=True)
        if rank != 0:
            return summary.merged()
        summary.wait_for_ranks()
    from . import grid as grid_module

    for found in batch.grids:
        composed = grid_module.compose(found, out, summary.merged()["items"])
        summary.grids.append(composed)
        if composed.get("audio") and not options.quiet:  # a silent grid of videos with sound: not a surprise
            print(f"codex: grid {found.id}: sound {composed['audio']}", file=sys.stderr)
    summary.save(finished=True)
    return summary.merged()


def _run_item(item: Item, prepared, options: BatchOptions, runtime: Runtime, summary: Summary,
              progress: BatchProgress, rank: int | None) -> None:
    from .orchestrator import execute

    shutil.rmtree(options.out / f".{item.id}.partial", ignore_errors=True)  # left by a kill: never complete
    stale = _set_aside(options.out, item, progress)
    started = time.perf_counter()
    try:
        result = execute(prepared, run_options(item, options, runtime, progress.sink))
    except KeyboardInterrupt:
        _put_back(stale, options.out / item.id)
        summary.save()  # the item stays pending; --resume runs it
        raise
    except Exception as exc:  # this item failed: record it, go on with the next
        _put_back(stale, options.out / item.id)
        error = exc.message if isinstance(exc, CodexError) else f"{type(exc).__name__}: {exc}"
        summary.set(item_record(item, "failed", error=error, rank=rank,
                                seconds=round(time.perf_counter() - started, 3)))
        progress.write(f"codex: {item.where()} failed: {error}")
    else:
        _remove(stale)  # replaced by the new run folder
        summary.set(record_of_info(item, options.out, result.info, "done", rank))
        summary.records[item.id]["seconds"] = round(time.perf_counter() - started, 3)
    summary.save()
    progress.item_done()


def _set_aside(out: Path, item: Item, progress: BatchProgress) -> Path:
    """An incomplete item folder (no readable info.json: cut short or corrupted by hand), moved out of the way of
    the run that replaces it: ``.<id>.stale`` (removed when the run succeeds, put back when it fails)."""
    folder, stale = out / item.id, out / f".{item.id}.stale"
    if (stale.exists() or stale.is_symlink()) and not folder.exists():
        return stale  # set aside by a run that was killed: still the folder the item replaces
    _remove(stale)
    if folder.exists() or folder.is_symlink():
        progress.write(f"codex: {item.where()}: {folder} has no readable info.json; running the item again to "
                       "replace it")
        os.replace(folder, stale)
    return stale


def _put_back(stale: Path, folder: Path) -> None:
    if (stale.exists() or stale.is_symlink()) and not folder.exists():
        os.replace(stale, folder)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def exit_status(summary: dict[str, Any]) -> int:
    """0: every item done (or already done); 1: an item failed, was invalid or did not run."""
    counts = summary["counts"]
    return 0 if counts["failed"] == counts["invalid"] == counts["pending"] == 0 else 1
