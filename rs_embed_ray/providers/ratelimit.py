"""Request limiters: keep Earth Engine traffic under the project's quota. Pure Python, no ray.

Earth Engine allows a project about 40 concurrent requests and 100 requests/s; above that it
answers HTTP 429 and every worker backs off, so throughput drops. A limiter grants a *slot*
(a concurrency permit) and a *token* (from a token bucket refilled at ``qps``) before each
HTTP request, and the slot is returned when the answer arrives.

``Limiter`` is the protocol the provider uses; ``LocalLimiter`` is the in-process version
(threads of one process). The cluster-wide version, a Ray named actor, lives in
``rs_embed_ray.pipeline.ee_quota`` and satisfies the same protocol.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Hashable, Iterator
from typing import Protocol, runtime_checkable

DEFAULT_MAX_CONCURRENT = 40  # ee_max_concurrent: Earth Engine's per-project default
DEFAULT_QPS = 100.0  # ee_max_qps: Earth Engine's per-project default (requests/s)


class LimiterTimeout(TimeoutError):
    """No slot/token could be had within the caller's timeout."""


@runtime_checkable
class Limiter(Protocol):
    """Grants a concurrency slot plus a rate token per request.

    ``acquire`` blocks until both are granted and returns a lease to hand back to
    ``release``; ``slot()`` wraps the pair as a context manager.
    """

    def acquire(self, timeout: float | None = None) -> Hashable: ...

    def release(self, lease: Hashable) -> None: ...

    def slot(self, timeout: float | None = None) -> contextlib.AbstractContextManager[Hashable]: ...


class SlotMixin:
    """``slot()`` for any class with ``acquire``/``release``."""

    @contextlib.contextmanager
    def slot(self, timeout: float | None = None) -> Iterator[Hashable]:
        lease = self.acquire(timeout)  # type: ignore[attr-defined]
        try:
            yield lease
        finally:
            self.release(lease)  # type: ignore[attr-defined]


class TokenBucket:
    """A token bucket: ``rate`` tokens/s, at most ``burst`` stored. Not thread-safe on its own.

    The default burst of 1 spaces requests evenly (1/rate apart), so the stream stays
    under ``rate`` whatever window the server counts in.
    """

    def __init__(self, rate: float | None, burst: float | None = None) -> None:
        self.rate = float(rate) if rate else None
        self.burst = max(1.0, float(burst)) if burst else 1.0
        self.tokens = self.burst
        self.stamp = time.monotonic()

    def _refill(self, now: float) -> None:
        if self.rate is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_time(self, now: float | None = None) -> float:
        """Seconds until a token is available (0 when one is)."""
        if self.rate is None:
            return 0.0
        self._refill(time.monotonic() if now is None else now)
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate

    def take(self) -> None:
        if self.rate is not None:
            self.tokens -= 1.0


class LocalLimiter(SlotMixin):
    """In-process limiter for the threads of one worker (``None`` disables a limit)."""

    def __init__(
        self,
        max_concurrent: int | None = DEFAULT_MAX_CONCURRENT,
        qps: float | None = DEFAULT_QPS,
        burst: float | None = None,
    ) -> None:
        if max_concurrent is not None and max_concurrent < 1:
            raise ValueError(f"max_concurrent must be >= 1 or None, got {max_concurrent}")
        if qps is not None and qps < 0:
            raise ValueError(f"qps must be >= 0 or None, got {qps}")
        self.max_concurrent = max_concurrent
        self.qps = qps or None
        self._bucket = TokenBucket(self.qps, burst)
        self._cond = threading.Condition()
        self._next = 0
        self._held: set[int] = set()
        self.peak_in_use = 0
        self.granted = 0

    def __getstate__(self) -> dict:
        # a pickled local limiter (e.g. inside a provider shipped to a Ray actor) becomes an
        # independent limiter with the same settings in the new process
        return {"max_concurrent": self.max_concurrent, "qps": self.qps, "burst": self._bucket.burst}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["max_concurrent"], state["qps"], state["burst"])  # type: ignore[misc]

    @property
    def in_use(self) -> int:
        with self._cond:
            return len(self._held)

    def acquire(self, timeout: float | None = None) -> int:
        """Block until a slot and a token are free; return the lease id."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                now = time.monotonic()
                wait: float | None
                if self.max_concurrent is not None and len(self._held) >= self.max_concurrent:
                    wait = None  # woken by release()
                else:
                    wait = self._bucket.wait_time(now)
                    if wait <= 0:
                        self._bucket.take()
                        self._next += 1
                        self._held.add(self._next)
                        self.granted += 1
                        self.peak_in_use = max(self.peak_in_use, len(self._held))
                        return self._next
                if deadline is not None:
                    left = deadline - now
                    if left <= 0:
                        raise LimiterTimeout(f"no Earth Engine request slot within {timeout} s")
                    wait = left if wait is None else min(wait, left)
                self._cond.wait(wait)

    def release(self, lease: Hashable) -> None:
        with self._cond:
            self._held.discard(lease)  # type: ignore[arg-type]
            self._cond.notify_all()

    def stats(self) -> dict[str, float | int | None]:
        with self._cond:
            return {
                "max_concurrent": self.max_concurrent,
                "qps": self.qps,
                "in_use": len(self._held),
                "peak_in_use": self.peak_in_use,
                "granted": self.granted,
            }


__all__ = [
    "DEFAULT_MAX_CONCURRENT",
    "DEFAULT_QPS",
    "Limiter",
    "LimiterTimeout",
    "LocalLimiter",
    "SlotMixin",
    "TokenBucket",
]
