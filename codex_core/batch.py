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
without one. Ids are given, or the first 12 hex digits of the sha256 of the item's canonical JSON.

Data-parallel: under ``torchrun`` (or ``accelerate launch``; ``--processes N`` starts torchrun on
this command) the items still to run are split between ranks with accelerate's ``PartialState``
(``split_between_processes``), each rank on its own GPU when there are GPUs. Each rank writes
``.parts/rank-R.json``; rank 0 merges them into ``batch.json``.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import CodexError, ParamError, UsageError
from .requests import no_duplicate_keys
from .runtime import Runtime

ITEM_FIELDS = ("engine", "task", "request", "model", "formats", "preset", "id")
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
SUMMARY = "batch.json"
PARTS = ".parts"
STATUSES = ("done", "failed", "skipped", "invalid", "pending")
# set by `--processes` on the ranks it starts: a rank then leaves the exit status to the launcher
WORKER_ENV = "CODEX_BATCH_WORKER"


@dataclass
class Item:
    line: int  # where it is in the batch file (1-based), for error messages
    engine: str
    task: str
    request: dict[str, Any]
    model: str | None = None
    formats: tuple[str, ...] | None = None
    preset: str | None = None
    id: str = ""
    grid: str | None = None  # the id of the grid this item is a cell of

    def spec(self) -> dict[str, Any]:
        """The item as `codex run` would take it (what its id hashes when none is given)."""
        spec = {"engine": self.engine, "task": self.task, "request": self.request}
        for name in ("model", "formats", "preset"):
            value = getattr(self, name)
            if value is not None:
                spec[name] = list(value) if name == "formats" else value
        return spec

    def where(self) -> str:
        return f"line {self.line} (id {self.id})" if self.id else f"line {self.line}"


@dataclass
class Invalid:
    line: int
    id: str | None
    error: str


@dataclass
class BatchFile:
    items: list[Item]
    invalid: list[Invalid]
    grids: list[Any] = field(default_factory=list)  # codex_core.grid.Grid


@dataclass
class BatchOptions:
    out: Path
    runtime: Runtime = field(default_factory=Runtime)
    download: bool = False
    quiet: bool = False
    strict: bool = False
    resume: bool = False
    source: str = ""  # the batch file, as given (recorded in batch.json)


def item_id(spec: dict[str, Any]) -> str:
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]


# -- reading ----------------------------------------------------------------------------------------

