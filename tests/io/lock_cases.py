"""The lock's limits (issue 18), run by the S3 (moto) and GCS (fake-gcs-server) modules against
their real servers: conditional writes on the object's version decide, never a clock.

A holder whose clock is an hour behind is simulated by ``Skewed`` (its lock says it beat an
hour ago): a watcher must still not take over while it is alive (the object keeps changing),
and must take over, after the lease on its own monotonic clock, once it is dead.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from rs_embed_ray.errors import OutputLockedError
from rs_embed_ray.io import storage
from rs_embed_ray.io import versioned as ver
from rs_embed_ray.io.remote_lock import RemoteLock

LEASE = 0.8  # seconds; the watcher polls every LEASE / 8, the heartbeat beats every LEASE / 4
LIVE_LEASE = 4.0


class Skewed(RemoteLock):
    """A holder whose clock is an hour behind the watcher's."""

    def _doc(self) -> bytes:
        doc = json.loads(super()._doc())
        doc["beat"] -= 3600.0
        return json.dumps(doc).encode()


def _holder(path: Any) -> str:
    return json.loads(storage.read_bytes(path))["token"]


def heartbeat_after_takeover_does_not_clobber(url: str) -> None:
    path = storage.as_path(url)
    a = RemoteLock(path, lease_s=60)
    a.acquire()
    # another run takes it over as a taker does: a write conditional on the version it saw
    b = RemoteLock(path, lease_s=60)
    b.version = ver.put(path, b._doc(), a.version)
    assert not a.renew() and a.lost  # a's beat is refused by the store
    assert _holder(path) == b.token
    a.release()  # not a's any more: left alone
    assert _holder(path) == b.token
    with pytest.raises(ver.ObjectChanged):  # a stale version cannot delete it either
        ver.put(path, b"x", a.version)
    b.release()
    assert ver.version(path) == ver.ABSENT


def live_holder_with_skewed_clock_is_not_taken_over(url: str) -> None:
    path = storage.as_path(url)
    # a longer lease here: on a loaded machine a 0.2 s heartbeat can miss a 0.8 s watch, and
    # a holder that cannot beat within its lease is rightly taken for dead
    a = Skewed(path, lease_s=LIVE_LEASE)
    a.acquire()
    a.start_heartbeat()
    try:
        b = RemoteLock(path, lease_s=LIVE_LEASE)
        with pytest.raises(OutputLockedError, match="locked by another run"):
            b.acquire()  # its beat looks an hour old, but the object keeps changing
        assert _holder(path) == a.token and a.renew()
    finally:
        a.release()
    assert ver.version(path) == ver.ABSENT


def dead_holder_is_taken_over_after_the_lease_on_the_takers_clock(url: str) -> None:
    path = storage.as_path(url)
    Skewed(path, lease_s=LEASE).acquire()  # then dies: no heartbeat, never released
    b = RemoteLock(path, lease_s=LEASE)
    start = time.monotonic()
    b.acquire()
    assert time.monotonic() - start > LEASE  # watched unchanged for the lease first
    assert _holder(path) == b.token
    b.release()


def two_takers_race_and_one_wins(url: str) -> None:
    path = storage.as_path(url)
    Skewed(path, lease_s=LEASE).acquire()  # a dead run's lock
    takers = [RemoteLock(path, lease_s=LEASE) for _ in range(2)]
    outcome: dict[int, str] = {}

    def take(k: int) -> None:
        try:
            takers[k].acquire()
            outcome[k] = "won"
        except OutputLockedError:
            outcome[k] = "refused"

    threads = [threading.Thread(target=take, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(outcome.values()) == ["refused", "won"], outcome
    winner = takers[next(k for k, v in outcome.items() if v == "won")]
    assert _holder(path) == winner.token
    winner.release()
