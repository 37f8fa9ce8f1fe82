"""`codex serve --ray`: the workers as Ray actors on a real two-node Ray cluster on this machine.

The cluster is Ray's own multi-node test utility (``ray.cluster_utils.Cluster``): a head node and a worker
node, each a raylet of its own with one CPU, every address on loopback (the nodes and the service's driver,
``--ray-node-ip 127.0.0.1``: Ray would otherwise dial the machine's interface address). The service is a
real `codex serve` process over HTTP; the faults are real: a node removed mid-job, the service killed -9.
The nodes have the test-only sleepy engine (tests/sleepy_engine) on their PYTHONPATH, as every node of a
real cluster has the plugins installed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from codex_core.testing import cli_run, free_port, install_package

ray_cluster_utils = pytest.importorskip("ray.cluster_utils")
pytestmark = [pytest.mark.distributed, pytest.mark.slow]

CODEX = str(Path(sys.executable).parent / "codex")
SLEEPY = Path(__file__).parent / "sleepy_engine"
SMALL = {"prompt": "a lighthouse", "width": 32, "height": 32, "steps": 2}
NODE = {"node_ip_address": "127.0.0.1", "num_cpus": 1, "include_dashboard": False}


@pytest.fixture(scope="module")
def sleepy_site(tmp_path_factory) -> Path:
    return install_package(SLEEPY, tmp_path_factory.mktemp("sleepy_site"))


@pytest.fixture(scope="module")
def cluster(sleepy_site):
    """A head and a worker node, one CPU each (so that two workers land one per node)."""
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(sleepy_site), saved]))
    made = ray_cluster_utils.Cluster(initialize_head=True, head_node_args=dict(NODE))
    made.add_node(**NODE)
    made.wait_for_nodes()
    yield made
    made.shutdown()
    if saved is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = saved


class Service:
    """`codex serve --ray` on the cluster; restartable on the same state dir."""

    def __init__(self, cluster, state_dir: Path, *args: str):
        self.cluster, self.state_dir, self.args, self.proc = cluster, state_dir, args, None
        self.log_path = state_dir.parent / f"serve-{state_dir.name}.log"

    start_command: list[str] | None = None  # the whole command, where a test gives it (the docs' own)

    def start(self, workers: int = 2) -> "Service":
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = self.start_command or [CODEX, "serve", "--state-dir", str(self.state_dir), "--ray",
                                         self.cluster.address, "--ray-node-ip", "127.0.0.1", "--devices", "cpu",
                                         "--ray-workers", str(workers), *self.args]
        self.proc = subprocess.Popen([*command, "--port", str(self.port)], stdout=open(self.log_path, "ab"),
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                health = httpx.get(self.url + "/v1/health", timeout=1).json()
                if all(worker["state"] in ("idle", "running") for worker in health["workers"]):
                    return self
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                raise AssertionError(self.output())
            time.sleep(0.3)
        self.proc.kill()  # a front still joining the cluster: not left behind
        raise AssertionError("the service did not start: " + self.output())

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(60)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)


def submit(client: httpx.Client, engine: str, request: dict) -> str:
    response = client.post("/v1/jobs", json={"engine": engine, "task": "txt2img", "model": "tiny", "request": request})
    assert response.status_code == 202, response.text
    return response.json()["id"]


def wait(client: httpx.Client, job_id: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {job['state']}")


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} did not hold within {timeout} s")


@pytest.fixture(scope="module")
def service(cluster, tmp_path_factory):
    running = Service(cluster, tmp_path_factory.mktemp("ray") / "state").start()
    yield running
    running.stop()


def test_jobs_run_on_both_nodes_with_the_clis_pixels_and_health_shows_the_nodes(service, cluster, tmp_path):
    health = httpx.get(service.url + "/v1/health").json()
    assert [w["device"] for w in health["workers"]] == ["ray:0", "ray:1"]
    nodes = {w["node"]["node_id"] for w in health["workers"]}
    assert nodes == {cluster.head_node.node_id, *(node.node_id for node in cluster.worker_nodes)}  # SPREAD: one each
    with service.client() as client:
        jobs = [submit(client, "sd15", {**SMALL, "seed": seed}) for seed in (11, 12, 13, 14)]
        done = [wait(client, job_id) for job_id in jobs]
        assert [job["state"] for job in done] == ["done"] * 4, done
        assert {job["result"]["ray"]["node_id"] for job in done} == nodes  # both nodes ran jobs
        for seed, job in zip((11, 12, 13, 14), done):
            assert job["attempts"] == 1 and job["result"]["ray"]["node_ip"] == "127.0.0.1"
            served = client.get(f"/v1/jobs/{job['id']}/files/0000.png")
            assert served.status_code == 200
            local = json.loads(cli_run(["run", "sd15", "txt2img", "--model", "tiny", "--quiet", "--out",
                                        str(tmp_path / "cli"), "--json", json.dumps({**SMALL, "seed": seed})]).stdout)
            ours = np.asarray(Image.open(__import__("io").BytesIO(served.content)))
            assert np.array_equal(ours, np.asarray(Image.open(local["files"][0])))
            # the front wrote the run folder (no storage shared with the node), its info naming its own paths
            run_dir = Path(job["result"]["run_dir"])
            assert run_dir.parent == service.state_dir / "outputs" and (run_dir / "0000.png").is_file()
            info = json.loads((run_dir / "info.json").read_text())
            assert info["outputs"] == [str(run_dir / "0000.png")] and info["request"] == local["info"]["request"]
    assert not list((service.state_dir / "outputs").glob(".*.partial"))


def test_a_node_removed_mid_job_makes_its_job_finish_on_the_other_node(service, cluster):
    head = cluster.head_node.node_id
    (worker_node,) = cluster.worker_nodes
    slow = {"prompt": "x", "width": 16, "height": 16, "steps": 8, "step_seconds": 0.5}
    with service.client() as client:
        jobs = [submit(client, "sleepy", {**slow, "seed": seed}) for seed in (1, 2)]

        def both_running():
            health = httpx.get(service.url + "/v1/health").json()
            return sum(w["running"] for w in health["workers"]) == 2 and health

        health = wait_for(both_running, 60, "both jobs running, one on each node")
        assert {w["node"]["node_id"] for w in health["workers"]} == {head, worker_node.node_id}
        time.sleep(1.0)  # a step or two in
        cluster.remove_node(worker_node)
        done = [wait(client, job_id) for job_id in jobs]
        assert [job["state"] for job in done] == ["done", "done"], done
        moved = [job for job in done if job["attempts"] == 2]
        assert len(moved) == 1, done  # the job of the lost node ran again, once; the other once
        assert moved[0]["result"]["attempt"] == 2 and moved[0]["result"]["ray"]["node_id"] == head
        assert all(job["result"]["ray"]["node_id"] == head for job in done)
        # one run folder per job, each complete: nothing lost, nothing run to completion twice
        runs = {job["result"]["run_dir"] for job in done}
        assert len(runs) == 2 and all((Path(run) / "0000.png").is_file() for run in runs)
        assert not list((service.state_dir / "outputs").glob(".*.partial"))
    cluster.add_node(**NODE)  # a node again, for the tests after this one
    cluster.wait_for_nodes()


def test_the_front_killed_mid_queue_resumes_every_accepted_job(service):
    job_ids = []
    with service.client() as client:
        for seed in range(6):
            job_ids.append(submit(client, "sleepy", {"prompt": "x", "width": 16, "height": 16, "steps": 4,
                                                     "step_seconds": 0.3, "seed": seed}))
        wait_for(lambda: client.get(f"/v1/jobs/{job_ids[0]}").json()["state"] == "running", 120, "the first job running")
    service.stop(signal.SIGKILL)  # its driver gone: Ray ends the actors it owned, mid-job
    service.start()
    with service.client() as client:
        done = [wait(client, job_id) for job_id in job_ids]
    assert [job["state"] for job in done] == ["done"] * 6, done
    assert all(job["attempts"] in (1, 2) for job in done)
    runs = {job["result"]["run_dir"] for job in done}
    assert len(runs) == 6 and all((Path(run) / "info.json").is_file() for run in runs)


GANG = """
import json, sys, threading
from codex_core.runtime import Runtime
from codex_core.serve.ray_runner import RayRunner, connect
from codex_core.serve.runner import RunnerDied

