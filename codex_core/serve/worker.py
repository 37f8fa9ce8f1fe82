"""The workers: one per device, each a supervising thread in the service and a process that runs its jobs.

A ``Worker`` (a thread) claims queued jobs one at a time, preferring jobs for the model its process
holds loaded, hands each to its process (``Runner``, runner.py: the same prepare/execute as the
CLI) and records what comes back: progress events become the job's stage (``JOB_STAGES``) and
step in the store and the event log the streams read; the end becomes done, failed or cancelled.
Previews (every ``preview_every`` steps) are kept in memory only, the latest per running job
(``previews``), for the event streams and A1111's progress: they change too often to write.
The thread runs no model itself, so nothing a job does takes it down, and it can always stop a job:

- cancel: the request is stored first (``cancel_requested``), then passed to the process, which
  stops at the run's next progress event (between steps, keeping its models loaded); when none
  comes within ``cancel_grace`` seconds (a long load, text encoding, decode or export), the process
  is killed and a new one started (the next job loads its model again). Nothing of the run is kept.
- interrupt (stop early and keep): stored the same way (``interrupt_requested``) and passed on; the run
  skips its remaining steps at its next step, decodes what it has and ends done. No grace, no kill.
- the process dies (a segfault, the OOM killer): the job goes back to the queue with the attempt
  counted, and fails with the reason once it has used ``MAX_ATTEMPTS``; a new process starts.
- the store cannot be written (locked, disk full): the worker keeps trying to record the job's end,
  with a bounded backoff, and claims nothing new meanwhile; ``/v1/health`` says why.
- a graceful stop (SIGTERM, Ctrl-C): the running job may finish within ``stop_grace`` seconds; past
  that the process is killed and the job requeued without counting an attempt.

``Workers`` holds them all: it wakes, cancels and stops them as one and reports their health, and
its watchdog replaces a worker thread that died (every failure is caught, so none should; the
watchdog is for what was not foreseen).
"""

from __future__ import annotations

import errno
import shutil
import sys
import threading
import time
import traceback
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..runtime import Runtime
from .runner import Runner, RunnerDied
from .store import BACKOFF, CANCELLED_RUNNING, MAX_ATTEMPTS, JobStore, StoreUnavailable, finished_run

# a run's progress stage -> the job's stage as the API reports it (a step sets "running")
JOB_STAGES = {"load": "loading", "encode": "encoding", "denoise": "running", "decode": "decoding",
              "export": "exporting"}
CANCEL_GRACE = 2.0  # seconds a cancelled run has to reach its next progress event before its process is killed
STOP_GRACE = 8.0  # seconds a running job may take to finish when the service is stopped
WATCHDOG_INTERVAL = 0.5
# a job that failed with one of these could not write its outputs: the service's disk, not the request
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO}


@dataclass
class Outcome:
    """How a job's run ended, as the store will record it (``queued``: back to the queue)."""

    state: str
    result: dict[str, Any] | None = None
    error: str | None = None
    counted: bool = True  # queued: whether the attempt it used stands
    errno: int | None = None


