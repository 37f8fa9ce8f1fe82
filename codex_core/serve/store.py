"""The service's durable job queue: one SQLite database file in WAL mode under the state dir.

A job accepted with 202 is a committed row before the response is sent (``synchronous=FULL``), so
a crash or ``kill -9`` cannot lose it. States: ``queued`` -> ``running`` -> ``done`` | ``failed`` |
``cancelled``. A running job may carry ``cancel_requested`` (when a cancel was asked): the cancel
is on disk before the 202 that acknowledges it, so no restart runs that job again. It may carry
``interrupt_requested`` instead (stop early and keep: the run ends ``done`` with the latents of the step it
reached, decoded); recorded the same way, it holds for whichever attempt runs the job. Each claim gives
the job the name of its run folder (``run_id``) and the device that runs it.

On start (``recover``), a job the last process left ``running`` is
- cancelled, when a cancel was requested;
- done, when its run folder was renamed into place (the result is read back from its info.json:
  the run finished and only the record of it was lost);
- otherwise re-run once: back to the queue with its ``attempts`` count kept, so info says
  ``attempt: 2``; a job that was already re-run ends ``failed`` with the reason, rather than crash
  the service a third time.

Besides the jobs, the database keeps each ``Idempotency-Key`` with the job it submitted (``submit_once``: one
transaction decides, so two requests with one key make one job) and the webhook deliveries of ended jobs
(``deliveries.py``: queued in the transaction that ends the job, so each end is delivered once).

Writes retry while the database is busy (another connection holds its lock, e.g. a backup or an
``sqlite3`` shell) or cannot be written (a full disk), with a bounded backoff; a write that cannot
be made in time raises ``StoreUnavailable``. ``trouble`` says what is wrong until a write succeeds
again (``/v1/health`` reports it; the service answers 503 to what it cannot record).

Each thread has its own connection (sqlite3 connections are not shared across threads).
"""

from __future__ import annotations

import json
import secrets
import shutil
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

from ..outputs import new_run_id
from . import deliveries

TERMINAL = ("done", "failed", "cancelled")
MAX_ATTEMPTS = 2  # the first run and one re-run after the service (or its worker process) died during it
PATIENCE = 30.0  # seconds a job may wait while workers prefer jobs for the models they hold
BUSY_TIMEOUT = 1.0  # seconds SQLite itself waits for another connection's lock, per attempt
BACKOFF = (0.05, 2.0)  # the first and the longest pause between attempts
REQUEST_WAIT = 5.0  # seconds a request's write may keep trying (then 503)
CANCELLED_RUNNING = "cancelled while running; no partial output was kept"

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    state TEXT NOT NULL,
    stage TEXT,
    spec TEXT NOT NULL,
    submitted REAL NOT NULL,
    started REAL,
    finished REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    step INTEGER,
    steps INTEGER,
    error TEXT,
    result TEXT,
    cancel_requested REAL,
    run_id TEXT,
    device TEXT,
    interrupt_requested REAL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, seq);