kind, devices = connect(sys.argv[1], "127.0.0.1", "cpu", 1, 2)
gang = RayRunner(devices[0], Runtime(device="cpu"), kind=kind, world=2)
gang.start(timeout=90)
ranks, node = gang.ranks(), gang.node
gang.kill()
too_big = RayRunner("ray:1", Runtime(device="cpu"), kind=kind, world=3)
try:
    too_big.start(timeout=5)
    refused = None
except RunnerDied as exc:
    refused = exc.reason
import ray
print("RESULT " + json.dumps({"devices": devices, "ranks": ranks, "node": node, "refused": refused,
                  "groups": [g["state"] for g in ray.util.placement_group_table().values()]}), flush=True)
"""


def test_a_gang_forms_on_one_node_with_consistent_rank_variables(cluster, tmp_path):
    """With --parallel of 2 ranks, a worker is a gang: two actors on one node (STRICT_PACK), each told its rank;
    a gang no node can hold is refused within its timeout, its placement group removed."""
    big = cluster.add_node(**{**NODE, "num_cpus": 2})  # the only node with room for two ranks
    script = tmp_path / "gang.py"
    script.write_text(GANG)
    done = subprocess.run([sys.executable, str(script), cluster.address], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    # the result's own line: Ray's autoscaler may print to the driver's stdout after it (the 3-rank gang's request)
    found = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert found["devices"] == ["ray:0"]
    ranks = found["ranks"]
    assert [r["node_id"] for r in ranks] == [big.node_id] * 2 and found["node"]["node_id"] == big.node_id
    assert [(r["RANK"], r["LOCAL_RANK"], r["WORLD_SIZE"]) for r in ranks] == [("0", "0", "2"), ("1", "1", "2")]
    assert {r["MASTER_ADDR"] for r in ranks} == {"127.0.0.1"} and len({r["MASTER_PORT"] for r in ranks}) == 1
    assert "no node had room for its gang of 3 cpu ranks" in found["refused"]
    assert set(found["groups"]) == {"REMOVED"}
    cluster.remove_node(big)


def test_a_parallel_job_runs_on_a_gang_with_the_single_process_pixels(cluster, tmp_path):
    """`codex serve --ray --parallel ulysses=2`: a flux job on a gang of 2 CPU ranks (gloo) on one node gives the
    pixels of one process within the context-parallel tolerance (tests/test_context_parallel.py says why not
    bitwise), and the front writes one run folder recording the layout."""
    from codex_core.testing import cpu_ranks_env

    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = cpu_ranks_env()["PYTHONPATH"]  # the ranks' node has the CPU shim (see cpu_ranks)
    try:
        big = cluster.add_node(**{**NODE, "num_cpus": 2})  # the only node with room for two ranks
    finally:
        os.environ["PYTHONPATH"] = saved if saved is not None else ""
    service = Service(cluster, tmp_path / "state", "--parallel", "ulysses=2").start(workers=1)
    try:
        request = {"prompt": "a lighthouse", "seed": 5, "width": 64, "height": 64, "steps": 2}
        with service.client() as client:
            job = wait(client, submit(client, "flux", request))
        assert job["state"] == "done", job
        assert job["result"]["ray"]["node_id"] == big.node_id and job["result"]["ray"]["ranks"] == 2
        run_dir = Path(job["result"]["run_dir"])
        assert [p.name for p in run_dir.parent.iterdir()] == [run_dir.name]  # one folder: rank 0's, by the front
        info = json.loads((run_dir / "info.json").read_text())
        assert info["parallel"]["world_size"] == 2 and info["parallel"]["backend"] == "gloo"
        local = json.loads(cli_run(["run", "flux", "txt2img", "--model", "tiny", "--quiet", "--out",
                                    str(tmp_path / "cli"), "--json", json.dumps(request)]).stdout)
        ours = np.asarray(Image.open(run_dir / "0000.png"), dtype=np.int16)
        worst = int(np.abs(ours - np.asarray(Image.open(local["files"][0]), dtype=np.int16)).max())
        assert worst <= 2, worst  # 2 levels of 255, the tolerance of tests/test_context_parallel.py
        # an interrupt reaches both ranks, which agree on the step to stop at: the job ends done with what it
        # had (a rank stopping alone would leave the other waiting in its next all-to-all, and the job hung)
        with service.client() as client:
            job_id = submit(client, "flux", {**request, "steps": 150, "width": 256, "height": 256})
            wait_for(lambda: (client.get(f"/v1/jobs/{job_id}").json().get("step") or 0) >= 2, 120, "step 2")
            assert client.post(f"/v1/jobs/{job_id}/interrupt").status_code == 202
            job = wait(client, job_id, timeout=120)
        assert job["state"] == "done", job
        info = job["result"]["info"]
        assert 2 <= info["interrupted_at_step"] < info["steps_planned"] == 150, info
        assert (Path(job["result"]["run_dir"]) / "0000.png").is_file()
    finally:
        service.stop()
        cluster.remove_node(big)


def run_codex(*args: str, hide_ray: bool = False) -> subprocess.CompletedProcess:
    code = ("import sys\n" + ("sys.modules['ray'] = None  # as if it were not installed\n" if hide_ray else "")
            + "from codex_core.cli import main\nsys.argv = ['codex', *sys.argv[1:]]\nmain()\n")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)


def test_ray_options_are_checked_before_anything_starts(tmp_path):
    missing = run_codex("serve", "--state-dir", str(tmp_path / "a"), "--ray", "127.0.0.1:1", hide_ray=True)
    assert missing.returncode == 2 and "pip install 'codex-core[ray]'" in missing.stderr, missing.stderr
    assert "--ray" in missing.stderr
    alone = run_codex("serve", "--state-dir", str(tmp_path / "b"), "--ray-workers", "2")
    assert alone.returncode == 2 and "--ray-workers 2: it needs --ray ADDRESS" in alone.stderr, alone.stderr
    listed = run_codex("serve", "--state-dir", str(tmp_path / "c"), "--ray", "127.0.0.1:1", "--devices", "cuda:0,cuda:1")
    assert listed.returncode == 2 and "with --ray it is auto, cuda or cpu" in listed.stderr, listed.stderr
    dead = run_codex("serve", "--state-dir", str(tmp_path / "e"), "--ray", f"127.0.0.1:{free_port()}",
                     "--ray-node-ip", "127.0.0.1")
    assert dead.returncode == 2 and "no Ray cluster answers there" in dead.stderr, dead.stderr
    split = run_codex("serve", "--state-dir", str(tmp_path / "d"), "--parallel", "ulysses=2")
    assert split.returncode == 2 and "runs on a gang of Ray workers" in split.stderr and "--ray" in split.stderr
    assert not any((tmp_path / name).exists() for name in "acde")  # refused before the state dir is made


def documented_commands() -> list[str]:
    """The commands of docs/scaling.md's section 3, in order (the fenced block after the marker naming this test)."""
    text = (Path(__file__).parents[1] / "docs" / "scaling.md").read_text()
    block = text.split("test_the_documented_commands_serve_a_job -->", 1)[1].split("```sh\n", 1)[1].split("```")[0]
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_the_documented_commands_serve_a_job(tmp_path):
    """docs/scaling.md's `ray start --head` and `codex serve --ray`, run as written (every address 127.0.0.1), plus
    what this machine needs: Ray told to keep loopback addresses (its RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, which
    also makes its CLI refuse `ray start --address`: the second node of the tests above is Ray's Cluster utility,
    the same raylet), an agent port of its own, two CPUs, no dashboard."""
    head, node, front = documented_commands()
    assert node.startswith("ray start --address HEAD_IP:PORT ")
    port = free_port()
    values = {"HEAD_IP": "127.0.0.1", "FRONT_IP": "127.0.0.1", "PORT": str(port), "STATE_DIR": str(tmp_path / "state")}

    def filled(command: str) -> list[str]:
        for name, value in values.items():
            command = command.replace(name, value)
        return command.split()

    ray = str(Path(sys.executable).parent / "ray")
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    log = tmp_path / "head.log"
    started = subprocess.Popen([ray, *filled(head)[1:], "--num-cpus", "2", "--include-dashboard", "false",
                                "--dashboard-agent-listen-port", str(free_port())],
                               stdout=open(log, "ab"), stderr=subprocess.STDOUT, env=env)
    try:
        def up() -> bool:
            assert started.poll() is None, log.read_text()
            return "Ray runtime started" in log.read_text()

        wait_for(up, 90, "the head node started")
        assert "Local node IP: 127.0.0.1" in log.read_text()
        command = filled(front)
        assert command[:2] == ["codex", "serve"] and "--ray" in command
        service = Service(None, tmp_path / "state")
        service.start_command = [CODEX, *command[1:]]
        service.start()
        with service.client() as client:
            health = client.get("/v1/health").json()
            jobs = [submit(client, "sd15", {**SMALL, "seed": seed}) for seed in (1, 2)]
            done = [wait(client, job_id) for job_id in jobs]
        service.stop()
        assert [w["device"] for w in health["workers"]] == ["ray:0", "ray:1"]
        assert [job["state"] for job in done] == ["done", "done"], done
        assert {job["result"]["ray"]["node_ip"] for job in done} == {"127.0.0.1"}
    finally:
        started.send_signal(signal.SIGTERM)  # --block: ending the command ends its node
        try:
            started.wait(60)
        except subprocess.TimeoutExpired:
            started.kill()
