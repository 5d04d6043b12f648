"""LocalLimiter: the in-process slot + token-bucket limiter."""

from __future__ import annotations

import pickle
import threading
import time

import pytest

from rs_embed_ray.providers.ratelimit import Limiter, LimiterTimeout, LocalLimiter


def test_satisfies_protocol() -> None:
    assert isinstance(LocalLimiter(), Limiter)


def test_concurrency_bound_with_threads() -> None:
    lim = LocalLimiter(max_concurrent=3, qps=None)
    current = 0
    peak = 0
    lock = threading.Lock()

    def work() -> None:
        nonlocal current, peak
        for _ in range(5):
            with lim.slot():
                with lock:
                    current += 1
                    peak = max(peak, current)
                time.sleep(0.005)
                with lock:
                    current -= 1

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak == 3 and lim.peak_in_use == 3 and lim.in_use == 0 and lim.granted == 40


def test_rate_is_spaced() -> None:
    lim = LocalLimiter(max_concurrent=None, qps=50)
    t0 = time.monotonic()
    for _ in range(11):
        lim.release(lim.acquire())
    assert time.monotonic() - t0 >= 10 / 50 * 0.9  # first token free, then 1/qps apart


def test_timeout_raises() -> None:
    lim = LocalLimiter(max_concurrent=1, qps=None)
    lease = lim.acquire()
    with pytest.raises(LimiterTimeout):
        lim.acquire(timeout=0.05)
    lim.release(lease)
    lim.release(lim.acquire(timeout=0.05))


def test_validation_and_pickle() -> None:
    with pytest.raises(ValueError):
        LocalLimiter(max_concurrent=0)
    clone = pickle.loads(pickle.dumps(LocalLimiter(4, 10.0)))
    assert (clone.max_concurrent, clone.qps, clone.in_use) == (4, 10.0, 0)
