"""A worker's process: one per device, kept between jobs so that its models stay loaded, and killed when
a job must stop at once (a cancel that its next progress event did not honour, a stop past its grace).

The parent (``Worker`` in worker.py) holds a ``Runner`` and talks to the process over one socket
(``multiprocessing.connection``: pickled dicts):

    parent -> child   {"runtime": Runtime, "preview_every": n}      first: how this device runs models
                      {"run": job_id, "spec", "run_id", "out"}      run one job into out/run_id
                      {"cancel": job_id}                            stop it at its next progress event
                      {"interrupt": job_id}                         stop early at its next step, keeping it
                      {"control": "unload"}                         drop every loaded model (between jobs)
                      {"control": "load", "spec"}                   load the spec's model (between jobs)
                      (the socket closed)                           exit
    child -> parent   {"ready": pid}                                plugins loaded, waiting for jobs
                      {"progress": job_id, "event": {...}}          a stage, a step or a preview of the run
                      {"done": job_id, "result": {...}, "models"}   the run folder is in place; models loaded
                      {"controlled": what, "models", "error"?}      a control done; the models loaded now
                      {"failed": job_id, "error": str, "errno"}     the run raised (nothing kept)
                      {"cancelled": job_id}                         the run unwound (nothing kept)

The child never touches the job store: the parent records what it hears, so the store stays the
one source of truth. It ignores SIGINT and SIGTERM (a Ctrl-C in a terminal reaches the whole
process group; the parent decides whether the job finishes) and exits when the parent goes: its
socket closes, and on Linux the kernel's parent-death signal kills it even mid-computation.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

READY_TIMEOUT = 120.0  # seconds a new process may take to load the plugins (a busy machine is slow)


class Cancelled(Exception):
    """Raised inside a running job when it was cancelled."""


class RunnerDied(Exception):
    """The worker process ended (or stopped answering) while the parent needed it; ``reason`` says how."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def run_spec(spec: dict[str, Any], out: Path, on_progress=None, runtime=None, run_id: str | None = None,
             preview_every: int = 0, stop_early=None):
    """One job spec ``{engine, task, request, model?, formats?, preset?, follow_up?}`` through prepare/execute
    (with follow-up steps: ``follow_up.run_chain``)."""
    from ..orchestrator import RunOptions, execute, prepare

    if spec.get("follow_up"):
        from .follow_up import run_chain

        from functools import partial

        # each step of the chain previews and stops early as the job does
        steps = partial(run_spec, preview_every=preview_every, stop_early=stop_early)
        return run_chain(spec, out, steps, on_progress, runtime, run_id)
    from ..runtime import Runtime

    options = RunOptions(model=spec.get("model"), out=out, formats=tuple(spec["formats"]) if spec.get("formats")
                         else None, quiet=True, preset=spec.get("preset"), on_progress=on_progress,
                         runtime=runtime or Runtime(), run_id=run_id, preview_every=preview_every,
                         stop_early=stop_early)
    return execute(prepare(spec["engine"], spec["task"], spec["request"], options), options)