def read_batch_file(path: Path) -> BatchFile:
    """The items (and grids) of a batch file; an item whose fields are wrong is in ``invalid``, by line."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise UsageError(f"FILE: {str(path)!r} is a folder, not a batch file")
    if not path.is_file():
        raise UsageError(f"FILE: no such file {str(path)!r}")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"FILE: {str(path)!r} is not UTF-8 text (byte offset {exc.start})") from None
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        raw, grid_specs = _json_lines(text, path), []
    elif suffix in (".yaml", ".yml"):
        raw, grid_specs = _yaml_items(text, path)
    else:
        raise UsageError(f"FILE: {str(path)!r}: unknown batch file type {suffix or '(none)'!r}; allowed: .jsonl or "
                         ".ndjson (JSON Lines, one item a line), .yaml or .yml (a list of items, and/or grid:)")
    batch = BatchFile([], [])
    for line, data in raw:
        try:
            batch.items.append(parse_item(data, line))
        except UsageError as exc:
            given = data.get("id") if isinstance(data, dict) and isinstance(data.get("id"), str) else None
            batch.invalid.append(Invalid(line, given, exc.message))
    from . import grid as grid_module

    for line, data in grid_specs:
        try:
            found = grid_module.parse_grid(data, line)
        except UsageError as exc:
            batch.invalid.append(Invalid(line, None, exc.message))
            continue
        batch.grids.append(found)
        batch.items.extend(found.items())
    _settle_ids(batch)
    if not batch.items and not batch.invalid:
        raise UsageError(f"FILE: {str(path)!r} holds no items", hint="one JSON object a line (JSON Lines), or a YAML "
                         "list of {engine, task, request}")
    return batch


def _json_lines(text: str, path: Path) -> list[tuple[int, Any]]:
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            found.append((number, json.loads(line, object_pairs_hook=no_duplicate_keys)))
        except json.JSONDecodeError as exc:
            found.append((number, _Broken(f"not valid JSON: {exc.msg} at column {exc.colno}")))
        except ValueError as exc:
            found.append((number, _Broken(str(exc))))
    return found


@dataclass
class _Broken:
    """A line that could not be read; becomes an invalid item with this reason."""

    reason: str


def _strict_yaml_loader():
    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            keys = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in keys:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"the key {key!r} appears twice in one mapping; give each field once",
                        key_node.start_mark)
                keys.add(key)
            return super().construct_mapping(node, deep=deep)

    return Loader


def _yaml_items(text: str, path: Path) -> tuple[list[tuple[int, Any]], list[tuple[int, Any]]]:
    """(line, item) and (line, grid) pairs: line numbers from the YAML nodes."""
    import yaml

    loader_class = _strict_yaml_loader()
    try:
        root = yaml.compose(text, Loader=loader_class)
    except yaml.YAMLError as exc:
        raise UsageError(f"FILE: {str(path)!r} is not valid YAML: {exc}") from None
    if root is None:
        return [], []

    def value(node):
        loader = loader_class("")
        try:
            return loader.construct_document(node)
        except yaml.YAMLError as exc:
            return _Broken(str(exc).replace("\n", " "))

    def line(node) -> int:
        return node.start_mark.line + 1

    items_node, grid_node = None, None
    if isinstance(root, yaml.SequenceNode):
        items_node = root
    elif isinstance(root, yaml.MappingNode):
        for key_node, value_node in root.value:
            key = key_node.value
            if key == "items":
                items_node = value_node
            elif key == "grid":
                grid_node = value_node
            else:
                raise UsageError(f"FILE: line {line(key_node)}: unknown top-level key {key!r}; allowed: items, grid")
    else:
        raise UsageError(f"FILE: {str(path)!r}: the YAML must be a list of items, or a mapping with items: and grid:")
    items, grids = [], []
    if items_node is not None:
        if not isinstance(items_node, yaml.SequenceNode):
            raise UsageError(f"FILE: line {line(items_node)}: items: must be a list of items")
        items = [(line(node), value(node)) for node in items_node.value]
    if grid_node is not None:
        nodes = grid_node.value if isinstance(grid_node, yaml.SequenceNode) else [grid_node]
        grids = [(line(node), value(node)) for node in nodes]
    return items, grids


def parse_item(data: Any, line: int, grid: str | None = None) -> Item:
    """One item, strictly: known fields of the right types (the request itself is checked by prepare)."""
    if isinstance(data, _Broken):
        raise UsageError(f"line {line}: {data.reason}")
    if not isinstance(data, dict):
        raise UsageError(f"line {line}: an item must be an object {{engine, task, request, ...}}, "
                         f"got {type(data).__name__}")
    unknown = [key for key in data if key not in ITEM_FIELDS]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), ITEM_FIELDS, n=1)
        mean = f" (did you mean {close[0]!r}?)" if close else ""
        raise UsageError(f"line {line}: unknown field {key!r}{mean}; allowed: {', '.join(ITEM_FIELDS)}")
    for name in ("engine", "task", "request"):
        if name not in data:
            raise UsageError(f"line {line}: missing field {name!r}; an item needs engine, task and request")
    for name in ("engine", "task"):
        if not isinstance(data[name], str) or not data[name]:
            raise UsageError(f"line {line}: {name}: got {data[name]!r}; expected a non-empty string")
    if not isinstance(data["request"], dict):
        raise UsageError(f"line {line}: request: got {type(data['request']).__name__}; expected an object of "
                         "field: value (as `codex run --json` takes)")
    for name in ("model", "preset", "id"):
        if data.get(name) is not None and (not isinstance(data[name], str) or not data[name]):
            raise UsageError(f"line {line}: {name}: got {data[name]!r}; expected a non-empty string")
    formats = data.get("formats")
    if formats is not None:
        if isinstance(formats, str):
            formats = [part.strip() for part in formats.split(",") if part.strip()]
        if not isinstance(formats, list) or not formats or not all(isinstance(f, str) and f for f in formats):
            raise UsageError(f"line {line}: formats: got {data['formats']!r}; expected a list of format names, "
                             "e.g. [\"png\"]")
        formats = tuple(formats)
    given = data.get("id")
    if given is not None and not ID_PATTERN.fullmatch(given):
        raise UsageError(f"line {line}: id: got {given!r}; an id names the item's run folder: 1 to 100 letters, "
                         "digits, '.', '_' or '-', starting with a letter or digit")
    return Item(line, data["engine"], data["task"], data["request"], data.get("model"), formats, data.get("preset"),
                given or "", grid)


def _settle_ids(batch: BatchFile) -> None:
    """Hash ids for items without one (a repeat of the same item gets -2, -3...); a given id used twice is refused."""
    seen: dict[str, int] = {}
    kept = []
    for item in batch.items:
        if not item.id:
            base = item_id(item.spec())
            item.id, count = base, 1
            while item.id in seen:
                count += 1
                item.id = f"{base}-{count}"
        elif item.id in seen:
            batch.invalid.append(Invalid(item.line, item.id, f"line {item.line}: id: {item.id!r} is already the id of "
                                         f"line {seen[item.id]}; give each item its own id"))
            continue
        seen[item.id] = item.line
        kept.append(item)
    batch.items = kept


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
    """The info.json of the item's run folder when it is complete (written last, renamed into place), else None.

    A complete folder of another request under the same id is an error, not a skip.
    """
    path = out / item.id / "info.json"
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (info.get("engine"), info.get("task"), info.get("request_in")) != (item.engine, item.task, item.request):
        raise UsageError(f"{item.where()}: {out / item.id} holds the run of another request (the item changed "
                         "since it ran)", hint=f"give the item a new id, or delete {out / item.id}")
    return info


# -- the summary ------------------------------------------------------------------------------------

def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_json_atomic(path: Path, data: Any) -> None:
    """Temp file + rename, fsynced: a kill at any moment leaves the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(data, indent=2, default=str) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def item_record(item: Item, status: str, **extra: Any) -> dict[str, Any]:
    record = {"id": item.id, "line": item.line, "engine": item.engine, "task": item.task, "model": item.model,
              "status": status, "run_dir": None, "error": None}
    if item.grid:
        record["grid"] = item.grid
    record.update(extra)
    return record


