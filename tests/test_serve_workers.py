"""The service's workers under faults: cancel in every stage, crashes, a locked database, a full disk, stops.

Every test drives a real `codex serve` process over HTTP, with its real worker processes and its real
database file, and brings the faults about for real: signals (kill -9, SIGTERM), a second sqlite3
connection holding the database's lock, a small tmpfs filled to the last byte, a segfault in an engine.
The engine that sleeps or crashes in the stage a request names is tests/sleepy_engine, a plugin
package installed with pip into a folder of its own and put on the services' PYTHONPATH.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
from codex_core.testing import free_port, install_package

pytestmark = [pytest.mark.slow, pytest.mark.wheels]

SLEEPY = Path(__file__).parent / "sleepy_engine"
CODEX = str(Path(sys.executable).parent / "codex")
STAGES = {"load": "loading", "encode": "encoding", "denoise": "running", "decode": "decoding", "export": "exporting"}


@pytest.fixture(scope="module")
def sleepy_site(tmp_path_factory) -> Path:
    return install_package(SLEEPY, tmp_path_factory.mktemp("sleepy_site"))


class Service:
    """A `codex serve` process with the sleepy engine importable; restartable on the same state dir."""

    def __init__(self, site: Path, state_dir: Path, *args: str):
        self.site, self.state_dir, self.args, self.proc = site, state_dir, args, None
        self.log_path = state_dir.parent / f"serve-{state_dir.name}.log"

    def start(self) -> "Service":
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(self.site), os.environ.get("PYTHONPATH")]))}
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([CODEX, "serve", "--port", str(self.port), "--state-dir", str(self.state_dir),
                                      *self.args], stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                health = httpx.get(self.url + "/v1/health", timeout=1).json()
                if all(worker["state"] in ("idle", "running") for worker in health["workers"]):  # worker processes up
                    return self
            except httpx.HTTPError:
                pass
            assert self.proc.poll() is None, self.output()
            time.sleep(0.2)
        raise AssertionError("the service did not start: " + self.output())

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout: float = 60) -> int | None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            return self.proc.wait(timeout)
        return self.proc.returncode if self.proc else None

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)

    def worker_pids(self) -> list[int]:
        return [child.pid for child in psutil.Process(self.proc.pid).children() if child.status() != "zombie"]


def submit(client: httpx.Client, request: dict, model: str = "tiny", **spec) -> dict:
    response = client.post("/v1/jobs", json={"engine": "sleepy", "task": "txt2img", "model": model,
                                             "request": {"prompt": "x", **request}, **spec})
    assert response.status_code == 202, response.text
    return response.json()


def wait(client: httpx.Client, job_id: str, states=("done", "failed", "cancelled"), stage: str | None = None,
         timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in states and (stage is None or job["stage"] == stage):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {job['state']} ({job['stage']})")


def wait_for(condition, timeout: float = 30, what: str = "the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} did not hold within {timeout} s")


def run_folders(state_dir: Path) -> list[Path]:
    outputs = state_dir / "outputs"
    return sorted(outputs.iterdir()) if outputs.is_dir() else []


def read_job(state_dir: Path, job_id: str) -> dict:
    """The job's row, read from the database file while no service runs."""
    with sqlite3.connect(state_dir / "jobs.sqlite3") as db:
        db.row_factory = sqlite3.Row
        return dict(db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())


@pytest.fixture
def new_service(sleepy_site, tmp_path):
    """Make services (not started) on ``tmp_path/state`` or a given state dir; whatever still runs at the end is
    killed, whatever the test did."""
    made: list[Service] = []

    def make(*args: str, state: Path | None = None) -> Service:
        made.append(Service(sleepy_site, state or tmp_path / "state", *args))
        return made[-1]

    yield make
    for one in made:
        one.stop(signal.SIGKILL)


