"""One process per batch folder: an exclusive lock on ``<out>/batch.lock`` while a batch runs there.

Two runs in one ``--out`` (two ``--resume`` at once, say) would compute every item twice and remove
each other's staging folders; the second is refused instead (exit 2), naming the pid of the process
that holds the folder. The lock is ``flock`` on the file, so the system releases it whatever ends
the process (SIGKILL included); a clean exit also removes the file (a lock file is taken only when it
is still the one at its path, so removing it cannot let two processes in).

Under ``--processes N`` the launcher holds the lock for its ranks (they are started with
``CODEX_BATCH_WORKER``); under a plain ``torchrun``/``accelerate launch``, rank 0 holds it, and
another rank waits at the start for rank 0, whose refusal ends the group before any rank writes.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .batch_items import LOCK
from .batch_ranks import WORKER_ENV, distributed
from .errors import UsageError


def takes_the_lock() -> bool:
    """Whether this process locks the batch folder: not a rank started by ``--processes`` (its launcher holds
    it), and rank 0 of a group started by torchrun or accelerate launch."""
    return not os.environ.get(WORKER_ENV) and (not distributed() or os.environ.get("RANK", "0") == "0")


@contextmanager
def batch_lock(out: Path, take: bool = True) -> Iterator[None]:
    """Hold ``<out>/batch.lock`` for the block (``take`` False: nothing is locked). The folders made to hold the
    lock are removed again when the batch wrote nothing in them (an invalid batch leaves nothing behind)."""
    if not take:
        yield
        return
    import fcntl

    made = [folder for folder in (out, *out.parents) if not folder.exists()]  # deepest first
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out: cannot create {str(out)!r}: {exc.strerror}", hint="choose another --out") from None
    path = out / LOCK
    handle = _locked(path, fcntl)
    try:
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        path.unlink(missing_ok=True)  # while still held: a process that opens it next finds it gone and retries
        handle.close()
        for folder in made:
            try:
                folder.rmdir()  # only when empty: the batch wrote nothing
            except OSError:
                break


def _locked(path: Path, fcntl):
    """The lock file at ``path``, opened and locked; UsageError naming the holder's pid when another has it."""
    while True:
        try:
            handle = open(path, "a+", encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--out: cannot write the lock file {str(path)!r}: {exc.strerror}",
                             hint="choose a folder you can write") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise UsageError(f"--out: {str(path.parent)!r} is in use by another codex batch (pid {holder}); one "
                             "batch at a time may write a folder",
                             hint="wait for it to finish (then --resume picks up what it left), or choose another "
                                  "--out") from None
        try:
            same = os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return handle
        handle.close()  # the holder removed it as we opened it: lock the file now at the path
