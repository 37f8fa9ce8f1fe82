"""Webhooks and idempotency on /v1 jobs: a real receiver on loopback checks each delivery's Standard Webhooks
signature, answers 500 once (the delivery is retried) and receives one delivery per state change; a delivery
pending at a stop is sent after the restart; one Idempotency-Key across a restart is one job.

The service runs the sleepy test engine (tests/sleepy_engine): jobs that end done, failed or cancelled at will."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from codex_core.serve.store import JobStore
from codex_core.serve.webhooks import Destinations, delay, signature_headers, signing_key
from codex_core.testing import install_package

SLEEPY = Path(__file__).parent / "sleepy_engine"
CODEX = str(Path(sys.executable).parent / "codex")
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the Standard Webhooks test vector's


def verify(secret: str, headers: dict[str, str], body: bytes, tolerance: float = 300) -> dict:
    """The receiver's check, as the README shows it: the signature over id.timestamp.body, a recent timestamp."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    given = [part.partition(",")[2] for part in headers["webhook-signature"].split()]
    if not any(hmac.compare_digest(expected, signature) for signature in given):
        raise ValueError("bad signature")
    if abs(time.time() - int(headers["webhook-timestamp"])) > tolerance:
        raise ValueError("stale timestamp")
    return json.loads(body)


# -- without a service ---------------------------------------------------------------------------------------


def test_signatures_reproduce_the_standard_webhooks_test_vector():
    headers = signature_headers(signing_key(SECRET), "msg_p5jXN8AQM9LWM0D4loKWxJek", '{"test": 2432232314}',
                                timestamp=1614265330)
    assert headers == {"webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek", "webhook-timestamp": "1614265330",
                       "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="}
    assert signing_key(SECRET.removeprefix("whsec_")) == signing_key(SECRET)
    for bad in ("short", "whsec_not base64!", "whsec_" + base64.b64encode(b"8 bytes!").decode()):
        with pytest.raises(Exception, match="--webhook-secret"):
            signing_key(bad)
    assert [delay(n) for n in (1, 2, 3, 4, 7, 8)] == [2, 8, 32, 128, 3600, 3600]


def test_where_callbacks_may_go():
    default = Destinations()
    for url in ("http://127.0.0.1:9/hook", "https://localhost/x", "http://10.1.2.3/", "http://[::1]:80/"):
        assert default.problem(url) is None, url
    refused = {"ftp://127.0.0.1/": "http:// or https://", "file:///etc/passwd": "http:// or https://",
               "http://169.254.169.254/latest/meta-data": "link-local", "http://[fe80::1]/": "link-local",
               "http://0.0.0.0/": "unspecified", "http://224.0.0.1/": "multicast",
               "http://user:pw@127.0.0.1/": "no user or password", "http://127.0.0.1:99999/": "not a URL",
               "http://no-such-host.invalid/": "does not resolve", "http://a\x00b/": "control character",
               "http://" + "a" * 3000: "at most 2048", 12: "an http or https URL"}
    for url, why in refused.items():
        assert why in (default.problem(url) or ""), (url, default.problem(url))
    allowed = Destinations(("hooks.example", "10.0.0.0/8"))
    assert allowed.problem("https://hooks.example/in") is None and allowed.problem("http://10.9.8.7/") is None
    assert "--webhook-allow-host" in allowed.problem("http://127.0.0.1/")


def test_a_job_ends_once_so_its_deliveries_are_queued_once(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    spec = {"engine": "sd15", "task": "txt2img", "request": {}, "callbacks": ["http://127.0.0.1:9/a", "http://x/b"]}
    done, cancelled = store.submit(spec)["id"], store.submit(spec)["id"]
    plain = store.submit({**spec, "callbacks": []})["id"]
    store.claim(device="cpu")
    store.finish(done, "done", result={"files": []})
    store.finish(done, "done", result={"files": []})  # a second record of the same end adds nothing
    assert store.cancel_queued(cancelled) and not store.cancel_queued(cancelled)
    store.claim(device="cpu")
    store.finish(plain, "failed", error="x")
    rows = store.query(lambda db: db.execute("SELECT job_id, event, url, body FROM webhook_deliveries").fetchall())
    assert sorted((row["job_id"], row["event"], row["url"]) for row in rows) == sorted(
        [(done, "job.done", url) for url in spec["callbacks"]] + [(cancelled, "job.cancelled", url)
                                                                  for url in spec["callbacks"]])
    body = json.loads(rows[0]["body"])
    assert body["type"] == f"{rows[0]['event']}" and body["data"]["id"] == rows[0]["job_id"]
    assert [d["status"] for d in store.get(done)["webhooks"]] == ["pending", "pending"]
    assert "webhooks" not in store.get(plain)


def test_a_database_of_the_first_schema_gains_the_key_and_delivery_tables(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, state TEXT "
                   "NOT NULL, stage TEXT, spec TEXT NOT NULL, submitted REAL NOT NULL, started REAL, finished REAL, "
                   "attempts INTEGER NOT NULL DEFAULT 0, step INTEGER, steps INTEGER, error TEXT, result TEXT)")
    store = JobStore(path)
    job, created = store.submit_once({"engine": "sd15", "callbacks": ["http://127.0.0.1:9/"]}, "k", "f1")
    assert created and store.submit_once({"engine": "sd15"}, "k", "f1") == (store.get(job["id"]), False)
    assert store.cancel_queued(job["id"]) and len(store.get(job["id"])["webhooks"]) == 1


# -- a real service, a real receiver -------------------------------------------------------------------------


class Receiver:
    """An HTTP server on loopback that records each POST and answers the statuses it is told (then 200)."""

    def __init__(self, port: int = 0):
        self.posts: list[dict] = []
        self.answers: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802  (http.server's name)
                body = self.rfile.read(int(self.headers["content-length"]))
                status = receiver.answers.pop(0) if receiver.answers else 200
                receiver.posts.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                                       "body": body, "status": status})
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def to(self, path: str) -> list[dict]:
        return [post for post in self.posts if post["path"] == path]