@pytest.fixture
def service(sleepy_site, tmp_path):
    models = tmp_path / "models"
    slow = models / "slow-load"
    slow.mkdir(parents=True)
    (slow / "sleepy.json").write_text(json.dumps({"load_seconds": 60}))
    running = Service(sleepy_site, tmp_path / "state", "--input-root", str(models)).start()
    running.slow_model = str(slow)
    yield running
    running.stop()


# -- cancel ----------------------------------------------------------------------------------------


def test_a_cancel_takes_effect_within_5_s_in_every_stage_and_the_service_goes_on(service):
    """Each stage sleeps 60 s without a progress event; the cancel stops it by killing the worker process."""
    with service.client() as client:
        for stage, job_stage in STAGES.items():
            slow = {"sleep_in": stage, "sleep_seconds": 60} if stage != "load" else {}  # load: the model's own sleep
            job = submit(client, slow, formats=["png", "nap"], model=service.slow_model if stage == "load" else "tiny")
            wait(client, job["id"], states=("running",), stage=job_stage)
            time.sleep(0.5)  # well inside the sleep
            asked = time.monotonic()
            response = client.delete(f"/v1/jobs/{job['id']}")
            assert response.status_code == 202 and response.json()["cancel_requested"] is True
            ended = wait(client, job["id"], timeout=30)
            took = time.monotonic() - asked
            assert ended["state"] == "cancelled" and "no partial output" in ended["error"], (stage, ended)
            assert took < 5, (stage, took)
            assert run_folders(service.state_dir) == [], stage  # nothing kept, not even half of an export
        done = wait(client, submit(client, {"seed": 3})["id"])
        assert done["state"] == "done", done
        assert client.get("/v1/health").json()["status"] == "ok"


def test_a_cancel_between_steps_keeps_the_worker_process_and_its_model(service):
    with service.client() as client:
        wait(client, submit(client, {})["id"])
        [pid] = service.worker_pids()
        job = submit(client, {"steps": 150, "step_seconds": 0.05})
        wait_for(lambda: (client.get(f"/v1/jobs/{job['id']}").json().get("step") or 0) >= 2, what="a step")
        asked = time.monotonic()
        assert client.delete(f"/v1/jobs/{job['id']}").status_code == 202
        assert wait(client, job["id"])["state"] == "cancelled"
        assert time.monotonic() - asked < 2  # at its next step, without waiting for the grace
        assert service.worker_pids() == [pid]
        again = wait(client, submit(client, {})["id"])
        assert again["result"]["info"]["model"]["reused_from_cache"] is True  # still loaded


def test_a_cancel_survives_kill_9_and_the_job_never_runs_again(service):
    with service.client() as client:
        job = submit(client, {"sleep_in": "denoise", "sleep_seconds": 60})
        wait(client, job["id"], states=("running",), stage="running")
        assert client.delete(f"/v1/jobs/{job['id']}").status_code == 202
    workers = service.worker_pids()
    service.stop(signal.SIGKILL)  # before the worker has stopped the job (it waits its cancel grace)
    assert read_job(service.state_dir, job["id"])["cancel_requested"] is not None
    wait_for(lambda: not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie" for pid in workers),
             timeout=10, what="the worker process ending with its parent")
    service.start()
    with service.client() as client:
        ended = client.get(f"/v1/jobs/{job['id']}").json()
        assert ended["state"] == "cancelled" and "not run again" in ended["error"], ended
        assert ended["attempts"] == 1
        time.sleep(1.5)
        assert client.get(f"/v1/jobs/{job['id']}").json()["state"] == "cancelled"
    assert "cancelled, as requested" in service.output()
    assert run_folders(service.state_dir) == []


# -- graceful stops --------------------------------------------------------------------------------


def test_a_graceful_stop_lets_the_running_job_finish_within_the_grace(new_service):
    service = new_service("--stop-grace", "30").start()
    with service.client() as client:
        job = submit(client, {"sleep_in": "denoise", "sleep_seconds": 2})
        wait(client, job["id"], states=("running",), stage="running")
    assert service.stop(signal.SIGTERM) == 0
    row = read_job(service.state_dir, job["id"])
    assert (row["state"], row["attempts"]) == ("done", 1)


