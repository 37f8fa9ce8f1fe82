"""The job store's webhook deliveries table: one row per (job, end state, URL), queued by the store in the
transaction that ends the job (``queue``), sent and updated by ``webhooks.Sender``, listed on the job.

Each row keeps the body as it was made when the job ended (the same bytes for every retry), its
``status`` (pending, delivered, failed), when it is next due, and its ``attempts`` (a JSON list: time,
status code or error, seconds). A database an earlier version made gains the table at the next start.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    event TEXT NOT NULL,
    url TEXT NOT NULL,
    body TEXT NOT NULL,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    next_at REAL,
    attempts TEXT NOT NULL DEFAULT '[]',
    UNIQUE (job_id, event, url)
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (status, next_at);
"""


def queue(db: sqlite3.Connection, job_id: str) -> None:
    """In the transaction that ended the job: a delivery for each of its ``callbacks`` (its callback_url, the
    service's --webhook-url), its body fixed now (Standard Webhooks' payload: type, timestamp, data). A job
    ends once, and (job, event, URL) is unique: each state change is delivered once."""
    row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    callbacks = json.loads(row["spec"]).get("callbacks") or []
    if not callbacks:
        return
    event = f"job.{row['state']}"
    body = json.dumps({"type": event, "timestamp": _iso(row["finished"]), "data": {
        "id": job_id, "state": row["state"], "error": row["error"],
        "result": json.loads(row["result"]) if row["result"] else None,
        "submitted": row["submitted"], "finished": row["finished"]}}, default=str)
    for url in dict.fromkeys(callbacks):
        db.execute("INSERT OR IGNORE INTO webhook_deliveries (id, job_id, event, url, body, status, created, next_at) "
                   "VALUES (?, ?, ?, ?, ?, 'pending', ?, ?)",
                   ("msg_" + secrets.token_hex(12), job_id, event, url, body, row["finished"], row["finished"]))


def listing(db: sqlite3.Connection, job_id: str) -> list[dict[str, Any]]:
    """The job's deliveries as ``GET /v1/jobs/{id}`` shows them (``webhooks``)."""
    rows = db.execute("SELECT id, event, url, status, next_at, attempts FROM webhook_deliveries WHERE job_id = ? "
                      "ORDER BY created, url", (job_id,)).fetchall()
    return [{"id": row["id"], "event": row["event"], "url": row["url"], "status": row["status"],
             "next_attempt": row["next_at"] if row["status"] == "pending" else None,
             "attempts": json.loads(row["attempts"])} for row in rows]


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(seconds % 1 * 1000):03d}Z"
