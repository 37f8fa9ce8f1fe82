"""`codex serve` under load, and a warm service against a cold `codex run` (a benchmark, not a test).

1. Load: 200 tiny sd15 txt2img jobs (4 seeds) from 8 concurrent clients on loopback. Every output
   must equal its seed's reference; reports jobs/s, p50/p95 latency (submit to done), the peak RSS
   of the service and its worker process (summed) and their RSS growth after the warm-up.
2. Warm vs cold: the same tiny sd15 request through a warm service (submit, wait, fetch the PNG) vs
   a cold whole-process `codex run`, both measured here in one run. Target: ratio <= 0.1.
3. Ray: the load of 1 against `codex serve --ray` with one worker actor on a one-node Ray cluster
   (``ray.cluster_utils.Cluster``, every address on loopback), beside the in-process worker's row:
   what the actor's calls and the outputs' trip through Ray's object store cost (skipped without ray).

Run from the repo root: ``.venv/bin/python bench/serve.py`` (or ``make bench``).
"""

from __future__ import annotations

import atexit
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

TMP = Path(tempfile.mkdtemp(prefix="codex-bench-serve-"))
atexit.register(shutil.rmtree, TMP, ignore_errors=True)
os.environ["CODEX_CACHE_DIR"] = str(TMP / "cache")
CODEX = str(Path(sys.executable).parent / "codex")
REQUEST = {"prompt": "a lighthouse", "width": 32, "height": 32, "steps": 2}
JOBS, CLIENTS, SEEDS = 200, 8, 4


def rss_mb(pid: int, key: str = "VmRSS") -> float:
    """The service's and its worker processes' (which hold the models), summed (VmHWM: each one's peak)."""
    children = [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
                for child in (task / "children").read_text().split()]
    total = 0.0
    for one in (pid, *children):
        for line in Path(f"/proc/{one}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                total += int(line.split()[1]) / 1024
    return total or float("nan")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(*extra: str, state: str = "state") -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([CODEX, "serve", "--port", str(port), "--state-dir", str(TMP / state),
                             "--max-queue", str(JOBS + 10), *extra], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            health = httpx.get(url + "/v1/health", timeout=1).json()
            if all(worker["state"] in ("idle", "running") for worker in health["workers"]):
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit("the service did not start")


def run_job(url: str, seed: int) -> tuple[float, bytes, str]:
    started = time.perf_counter()
    with httpx.Client(base_url=url, timeout=600) as client:
        job = client.post("/v1/jobs", json={"engine": "sd15", "task": "txt2img", "model": "tiny",
                                            "request": {**REQUEST, "seed": seed}}).json()
        while job["state"] not in ("done", "failed", "cancelled"):
            time.sleep(0.02)
            job = client.get(f"/v1/jobs/{job['id']}").json()
        png = client.get(f"/v1/jobs/{job['id']}/files/0000.png").content if job["state"] == "done" else b""
    return time.perf_counter() - started, png, job["state"]


def warm_up(url: str) -> dict[int, bytes]:
    """One job per seed: the model loaded, and each seed's PNG."""
    return {seed: run_job(url, seed)[1] for seed in range(SEEDS)}


def load(url: str, references: dict[int, bytes]) -> str:
    """The load against the service at ``url``, every output checked against its seed's reference: its line."""
    started = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        results = list(pool.map(lambda i: (i % SEEDS, *run_job(url, i % SEEDS)), range(JOBS)))
    wall = time.perf_counter() - started
    correct = sum(state == "done" and np.array_equal(np.asarray(Image.open(io.BytesIO(png))),
                                                     np.asarray(Image.open(io.BytesIO(references[seed]))))
                  for seed, _, png, state in results)
    latencies = sorted(latency for _, latency, _, _ in results)
    return (f"{JOBS} jobs from {CLIENTS} clients in {wall:.1f} s = {JOBS / wall:.2f} jobs/s; correct {correct}/{JOBS}; "
            f"latency p50 {statistics.median(latencies):.2f} s, p95 {latencies[int(0.95 * len(latencies)) - 1]:.2f} s")


def ray_row(references: dict[int, bytes]) -> None:
    """The same load through `codex serve --ray`: one worker actor on a one-node loopback Ray cluster."""
    try:
        from ray.cluster_utils import Cluster
    except ImportError:
        print("ray: skipped (pip install 'codex-core[ray]')")
        return
    cluster = Cluster(initialize_head=True, head_node_args={"node_ip_address": "127.0.0.1", "num_cpus": 1,
                                                           "include_dashboard": False})
    try:
        proc, url = start("--ray", cluster.address, "--ray-node-ip", "127.0.0.1", "--devices", "cpu",
                          "--ray-workers", "1", state="state-ray")
        try:
            warm_up(url)  # its actor's model loaded
            print("ray (one worker actor): " + load(url, references))  # checked against the in-process pixels
        finally:
            proc.terminate()
            proc.wait(60)
    finally:
        cluster.shutdown()


def main() -> None:
    proc, url = start()
    try:
        references = warm_up(url)
        warm_rss = rss_mb(proc.pid)
        line = load(url, references)
        end_rss, peak_rss = rss_mb(proc.pid), rss_mb(proc.pid, "VmHWM")
        print(f"load (one in-process worker): {line}; RSS after warm-up {warm_rss:.0f} MiB, at the end "
              f"{end_rss:.0f} MiB (+{end_rss - warm_rss:.0f}), peak {peak_rss:.0f} MiB")

        warm = [run_job(url, 1)[0] for _ in range(5)]
    finally:
        proc.terminate()
        proc.wait(30)
    ray_row(references)
    cold = []
    for index in range(3):
        started = time.perf_counter()
        subprocess.run([CODEX, "run", "sd15", "txt2img", "--model", "tiny", "--quiet", "--out",
                        str(TMP / f"cold{index}"), "--json", json.dumps({**REQUEST, "seed": 1})],
                       check=True, stdout=subprocess.DEVNULL)
        cold.append(time.perf_counter() - started)
    ratio = statistics.median(warm) / statistics.median(cold)
    print(f"warm service {statistics.median(warm):.3f} s vs cold codex run {statistics.median(cold):.3f} s "
          f"(medians of {len(warm)} and {len(cold)}): ratio {ratio:.3f} (target <= 0.1)")


if __name__ == "__main__":
    main()