def test_two_graceful_restarts_do_not_fail_a_job(new_service):
    """A job longer than the grace is requeued by each stop without using an attempt, then runs to the end."""
    service = new_service("--stop-grace", "0.5").start()
    with service.client() as client:
        job = submit(client, {"sleep_in": "denoise", "sleep_seconds": 4})
    for again in range(2):
        with service.client() as client:
            wait(client, job["id"], states=("running",), stage="running")
        asked = time.monotonic()
        assert service.stop(signal.SIGINT if again else signal.SIGTERM) == 0  # SIGTERM, then Ctrl-C
        assert time.monotonic() - asked < 15
        row = read_job(service.state_dir, job["id"])
        assert (row["state"], row["attempts"]) == ("queued", 0), row
        assert run_folders(service.state_dir) == []
        service.start()
    with service.client() as client:
        ended = wait(client, job["id"])
    service.stop()
    assert ended["state"] == "done" and ended["attempts"] == 1 and ended["result"]["attempt"] == 1, ended
    assert "requeued" not in service.output() and "failed" not in service.output()


# -- recovery from the run folder ------------------------------------------------------------------


def test_a_run_folder_renamed_into_place_before_a_crash_is_finished_from_it(service):
    """The database is locked when the run ends: the worker cannot record it; kill -9; the restart finds the
    run folder and finishes the job from it rather than run it again."""
    with service.client() as client:
        job = submit(client, {"sleep_in": "denoise", "sleep_seconds": 1.5})
        wait(client, job["id"], states=("running",), stage="running")
        lock = sqlite3.connect(service.state_dir / "jobs.sqlite3", timeout=0, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        try:
            [folder] = wait_for(lambda: [p for p in run_folders(service.state_dir) if (p / "info.json").exists()],
                                what="the run folder")
            health = wait_for(lambda: (lambda h: h if h["status"] == "degraded" else None)(
                client.get("/v1/health").json()), what="health degraded")
            assert any("database is locked" in reason for reason in health["reasons"]), health
            service.stop(signal.SIGKILL)
        finally:
            lock.rollback()
            lock.close()
    service.start()
    with service.client() as client:
        ended = client.get(f"/v1/jobs/{job['id']}").json()
    assert ended["state"] == "done" and ended["attempts"] == 1, ended
    assert ended["result"]["run_dir"] == str(folder) and ended["result"]["recovered_from_run_folder"] is True
    assert ended["result"]["info"]["run_id"] == folder.name
    assert run_folders(service.state_dir) == [folder]  # not run again
    assert "finished from its run folder" in service.output()


# -- supervised workers ----------------------------------------------------------------------------


def test_the_worker_survives_a_database_locked_longer_than_the_busy_timeout(service):
    """A second connection holds BEGIN EXCLUSIVE for 7 s (SQLite's busy timeout is 1 s, a request's wait 5 s):
    health says degraded and why, a new job is refused with 503 naming it, and once the lock is gone the
    running job is recorded and the next one runs."""
    from codex_core.serve.store import BUSY_TIMEOUT, REQUEST_WAIT

    with service.client() as client:
        job = submit(client, {"sleep_in": "denoise", "sleep_seconds": 1})
        wait(client, job["id"], states=("running",), stage="running")
        lock = sqlite3.connect(service.state_dir / "jobs.sqlite3", timeout=0, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        taken = time.monotonic()
        try:
            health = wait_for(lambda: (lambda h: h if h["status"] == "degraded" else None)(
                client.get("/v1/health").json()), what="health degraded")
            assert any("the job store cannot be written: database is locked" in r for r in health["reasons"]), health
            refused = client.post("/v1/jobs", json={"engine": "sleepy", "task": "txt2img", "model": "tiny",
                                                    "request": {"prompt": "x"}})
            assert refused.status_code == 503 and "database is locked" in refused.json()["detail"], refused.text
            assert refused.headers["retry-after"]
            time.sleep(max(0.0, taken + BUSY_TIMEOUT + REQUEST_WAIT + 1 - time.monotonic()))
            assert client.get(f"/v1/jobs/{job['id']}").json()["state"] == "running"  # its end not recorded yet
        finally:
            lock.rollback()
            lock.close()
        assert wait(client, job["id"], timeout=30)["state"] == "done"
        assert wait(client, submit(client, {"seed": 5})["id"])["state"] == "done"
        assert client.get("/v1/health").json()["status"] == "ok"


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def _fill(folder: Path) -> Path:
    filler = folder / "filler"
    with open(filler, "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass
    return filler


def test_the_worker_survives_a_full_disk(new_service, tmp_path):
    """The state dir on a 16 MB tmpfs, filled while a job runs: its export fails with ENOSPC and says so, health
    is degraded meanwhile, and once there is room the next job runs."""
    state = tmp_path / "state"
    if not _mount_tmpfs(state, "16m"):
        pytest.skip("mounting a tmpfs needs root (and CAP_SYS_ADMIN)")
    service = new_service(state=state)
    try:
        service.start()
        with service.client() as client:
            assert wait(client, submit(client, {})["id"])["state"] == "done"
            job = submit(client, {"sleep_in": "denoise", "sleep_seconds": 2, "width": 256, "height": 256})
            wait(client, job["id"], states=("running",), stage="running")
            filler = _fill(state)
            health = wait_for(lambda: (lambda h: h if h["status"] == "degraded" else None)(
                client.get("/v1/health").json()), what="health degraded")
            assert any("No space left on device" in r or "disk is full" in r for r in health["reasons"]), health
            filler.unlink()
            failed = wait(client, job["id"])
            assert failed["state"] == "failed" and "No space left on device" in failed["error"], failed
            assert wait(client, submit(client, {"seed": 4})["id"])["state"] == "done"
            assert client.get("/v1/health").json()["status"] == "ok"
    finally:
        service.stop()
        subprocess.run(["umount", str(state)], check=False)


def test_an_engine_error_and_a_crashed_worker_process_end_in_recorded_states(service):
    with service.client() as client:
        wait(client, submit(client, {})["id"])
        [first] = service.worker_pids()
        raised = wait(client, submit(client, {"crash": "raise"})["id"])
        assert raised["state"] == "failed" and raised["error"] == "RuntimeError: the sleepy engine failed on purpose"
        assert service.worker_pids() == [first]  # an exception is the job's; the process goes on
        crashed = wait(client, submit(client, {"crash": "segfault"})["id"], timeout=120)
        assert crashed["state"] == "failed" and crashed["attempts"] == 2, crashed  # re-run once, then failed
        assert "its worker process died while running it, 2 times" in crashed["error"]
        assert "SIGSEGV" in crashed["error"]
        done = wait(client, submit(client, {"seed": 2})["id"])
        assert done["state"] == "done" and service.worker_pids() != [first]
        # killed from outside mid-run (the OOM killer would): the job runs again, and says it is its second attempt
        job = submit(client, {"sleep_in": "denoise", "sleep_seconds": 2})
        wait(client, job["id"], states=("running",), stage="running")
        os.kill(service.worker_pids()[0], signal.SIGKILL)
        rerun = wait(client, job["id"])
        assert rerun["state"] == "done" and rerun["attempts"] == 2 and rerun["result"]["attempt"] == 2, rerun
        # and killed while idle: a new one takes the next job
        [idle] = service.worker_pids()
        os.kill(idle, signal.SIGKILL)
        assert wait(client, submit(client, {"seed": 7})["id"])["state"] == "done"
        assert client.get("/v1/health").json()["status"] == "ok"


def test_two_devices_run_two_jobs_at_once_each_in_its_own_process(new_service):
    service = new_service("--devices", "cpu,auto").start()
    assert len(service.worker_pids()) == 2
    with service.client() as client:
        jobs = [submit(client, {"sleep_in": "denoise", "sleep_seconds": 2, "seed": seed}) for seed in (1, 2)]
        wait_for(lambda: all(client.get(f"/v1/jobs/{job['id']}").json()["state"] == "running" for job in jobs),
                 what="both jobs running at once")
        ended = [wait(client, job["id"]) for job in jobs]
    assert [job["state"] for job in ended] == ["done", "done"]
    assert {job["result"]["device"] for job in ended} == {"cpu", "auto"}


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the thread it kills
def test_the_watchdog_replaces_a_worker_thread_that_died(sleepy_site, tmp_path, monkeypatch):
    """In-process: the worker thread is killed by an exception raised into it (as a bug would); the watchdog
    starts another, which takes over the job it was running."""
    from codex_core.serve.store import JobStore
    from codex_core.serve.worker import Workers

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(sleepy_site), os.environ.get("PYTHONPATH")])))
    store = JobStore(tmp_path / "jobs.sqlite3")
    workers = Workers(store, tmp_path / "outputs", ["cpu"])
    workers.start()
    try:
        job = store.submit({"engine": "sleepy", "task": "txt2img", "model": "tiny",
                            "request": {"prompt": "x", "sleep_in": "denoise", "sleep_seconds": 1.5}})
        workers.wake()
        dead = workers.workers[0]
        wait_for(lambda: store.get(job["id"])["stage"] == "running", what="the job running")
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(dead.ident), ctypes.py_object(SystemExit))
        wait_for(lambda: workers.workers[0] is not dead, what="a new worker thread")
        assert "SystemExit" in (workers.workers[0].last_restart or "")
        ended = wait_for(lambda: (lambda j: j if j["state"] in ("done", "failed") else None)(store.get(job["id"])),
                         timeout=60, what="the job's end")
        assert ended["state"] == "done" and ended["attempts"] == 2, ended
        health = workers.health()
        assert health["status"] == "ok" and health["workers"][0]["restarts"] == 1
    finally:
        workers.stop(grace=0)