@pytest.fixture(scope="module")
def sleepy_site(tmp_path_factory) -> Path:
    return install_package(SLEEPY, tmp_path_factory.mktemp("sleepy_site"))


class Service:
    """`codex serve` with the sleepy engine importable; restartable on the same state dir."""

    def __init__(self, site: Path, state_dir: Path, *args: str):
        self.site, self.state_dir, self.args, self.proc = site, state_dir, args, None

    def start(self) -> "Service":
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(self.site), os.environ.get("PYTHONPATH")]))}
        self.log_path = self.state_dir.parent / f"serve-{self.port}.log"
        self.proc = subprocess.Popen([CODEX, "serve", "--port", str(self.port), "--state-dir", str(self.state_dir),
                                      *self.args], stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT, env=env)
        until(lambda: self._health() or self.proc.poll() is not None, 60, "the service's start")
        assert self.proc.poll() is None, self.log_path.read_text(errors="replace")
        return self

    def _health(self) -> bool:
        try:
            return httpx.get(self.url + "/v1/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(60)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)


def until(condition, timeout: float = 30, what: str = "the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} did not hold within {timeout} s")


def submit(client: httpx.Client, request: dict, headers: dict | None = None, **spec) -> httpx.Response:
    return client.post("/v1/jobs", json={"engine": "sleepy", "task": "txt2img", "model": "tiny",
                                         "request": {"prompt": "x", **request}, **spec}, headers=headers or {})


def ended(client: httpx.Client, job_id: str) -> dict:
    return until(lambda: (job := client.get(f"/v1/jobs/{job_id}").json())["state"] in ("done", "failed", "cancelled")
                 and job, 60, f"job {job_id}'s end")


@pytest.mark.slow
def test_a_webhook_is_signed_retried_after_a_500_and_sent_once_per_state_change(sleepy_site, tmp_path):
    receiver = Receiver()
    receiver.answers = [500]  # the first delivery to arrive fails once
    service = Service(sleepy_site, tmp_path / "state", "--webhook-secret", SECRET,
                      "--webhook-url", receiver.url + "/all").start()
    try:
        with service.client() as client:
            done = submit(client, {}, callback_url=receiver.url + "/job").json()["id"]
            until(lambda: receiver.to("/job") or receiver.to("/all"), 30, "a first delivery")
            failed = submit(client, {"crash": "raise"}).json()["id"]
            running = submit(client, {"sleep_in": "denoise", "sleep_seconds": 30}).json()["id"]
            until(lambda: client.get(f"/v1/jobs/{running}").json()["state"] == "running", 30, "the long job's start")
            client.delete(f"/v1/jobs/{running}")
            states = {job_id: ended(client, job_id)["state"] for job_id in (done, failed, running)}
            assert states == {done: "done", failed: "failed", running: "cancelled"}
            until(lambda: len([p for p in receiver.posts if p["status"] == 200]) == 4, 30, "four deliveries")
            time.sleep(3)  # past the first retry's delay: nothing more comes
            posts = list(receiver.posts)
            events = sorted((post["path"], verify(SECRET, post["headers"], post["body"])["type"],
                             verify(SECRET, post["headers"], post["body"])["data"]["id"]) for post in posts)
            # one delivery per state change and URL; the one answered 500 was sent again, with the same id and body
            assert sorted(set(events)) == sorted([("/job", "job.done", done), ("/all", "job.done", done),
                                                  ("/all", "job.failed", failed), ("/all", "job.cancelled", running)])
            [retried] = [post for post in posts if post["status"] == 500]
            again = [post for post in posts if post["headers"]["webhook-id"] == retried["headers"]["webhook-id"]]
            assert [post["status"] for post in again] == [500, 200] and again[0]["body"] == again[1]["body"]
            assert len(posts) == 5
            payload = verify(SECRET, again[1]["headers"], again[1]["body"])
            tampered = again[1]["body"].replace(b'"state"', b'"State"')
            with pytest.raises(ValueError, match="bad signature"):
                verify(SECRET, again[1]["headers"], tampered)
            job = client.get(f"/v1/jobs/{payload['data']['id']}").json()
            record = next(d for d in job["webhooks"] if d["id"] == retried["headers"]["webhook-id"])
            assert record["status"] == "delivered" and [a["status_code"] for a in record["attempts"]] == [500, 200]
            assert record["attempts"][1]["at"] - record["attempts"][0]["at"] >= 1.9  # the backoff's first delay
            failed_job = client.get(f"/v1/jobs/{failed}").json()
            assert verify(SECRET, receiver.to("/all")[-1]["headers"], receiver.to("/all")[-1]["body"])
            assert [d["event"] for d in failed_job["webhooks"]] == ["job.failed"]
            assert "the sleepy engine failed on purpose" in json.dumps(
                [verify(SECRET, p["headers"], p["body"]) for p in receiver.to("/all")])
            bad = submit(client, {}, callback_url="http://169.254.169.254/latest/meta-data")
            assert bad.status_code == 422 and "callback_url" in bad.json()["detail"]
            assert submit(client, {}, callback_url="gopher://127.0.0.1/").status_code == 422
    finally:
        service.stop()
        receiver.close()


@pytest.mark.slow
def test_a_delivery_pending_at_a_stop_is_sent_after_the_restart(sleepy_site, tmp_path):
    with socket.socket() as sock:  # a port nobody listens on yet: the first attempt is refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    service = Service(sleepy_site, tmp_path / "state", "--webhook-secret", SECRET).start()
    receiver = None
    try:
        with service.client() as client:
            job_id = submit(client, {}, callback_url=f"http://127.0.0.1:{port}/hook").json()["id"]
            ended(client, job_id)
            until(lambda: client.get(f"/v1/jobs/{job_id}").json()["webhooks"][0]["attempts"], 30, "a first attempt")
        service.stop()
        receiver = Receiver(port)
        service.start()
        until(lambda: receiver.posts, 30, "the delivery after the restart")
        with service.client() as client:
            record = until(lambda: (d := client.get(f"/v1/jobs/{job_id}").json()["webhooks"][0])["status"] == "delivered"
                           and d, 30, "the delivery's record")
        assert "Connection" in record["attempts"][0]["error"] and record["attempts"][1]["status_code"] == 200
        time.sleep(1)
        assert len(receiver.posts) == 1 and verify(SECRET, receiver.posts[0]["headers"], receiver.posts[0]["body"])
    finally:
        service.stop()
        if receiver:
            receiver.close()


@pytest.mark.slow
def test_one_idempotency_key_across_a_restart_is_one_job(sleepy_site, tmp_path):
    service = Service(sleepy_site, tmp_path / "state").start()
    key = {"Idempotency-Key": "order-7"}
    try:
        with service.client() as client:
            first = submit(client, {"seed": 3}, key)
            assert first.status_code == 202 and first.json()["replayed"] is False
            job_id = first.json()["id"]
        service.stop()
        service.start()
        with service.client() as client:
            # the same request, its keys in another order: the same job, 200, said to be a replay
            again = client.post("/v1/jobs", json={"request": {"seed": 3, "prompt": "x"}, "model": "tiny",
                                                  "task": "txt2img", "engine": "sleepy"}, headers=key)
            assert again.status_code == 200 and again.json()["id"] == job_id, again.text
            assert again.headers["idempotent-replayed"] == "true" and again.json()["replayed"] is True
            other = submit(client, {"seed": 4}, key)
            assert other.status_code == 409 and "'order-7'" in other.json()["detail"]
            # many at once with a new key: one job
            import concurrent.futures

            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(lambda _: submit(client, {"seed": 5}, {"Idempotency-Key": "burst"}), range(8)))
            assert len({answer.json()["id"] for answer in answers}) == 1
            assert sorted(answer.status_code for answer in answers) == [200] * 7 + [202]
            assert len(client.get("/v1/jobs").json()) == 2
            for bad in ("", "x" * 256, "tab\there"):
                refused = submit(client, {"seed": 6}, {"Idempotency-Key": bad})
                assert refused.status_code == 422 and "Idempotency-Key" in refused.json()["detail"], bad
            ended(client, job_id)
            assert client.delete(f"/v1/jobs/{job_id}").status_code == 200  # a deleted job frees its key
            fresh = submit(client, {"seed": 3}, key)
            assert fresh.status_code == 202 and fresh.json()["id"] != job_id
    finally:
        service.stop()