# -- the parent's side ---------------------------------------------------------------------------
class Runner:
    """The parent's handle on one worker process."""

    def __init__(self, device: str, runtime, preview_every: int = 0):
        self.device, self.runtime, self.preview_every = device, runtime, preview_every
        self.proc: subprocess.Popen | None = None
        self.conn = None

    def start(self, timeout: float = READY_TIMEOUT, stopping: threading.Event | None = None) -> None:
        """Start the process and wait until it is ready; RunnerDied says why it is not (or that ``stopping``
        was set meanwhile)."""
        from multiprocessing import Pipe

        ours, theirs = Pipe(duplex=True)
        try:
            self.proc = subprocess.Popen([sys.executable, "-c", f"from codex_core.serve.runner import main; "
                                          f"main({theirs.fileno()}, {os.getpid()})"],
                                         pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        except OSError as exc:  # no process could be made (out of memory, of process slots)
            ours.close()
            raise RunnerDied(f"it could not be started: {exc}") from None
        finally:
            theirs.close()  # the child's copy only: when it exits, ours reads end-of-file
        self.conn = ours
        try:
            self.conn.send({"runtime": self.runtime, "preview_every": self.preview_every})
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                message = self.receive(0.2)
                if message is not None and "ready" in message:
                    return
                if stopping is not None and stopping.is_set():
                    raise RunnerDied("the service is stopping")
            raise RunnerDied(f"it was not ready after {timeout:.0f} s")
        except RunnerDied:
            self.kill()
            raise
        except OSError as exc:
            self.kill()
            raise RunnerDied(f"it could not be reached: {exc}") from None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and self.conn is not None

    def send(self, message: dict[str, Any]) -> None:
        try:
            self.conn.send(message)
        except (OSError, ValueError):  # a closed socket: the process is gone
            raise RunnerDied(self.exit_reason()) from None

    def receive(self, timeout: float) -> dict[str, Any] | None:
        """The next message, or None when none came within ``timeout`` seconds."""
        try:
            if not self.conn.poll(timeout):
                if self.proc.poll() is not None:
                    raise RunnerDied(self.exit_reason())
                return None
            return self.conn.recv()
        except (EOFError, OSError):
            raise RunnerDied(self.exit_reason()) from None

    def exit_reason(self) -> str:
        if self.proc is None:
            return "it was never started"
        try:
            code = self.proc.wait(5)
        except subprocess.TimeoutExpired:
            return "it stopped answering"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return f"it was killed by {name}"
        return f"it exited with code {code}"

    def kill(self) -> None:
        """End it now, whatever it is doing (SIGKILL)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        self.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Let it exit (its socket closes), then kill it if it has not within ``timeout`` seconds."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.proc is not None:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.close()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.proc is not None:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass


# -- the child's side ----------------------------------------------------------------------------
def main(fd: int, parent: int) -> None:
    from multiprocessing.connection import Connection

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent(parent)
    serve(Connection(fd))


def serve(conn) -> None:
    """The child's loop over ``conn`` (anything with ``send`` and ``recv``; ``recv`` raises EOFError once the parent
    is gone): the setup, ``ready``, then the jobs and controls in order, as the module's docstring says. A worker
    process runs it over its socket, a Ray worker actor (ray_actor.py) over its queues."""
    from queue import Queue

    setup = conn.recv()
    from ..registry import engines

    engines()  # the plugins, loaded before the first job rather than during it
    jobs: Queue = Queue()
    asked: dict[str, set[str]] = {"cancel": set(), "interrupt": set()}
    threading.Thread(target=_listen, args=(conn, jobs, asked), name="codex-runner-listen", daemon=True).start()
    conn.send({"ready": os.getpid()})
    while True:
        message = jobs.get()
        if "control" in message:
            _control(conn, message, setup["runtime"])
        else:
            _run(conn, message, setup["runtime"], asked, setup.get("preview_every", 0))


def _control(conn, message: dict[str, Any], runtime) -> None:
    """Unload every model of this process's cache, or load the model of a spec, and say how many are loaded."""
    from ..model_cache import cache

    reply: dict[str, Any] = {"controlled": message["control"]}
    try:
        if message["control"] == "unload":
            cache.clear()
        else:
            from ..orchestrator import RunOptions, preload

            spec = message["spec"]
            preload(spec["engine"], spec["task"], RunOptions(model=spec.get("model"), runtime=runtime, quiet=True))
    except Exception as exc:  # noqa: BLE001  (a model that does not load: said, and the process goes on)
        reply["error"] = f"{type(exc).__name__}: {exc}"
    reply["models"] = len(cache.keys())
    try:
        conn.send(reply)
    except (OSError, ValueError):
        _exit()


def _listen(conn, jobs, asked: dict[str, set[str]]) -> None:
    """Messages from the parent; a cancel or an interrupt is noted at once, while the main thread runs the job."""
    try:
        while True:
            message = conn.recv()
            kind = next((kind for kind in asked if kind in message), None)
            if kind:
                asked[kind].add(message[kind])
            else:
                jobs.put(message)
    except (EOFError, OSError):  # the parent closed the socket, or is gone: nobody to report to
        _exit()


def _run(conn, message: dict[str, Any], runtime, asked: dict[str, set[str]], preview_every: int) -> None:
    job_id = message["run"]
    cancelled = asked["cancel"]

    def sink(event: dict[str, Any]) -> None:
        if job_id in cancelled:
            raise Cancelled(job_id)
        if event["type"] in ("stage", "step", "preview"):
            conn.send({"progress": job_id, "event": event})

    try:
        from ..model_cache import cache

        result = run_spec(message["spec"], Path(message["out"]), sink, runtime, message["run_id"], preview_every,
                          stop_early=lambda: job_id in asked["interrupt"])
        reply: dict[str, Any] = {"done": job_id, "result": result.as_json(), "models": len(cache.keys())}
    except Exception as exc:  # noqa: BLE001  (every failure is the job's, reported; the process goes on)
        reply = _failure(job_id, exc, job_id in cancelled)
    cancelled.discard(job_id)
    asked["interrupt"].discard(job_id)
    try:
        conn.send(reply)
    except (OSError, ValueError):
        _exit()
    except Exception as exc:  # noqa: BLE001  (a result that does not pickle)
        conn.send({"failed": job_id, "error": f"its result could not be sent: {type(exc).__name__}: {exc}"})


def _failure(job_id: str, exc: Exception, cancelled: bool) -> dict[str, Any]:
    from ..errors import CodexError

    if isinstance(exc, Cancelled) or cancelled:  # an engine may wrap what the sink raised
        return {"cancelled": job_id}
    if isinstance(exc, CodexError):
        return {"failed": job_id, "error": str(exc)}
    traceback.print_exc()
    return {"failed": job_id, "error": f"{type(exc).__name__}: {exc}", "errno": getattr(exc, "errno", None)}


def _die_with_parent(parent: int) -> None:
    """On Linux, have the kernel kill this process when its parent dies (even while it computes)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # it died before that took effect
        _exit()


def _exit() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)
