"""A worker whose jobs run in Ray actors anywhere in a Ray cluster (``codex serve --ray ADDRESS``).

``RayRunner`` is the front's handle on them, with a ``Runner``'s interface (runner.py): the ``Worker``
thread, its job store records, model affinity, cancels and stops are the same; only where the child
runs changes. The child is a threaded Ray actor (ray_actor.py) running ``runner.serve``:

- one actor (``num_gpus=1``; ``num_cpus=1`` with ``--devices cpu``), placed with the SPREAD strategy;
- with ``--parallel`` of N ranks, a gang: a placement group of N bundles packed on one node
  (STRICT_PACK), one actor per bundle, each given RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR (rank 0's
  node) and MASTER_PORT (a free port there) before it runs anything. Every message goes to every rank;
  rank 0 speaks for the gang; any rank's death is the gang's (``RunnerDied``), and a kill ends them
  all (a rank stopped alone would hang the others in their collectives): a cancel ends the gang at
  once. An interrupt (stop early, keep what was made) goes to every rank, and the kit has the ranks agree
  at each step whether one of them heard it, so that they all stop at the same step.

A job runs into a scratch folder on the actor's node; its ``done`` message brings the files, which the
front writes here as a local run is written (a hidden ``.RUN_ID.partial`` folder renamed into place),
so that nothing but the Ray cluster joins the front and the nodes. The result says which node ran it.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from .runner import READY_TIMEOUT, RunnerDied

ANSWER_GRACE = 60.0  # seconds past its own timeout that an actor's answer may take before it is taken for gone
UNREACHABLE = 30.0  # seconds an actor may stay unreachable (its node restarting a connection) before it is gone
FORWARDED = ("CODEX_",)  # the front's variables the actors get: model roots, caches, which plugins load


class RayRunner:
    """The front's handle on one worker's actor, or its gang of actors (``world`` ranks)."""

    def __init__(self, device: str, runtime, preview_every: int = 0, kind: str = "cuda", world: int = 1):
        self.device, self.runtime, self.preview_every = device, runtime, preview_every
        self.kind, self.world = kind, world
        self.proc = None  # no process of the front's own (Workers.pids counts none)
        self.actors: list = []
        self.group = None  # the gang's placement group
        self.node: dict[str, Any] | None = None  # where rank 0 runs: node_id, node_ip
        self.reason: str | None = None  # why it is gone, once it is
        self.running: tuple[Path, str] | None = None  # the outputs folder and run id of the job sent last
        self._inbox: deque = deque()
        self._pings: list = []

    # -- starting --------------------------------------------------------------------------------
    def start(self, timeout: float = READY_TIMEOUT, stopping: threading.Event | None = None) -> None:
        """Place the actor(s), give each its rank's environment and wait until rank 0 is ready; RunnerDied says
        why not (no room in the cluster within ``timeout``, the plugins failed, the service is stopping)."""
        import ray
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        from .ray_actor import WorkerActor

        deadline, self._timeout = time.monotonic() + timeout, timeout
        resources = {"num_gpus": 1, "num_cpus": 0} if self.kind == "cuda" else {"num_cpus": 1, "num_gpus": 0}
        env = {name: value for name, value in os.environ.items() if name.startswith(FORWARDED)}
        actor_class = ray.remote(WorkerActor)
        common = {"max_concurrency": 4, "max_restarts": 0, "runtime_env": {"env_vars": env}, **resources}
        try:
            if self.world == 1:
                self.actors = [actor_class.options(scheduling_strategy="SPREAD", **common).remote(0)]
            else:
                bundle = {"GPU": 1} if self.kind == "cuda" else {"CPU": 1}
                self.group = placement_group([dict(bundle) for _ in range(self.world)], strategy="STRICT_PACK")
                self._wait(self.group.ready(), deadline, stopping, "no node had room for its gang of "
                                                                    f"{self.world} {self.kind} ranks")
                self.actors = [actor_class.options(scheduling_strategy=PlacementGroupSchedulingStrategy(
                    self.group, placement_group_bundle_index=rank), **common).remote(rank)
                    for rank in range(self.world)]
            places = [self._wait(actor.where.remote(), deadline, stopping, "no node had room for it")
                      for actor in self.actors]
            self.node = {"node_id": places[0]["node_id"], "node_ip": places[0]["node_ip"]}
            for rank, actor in enumerate(self.actors):
                actor.begin.remote(self._rank_env(rank, places))
            for actor in self.actors:
                actor.send.remote({"runtime": self.runtime, "preview_every": self.preview_every})
            ready = 0
            while ready < len(self.actors):  # every rank's plugins loaded
                for rank, actor in enumerate(self.actors):
                    for message in self._wait(actor.receive.remote(0.2), deadline, stopping, "it was not ready"):
                        if "crashed" in message:
                            raise RunnerDied(f"rank {rank} could not start: {message['crashed']}")
                        ready += "ready" in message
        except RunnerDied as exc:
            self.reason = exc.reason
            self.kill()
            raise
        except ray.exceptions.RayError as exc:
            self.reason = f"Ray could not start it: {type(exc).__name__}: {exc}"
            self.kill()
            raise RunnerDied(self.reason) from None

    def _wait(self, ref, deadline: float, stopping: threading.Event | None, what: str):
        import ray

        while True:
            done, _ = ray.wait([ref], timeout=0.5)
            if done:
                try:
                    return ray.get(done[0])
                except ray.exceptions.RayError as exc:
                    raise RunnerDied(died(exc)) from None
            if stopping is not None and stopping.is_set():
                raise RunnerDied("the service is stopping")
            if time.monotonic() >= deadline:
                raise RunnerDied(f"{what} within {self._timeout:.0f} s")

    def _rank_env(self, rank: int, places: list[dict[str, Any]]) -> dict[str, str]:
        """A rank's torchrun variables; with GPUs, every rank sees the gang's GPUs in rank order, so that its
        LOCAL_RANK names its own (Ray would show each rank its GPU alone, as device 0)."""
        if self.world == 1:
            return {}
        env = {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(self.world),
               "LOCAL_WORLD_SIZE": str(self.world), "MASTER_ADDR": places[0]["node_ip"],
               "MASTER_PORT": str(places[0]["free_port"])}
        gpus = [place["gpu_ids"][0] for place in places if place["gpu_ids"]]
        if self.kind == "cuda" and len(gpus) == self.world:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        return env

    def ranks(self) -> list[dict[str, Any]]:
        """Each rank's node and torchrun variables, as the rank itself sees them."""
        import ray

        return ray.get([actor.rank_env.remote() for actor in self.actors], timeout=ANSWER_GRACE)

    # -- a Runner's interface ----------------------------------------------------------------------
    def alive(self) -> bool:
        """Whether every rank still answers (checked without waiting: a ping each, looked at on the next call)."""
        import ray

        if not self.actors or self.reason:
            return False
        if self._pings:
            done, _ = ray.wait(self._pings, num_returns=len(self._pings), timeout=0)
            if len(done) < len(self._pings):
                return True
            try:
                ray.get(done)
            except ray.exceptions.RayError as exc:
                self.reason = died(exc)
                return False
        self._pings = [actor.ping.remote() for actor in self.actors]
        return True

    def send(self, message: dict[str, Any]) -> None:
        if self.reason or not self.actors:
            raise RunnerDied(self.exit_reason())
        if "run" in message:
            self.running = (Path(message["out"]), message["run_id"])
        if "cancel" in message and self.world > 1:
            # ranks that heard it at different steps would wait on each other forever: the gang ends at once, and
            # the worker, finding the cancel recorded, reports the job cancelled and places a new gang
            self.kill()
            self.reason = "its gang was ended to cancel its job"
            return
        for actor in self.actors:
            actor.send.remote(message)

    def receive(self, timeout: float) -> dict[str, Any] | None:
        """Rank 0's next message, or None when none came within ``timeout`` seconds; RunnerDied when a rank is gone.
        A ``done`` comes back with its files written into the run folder here."""
        if self._inbox:
            return self._inbox.popleft()
        if self.reason or not self.actors:
            raise RunnerDied(self.exit_reason())
        import ray

        calls = [self.actors[0].receive.remote(timeout)] + [actor.ping.remote() for actor in self.actors[1:]]
        done, _ = ray.wait(calls, num_returns=len(calls), timeout=timeout + ANSWER_GRACE)
        if len(done) < len(calls):
            self.reason = f"it stopped answering for {timeout + ANSWER_GRACE:.0f} s"
            raise RunnerDied(self.reason)
        try:
            answers = ray.get(calls)
        except ray.exceptions.ActorUnavailableError as exc:  # a connection being restored: it may come back
            self._unreachable_since = getattr(self, "_unreachable_since", None) or time.monotonic()
            if time.monotonic() - self._unreachable_since > UNREACHABLE:
                self.reason = died(exc)
                raise RunnerDied(self.reason) from None
            return None
        except ray.exceptions.RayError as exc:
            self.reason = died(exc)
            raise RunnerDied(self.reason) from None
        self._unreachable_since = None
        for message in answers[0]:
            if "crashed" in message:
                self.reason = f"its loop ended: {message['crashed']}"
                raise RunnerDied(self.reason)
            self._inbox.append(self._land(message) if "done" in message else message)
        return self._inbox.popleft() if self._inbox else None

    def _land(self, message: dict[str, Any]) -> dict[str, Any]:
        """Write a ``done`` message's files into the run folder, as a local run does (staged, then renamed into
        place); the result names the folder here and the node that ran it. A write that fails is the job's failure
        (with its errno: a full disk is the service's problem, as for a local run)."""
        out, run_id = self.running
        result, files = message["result"], message.pop("files")
        theirs, final, staging = result["run_dir"], out / run_id, out / f".{run_id}.partial"

        def here(path: str) -> str:
            return str(final) + path[len(theirs):] if path.startswith(theirs) else path

        info = {**result["info"], **({"outputs": [here(p) for p in result["info"]["outputs"]]}
                                     if "outputs" in result["info"] else {})}
        try:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            for relative, data in files.items():
                target = staging / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            if "info.json" in files:  # its paths, as the run would have written them here
                (staging / "info.json").write_text(json.dumps(info, indent=2, default=str) + "\n", encoding="utf-8")
            os.replace(staging, final)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            return {"failed": message["done"], "error": f"its outputs could not be written: {exc}",
                    "errno": exc.errno}
        where = {**(self.node or {}), "ranks": self.world}
        return {**message, "result": {"run_dir": str(final), "files": [here(f) for f in result["files"]], "info": info,
                                      "ray": where}}

    def exit_reason(self) -> str:
        return self.reason or ("it was never started" if not self.actors else "it was stopped")

    def kill(self) -> None:
        """End every rank now, whatever it is doing, and free the gang's GPUs."""
        try:
            import ray

            for actor in self.actors:
                try:
                    ray.kill(actor, no_restart=True)
                except Exception:  # noqa: BLE001  (already gone with its node)
                    pass
            if self.group is not None:
                try:
                    ray.util.remove_placement_group(self.group)
                except Exception:  # noqa: BLE001
                    pass
        finally:
            self.reason = self.reason or "it was killed"
            self.actors, self.group, self._pings = [], None, []

    def stop(self, timeout: float = 10.0) -> None:
        """Let it go: an actor keeps nothing worth waiting for once its job has ended (its models go with it)."""
        self.kill()

    def close(self) -> None:
        self.kill()


