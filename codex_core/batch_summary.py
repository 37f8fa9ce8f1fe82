"""A batch's record: ``batch.json`` (and each rank's part), rewritten atomically after every item, and the bars.

Every item has a record (id, line, status, run folder or error, timings); rank 0 merges the ranks'
parts into ``batch.json``. A kill at any moment leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .batch_items import PARTS, SUMMARY, BatchFile, Item

if TYPE_CHECKING:
    from .batch import BatchOptions

STATUSES = ("done", "failed", "skipped", "invalid", "pending")
# the stages every item goes through, not worth a line per item (a model's load is said once per batch)
PER_ITEM_STAGES = ("encode", "denoise", "decode", "export")


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

    def __init__(self, batch: BatchFile, options: "BatchOptions", rank: int = 0, world_size: int = 1):
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
        elif event["type"] == "stage" and event["stage"] in PER_ITEM_STAGES:
            return  # every item decodes and writes: the bars say where the batch is
        elif event["text"] and event["text"] not in self._said:
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


def summary_line(summary: dict[str, Any]) -> str:
    counts = summary["counts"]
    parts = ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts[s])
    return f"codex: batch: {parts or 'no items'}; summary in {Path(summary['out']) / SUMMARY}"
