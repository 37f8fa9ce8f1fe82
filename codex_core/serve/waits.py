"""Waiting for jobs without holding a thread: the A1111 calls answer when their jobs end.

A waiting call is a future on the event loop; one poller task reads the states of all the jobs
waited for (in the threadpool, one short call per round) and resolves the futures of those that
ended. A hundred calls waiting cost one store read of a hundred rows every ``interval`` seconds, and
leave the threadpool and the event loop to every other route.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import HTTPException
from starlette.concurrency import run_in_threadpool

from .store import TERMINAL, JobStore


class JobWaits:
    def __init__(self, store: JobStore, interval: float = 0.1):
        self.store, self.interval = store, interval
        self.waiting: dict[str, list[asyncio.Future]] = {}
        self.poller: asyncio.Task | None = None

    async def wait(self, job_id: str, timeout: float) -> dict[str, Any] | None:
        """The job once it has ended (done, failed, cancelled); None if it was deleted meanwhile."""
        future = asyncio.get_running_loop().create_future()
        self.waiting.setdefault(job_id, []).append(future)
        if self.poller is None or self.poller.done() or self.poller.get_loop() is not asyncio.get_running_loop():
            self.poller = asyncio.create_task(self._poll())
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise HTTPException(504, f"job {job_id} did not end within {timeout:.0f} s") from None
        finally:
            futures = self.waiting.get(job_id, [])
            if future in futures:
                futures.remove(future)
            if not futures:
                self.waiting.pop(job_id, None)

    async def _poll(self) -> None:
        while self.waiting:
            job_ids = list(self.waiting)
            try:
                jobs = await run_in_threadpool(self._read, job_ids)
            except Exception as exc:  # the store cannot be read now: the calls waiting say so
                jobs = {}
                for job_id in job_ids:
                    self._resolve(job_id, error=HTTPException(
                        503, f"the job store cannot be read ({type(exc).__name__}); job {job_id} may still run"))
            for job_id, job in jobs.items():
                if job is None or job["state"] in TERMINAL:
                    self._resolve(job_id, job)
            await asyncio.sleep(self.interval)

    def _read(self, job_ids: list[str]) -> dict[str, dict[str, Any] | None]:
        return {job_id: self.store.get(job_id) for job_id in job_ids}

    def _resolve(self, job_id: str, job: dict[str, Any] | None = None, error: Exception | None = None) -> None:
        for future in self.waiting.pop(job_id, []):
            if future.done():
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(job)
