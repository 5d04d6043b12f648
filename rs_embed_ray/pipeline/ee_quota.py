"""Cluster-wide Earth Engine request limiter: one Ray named actor shared by every fetch worker.

Earth Engine's quota is per project (about 40 concurrent requests, 100 requests/s), not per
process, so a limiter inside each worker cannot keep a whole cluster under it. One named
actor hands out *leases* instead: ``acquire`` waits (asynchronously, so thousands of callers
can wait at once) until a concurrency slot is free and the token bucket has a token, then
returns a lease id; ``release`` frees the slot. A lease that is not released within
``lease_timeout_s`` (its holder crashed or was killed) expires and its slot is reclaimed, so
a dead worker cannot shrink the cluster's quota for good.

``RayLimiter`` is the client side and satisfies ``rs_embed_ray.providers.ratelimit.Limiter``,
so ``GEEProvider(limiter=RayLimiter(get_or_create_quota_actor()))`` works unchanged. It is
picklable: create it on the driver and pass it to actors.

This is the only library module that imports ray.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Hashable
from typing import Any

import ray

from rs_embed_ray.providers.ratelimit import (
    DEFAULT_MAX_CONCURRENT,
    DEFAULT_QPS,
    LimiterTimeout,
    SlotMixin,
    TokenBucket,
)

log = logging.getLogger(__name__)

DEFAULT_ACTOR_NAME = "rs_embed_ray_ee_quota"
# jobs find a shared (``ee_quota_actor``) quota actor here: a detached actor in a job's own
# anonymous namespace could not be reached from the next job
SHARED_NAMESPACE = "rs_embed_ray"
DEFAULT_LEASE_TIMEOUT_S = 360.0  # > Earth Engine's 5-minute interactive limit


class EEQuotaActor:
    """Lease-based concurrency + token-bucket rate limiter (run as an async Ray actor)."""

    def __init__(
        self,
        max_concurrent: int | None = DEFAULT_MAX_CONCURRENT,
        qps: float | None = DEFAULT_QPS,
        burst: float | None = None,
        lease_timeout_s: float = DEFAULT_LEASE_TIMEOUT_S,
    ) -> None:
        self.max_concurrent = max_concurrent
        self.qps = qps or None
        self.lease_timeout_s = float(lease_timeout_s)
        self._bucket = TokenBucket(self.qps, burst)
        self._leases: dict[str, tuple[str, float]] = {}  # lease -> (holder, expires_at)
        self._ids = itertools.count(1)
        self._cond: asyncio.Condition | None = None
        self.granted = 0
        self.expired = 0
        self.peak_in_use = 0

    def _condition(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
        return self._cond

    def _expire(self, now: float) -> float | None:
        """Drop expired leases; return seconds until the next one expires (None if none)."""
        soonest = None
        for lease, (holder, exp) in list(self._leases.items()):
            if exp <= now:
                del self._leases[lease]
                self.expired += 1
                log.warning("EE quota lease %s of %s expired; slot reclaimed", lease, holder)
            else:
                soonest = exp - now if soonest is None else min(soonest, exp - now)
        return soonest

    async def acquire(self, holder: str = "?", timeout: float | None = None) -> str | None:
        """Wait for a slot and a token; return a lease id, or None after ``timeout`` s."""
        cond = self._condition()
        deadline = None if timeout is None else time.monotonic() + timeout
        async with cond:
            while True:
                now = time.monotonic()
                next_expiry = self._expire(now)
                full = self.max_concurrent is not None and len(self._leases) >= self.max_concurrent
                wait: float | None = next_expiry if full else self._bucket.wait_time(now)
                if not full and wait is not None and wait <= 0:
                    self._bucket.take()
                    lease = f"{next(self._ids)}"
                    self._leases[lease] = (holder, now + self.lease_timeout_s)
                    self.granted += 1
                    self.peak_in_use = max(self.peak_in_use, len(self._leases))
                    return lease
                if deadline is not None:
                    left = deadline - now
                    if left <= 0:
                        return None
                    wait = left if wait is None else min(wait, left)
                try:
                    await asyncio.wait_for(cond.wait(), timeout=wait)
                except TimeoutError:
                    pass

    async def release(self, lease: str) -> bool:
        """Free a lease's slot (False if it had already expired or was unknown)."""
        cond = self._condition()
        async with cond:
            found = self._leases.pop(str(lease), None) is not None
            cond.notify_all()
        return found

    async def renew(self, lease: str) -> bool:
        """Push a long-running lease's expiry out by another ``lease_timeout_s``."""
        entry = self._leases.get(str(lease))
        if entry is None:
            return False
        self._leases[str(lease)] = (entry[0], time.monotonic() + self.lease_timeout_s)
        return True

    async def configure(
        self, max_concurrent: int | None = None, qps: float | None = None
    ) -> dict[str, Any]:
        """Change the limits of a running actor (e.g. after a quota increase)."""
        cond = self._condition()
        async with cond:
            if max_concurrent is not None:
                self.max_concurrent = max_concurrent
            if qps is not None:
                self.qps = qps or None
                self._bucket = TokenBucket(self.qps, self._bucket.burst)
            cond.notify_all()
        return await self.stats()

    async def stats(self) -> dict[str, Any]:
        self._expire(time.monotonic())
        return {
            "max_concurrent": self.max_concurrent,
            "qps": self.qps,
            "in_use": len(self._leases),
            "peak_in_use": self.peak_in_use,
            "granted": self.granted,
            "expired": self.expired,
            "lease_timeout_s": self.lease_timeout_s,
        }