class Worker(threading.Thread):
    """One device's worker; it prefers queued jobs for the model its process holds (still loaded)."""

    def __init__(self, store: JobStore, out: Path, device: str = "auto",
                 events: "OrderedDict[str, list[dict[str, Any]]] | None" = None, runtime: Runtime | None = None,
                 cancel_grace: float = CANCEL_GRACE, previews: dict[str, dict[str, Any]] | None = None,
                 preview_every: int = 0, make_runner=None):
        super().__init__(name=f"codex-worker-{device}", daemon=True)
        self.store, self.out, self.device = store, Path(out), device
        # ``make_runner(device, runtime, preview_every)``: where its jobs run (default: a process here, on
        # ``device``; ray_runner.RayRunner: actors in a Ray cluster, on the runtime's device kind)
        self.make_runner = make_runner
        self.runtime = (runtime or Runtime()).replace(device=device) if make_runner is None else (runtime or Runtime())
        self.cancel_grace, self.preview_every = cancel_grace, preview_every
        self.previews = {} if previews is None else previews  # job id -> its latest preview event
        # every progress event of the last jobs run here, for the event streams (polling the store
        # would miss steps that finish faster than it looks)
        self.events: OrderedDict[str, list[dict[str, Any]]] = OrderedDict() if events is None else events
        self.runner: Runner | None = None
        self.holds: tuple[str, str | None] | None = None  # the (engine, model) its process has loaded
        self.job: dict[str, Any] | None = None  # claimed, and its end not yet recorded
        self.state = "starting"  # starting, idle, running, down (``problem`` says why), stopped
        self.problem: str | None = None
        self.outputs_problem: str | None = None  # the last job could not write its outputs (a full disk)
        self.restarts, self.last_restart = 0, None
        self.died: str | None = None  # what ended the thread, if something did
        self.cancels: set[str] = set()
        self.interrupts: set[str] = set()
        self.controls: deque = deque()  # unload or load requests (controls.py), done before the next job is claimed
        self.models: int | None = None  # models its process holds loaded, as it last said (None: not known)
        self.wake = threading.Event()
        self.stop_at: float | None = None
        self._stopping = threading.Event()
        self._failures = 0

    @property
    def current(self) -> str | None:
        job = self.job
        return job["id"] if job else None

    def cancel(self, job_id: str) -> None:
        """Stop ``job_id`` if this worker runs it (the store already holds the request)."""
        self.cancels.add(job_id)

    def interrupt(self, job_id: str) -> None:
        """Stop ``job_id`` early, keeping what it has, if this worker runs it (the store already holds the request)."""
        self.interrupts.add(job_id)

    def begin_stop(self, grace: float) -> None:
        """Claim nothing more; the running job has ``grace`` seconds from now."""
        if self.stop_at is None:
            self.stop_at = time.monotonic() + grace
        self._stopping.set()
        self.wake.set()

    def health(self) -> dict[str, Any]:
        # counts and states only: health needs no token, so it names no job
        row: dict[str, Any] = {"device": self.device, "running": int(self.current is not None), "state": self.status,
                               "models_loaded": self.models}
        node = getattr(self.runner, "node", None)  # a Ray worker: the node its actor runs on
        if node:
            row["node"] = node
        for key in ("problem", "outputs_problem", "last_restart"):
            if getattr(self, key):
                row[key] = getattr(self, key)
        if self.restarts:
            row["restarts"] = self.restarts
        return row

    @property
    def status(self) -> str:
        if self.ident is not None and not self.is_alive() and self.stop_at is None:
            return "down"  # the thread died; the watchdog replaces it
        return self.state

    # -- the loop --------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            while self.stop_at is None:
                try:
                    self._next()
                except Exception as exc:  # a failure of the worker itself: say so, wait a little, go on
                    traceback.print_exc()
                    self._down(f"{type(exc).__name__}: {exc}")
                    self._pause()
        except BaseException as exc:
            self.died = f"{type(exc).__name__}: {exc}".rstrip(": ")
            raise
        finally:
            if self.runner is not None and self.died:
                self.runner.kill()
            elif self.runner is not None:
                self.runner.stop()
            self.runner = None
            if not self.died:
                self.state = "stopped"

    def _next(self) -> None:
        if self.job is not None:  # a run cut short by a failure here (or the thread before this one)
            self._kill()
            self._record(self.job, self._cut(self.job, self.problem or "its worker failed"))
            return
        if self.runner is None or not self.runner.alive():
            self._start_runner()
            return
        if self.controls:
            from .controls import carry_out

            carry_out(self, self.controls.popleft())
            return
        try:
            job = self.store.claim(self.holds, device=self.device)
        except StoreUnavailable:  # the store says why (health); try again shortly
            self._pause()
            return
        self._failures = 0
        if self.state == "down":  # a failure of its own that the loop caught: it works again
            self.state, self.problem = "idle", None
        if job is None:
            self.wake.wait(0.5)
            self.wake.clear()
            return
        self.cancels.intersection_update({job["id"]})  # requests for jobs that ended elsewhere
        self.interrupts.intersection_update({job["id"]})
        if job.get("interrupt_requested"):  # asked of an earlier attempt: it holds for this one
            self.interrupts.add(job["id"])
        self.job = job
        self._run(job)

    def _start_runner(self) -> None:
        if self.runner is not None:  # it ended while idle
            self._down(f"its process ended while idle: {self.runner.exit_reason()}; starting a new one")
            self.runner.close()
            self.runner = None
        self.holds = None
        if self.state != "down":
            self.state = "starting"
        runner = (self.make_runner or Runner)(self.device, self.runtime, self.preview_every)
        try:
            runner.start(stopping=self._stopping)
        except RunnerDied as exc:
            self._down(f"its process does not start: {exc.reason} (the service's log says why)")
            self._pause()
            return
        self.runner, self.state, self.problem, self._failures, self.models = runner, "idle", None, 0, 0

    def _down(self, reason: str) -> None:
        self.state, self.problem = "down", reason
        self._failures += 1

    def _pause(self) -> None:
        """Wait before trying again: longer after each failure in a row (at most 30 s), shorter on a stop."""
        self._stopping.wait(min(0.25 * 2 ** self._failures, 30.0))

    # -- one job ---------------------------------------------------------------------------------
    def _run(self, job: dict[str, Any]) -> None:
        job_id, spec = job["id"], job["spec"]
        self.state = "running"
        self.holds = (spec["engine"], spec.get("model"))
        log = self._log(job_id)
        try:
            self.runner.send({"run": job_id, "spec": spec, "run_id": job["run_id"], "out": str(self.out)})
            outcome = self._follow(job, log)
        except RunnerDied as exc:
            self.runner.close()
            self.runner, self.holds = None, None
            self._down(f"its process ended while running job {job_id}: {exc.reason}; starting a new one")
            outcome = self._cut(job, exc.reason)
        if outcome.state == "done":
            self.outputs_problem = None
        elif outcome.state == "failed" and outcome.errno in DISK_ERRNOS:
            self.outputs_problem = f"a job could not write its outputs: {outcome.error}"
        self._record(job, outcome)
        if self.state == "running":
            self.state = "idle"

    def _follow(self, job: dict[str, Any], log: list[dict[str, Any]]) -> Outcome:
        """The process's messages about ``job`` until its end; a cancel or a stop past its grace ends it here."""
        job_id, asked, interrupted = job["id"], None, False
        while True:
            now = time.monotonic()
            if asked is None and job_id in self.cancels:
                self.runner.send({"cancel": job_id})
                asked = now
            if not interrupted and job_id in self.interrupts:
                self.runner.send({"interrupt": job_id})
                interrupted = True
            if asked is not None and now - asked >= self.cancel_grace:  # no progress event came: stop it now
                self._kill()
                self._discard(job, keep_finished=False)
                return Outcome("cancelled", error=CANCELLED_RUNNING)
            if self.stop_at is not None and now >= self.stop_at:
                self._kill()
                return self._cut(job, "the service stopped", counted=False)
            message = self.runner.receive(0.1)
            if message is None:
                continue
            if "progress" in message:
                self._progress(job_id, message["event"], log)
            elif "done" in message:
                self.models = message.get("models", self.models)
                return Outcome("done", result={**message["result"], "attempt": job["attempts"], "device": self.device})
            elif "failed" in message:
                return Outcome("failed", error=message["error"], errno=message.get("errno"))
            elif "cancelled" in message:
                return Outcome("cancelled", error=CANCELLED_RUNNING)

    def _progress(self, job_id: str, event: dict[str, Any], log: list[dict[str, Any]]) -> None:
        if event["type"] == "step":
            self.store.progress(job_id, "running", event["done"], event["total"])
            log.append({"event": "step", "step": event["done"], "steps": event["total"]})
        elif event["type"] == "stage":
            stage = JOB_STAGES[event["stage"]]
            self.store.progress(job_id, stage)
            log.append({"event": "stage", "stage": stage})
        elif event["type"] == "preview":
            self.previews[job_id] = event

    def _cut(self, job: dict[str, Any], reason: str, counted: bool = True) -> Outcome:
        """The outcome of a run that ended without its process saying how: cancelled if that was asked,
        done if its run folder is in place, else back to the queue (``counted``: using an attempt)."""
        if self._cancel_requested(job["id"]):
            self._discard(job, keep_finished=False)
            return Outcome("cancelled", error=CANCELLED_RUNNING)
        finished = finished_run(self.out, job["run_id"])
        if finished:
            return Outcome("done", result={**finished, "attempt": job["attempts"], "device": self.device,
                                           "recovered_from_run_folder": True})
        self._discard(job)
        if not counted or job["attempts"] < MAX_ATTEMPTS:
            return Outcome("queued", counted=counted)
        return Outcome("failed", error=f"its worker process died while running it, {job['attempts']} times (last: "
                                       f"{reason}); not run again")

    def _cancel_requested(self, job_id: str) -> bool:
        if job_id in self.cancels:
            return True
        try:
            return bool((self.store.get(job_id) or {}).get("cancel_requested"))
        except StoreUnavailable:
            return False

    def _discard(self, job: dict[str, Any], keep_finished: bool = True) -> None:
        """Remove what a run that was cut short left: its staging folder, and its run folder unless kept."""
        if job.get("run_id"):
            shutil.rmtree(self.out / f".{job['run_id']}.partial", ignore_errors=True)
            if not keep_finished:
                shutil.rmtree(self.out / job["run_id"], ignore_errors=True)

    def _kill(self) -> None:
        if self.runner is not None:
            self.runner.kill()
        self.runner, self.holds = None, None

    def _record(self, job: dict[str, Any], outcome: Outcome) -> None:
        """Write the job's end, trying until the store takes it (past a stop's grace: left to the next start,
        which recovers a job left running)."""
        pause = BACKOFF[0]
        while True:
            try:
                if outcome.state == "queued":
                    self.store.requeue(job["id"], outcome.counted, wait=0.0)
                else:
                    # only the claim this worker holds: a late end never overwrites a job ended or claimed anew
                    self.store.finish(job["id"], outcome.state, outcome.result, outcome.error, wait=0.0,
                                      run_id=job.get("run_id"))
                break
            except StoreUnavailable as exc:
                if self.stop_at is not None and time.monotonic() >= self.stop_at:
                    print(f"codex: job {job['id']} ended ({outcome.state}) but {exc}; the next start recovers it",
                          file=sys.stderr)
                    break
                time.sleep(pause)
                pause = min(pause * 2, BACKOFF[1])
        self.job = None
        self.cancels.discard(job["id"])
        self.interrupts.discard(job["id"])
        self.previews.pop(job["id"], None)

    def _log(self, job_id: str) -> list[dict[str, Any]]:
        log = self.events.setdefault(job_id, [])
        while len(self.events) > 200:
            self.events.popitem(last=False)
        return log

    def successor(self) -> "Worker":
        """A new worker for this one's device, after its thread died: it takes over the job it had."""
        if self.runner is not None:
            self.runner.kill()
        new = Worker(self.store, self.out, self.device, self.events, self.runtime, self.cancel_grace, self.previews,
                     self.preview_every, self.make_runner)
        new.job, new.cancels, new.interrupts = self.job, self.cancels, self.interrupts
        new.problem, new.controls = f"its worker thread died ({self.died})", self.controls
        new.restarts, new.last_restart = self.restarts + 1, f"its thread died ({self.died})"
        return new