def test_a_worker_process_that_does_not_start_is_reported_and_retried(tmp_path, monkeypatch):
    """In-process: every new Python process exits at once (a sitecustomize that does), so the worker is down and
    health says why; once processes start again, the worker comes up and runs the queued job."""
    from codex_core.serve.store import JobStore
    from codex_core.serve.worker import Workers

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "sitecustomize.py").write_text("import os\nos._exit(3)\n")
    monkeypatch.setenv("PYTHONPATH", str(broken))
    store = JobStore(tmp_path / "jobs.sqlite3")
    workers = Workers(store, tmp_path / "outputs", ["cpu"])
    workers.start()
    try:
        job = store.submit({"engine": "sd15", "task": "txt2img", "model": "tiny",
                            "request": {"prompt": "x", "width": 32, "height": 32, "steps": 2, "seed": 1}})
        health = wait_for(lambda: (lambda h: h if h["status"] == "degraded" else None)(workers.health()),
                          what="health degraded")
        assert health["reasons"] == ["worker cpu is down: its process does not start: it exited with code 3 (the "
                                     "service's log says why)"], health
        assert store.get(job["id"])["state"] == "queued"  # nothing is claimed without a process to run it
        (broken / "sitecustomize.py").unlink()
        ended = wait_for(lambda: (lambda j: j if j["state"] in ("done", "failed") else None)(store.get(job["id"])),
                         timeout=90, what="the job's end")
        assert ended["state"] == "done" and ended["attempts"] == 1, ended
        assert workers.health()["status"] == "ok"
    finally:
        workers.stop(grace=0)
