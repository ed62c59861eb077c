"""What one server accepts, and the gate that keeps model work bounded.

Model work runs in a small thread pool (torch releases the GIL, so the event loop stays free to
answer health checks and refuse excess work). A request that finds every worker busy waits in
a bounded queue; a full queue is refused at once with 429, a wait past `queue_timeout_s` with
503, both with Retry-After, so that a burst costs memory for at most workers + queue requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["Limits", "Gate", "Busy"]

T = TypeVar("T")


@dataclass(frozen=True)
class Limits:
    """max_upload_bytes: largest request body (an image, a .vtok file, JSON); refused from its
    Content-Length or as soon as the stream passes it. max_pixels: largest image (width x
    height as its header declares, or as a .vtok file declares), refused before decoding.
    workers: model jobs at once. queue: requests that may wait for a worker. queue_timeout_s:
    longest wait for one. work_timeout_s: longest model job the client waits for. body_timeout_s:
    longest time to receive a body. max_generate: most images one generate request may ask for."""

    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 16_000_000
    workers: int = 1
    queue: int = 32
    queue_timeout_s: float = 30.0
    work_timeout_s: float = 60.0
    body_timeout_s: float = 30.0
    max_generate: int = 8
    retry_after_s: int = 2

    def __post_init__(self) -> None:
        from ..errors import ConfigError

        for name in ("max_upload_bytes", "max_pixels", "workers", "max_generate", "retry_after_s"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"serve limit {name} must be >= 1, got {getattr(self, name)}")
        if self.queue < 0:
            raise ConfigError(f"serve limit queue must be >= 0, got {self.queue}")
        for name in ("queue_timeout_s", "work_timeout_s", "body_timeout_s"):
            if not float(getattr(self, name)) > 0:
                raise ConfigError(f"serve limit {name} must be > 0 seconds, got {getattr(self, name)}")


class Busy(Exception):
    """The server will not do this work now: 429 (queue full) or 503 (waited or worked too long)."""

    def __init__(self, status: int, message: str, retry_after_s: int):
        super().__init__(message)
        self.status, self.message, self.retry_after_s = status, message, retry_after_s


class Gate:
    """At most `limits.workers` jobs run at once; at most `limits.queue` more wait. A job that
    outlives its time limit keeps its worker until it ends (threads cannot be killed), so the
    count of running jobs is always true; only its client stops waiting."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self._slots = asyncio.Semaphore(limits.workers)
        self._pool = ThreadPoolExecutor(limits.workers, thread_name_prefix="vtok-serve")
        self.waiting = 0
        self.running = 0
        self.refused = 0

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        limits = self.limits
        if self._slots.locked() and self.waiting >= limits.queue:
            self.refused += 1
            raise Busy(429, f"server busy: {self.running} job(s) running, {self.waiting} waiting", limits.retry_after_s)
        self.waiting += 1
        try:
            await asyncio.wait_for(self._slots.acquire(), limits.queue_timeout_s)
        except asyncio.TimeoutError:
            self.refused += 1
            message = f"server busy: no worker free within {limits.queue_timeout_s:g} s"
            raise Busy(503, message, limits.retry_after_s) from None
        finally:
            self.waiting -= 1
        self.running += 1
        future = asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        future.add_done_callback(self._finished)
        try:
            return await asyncio.wait_for(asyncio.shield(future), limits.work_timeout_s)
        except asyncio.TimeoutError:
            raise Busy(
                503, f"the work took longer than the {limits.work_timeout_s:g} s limit", limits.retry_after_s
            ) from None

    def _finished(self, future: asyncio.Future | Future) -> None:
        self.running -= 1
        self._slots.release()
        if not future.cancelled():
            future.exception()  # retrieved, so that a job abandoned after its time limit logs nothing

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
