"""A safetensors file's header, read without loading a tensor and checked as strictly as the format's own loader.

The file is 8 bytes of little-endian header length, a JSON object (tensor name -> ``dtype``,
``shape``, ``data_offsets``; an optional ``__metadata__`` of strings), then the tensor bytes. Any
file in a models folder may be anything, so every part is checked before it is used: the length
against the file, the JSON's nesting before it is parsed, and each entry's types (a pair of
non-negative offsets, a list of non-negative ints for a shape, a string for a dtype). Whatever is
wrong is a UsageError naming the field and the file, never a TypeError from deep inside a listing.

Only regular files are opened: a FIFO would block the reader forever and ``/dev/zero`` never ends.
"""

from __future__ import annotations

import json
import os
import re
import stat
import struct
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO

from .errors import UsageError
from .paths import excerpt

MAX_HEADER = 100 * 1024 * 1024  # the safetensors format's own limit
MAX_DEPTH = 3  # {name: {"shape": [...]}}: a header nests no deeper
TENSOR_FIELDS = ("dtype", "shape", "data_offsets")
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')  # a JSON string (brackets inside one do not nest)
_INNERMOST = re.compile(rb"\[[^\[\]{}]*\]|\{[^\[\]{}]*\}")  # a list or object with none inside it


def not_regular(mode: int) -> str | None:
    """What a file of this ``st_mode`` is when it is not a regular file (None for a regular file)."""
    for test, what in ((stat.S_ISREG, None), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return what
    return "not a regular file"


def regular_status(path: Path, field: str) -> os.stat_result:
    """``os.stat(path)`` (links followed) when it is a regular file; else UsageError naming ``field``."""
    try:
        status = os.stat(path)
    except OSError as exc:
        raise UsageError(f"{field}: cannot read {excerpt(str(path))}: {exc.strerror}") from None
    _refuse(path, field, not_regular(status.st_mode))
    return status


def open_regular(path: Path, field: str) -> BinaryIO:
    """``path`` opened for reading when it is a regular file (links followed); else UsageError naming ``field``.

    Checked before opening (a device is never opened) and again on the open file (O_NONBLOCK: a file swapped
    for a FIFO in between cannot block the open), so nothing here can hang on what it reads.
    """
    regular_status(path, field)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    kind = not_regular(os.fstat(fd).st_mode)
    if kind is not None:
        os.close(fd)
        _refuse(path, field, kind)
    return os.fdopen(fd, "rb")


def _refuse(path: Path, field: str, kind: str | None) -> None:
    if kind is not None:
        raise UsageError(f"{field}: {excerpt(str(path))} is {kind}, not a regular file; it is not read",
                         hint="point at the weight file itself")


def read_safetensors_header(path: Path, field: str = "--model") -> dict[str, Any]:
    """The JSON header of a .safetensors file (tensor name -> dtype, shape, offsets; ``__metadata__``).

    UsageError naming ``field`` for anything that is not a well-formed header: no tensor is loaded.
    """
    status = regular_status(path, field)
    return dict(_header(str(path), status.st_size, status.st_mtime_ns, field))


def tensor_shapes(header: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    return {name: tuple(entry["shape"]) for name, entry in header.items() if name != "__metadata__"}


@lru_cache(maxsize=256)
def _header(path: str, size: int, mtime_ns: int, field: str) -> dict[str, Any]:
    def bad(why: str) -> UsageError:
        return UsageError(f"{field}: {path!r} is not a valid safetensors file ({why})",
                          hint="the file may be truncated or not a model; download it again")

    with open_regular(Path(path), field) as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise bad(f"{size} bytes, shorter than the 8-byte header length")
        (length,) = struct.unpack("<Q", head)
        if length > MAX_HEADER or length > size - 8:
            raise bad(f"header length {length} exceeds {'the file' if length > size - 8 else 'the 100 MB limit'}")
        raw = handle.read(length)
    if _nests_deeper(raw, MAX_DEPTH):
        raise bad(f"header nests deeper than the {MAX_DEPTH} levels of the format, or its brackets do not match")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise bad(f"header is not JSON: {str(exc)[:200]}") from None
    if not isinstance(header, dict):
        raise bad("header is not a JSON object")
    end = 0
    for name, entry in header.items():
        problem = _entry_problem(name, entry)
        if problem:
            raise bad(problem)
        if name != "__metadata__":
            end = max(end, entry["data_offsets"][1])
    if 8 + length + end > size:
        raise bad(f"tensors end at byte {8 + length + end}, the file has {size}")
    return header


def _nests_deeper(raw: bytes, depth: int) -> bool:
    """Whether the JSON text ``raw`` nests lists/objects more than ``depth`` deep (or its brackets do not pair),
    found without parsing it: peel the innermost layer ``depth`` times; an opening bracket left is deeper."""
    text = _STRING.sub(b'""', raw)
    for _ in range(depth):
        text, count = _INNERMOST.subn(b"", text)
        if not count:
            break
    return b"[" in text or b"{" in text


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _entry_problem(name: str, entry: Any) -> str | None:
    """What is wrong with one header entry, as the format's loader would refuse it (None: nothing)."""
    if name == "__metadata__":
        if entry is None or (isinstance(entry, dict) and all(isinstance(v, str) for v in entry.values())):
            return None
        return "__metadata__ is not a mapping of names to strings"
    where = f"entry {excerpt(name, 80)}"
    if not isinstance(entry, dict) or not set(TENSOR_FIELDS) <= set(entry):
        return f"{where} lacks dtype/shape/data_offsets"
    if not isinstance(entry["dtype"], str):
        return f"{where}: dtype is {type(entry['dtype']).__name__}, not a string"
    shape = entry["shape"]
    if not isinstance(shape, list) or not all(_is_count(dim) for dim in shape):
        return f"{where}: shape is not a list of non-negative integers"
    offsets = entry["data_offsets"]
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_count, offsets))
            and offsets[0] <= offsets[1]):
        return f"{where}: data_offsets is not a pair [begin, end] of non-negative integers, begin <= end"
    return None