def died(exc: Exception) -> str:
    """How a Ray error says an actor or its node is gone, in a line."""
    text = str(exc).strip().splitlines()
    first = next((line for line in text if line.strip()), "")
    return f"its Ray actor is gone ({type(exc).__name__}: {first[:300]})"


# -- joining the cluster (`codex serve --ray`) -------------------------------------------------------
def connect(address: str, node_ip: str | None, devices: str, workers: int | None, world: int) -> tuple[str, list[str]]:
    """Join the Ray cluster at ``address`` as its driver and size the workers: their device kind (``--devices``
    auto, cuda or cpu) and names (``ray:0``...; default: one per GPU of the cluster, or one per node on CPU, each
    taking ``world`` of them). UsageError (exit 2) for what cannot be, before any model loads."""
    from ..errors import UsageError

    kind = devices.strip().lower()
    if kind not in ("auto", "cuda", "cpu"):
        raise UsageError(f"--devices {devices!r}: with --ray it is auto, cuda or cpu (the kind of device every worker "
                         "takes; Ray gives each worker its own GPU)")
    if node_ip in ("127.0.0.1", "::1", "localhost"):
        # a cluster on loopback only: Ray would swap a loopback address for the machine's interface address
        # (resolve_ip_for_localhost) unless clusters are off its list of things to resolve; this is its switch
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise UsageError("--ray: Ray is not installed", hint="pip install 'codex-core[ray]'") from None
    unreachable = _unreachable(address)
    if unreachable:
        raise UsageError(f"--ray {address}: no Ray cluster answers there ({unreachable})",
                         hint="start one with `ray start --head --port 6379` (see docs/scaling.md), or pass its "
                              "address (HOST:PORT, the head's GCS port)")
    try:
        ray.init(address=address, _node_ip_address=node_ip, namespace="codex", log_to_driver=True,
                 ignore_reinit_error=True)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise UsageError(f"--ray {address}: no Ray cluster could be joined there ({exc})",
                         hint="start one with `ray start --head --port 6379` (see docs/scaling.md), or pass its "
                              "address; on a machine reachable only on loopback add --ray-node-ip 127.0.0.1") from None
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if kind == "auto":
        kind = "cuda" if gpus else "cpu"
    if kind == "cuda" and gpus < world:
        ray.shutdown()
        raise UsageError(f"--devices cuda: the Ray cluster at {address} has {gpus} GPU(s); a worker needs {world}",
                         hint="add GPU nodes (ray start --address ... on each), or pass --devices cpu")
    if workers is None:
        nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
        workers = max(1, gpus // world if kind == "cuda" else nodes)
    return kind, [f"ray:{index}" for index in range(workers)]


def _unreachable(address: str) -> str | None:
    """Why nothing listens at a HOST:PORT address (None: something does, or the address is Ray's "auto" or a
    ray:// client address, left to Ray). Checked first because ray.init retries a dead address for minutes."""
    import socket

    host, sep, port = address.rpartition(":")
    if not sep or "://" in address or not port.isdigit():
        return None
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=5):
            return None
    except OSError as exc:
        return exc.strerror or str(exc)