def record_of_info(item: Item, out: Path, info: dict[str, Any], status: str, rank: int | None) -> dict[str, Any]:
    return item_record(item, status, run_dir=str(out / item.id), rank=rank, seed=info.get("seed"),
                       model_reused=(info.get("model") or {}).get("reused_from_cache"),
                       timings=info.get("timings"))


class Summary:
    """Every item's record; this rank's part file and (rank 0) batch.json, rewritten atomically after each item."""

    def __init__(self, batch: BatchFile, options: BatchOptions, rank: int = 0, world_size: int = 1):
        self.options, self.rank, self.world_size = options, rank, world_size
        self.started = _now()
        self.order = [item.id for item in batch.items]
        self.records: dict[str, dict[str, Any]] = {item.id: item_record(item, "pending") for item in batch.items}
        self.invalid = [{"id": bad.id, "line": bad.line, "status": "invalid", "error": bad.error}
                        for bad in batch.invalid]
        self.mine: set[str] = set()
        self.grids: list[dict[str, Any]] = []

    def set(self, record: dict[str, Any], mine: bool = True) -> None:
        self.records[record["id"]] = record
        if mine:
            self.mine.add(record["id"])

    def part_path(self, rank: int) -> Path:
        return self.options.out / PARTS / f"rank-{rank}.json"

    def save(self, finished: bool = False) -> None:
        if self.world_size > 1:
            self.part_path(self.rank).parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.part_path(self.rank), {"rank": self.rank, "finished": finished,
                                                          "items": [self.records[i] for i in sorted(self.mine)]})
        if self.rank == 0:
            write_json_atomic(self.options.out / SUMMARY, self.merged())

    def read_parts(self) -> dict[int, dict[str, Any]]:
        parts = {}
        for rank in range(1, self.world_size):
            try:
                parts[rank] = json.loads(self.part_path(rank).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
        return parts

    def merged(self) -> dict[str, Any]:
        records = dict(self.records)
        for part in self.read_parts().values():
            for record in part.get("items", []):
                records[record["id"]] = record
        items = [records[i] for i in self.order] + self.invalid
        items.sort(key=lambda record: record["line"])
        counts = {status: sum(1 for r in items if r["status"] == status) for status in STATUSES}
        return {"batch": self.options.source, "out": str(self.options.out), "started": self.started,
                "updated": _now(), "processes": self.world_size, "counts": counts, "items": items,
                "grids": self.grids}

    def wait_for_ranks(self, timeout: float | None = None) -> None:
        """Rank 0: until every other rank's part says finished (file-based: no collective to time out)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            parts = self.read_parts()
            if len(parts) == self.world_size - 1 and all(part.get("finished") for part in parts.values()):
                return
            if deadline is not None and time.monotonic() > deadline:
                return
            time.sleep(0.2)


# -- running ----------------------------------------------------------------------------------------

class BatchProgress:
    """One bar over the batch (items done/total, ETA) above the per-step bar of the item running."""

    def __init__(self, total: int, done: int, enabled: bool, label: str = "batch"):
        self.enabled = enabled
        self._bar = self._steps = None
        self._said: set[str] = set()  # a stage message once per batch, not once per item
        if enabled:
            from tqdm.auto import tqdm

            self._tqdm = tqdm
            self._bar = tqdm(total=total, initial=done, desc=label, unit="item", file=sys.stderr, position=0,
                             dynamic_ncols=True)

    def sink(self, event: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if event["type"] == "step":
            if self._steps is None or self._steps.total != event["total"] or event["done"] < self._steps.n:
                self._close_steps()
                self._steps = self._tqdm(total=event["total"], desc="  steps", unit="step", file=sys.stderr,
                                         position=1, leave=False, dynamic_ncols=True)
            self._steps.update(event["done"] - self._steps.n)
        elif not event["text"].startswith(("writing", "decoding")) and event["text"] not in self._said:
            self._said.add(event["text"])
            self._tqdm.write(f"codex: {event['text']}", file=sys.stderr)

    def write(self, text: str) -> None:
        if self.enabled:
            self._tqdm.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)

    def item_done(self) -> None:
        self._close_steps()
        if self._bar is not None:
            self._bar.update(1)

    def _close_steps(self) -> None:
        if self._steps is not None:
            self._steps.close()
            self._steps = None

    def close(self) -> None:
        self._close_steps()
        if self._bar is not None:
            self._bar.close()


def distributed() -> bool:
    """Whether this process is one rank of several (torchrun or accelerate launch set WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def _partial_state():
    """accelerate's PartialState; cpu=True without CUDA (otherwise it would not form a CPU group at all)."""
    try:
        from datetime import timedelta

        from accelerate import PartialState
        from accelerate.utils import is_cuda_available
    except ImportError:
        raise UsageError("codex batch across processes needs accelerate",
                         hint="pip install 'codex-core[batch]'") from None
    # a long timeout: the start barrier waits for the slowest rank to import and validate
    return PartialState(cpu=not is_cuda_available(), timeout=timedelta(hours=2))


def _rank_runtime(runtime: Runtime, state) -> Runtime:
    """Each rank on its own GPU (cuda:LOCAL_RANK) when the device is auto or cuda and there are GPUs."""
    device = str(state.device)
    if device.startswith("cuda") and runtime.device in ("auto", "cuda"):
        return replace(runtime, device=device)
    return runtime


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


def _build_tiny_models(items: list[Item]) -> None:
    """Build the tiny models the items name, once, before the other ranks may load them (never in two at once)."""
    from . import registry, sources
    from .progress import Progress

    for key in dict.fromkeys(item.engine for item in items if item.model == "tiny"):
        engine = registry.get_engine(key)
        engine.ensure_tiny(sources.tiny_path(engine, engine.tiny_version), Progress(enabled=False))


def run_batch(batch: BatchFile, options: BatchOptions) -> dict[str, Any]:
    """Validate, run (this rank's share of) the items, write batch.json; returns the summary (rank 0's merge)."""
    prepared = validate(batch, options)
    check_invalid(batch, options)
    out = options.out
    state = _partial_state() if distributed() else None
    rank, world = (state.process_index, state.num_processes) if state else (0, 1)
    summary = Summary(batch, options, rank, world)
    todo, finished = to_run(batch, options)
    for item, info in finished:
        summary.set(record_of_info(item, out, info, "skipped", None), mine=False)
    if state is not None:
        if rank == 0:
            _build_tiny_models(todo)
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
        runtime = _rank_runtime(options.runtime, state)
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
        summary.grids.append(grid_module.compose(found, out, summary.merged()["items"]))
    summary.save(finished=True)
    return summary.merged()


def _run_item(item: Item, prepared, options: BatchOptions, runtime: Runtime, summary: Summary,
              progress: BatchProgress, rank: int | None) -> None:
    from .orchestrator import execute

    shutil.rmtree(options.out / f".{item.id}.partial", ignore_errors=True)  # left by a kill: never complete
    started = time.perf_counter()
    try:
        result = execute(prepared, run_options(item, options, runtime, progress.sink))
    except KeyboardInterrupt:
        summary.save()  # the item stays pending; --resume runs it
        raise
    except Exception as exc:  # this item failed: record it, go on with the next
        error = exc.message if isinstance(exc, CodexError) else f"{type(exc).__name__}: {exc}"
        summary.set(item_record(item, "failed", error=error, rank=rank,
                                seconds=round(time.perf_counter() - started, 3)))
        progress.write(f"codex: {item.where()} failed: {error}")
    else:
        summary.set(record_of_info(item, options.out, result.info, "done", rank))
        summary.records[item.id]["seconds"] = round(time.perf_counter() - started, 3)
    summary.save()
    progress.item_done()


def exit_status(summary: dict[str, Any]) -> int:
    """0: every item done (or already done); 1: an item failed, was invalid or did not run."""
    counts = summary["counts"]
    return 0 if counts["failed"] == counts["invalid"] == counts["pending"] == 0 else 1


# -- launching ranks --------------------------------------------------------------------------------

def launch(processes: int, args: list[str]) -> int:
    """Run ``codex ARGS`` as ``processes`` ranks under torchrun (python -m torch.distributed.run); its status."""
    import importlib.util

    if distributed():
        raise UsageError("--processes: this command already runs under torchrun/accelerate launch "
                         f"(WORLD_SIZE={os.environ.get('WORLD_SIZE')})", hint="drop --processes")
    missing = [name for name in ("torch", "accelerate") if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(f"--processes: needs {' and '.join(missing)} (torchrun starts the ranks, accelerate splits "
                         "the items)", hint="pip install 'codex-core[batch]' and an engine plugin")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
               "-m", "codex_core.cli", *args]
    env = {**os.environ, WORKER_ENV: "1"}
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
    return subprocess.run(command, env=env).returncode


def summary_line(summary: dict[str, Any]) -> str:
    counts = summary["counts"]
    parts = ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts[s])
    return f"codex: batch: {parts or 'no items'}; summary in {Path(summary['out']) / SUMMARY}"
