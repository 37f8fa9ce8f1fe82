"""The child side of a worker as a Ray actor, anywhere in the cluster (``codex serve --ray``).

The actor runs the same loop as a worker process (``runner.serve``) in a thread of its own, over two
queues in place of a socket; its other threads answer the front's calls (a threaded actor): ``send``
puts a message in, ``receive`` takes what the loop said. A job runs into a scratch folder on the
actor's node, and its ``done`` message carries the run folder's files (bytes: Ray moves them through
its object store), for the front to write into its own outputs: no storage is shared between nodes.

Imported only under ``--ray`` (it needs ray).
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import traceback
from pathlib import Path
from queue import Empty, Queue
from typing import Any

import ray

from .runner import serve

RANK_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class Queues:
    """``runner.serve``'s connection inside the actor: the front's messages in, the loop's out. ``quiet``: a gang's
    rank after the first, whose messages nobody reads (rank 0 speaks for the gang) but its ``ready``."""

    def __init__(self, quiet: bool):
        self.inbox: Queue = Queue()
        self.outbox: Queue = Queue()
        self.quiet = quiet

    def recv(self) -> dict[str, Any]:
        message = self.inbox.get()
        if message is None:  # the front closed it: runner.serve exits as when a socket closes
            raise EOFError
        return message

    def send(self, message: dict[str, Any]) -> None:
        if self.quiet and "ready" not in message and "crashed" not in message:
            if "done" in message:
                shutil.rmtree(message["result"]["run_dir"], ignore_errors=True)
            return
        if "done" in message:
            message = with_files(message)
        self.outbox.put(message)


def with_files(message: dict[str, Any]) -> dict[str, Any]:
    """A ``done`` message with its run folder's files (relative path -> bytes); the folder is removed from the node."""
    folder = Path(message["result"]["run_dir"])
    files = {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}
    shutil.rmtree(folder, ignore_errors=True)
    return {**message, "files": files}


class WorkerActor:
    """One rank of a worker (rank 0 of 1 without --parallel). Made with ``ray.remote(...).options(...)`` by
    ray_runner.py, with ``max_concurrency`` above 1 so that ``receive`` answers while a job runs."""

    def __init__(self, rank: int):
        self.rank = rank
        self.scratch = Path(tempfile.mkdtemp(prefix="codex-ray-worker-"))  # its jobs' run folders, until sent
        self.conn = Queues(quiet=rank > 0)

    def where(self) -> dict[str, Any]:
        """Where it runs: its node's id and address, its process, the GPUs Ray gave it, and a free port on its
        node (rank 0's is the gang's MASTER_PORT)."""
        context = ray.get_runtime_context()
        with socket.socket() as sock:
            sock.bind(("", 0))
            port = sock.getsockname()[1]
        return {"node_id": context.get_node_id(), "node_ip": ray.util.get_node_ip_address(), "pid": os.getpid(),
                "gpu_ids": [str(gpu) for gpu in ray.get_gpu_ids()], "free_port": port}

    def begin(self, env: dict[str, str]) -> None:
        """Set the rank's environment (before anything reads it: torch.distributed, CUDA), then start the loop."""
        os.environ.update(env)
        threading.Thread(target=self._loop, name="codex-ray-runner", daemon=True).start()

    def _loop(self) -> None:
        try:
            serve(self.conn)
        except BaseException as exc:  # noqa: BLE001  (the plugins did not load: said, rather than never ready)
            self.conn.outbox.put({"crashed": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()})

    def send(self, message: dict[str, Any]) -> None:
        if "run" in message:  # the front's outputs folder is not on this node: the run goes to the scratch folder
            message = {**message, "out": str(self.scratch)}
        self.conn.inbox.put(message)

    def receive(self, timeout: float) -> list[dict[str, Any]]:
        """What the loop said: at least one message if one comes within ``timeout`` seconds, then all waiting."""
        try:
            messages = [self.conn.outbox.get(timeout=timeout)]
        except Empty:
            return []
        while True:
            try:
                messages.append(self.conn.outbox.get_nowait())
            except Empty:
                return messages

    def rank_env(self) -> dict[str, Any]:
        """Where this rank stands, as torch.distributed will read it (and Ray's node): for health and checks."""
        return {"node_id": ray.get_runtime_context().get_node_id(),
                **{name: os.environ.get(name) for name in RANK_VARIABLES}}

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        self.conn.inbox.put(None)
