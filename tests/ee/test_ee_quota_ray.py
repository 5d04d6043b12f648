"""The cluster-wide quota actor on a real local Ray cluster."""

from __future__ import annotations

import os
import time
import uuid

import pytest

ray = pytest.importorskip("ray")

from rs_embed_ray.pipeline.ee_quota import (  # noqa: E402
    RayLimiter,
    get_or_create_quota_actor,
    limiter_for,
)
from rs_embed_ray.providers.ratelimit import Limiter, LimiterTimeout  # noqa: E402
from rs_embed_ray.testing.ee_emulator import EEEmulator  # noqa: E402

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def local_ray():
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


def _name() -> str:
    return f"ee-quota-test-{uuid.uuid4().hex[:8]}"


def test_named_actor_is_shared_and_limits(local_ray) -> None:
    name = _name()
    a = get_or_create_quota_actor(name, max_concurrent=2, qps=None)
    b = get_or_create_quota_actor(name, max_concurrent=99, qps=None)  # same actor
    lim_a, lim_b = RayLimiter(a), RayLimiter(b)
    assert isinstance(lim_a, Limiter)
    l1, l2 = lim_a.acquire(), lim_b.acquire()
    with pytest.raises(LimiterTimeout):
        lim_a.acquire(timeout=0.2)
    lim_b.release(l1)
    l3 = lim_a.acquire(timeout=5)
    stats = lim_a.stats()
    assert stats["max_concurrent"] == 2 and stats["in_use"] == 2 and stats["peak_in_use"] == 2
    lim_a.release(l2)
    lim_a.release(l3)
    assert limiter_for(name).stats()["max_concurrent"] == 2  # workers find the driver's actor
    ray.kill(a)


def test_lease_of_a_crashed_holder_expires(local_ray) -> None:
    actor = get_or_create_quota_actor(_name(), max_concurrent=1, qps=None, lease_timeout_s=0.5)
    lim = RayLimiter(actor)
    lim.acquire()  # never released: its holder "crashed"
    t0 = time.monotonic()
    lease = lim.acquire(timeout=10)
    assert 0.3 <= time.monotonic() - t0 < 5
    assert lim.stats()["expired"] == 1
    lim.release(lease)
    ray.kill(actor)


def test_qps_is_enforced_cluster_wide(local_ray) -> None:
    actor = get_or_create_quota_actor(_name(), max_concurrent=None, qps=20)
    lim = RayLimiter(actor)
    t0 = time.monotonic()
    for _ in range(11):
        lim.release(lim.acquire())
    assert time.monotonic() - t0 >= 10 / 20 * 0.9
    ray.kill(actor)


@ray.remote(num_cpus=0)
class FetchWorker:
    """A fetch actor as the pipeline would run one: its own provider, the shared limiter."""

    def __init__(self, url: str, limiter: RayLimiter) -> None:
        from rs_embed_ray.providers.gee import GEEProvider

        self.provider = GEEProvider(project="ray-test", url=url, limiter=limiter, max_retries=0)
        self.provider.ensure_ready()

    def run(self, index: int, n: int) -> list[tuple[int, ...]]:
        from rs_embed_ray.specs import PointBuffer, SensorSpec, TemporalSpec

        sensor = SensorSpec(collection="COPERNICUS/S2_SR_HARMONIZED", bands=("B4",), scale_m=10)
        window = TemporalSpec.range("2022-06-01", "2022-09-01")
        shapes = []
        for i in range(n):
            sp = PointBuffer(lon=5.0 + index, lat=45.0 + 0.01 * i, buffer_m=100)
            shapes.append(tuple(self.provider.fetch(sp, window, sensor).data.shape))
        return shapes


def test_four_ray_actors_share_the_limit(local_ray) -> None:
    limit = 2
    actor = get_or_create_quota_actor(_name(), max_concurrent=limit, qps=None)
    with EEEmulator(latency_ms=60, max_concurrent=limit) as emu:
        workers = [FetchWorker.remote(emu.url, RayLimiter(actor)) for _ in range(4)]
        results = ray.get([w.run.remote(i, 4) for i, w in enumerate(workers)], timeout=120)
        assert all(shape == (1, 20, 20) for r in results for shape in r)
        assert all(r["status"] == 200 for r in emu.request_log)  # no 429 from the emulator
        assert emu.peak_in_flight <= limit
        assert len(emu.requests_of("computePixels")) == 16
    stats = RayLimiter(actor).stats()
    deadline = time.monotonic() + 10
    while stats["in_use"] and time.monotonic() < deadline:  # releases are fire-and-forget
        time.sleep(0.05)
        stats = RayLimiter(actor).stats()
    assert stats["peak_in_use"] == limit and stats["in_use"] == 0
    for w in workers:
        ray.kill(w)
    ray.kill(actor)
