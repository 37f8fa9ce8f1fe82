"""Reading a request: inline JSON, ``@FILE`` or ``-`` (stdin), as strict JSON text.

Strict: the text must be UTF-8 (a byte-order mark is accepted), a key may appear only once in an
object (JSON parsers keep the last silently), and every problem is a usage error naming where it
is, before anything loads.
"""

from __future__ import annotations

import json
import sys
from typing import Any, BinaryIO

from .errors import UsageError
from .paths import user_path


def _decode(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(f"--json: {where} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start} "
                         f"cannot be decoded)", hint="save the request as UTF-8") from None


class DuplicateKey(ValueError):
    pass


def no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads``'s object_pairs_hook for requests: a key given twice is an error, not the last one kept."""
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise DuplicateKey(f"the key {key!r} appears twice in one object; give each field once")
        seen[key] = value
    return seen


def read_request(value: str, stdin: BinaryIO | None = None) -> Any:
    """The request JSON of ``--json``: inline text, ``@path`` or ``-`` for standard input."""
    if value == "-":
        stream = stdin if stdin is not None else sys.stdin.buffer
        text, where = _decode(stream.read(), "stdin"), "stdin"
    elif value.startswith("@"):
        path = user_path(value[1:], "--json")
        if path.is_dir():
            raise UsageError(f"--json: {str(path)!r} is a folder, not a request file")
        if not path.is_file():
            raise UsageError(f"--json: no such file {str(path)!r}")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UsageError(f"--json: cannot read {str(path)!r} ({exc.strerror})") from None
        text, where = _decode(data, str(path)), str(path)
    else:
        text, where = value, None
    try:
        return json.loads(text, object_pairs_hook=no_duplicate_keys)
    except DuplicateKey as exc:
        raise UsageError(f"--json: {exc}") from None
    except json.JSONDecodeError as exc:
        source = f"{where} is not valid JSON" if where else "not valid JSON"
        raise UsageError(f"--json: {source}: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
