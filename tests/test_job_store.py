"""The job store alone, on a real database file: cancel requests, recovery after a restart, an old
database's schema, and writes while another connection holds the lock."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest

from codex_core.serve.store import JobStore, StoreUnavailable

SPEC = {"engine": "e", "task": "t", "request": {}, "model": None}


def test_a_cancel_is_immediate_for_a_queued_job_and_recorded_for_a_running_one(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    queued, running = store.submit(SPEC)["id"], store.submit(SPEC)["id"]
    assert store.claim()["id"] == queued  # the oldest; claim the other too
    assert store.claim()["id"] == running
    store.finish(queued, "done", result={})
    assert store.request_cancel(running) == "requested"
    assert store.get(running)["cancel_requested"] is True and store.get(running)["state"] == "running"
    assert store.request_cancel(queued) is None  # done: nothing to cancel
    third = store.submit(SPEC)["id"]
    assert store.request_cancel(third) == "cancelled"
    assert store.get(third)["error"] == "cancelled before it started"


def test_a_claim_names_the_run_folder_and_the_device(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    job_id = store.submit(SPEC)["id"]
    claimed = store.claim(device="cuda:1")
    assert claimed["id"] == job_id and claimed["device"] == "cuda:1" and claimed["run_id"]
    assert "run_id" not in store.get(job_id)  # what the API shows is unchanged


def test_an_end_from_a_stale_claim_changes_nothing(tmp_path):
    """A worker's end counts only for the claim it holds: a late result for a job requeued and claimed again (its
    first worker's node was lost), or already ended, is not recorded, so no job ends twice."""
    store = JobStore(tmp_path / "jobs.sqlite3")
    job_id = store.submit(SPEC)["id"]
    first = store.claim(device="ray:1")["run_id"]
    store.requeue(job_id, counted=True)
    second = store.claim(device="ray:0")["run_id"]
    store.finish(job_id, "done", result={"from": "first"}, run_id=first)
    assert store.get(job_id)["state"] == "running"
    store.finish(job_id, "done", result={"from": "second"}, run_id=second)
    store.finish(job_id, "failed", error="late", run_id=second)
    job = store.get(job_id)
    assert (job["state"], job["result"], job["attempts"]) == ("done", {"from": "second"}, 2)


def test_recovery_cancels_finishes_from_the_run_folder_requeues_and_fails(tmp_path):
    store, outputs = JobStore(tmp_path / "jobs.sqlite3"), tmp_path / "outputs"
    ids = [store.submit(SPEC)["id"] for _ in range(5)]
    claimed = {job["id"]: job for job in (store.claim(device="cpu") for _ in ids)}
    cancelled, finished, again, twice, stopped = ids
    store.request_cancel(cancelled)
    for job_id in (cancelled, finished):  # both runs renamed into place before the "crash"
        folder = outputs / claimed[job_id]["run_id"]
        folder.mkdir(parents=True)
        (folder / "0000.png").write_bytes(b"png")
        (folder / "info.json").write_text(json.dumps({"run_id": folder.name, "outputs": [str(folder / "0000.png")]}))
    store.requeue(twice, counted=True)
    assert store.claim()["id"] == twice  # its second attempt
    store.requeue(stopped, counted=False)  # a graceful stop gives the attempt back
    assert store.get(stopped)["attempts"] == 0 and store.get(stopped)["state"] == "queued"
    partial = outputs / f".{claimed[again]['run_id']}.partial"
    partial.mkdir()

    actions = {entry["id"]: entry["action"] for entry in JobStore(tmp_path / "jobs.sqlite3").recover(outputs)}
    assert actions == {cancelled: "cancelled, as requested", finished: "finished from its run folder",
                       again: "requeued", twice: "failed"}
    assert store.get(cancelled)["state"] == "cancelled" and "not run again" in store.get(cancelled)["error"]
    assert not (outputs / claimed[cancelled]["run_id"]).exists()  # the cancel stands: the run is not kept
    done = store.get(finished)
    assert done["state"] == "done" and done["attempts"] == 1
    assert done["result"]["files"] == [str(outputs / claimed[finished]["run_id"] / name) for name in ("0000.png",
                                                                                                     "info.json")]
    assert done["result"]["recovered_from_run_folder"] is True and done["result"]["device"] == "cpu"
    assert (store.get(again)["state"], store.get(again)["attempts"]) == ("queued", 1) and not partial.exists()
    assert store.get(twice)["state"] == "failed" and "2 times" in store.get(twice)["error"]


def test_a_database_of_the_first_schema_gains_the_new_columns(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, state TEXT "
                   "NOT NULL, stage TEXT, spec TEXT NOT NULL, submitted REAL NOT NULL, started REAL, finished REAL, "
                   "attempts INTEGER NOT NULL DEFAULT 0, step INTEGER, steps INTEGER, error TEXT, result TEXT)")
        db.execute("INSERT INTO jobs (id, state, spec, submitted) VALUES ('old', 'queued', ?, ?)",
                   (json.dumps(SPEC), time.time()))
    store = JobStore(path)
    assert store.claim(device="cpu")["id"] == "old"
    assert store.request_cancel("old") == "requested"


@pytest.mark.slow
def test_a_write_waits_for_a_lock_then_says_why_and_the_trouble_ends_with_the_lock(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    job_id = store.submit(SPEC)["id"]
    lock = sqlite3.connect(tmp_path / "jobs.sqlite3", isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreUnavailable, match="database is locked"):
            store.claim(wait=0.5)
        assert "database is locked" in store.trouble
        assert store.get(job_id)["state"] == "queued"  # reading goes on (WAL)
        assert store.progress(job_id, "running") is False  # best effort: no wait
    finally:
        lock.rollback()
        lock.close()
    assert store.claim()["id"] == job_id and store.trouble is None
