"""A batch's items: what each line of a batch file (or each cell of a grid) asks for, parsed strictly.

An item is ``{engine, task, request, model?, formats?, preset?, id?}``, exactly what `codex run`
takes. Ids are given, or the first 12 hex digits of the sha256 of the item's canonical JSON; the id
names the item's run folder.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from .errors import UsageError

ITEM_FIELDS = ("engine", "task", "request", "model", "formats", "preset", "id")
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # no leading '.': staging folders and parts are hidden
# What else a batch keeps in --out beside the items' run folders: an item of that id would write over it
SUMMARY = "batch.json"
PARTS = ".parts"  # each rank's part of the summary
LOCK = "batch.lock"  # held by the process running the batch (batch_lock)
GRIDS = "grids"  # a grid's composed images (in a batch with a grid)
RESERVED_IDS = {SUMMARY: "the batch's summary", LOCK: "the batch's lock file"}


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


def item_id(spec: dict[str, Any]) -> str:
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]


@dataclass
class Broken:
    """A line that could not be read; becomes an invalid item with this reason."""

    reason: str


def parse_item(data: Any, line: int, grid: str | None = None) -> Item:
    """One item, strictly: known fields of the right types (the request itself is checked by prepare)."""
    if isinstance(data, Broken):
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
        raise UsageError(f"line {line}: id: got {given[:120]!r}; an id names the item's run folder: 1 to 100 "
                         "letters, digits, '.', '_' or '-', starting with a letter or digit")
    if given is not None and given.lower() in RESERVED_IDS:  # lower: a case-insensitive disk would collide too
        raise UsageError(f"line {line}: id: {given!r} is reserved ({RESERVED_IDS[given.lower()]} has that name in "
                         "--out)", hint="give the item another id")
    return Item(line, data["engine"], data["task"], data["request"], data.get("model"), formats, data.get("preset"),
                given or "", grid)


def settle_ids(batch: BatchFile) -> None:
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
        elif batch.grids and item.id.lower() == GRIDS:
            batch.invalid.append(Invalid(item.line, item.id, f"line {item.line}: id: {item.id!r} is reserved in a "
                                         f"batch with a grid (the grid images are written to <out>/{GRIDS}/); give the "
                                         "item another id"))
            continue
        seen[item.id] = item.line
        kept.append(item)
    batch.items = kept