_RemoteQuotaActor = ray.remote(num_cpus=0)(EEQuotaActor)


def get_or_create_quota_actor(
    name: str = DEFAULT_ACTOR_NAME,
    max_concurrent: int | None = DEFAULT_MAX_CONCURRENT,
    qps: float | None = DEFAULT_QPS,
    *,
    burst: float | None = None,
    lease_timeout_s: float = DEFAULT_LEASE_TIMEOUT_S,
    namespace: str | None = None,
    detached: bool = False,
) -> Any:
    """The named quota actor, created if missing (limits apply only when it is created).

    ``detached=True`` keeps it alive across jobs on a long-lived cluster, so successive jobs
    of one project share one quota; otherwise it dies with the job that created it.
    """
    opts: dict[str, Any] = {
        "name": name,
        "get_if_exists": True,
        "num_cpus": 0,
        "max_concurrency": 10000,
        "max_restarts": -1,
        "max_task_retries": 3,
    }
    if namespace is not None:
        opts["namespace"] = namespace
    if detached:
        opts["lifetime"] = "detached"
    handle = _RemoteQuotaActor.options(**opts).remote(max_concurrent, qps, burst, lease_timeout_s)
    return handle


def limiter_for(
    name: str = DEFAULT_ACTOR_NAME,
    max_concurrent: int | None = DEFAULT_MAX_CONCURRENT,
    qps: float | None = DEFAULT_QPS,
    **actor_options: Any,
) -> RayLimiter:
    """A ``RayLimiter`` on the named quota actor (created with these limits if missing).

    Create the actor on the driver with the run's ``ee_max_concurrent``/``ee_max_qps``
    first; workers then call ``limiter_for(name)`` and share it whatever limits they pass.
    """
    return RayLimiter(get_or_create_quota_actor(name, max_concurrent, qps, **actor_options))


class RayLimiter(SlotMixin):
    """Client of the quota actor; the same protocol as ``LocalLimiter``.

    ``acquire`` blocks until the actor grants a lease; ``release`` is fire-and-forget (a lost
    release only delays that slot until its lease expires).
    """

    def __init__(self, actor: Any, holder: str | None = None) -> None:
        self.actor = actor
        self.holder = holder

    def _holder(self) -> str:
        if self.holder:
            return self.holder
        return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"

    def acquire(self, timeout: float | None = None) -> str:
        lease = ray.get(self.actor.acquire.remote(self._holder(), timeout))
        if lease is None:
            raise LimiterTimeout(f"no Earth Engine request slot within {timeout} s")
        return lease

    def release(self, lease: Hashable) -> None:
        try:
            self.actor.release.remote(str(lease))
        except Exception as exc:  # the lease expires on its own; never fail the fetch here
            log.warning("could not release EE quota lease: %s", type(exc).__name__)

    def stats(self) -> dict[str, Any]:
        return ray.get(self.actor.stats.remote())


__all__ = [
    "DEFAULT_ACTOR_NAME",
    "DEFAULT_LEASE_TIMEOUT_S",
    "SHARED_NAMESPACE",
    "EEQuotaActor",
    "RayLimiter",
    "get_or_create_quota_actor",
    "limiter_for",
]