"""
# since the first schema
ADDED_COLUMNS = {"cancel_requested": "REAL", "run_id": "TEXT", "device": "TEXT", "interrupt_requested": "REAL"}

# Tables added since the first schema, each a step of its own (CREATE ... IF NOT EXISTS: a database an
# earlier version made gains them at the next start).
# Idempotency-Key -> the job it submitted, kept while the job is (a DELETE frees the key).
IDEMPOTENCY_SCHEMA = """
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    job_id TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS idempotency_keys_job ON idempotency_keys (job_id);
"""


class StoreUnavailable(Exception):
    """The job store cannot be read or written now (locked for too long, disk full, I/O error)."""


class KeyReused(Exception):
    """An Idempotency-Key that submitted another request (a different body)."""


class JobStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._trouble: tuple[str, str, float] | None = None  # (kind, what sqlite said, since)
        db = self._db()
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(SCHEMA)
        have = {row["name"] for row in db.execute("PRAGMA table_info(jobs)")}
        for name, kind in ADDED_COLUMNS.items():
            if name not in have:  # a database an earlier version made
                db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")
        db.executescript(IDEMPOTENCY_SCHEMA)
        db.executescript(deliveries.SCHEMA)

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA synchronous=FULL")
            self._local.db = db
        return db

    # -- what is wrong ---------------------------------------------------------------------------
    @property
    def trouble(self) -> str | None:
        """Why the store cannot be written now, and for how long; None when its last write succeeded."""
        if self._trouble is None:
            return None
        _, message, since = self._trouble
        return f"{message} (for {time.monotonic() - since:.0f} s)"

    def _failed(self, exc: sqlite3.Error) -> None:
        kind = "locked" if "locked" in str(exc) or "busy" in str(exc) else "write"
        if self._trouble is None or self._trouble[:2] != (kind, str(exc)):
            self._trouble = (kind, str(exc), time.monotonic())

    def _succeeded(self, changed: bool) -> None:
        # a lock taken shows the lock is gone; a full disk is over only once a change was written
        if self._trouble is not None and (changed or self._trouble[0] == "locked"):
            self._trouble = None

    def _write(self, work: Callable[[sqlite3.Connection], T], wait: float | None = None) -> T:
        """``work`` in a transaction, tried again while the database is locked or cannot be written,
        for up to ``wait`` seconds (default: a request's wait, or one try while the store is in trouble)."""
        if wait is None:
            wait = 0.0 if self._trouble else REQUEST_WAIT
        deadline, pause = time.monotonic() + wait, BACKOFF[0]
        while True:
            db = self._db()
            before = db.total_changes
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    result = work(db)
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                self._failed(exc)
                if time.monotonic() + pause > deadline:
                    raise StoreUnavailable(f"the job store cannot be written: {self.trouble}") from exc
                time.sleep(pause)
                pause = min(pause * 2, BACKOFF[1])
                continue
            self._succeeded(db.total_changes > before)
            return result

    def _read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return work(self._db())
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"the job store cannot be read: {exc}") from exc

    # what other parts of the service keep in the same database (webhooks.py) reads and writes through these
    transaction, query = _write, _read

    # -- writing ---------------------------------------------------------------------------------
    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self.submit_once(spec)[0]

    def submit_once(self, spec: dict[str, Any], key: str | None = None,
                    fingerprint: str | None = None) -> tuple[dict[str, Any], bool]:
        """The job, queued, and True; with an Idempotency-Key already used for the same ``fingerprint``, the job it
        submitted and False (in one transaction: two requests with one key make one job). KeyReused when the key
        submitted another request."""
        def work(db: sqlite3.Connection) -> tuple[str, bool]:
            if key is not None:
                row = db.execute("SELECT fingerprint, job_id FROM idempotency_keys WHERE key = ?", (key,)).fetchone()
                if row is not None and row["fingerprint"] != fingerprint:
                    raise KeyReused(key)
                if row is not None:
                    return row["job_id"], False
            job_id = secrets.token_urlsafe(16)  # unguessable: ids are the only handle on a job's files
            now = time.time()
            db.execute("INSERT INTO jobs (id, state, spec, submitted) VALUES (?, 'queued', ?, ?)",
                       (job_id, json.dumps(spec), now))
            if key is not None:
                db.execute("INSERT INTO idempotency_keys (key, fingerprint, job_id, created) VALUES (?, ?, ?, ?)",
                           (key, fingerprint, job_id, now))
            return job_id, True

        job_id, created = self._write(work)
        return self.get(job_id), created

    def keyed(self, key: str) -> tuple[str, str] | None:
        """The (fingerprint, job id) an Idempotency-Key submitted, if it did."""
        row = self._read(lambda db: db.execute("SELECT fingerprint, job_id FROM idempotency_keys WHERE key = ?",
                                               (key,)).fetchone())
        return (row["fingerprint"], row["job_id"]) if row else None

    def claim(self, prefer: tuple[str, str | None] | None = None, patience: float = PATIENCE,
              device: str | None = None, wait: float = 0.0) -> dict[str, Any] | None:
        """The next job for a worker, now ``running`` (atomically: two workers never claim the same job),
        with the name of its run folder.

        ``prefer`` is the (engine, model) the worker holds loaded: its oldest queued job for that model
        goes first, unless the oldest job of all has waited longer than ``patience`` seconds (so no
        model's jobs starve behind another's)."""
        def work(db: sqlite3.Connection) -> str | None:
            row = db.execute("SELECT id, submitted FROM jobs WHERE state = 'queued' ORDER BY seq LIMIT 1").fetchone()
            if row is not None and prefer is not None and time.time() - row["submitted"] < patience:
                same = db.execute("SELECT id, submitted FROM jobs WHERE state = 'queued' AND "
                                  "json_extract(spec, '$.engine') = ? AND json_extract(spec, '$.model') IS ? "
                                  "ORDER BY seq LIMIT 1", prefer).fetchone()
                row = same or row
            if row is None:
                return None
            db.execute("UPDATE jobs SET state = 'running', stage = 'loading', started = ?, attempts = attempts + 1, "
                       "step = NULL, steps = NULL, run_id = ?, device = ? WHERE id = ?",
                       (time.time(), new_run_id(), device, row["id"]))
            return row["id"]

        claimed = self._write(work, wait)
        return self.get(claimed, internal=True) if claimed else None

    def progress(self, job_id: str, stage: str | None = None, step: int | None = None,
                 steps: int | None = None) -> bool:
        """Best effort: one try (none while the store is in trouble, but once a second); False if not written.
        A later event writes the same fields again, so a lost one costs nothing."""
        if self._trouble and time.monotonic() - getattr(self._local, "last_try", 0.0) < 1.0:
            return False
        self._local.last_try = time.monotonic()
        try:
            self._write(lambda db: db.execute("UPDATE jobs SET stage = COALESCE(?, stage), step = COALESCE(?, step), "
                                              "steps = COALESCE(?, steps) WHERE id = ? AND state = 'running'",
                                              (stage, step, steps, job_id)), wait=0.0)
        except StoreUnavailable:
            return False
        return True

    def finish(self, job_id: str, state: str, result: dict[str, Any] | None = None, error: str | None = None,
               wait: float | None = None, run_id: str | None = None) -> None:
        """Record a job's end; with ``run_id``, only while that claim of it still runs (a worker's end of a run
        that was already ended or requeued and claimed again changes nothing: no job ends twice)."""
        assert state in TERMINAL
        encoded = json.dumps(result, default=str) if result is not None else None
        guard, args = ("", ()) if run_id is None else (" AND state = 'running' AND run_id = ?", (run_id,))

        def work(db: sqlite3.Connection) -> None:
            if db.execute("UPDATE jobs SET state = ?, stage = NULL, finished = ?, result = ?, error = ? WHERE id = ?"
                          + guard, (state, time.time(), encoded, error, job_id, *args)).rowcount:
                deliveries.queue(db, job_id)

        self._write(work, wait)

    def requeue(self, job_id: str, counted: bool, wait: float | None = None) -> None:
        """A running job back to the queue (at its old place): ``counted`` keeps the attempt it used (its run
        was cut by a crash); otherwise the attempt is given back (the service was stopped on purpose)."""
        self._write(lambda db: db.execute(
            "UPDATE jobs SET state = 'queued', stage = NULL, step = NULL, steps = NULL, started = NULL, "
            "run_id = NULL, device = NULL, attempts = attempts - ? WHERE id = ? AND state = 'running'",
            (0 if counted else 1, job_id)), wait)

    def request_cancel(self, job_id: str) -> str | None:
        """Cancel a job: a queued one at once (``"cancelled"``), a running one by recording the request for its
        worker (``"requested"``); None when it is neither (any more)."""
        def work(db: sqlite3.Connection) -> str | None:
            now = time.time()
            if db.execute("UPDATE jobs SET state = 'cancelled', finished = ?, error = 'cancelled before it started' "
                          "WHERE id = ? AND state = 'queued'", (now, job_id)).rowcount:
                deliveries.queue(db, job_id)
                return "cancelled"
            if db.execute("UPDATE jobs SET cancel_requested = COALESCE(cancel_requested, ?) "
                          "WHERE id = ? AND state = 'running'", (now, job_id)).rowcount:
                return "requested"
            return None

        return self._write(work)

    def request_interrupt(self, job_id: str) -> str | None:
        """Ask a running job to stop early and keep what it has (``"requested"``, recorded for its worker); a queued
        one has nothing to keep yet (``"queued"``: nothing is recorded); None when it is neither."""
        def work(db: sqlite3.Connection) -> str | None:
            if db.execute("UPDATE jobs SET interrupt_requested = COALESCE(interrupt_requested, ?) "
                          "WHERE id = ? AND state = 'running'", (time.time(), job_id)).rowcount:
                return "requested"
            if db.execute("SELECT 1 FROM jobs WHERE id = ? AND state = 'queued'", (job_id,)).fetchone():
                return "queued"
            return None

        return self._write(work)

    def cancel_queued(self, job_id: str) -> bool:
        """Cancel a job that has not started; False when it is not queued (any more)."""
        def work(db: sqlite3.Connection) -> bool:
            if db.execute("UPDATE jobs SET state = 'cancelled', finished = ?, error = 'cancelled before it started' "
                          "WHERE id = ? AND state = 'queued'", (time.time(), job_id)).rowcount != 1:
                return False
            deliveries.queue(db, job_id)
            return True

        return self._write(work)

    def delete(self, job_id: str) -> None:
        """The job and its Idempotency-Keys (the key may submit anew); its webhook deliveries still pending are
        still sent (their body is kept), the others go with it."""
        def work(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
            db.execute("DELETE FROM idempotency_keys WHERE job_id = ?", (job_id,))
            db.execute("DELETE FROM webhook_deliveries WHERE job_id = ? AND status != 'pending'", (job_id,))

        self._write(work)

    def recover(self, outputs: Path) -> list[dict[str, Any]]:
        """After a restart: each job left ``running`` cancelled (a cancel was asked), finished from its run
        folder (renamed into place), re-queued once, or failed when already re-run. Its half-written folder
        is removed."""
        recovered = []
        rows = self._read(lambda db: db.execute("SELECT id, attempts, cancel_requested, run_id, device FROM jobs "
                                                "WHERE state = 'running'").fetchall())
        for row in rows:
            if row["run_id"]:
                shutil.rmtree(outputs / f".{row['run_id']}.partial", ignore_errors=True)
            finished = finished_run(outputs, row["run_id"])
            if row["cancel_requested"]:
                if finished:  # the cancel was recorded first: it stands, and the run is not kept
                    shutil.rmtree(finished["run_dir"], ignore_errors=True)
                self.finish(row["id"], "cancelled", error=CANCELLED_RUNNING + " (the service stopped before it "
                                                                              "ended; it is not run again)")
                action = "cancelled, as requested"
            elif finished:
                self.finish(row["id"], "done", result={**finished, "attempt": row["attempts"], "device": row["device"],
                                                       "recovered_from_run_folder": True})
                action = "finished from its run folder"
            elif row["attempts"] < MAX_ATTEMPTS:
                self.requeue(row["id"], counted=True)
                action = "requeued"
            else:
                self.finish(row["id"], "failed", error=f"the service stopped while running it, {row['attempts']} "
                                                       "times; not run again")
                action = "failed"
            recovered.append({"id": row["id"], "action": action})
        return recovered

    # -- reading ---------------------------------------------------------------------------------
    def get(self, job_id: str, internal: bool = False) -> dict[str, Any] | None:
        """The job as the API shows it (``internal``: with its ``run_id`` and ``device`` too)."""
        row = self._read(lambda db: db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())
        if row is None:
            return None
        job = self._public(row)
        if internal:
            job.update(run_id=row["run_id"], device=row["device"])
        return job

    def list(self, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        query, args = "SELECT * FROM jobs", []
        if state:
            query, args = query + " WHERE state = ?", [state]
        rows = self._read(lambda db: db.execute(query + " ORDER BY seq DESC LIMIT ?", (*args, limit)).fetchall())
        return [self._public(row) for row in rows]

    def deliveries(self, job_id: str) -> list[dict[str, Any]]:
        """The job's webhook deliveries (``deliveries.listing``)."""
        return self._read(lambda db: deliveries.listing(db, job_id))

    def queued_count(self) -> int:
        return self._read(lambda db: db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'queued'").fetchone()[0])

    def _public(self, row: sqlite3.Row) -> dict[str, Any]:
        job = {key: row[key] for key in ("id", "state", "stage", "submitted", "started", "finished", "attempts",
                                         "step", "steps", "error")}
        job["spec"] = json.loads(row["spec"])
        job["result"] = json.loads(row["result"]) if row["result"] else None
        if job["spec"].get("callbacks"):
            job["webhooks"] = self.deliveries(row["id"])
        if row["state"] == "running":
            job["cancel_requested"] = row["cancel_requested"] is not None
            job["interrupt_requested"] = row["interrupt_requested"] is not None
        if row["state"] == "queued":  # 1 = next to run
            job["position"] = self._read(lambda db: db.execute(
                "SELECT COUNT(*) FROM jobs WHERE state = 'queued' AND seq <= ?", (row["seq"],)).fetchone()[0])
        if row["state"] == "running" and row["step"] and row["steps"] and row["started"]:
            elapsed = time.time() - row["started"]
            job["eta_seconds"] = round(elapsed / row["step"] * (row["steps"] - row["step"]), 1)
        return job


def finished_run(outputs: Path, run_id: str | None) -> dict[str, Any] | None:
    """A run folder renamed into place (complete: its info.json was written before the rename) as a job's
    result: ``{run_dir, files, info}``, as the run returned it; None when there is none."""
    if not run_id:
        return None
    folder = outputs / run_id
    try:
        info = json.loads((folder / "info.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return {"run_dir": str(folder), "files": [*info.get("outputs", []), str(folder / "info.json")], "info": info}
