"""The worker: takes queued jobs one at a time and runs them through the same prepare/execute as the CLI.

Models stay loaded between jobs (the process-wide model cache). Progress events become the job's
stage (``JOB_STAGES``, from the run's stage events) and step in the store; a cancel request raises ``Cancelled`` from the progress sink, which
unwinds the run like Ctrl-C: no partial output is kept.
"""

from __future__ import annotations

import threading
import traceback
from collections import OrderedDict
from pathlib import Path
from typing import Any

from ..errors import CodexError
from ..runtime import Runtime
from .store import JobStore

# a run's progress stage -> the job's stage as the API reports it (a step sets "running")
JOB_STAGES = {"load": "loading", "encode": "encoding", "denoise": "running", "decode": "decoding",
              "export": "exporting"}


class Cancelled(Exception):
    """Raised inside a running job when it was cancelled."""


def run_spec(spec: dict[str, Any], out: Path, on_progress=None, runtime: Runtime | None = None):
    """One job spec ``{engine, task, request, model?, formats?, preset?}`` through prepare/execute."""
    from ..orchestrator import RunOptions, execute, prepare

    options = RunOptions(model=spec.get("model"), out=out, formats=tuple(spec["formats"]) if spec.get("formats")
                         else None, quiet=True, preset=spec.get("preset"), on_progress=on_progress,
                         runtime=runtime or Runtime())
    return execute(prepare(spec["engine"], spec["task"], spec["request"], options), options)


class Worker(threading.Thread):
    """One worker per device; it prefers queued jobs for the model it last ran (still loaded)."""

    def __init__(self, store: JobStore, out: Path, device: str = "auto",
                 events: "OrderedDict[str, list[dict[str, Any]]] | None" = None, runtime: Runtime | None = None):
        super().__init__(name=f"codex-worker-{device}", daemon=True)
        self.store = store
        self.out = out
        self.device = device
        self.runtime = (runtime or Runtime()).replace(device=device)
        self.holds: tuple[str, str | None] | None = None
        self.cancelled: set[str] = set()
        self.current: str | None = None
        self.wake = threading.Event()
        self.stopping = False
        # every progress event of the last jobs run here, for the event streams (polling the store
        # would miss steps that finish faster than it looks)
        self.events: OrderedDict[str, list[dict[str, Any]]] = OrderedDict() if events is None else events

    def cancel(self, job_id: str) -> None:
        self.cancelled.add(job_id)

    def run(self) -> None:
        while not self.stopping:
            job = self.store.claim(self.holds)
            if job is None:
                self.wake.wait(0.5)
                self.wake.clear()
                continue
            self._run(job)

    def _sink(self, job_id: str):
        log = self.events.setdefault(job_id, [])
        while len(self.events) > 200:
            self.events.popitem(last=False)

        def sink(event: dict[str, Any]) -> None:
            if job_id in self.cancelled:
                raise Cancelled(job_id)
            if event["type"] == "step":
                self.store.progress(job_id, "running", event["done"], event["total"])
                log.append({"event": "step", "step": event["done"], "steps": event["total"]})
            elif event["type"] == "stage":
                stage = JOB_STAGES[event["stage"]]
                self.store.progress(job_id, stage)
                log.append({"event": "stage", "stage": stage})
        return sink

    def _run(self, job: dict[str, Any]) -> None:
        job_id = job["id"]
        self.current = job_id
        try:
            self.holds = (job["spec"]["engine"], job["spec"].get("model"))
            result = run_spec(job["spec"], self.out, self._sink(job_id), self.runtime)
            data = result.as_json()
            data["attempt"] = job["attempts"]
            data["device"] = self.device
            self.store.finish(job_id, "done", result=data)
        except Cancelled:
            self.store.finish(job_id, "cancelled", error="cancelled while running; no partial output was kept")
        except CodexError as exc:
            self.store.finish(job_id, "failed", error=str(exc))
        except Exception as exc:  # an engine failure: the job fails, the service goes on
            self.store.finish(job_id, "failed", error=f"{type(exc).__name__}: {exc}")
            traceback.print_exc()
        finally:
            self.current = None
            self.cancelled.discard(job_id)


class Workers:
    """The service's workers, one per device, as one: wake, cancel and event logs span them all."""

    def __init__(self, workers: list[Worker], events):
        self.workers, self.events = workers, events

    @property
    def current(self) -> str | None:
        return next((w.current for w in self.workers if w.current), None)

    def start(self) -> None:
        for w in self.workers:
            w.start()

    def wake(self) -> None:
        """A job was queued: idle workers look now rather than at their next poll."""
        for w in self.workers:
            w.wake.set()

    def stop(self) -> None:
        for w in self.workers:
            w.stopping = True
            w.wake.set()

    def cancel(self, job_id: str) -> None:
        for w in self.workers:
            w.cancel(job_id)
