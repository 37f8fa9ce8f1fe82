"""Paths people give (a flag, a request field, a batch item): checked before any file system call sees them.

A value no file system can hold (a NUL byte, a name longer than the system allows, ``~user`` of a user
this machine does not have) is the user's mistake, so it is a UsageError naming the field, not an
``OSError``/``ValueError``/``RuntimeError`` from deep inside a library. Messages show a value
shortened to an excerpt: a 5,000-character path is not repeated back whole.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import UsageError

NAME_MAX = 255  # bytes in one path component (Linux, macOS, Windows all stop about here)
PATH_MAX = 4096  # bytes in a whole path (Linux's PATH_MAX)
EXCERPT = 200  # characters of a value shown in a message


def excerpt(value: str, limit: int = EXCERPT) -> str:
    """``repr(value)``, cut to about ``limit`` characters with the length said when it is longer."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value):,} characters)"


def path_problem(value: str) -> str | None:
    """Why no file system could hold ``value`` as a path, read after the value (None: it could)."""
    if "\0" in value:
        return "contains a NUL byte, which no file name can"
    try:
        raw = os.fsencode(value)
    except UnicodeEncodeError:
        return "contains characters that cannot be written as a file name on this system"
    if len(raw) > PATH_MAX:
        return f"is {len(raw):,} bytes long; a path has at most {PATH_MAX:,}"
    longest = max(raw.split(b"/"), key=len)
    if len(longest) > NAME_MAX:
        return f"has a {len(longest):,}-byte name in it; a file or folder name has at most {NAME_MAX}"
    try:
        Path(value).expanduser()
    except RuntimeError:  # ~name of a user this machine does not know
        user = value[1:].split("/", 1)[0]
        if not user:
            return "starts with ~, but your home folder is not known (HOME is not set)"
        return f"starts with ~{user}, the home folder of a user this machine does not have"
    return None


def user_path(value: str, field: str = "") -> Path:
    """``value`` as a path with ``~`` expanded; UsageError when no file system could hold it. Its message names
    ``field`` and shows the value; without a field (a request field's validator shows both) it is only why."""
    problem = path_problem(value)
    if problem:
        raise UsageError(f"{field}: {excerpt(value)} {problem}" if field else f"the path {problem}",
                         hint="write the path without ~NAME" if problem.startswith("starts with ~") else
                         "give an existing file or folder, or a name")
    return Path(value).expanduser()
