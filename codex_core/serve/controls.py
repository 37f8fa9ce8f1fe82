"""Requests to the workers' processes between jobs: unload every model (A1111's ``unload-checkpoint``) or
load one (``reload-checkpoint``).

A request waits in each worker's ``controls`` queue; the worker's thread carries it out before it claims
its next job (a running job finishes first), by a message to its process (runner.py: ``{"control": ...}``),
whose answer says how many models it holds now (``Worker.models``, in ``/v1/health``).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .runner import RunnerDied


@dataclass
class Control:
    """One request to one worker's process (``{"control": "unload"}``, or ``"load"`` with a spec), and its answer."""

    message: dict[str, Any]
    done: threading.Event = field(default_factory=threading.Event)
    reply: dict[str, Any] | None = None


def send_to_all(workers, message: dict[str, Any], timeout: float) -> list[dict[str, Any] | None]:
    """``message`` to every worker's process; each one's answer, or None where none came within ``timeout``
    seconds (a worker busy with a job does it when the job ends)."""
    requests = [Control(dict(message)) for _ in workers.workers]
    for worker, request in zip(workers.workers, requests):
        worker.controls.append(request)
        worker.wake.set()
    deadline = time.monotonic() + timeout
    for request in requests:
        request.done.wait(max(0.0, deadline - time.monotonic()))
    return [request.reply for request in requests]


def carry_out(worker, request: Control) -> None:
    """On the worker's thread: the request to its process, and the answer (a stop ends the wait)."""
    message = request.message
    try:
        worker.runner.send(message)
        reply = None
        while reply is None or "controlled" not in reply:
            if worker.stop_at is not None:
                raise RunnerDied("the service is stopping")
            reply = worker.runner.receive(0.2)
        worker.models = reply["models"]
        spec = message.get("spec") or {}
        loaded = message["control"] == "load" and "error" not in reply
        worker.holds = (spec["engine"], spec.get("model")) if loaded else None
        request.reply = reply
    except RunnerDied as exc:
        worker.runner.kill()
        worker.runner, worker.holds, worker.models = None, None, None
        request.reply = {"controlled": message["control"], "error": f"its process ended: {exc.reason}"}
    finally:
        request.done.set()