class Workers:
    """The service's workers, one per device, as one: wake, cancel, stop and health span them all."""

    def __init__(self, store: JobStore, out: Path, devices: list[str], runtime: Runtime | None = None,
                 cancel_grace: float = CANCEL_GRACE, stop_grace: float = STOP_GRACE, preview_every: int = 0,
                 make_runner=None):
        self.store, self.stop_grace = store, stop_grace
        self.events: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
        self.previews: dict[str, dict[str, Any]] = {}  # running job id -> its latest preview event
        self.workers = [Worker(store, out, device, self.events, runtime, cancel_grace, self.previews, preview_every,
                               make_runner) for device in devices]
        self._stopping = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name="codex-watchdog", daemon=True)

    @property
    def current(self) -> str | None:
        return next((w.current for w in self.workers if w.current), None)

    def start(self) -> None:
        for w in self.workers:
            w.start()
        self._watchdog.start()

    def wake(self) -> None:
        """A job was queued: idle workers look now rather than at their next poll."""
        for w in self.workers:
            w.wake.set()

    def cancel(self, job_id: str) -> str | None:
        """Cancel a job (durably: the store records it first; StoreUnavailable if it cannot): a queued one at
        once (``"cancelled"``), a running one within ``cancel_grace`` seconds (``"requested"``)."""
        outcome = self.store.request_cancel(job_id)
        if outcome == "requested":
            for w in self.workers:
                w.cancel(job_id)
        return outcome

    def interrupt(self, job_id: str) -> str | None:
        """Stop a running job early and keep what it has (durably, as ``cancel``): ``"requested"``; ``"queued"``
        for a job that has not started (nothing to keep: nothing done); None when it is neither."""
        outcome = self.store.request_interrupt(job_id)
        if outcome == "requested":
            for w in self.workers:
                w.interrupt(job_id)
        return outcome

    def pids(self) -> list[int]:
        """The worker processes' ids (their memory is the models')."""
        return [w.runner.proc.pid for w in self.workers if w.runner is not None and w.runner.proc is not None]

    def begin_stop(self, grace: float | None = None) -> None:
        """Claim nothing more; running jobs have ``grace`` seconds (default ``stop_grace``) from now."""
        self._stopping.set()
        for w in self.workers:
            w.begin_stop(self.stop_grace if grace is None else grace)

    def stop(self, grace: float | None = None) -> None:
        """A graceful stop: running jobs finish within the grace or go back to the queue (no attempt
        counted); then the worker processes exit."""
        self.begin_stop(grace)
        for w in list(self.workers):
            if w.ident is not None:
                w.join((self.stop_grace if grace is None else grace) + 30)

    def health(self) -> dict[str, Any]:
        """``status`` ok or degraded, with the ``reasons``: a worker down, a store that cannot be written,
        outputs that could not be written."""
        reasons, rows = [], []
        for w in self.workers:
            row = w.health()
            rows.append(row)
            if row["state"] == "down":
                reasons.append(f"worker {w.device} is down: {w.problem or w.died or 'its thread ended'}")
            if w.outputs_problem:
                reasons.append(f"worker {w.device}: {w.outputs_problem}")
        trouble = self.store.trouble
        if trouble:
            reasons.append(f"the job store cannot be written: {trouble}; new jobs are refused (503) meanwhile")
        try:
            queued = self.store.queued_count()
        except StoreUnavailable as exc:
            queued = None
            reasons.append(str(exc))
        return {"status": "degraded" if reasons else "ok", "reasons": reasons, "queued": queued, "workers": rows}

    def _watch(self) -> None:
        while not self._stopping.wait(WATCHDOG_INTERVAL):
            for index, worker in enumerate(self.workers):
                if worker.ident is None or worker.is_alive() or worker.stop_at is not None or self._stopping.is_set():
                    continue
                print(f"codex: the worker for {worker.device} died ({worker.died}); starting a new one",
                      file=sys.stderr)
                replacement = worker.successor()
                self.workers[index] = replacement
                replacement.start()
