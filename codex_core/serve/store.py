"""The service's durable job queue: one SQLite database file in WAL mode under the state dir.

A job accepted with 202 is a committed row before the response is sent (``synchronous=FULL``), so
a crash or ``kill -9`` cannot lose it. States: ``queued`` -> ``running`` -> ``done`` | ``failed`` |
``cancelled``. On start, a job the last process left ``running`` is re-run once: it goes back to
the queue with its ``attempts`` count kept, and info says ``attempt: 2``; a job that was already
re-run ends ``failed`` with the reason, rather than crash the service a third time.

Each thread has its own connection (sqlite3 connections are not shared across threads).
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

TERMINAL = ("done", "failed", "cancelled")
MAX_ATTEMPTS = 2  # the first run and one re-run after the service died during it
PATIENCE = 30.0  # seconds a job may wait while workers prefer jobs for the models they hold

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
    result TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, seq);
"""


class JobStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA synchronous=FULL")
            self._local.db = db
        return db

    # -- writing ---------------------------------------------------------------------------------
    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        job_id = secrets.token_urlsafe(16)  # unguessable: ids are the only handle on a job's files
        self._db().execute("INSERT INTO jobs (id, state, spec, submitted) VALUES (?, 'queued', ?, ?)",
                           (job_id, json.dumps(spec), time.time()))
        return self.get(job_id)

    def claim(self, prefer: tuple[str, str | None] | None = None, patience: float = PATIENCE) -> dict[str, Any] | None:
        """The next job for a worker, now ``running`` (atomically: two workers never claim the same job).

        ``prefer`` is the (engine, model) the worker holds loaded: its oldest queued job for that model
        goes first, unless the oldest job of all has waited longer than ``patience`` seconds (so no
        model's jobs starve behind another's)."""
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT id, submitted FROM jobs WHERE state = 'queued' ORDER BY seq LIMIT 1").fetchone()
            if row is not None and prefer is not None and time.time() - row["submitted"] < patience:
                same = db.execute("SELECT id, submitted FROM jobs WHERE state = 'queued' AND "
                                  "json_extract(spec, '$.engine') = ? AND json_extract(spec, '$.model') IS ? "
                                  "ORDER BY seq LIMIT 1", prefer).fetchone()
                row = same or row
            if row is None:
                db.execute("COMMIT")
                return None
            db.execute("UPDATE jobs SET state = 'running', stage = 'loading', started = ?, attempts = attempts + 1, "
                       "step = NULL, steps = NULL WHERE id = ?", (time.time(), row["id"]))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return self.get(row["id"])

    def progress(self, job_id: str, stage: str | None = None, step: int | None = None,
                 steps: int | None = None) -> None:
        self._db().execute("UPDATE jobs SET stage = COALESCE(?, stage), step = COALESCE(?, step), "
                           "steps = COALESCE(?, steps) WHERE id = ? AND state = 'running'",
                           (stage, step, steps, job_id))

    def finish(self, job_id: str, state: str, result: dict[str, Any] | None = None, error: str | None = None) -> None:
        assert state in TERMINAL
        self._db().execute("UPDATE jobs SET state = ?, stage = NULL, finished = ?, result = ?, error = ? WHERE id = ?",
                           (state, time.time(), json.dumps(result) if result is not None else None, error, job_id))

    def cancel_queued(self, job_id: str) -> bool:
        """Cancel a job that has not started; False when it is not queued (any more)."""
        cursor = self._db().execute("UPDATE jobs SET state = 'cancelled', finished = ?, "
                                    "error = 'cancelled before it started' WHERE id = ? AND state = 'queued'",
                                    (time.time(), job_id))
        return cursor.rowcount == 1

    def delete(self, job_id: str) -> None:
        self._db().execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def recover(self) -> list[dict[str, Any]]:
        """After a restart: jobs left ``running`` are re-queued once, or failed when already re-run."""
        db = self._db()
        recovered = []
        for row in db.execute("SELECT id, attempts FROM jobs WHERE state = 'running'").fetchall():
            if row["attempts"] < MAX_ATTEMPTS:
                db.execute("UPDATE jobs SET state = 'queued', stage = NULL, step = NULL, steps = NULL WHERE id = ?",
                           (row["id"],))
                recovered.append({"id": row["id"], "action": "requeued"})
            else:
                self.finish(row["id"], "failed", error=f"the service stopped while running it, {row['attempts']} "
                                                       "times; not run again")
                recovered.append({"id": row["id"], "action": "failed"})
        return recovered

    # -- reading ---------------------------------------------------------------------------------
    def get(self, job_id: str) -> dict[str, Any] | None:
        row = self._db().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return self._public(row) if row else None

    def list(self, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        query, args = "SELECT * FROM jobs", []
        if state:
            query, args = query + " WHERE state = ?", [state]
        rows = self._db().execute(query + " ORDER BY seq DESC LIMIT ?", (*args, limit)).fetchall()
        return [self._public(row) for row in rows]

    def queued_count(self) -> int:
        return self._db().execute("SELECT COUNT(*) FROM jobs WHERE state = 'queued'").fetchone()[0]

    def _public(self, row: sqlite3.Row) -> dict[str, Any]:
        job = {key: row[key] for key in ("id", "state", "stage", "submitted", "started", "finished", "attempts",
                                         "step", "steps", "error")}
        job["spec"] = json.loads(row["spec"])
        job["result"] = json.loads(row["result"]) if row["result"] else None
        if row["state"] == "queued":  # 1 = next to run
            job["position"] = self._db().execute("SELECT COUNT(*) FROM jobs WHERE state = 'queued' AND seq <= ?",
                                                 (row["seq"],)).fetchone()[0]
        if row["state"] == "running" and row["step"] and row["steps"] and row["started"]:
            elapsed = time.time() - row["started"]
            job["eta_seconds"] = round(elapsed / row["step"] * (row["steps"] - row["step"]), 1)
        return job
