"""Fault injection around a real provider, for tests, benchmarks and fire drills.

Enabled only through ``provider_options={"faults": {...}}`` (the fetch actors) or
``model_configs={MODEL: {"faults": {...}}}`` (the inference actor); the wrapped provider and
model still do the real work. Provider keys:

- ``latency_s``: sleep before every fetch (to make runs slow enough to interrupt);
- ``fail_items``: list of places (lon, lat) whose fetch raises ``ProviderError``;
- ``unless_exists``: a path; while it is missing, ``fail_items`` fail (a "fixed later" fault)
  and ``disk_full_after_shards`` applies;
- ``transient_every``: the first attempt of every place fails once per actor (exercises retries);
- ``exit_on_call`` + ``exit_marker``: the process running the fetch dies (``os._exit``, no
  cleanup, like an OOM kill) on its k-th fetch call, once: the first process to create
  ``exit_marker`` dies, later calls and restarted actors see the marker and carry on;
- ``disk_full_after_shards``: once that many patch shards exist, writing the next one raises
  ``OSError(ENOSPC)`` (while ``unless_exists`` is missing, when given).

Model keys (``model_configs={"spectral_stats": {"faults": {...}}}``, read by the inference
actor and not passed to the model): ``exit_on_call`` + ``exit_marker``, counted in batches.

Both: ``exit_in_init`` + ``exit_marker``: the actor dies while it starts (loading weights,
opening the provider), once.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path
from typing import Any

from rs_embed_ray.errors import ProviderError
from rs_embed_ray.providers.base import Patch, Provider
from rs_embed_ray.specs import SensorSpec, SpatialSpec, TemporalSpec

EXIT_CODE = 17


def _claim(marker: str | os.PathLike[str]) -> bool:
    """Create ``marker`` exclusively; True for exactly one caller across processes."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


class CrashOnce:
    """Kill this process (``os._exit``) on the k-th ``tick``, once across all processes."""

    def __init__(self, spec: dict[str, Any] | None) -> None:
        spec = spec or {}
        self.at = int(spec.get("exit_on_call", 0) or 0)
        self.marker = spec.get("exit_marker")
        if self.at and not self.marker:
            raise ValueError("faults: exit_on_call needs exit_marker (the crash happens once)")
        self.in_init = bool(spec.get("exit_in_init", False))
        if self.in_init and not self.marker:
            raise ValueError("faults: exit_in_init needs exit_marker (the crash happens once)")
        self.calls = 0
        self._lock = threading.Lock()

    def starting(self) -> None:
        """Call from an actor's constructor: dies here once if ``exit_in_init``."""
        if self.in_init and _claim(self.marker):  # type: ignore[arg-type]
            os._exit(EXIT_CODE)

    def tick(self) -> None:
        if not self.at:
            return
        with self._lock:
            self.calls += 1
            hit = self.calls >= self.at
        if hit and _claim(self.marker):  # type: ignore[arg-type]
            os._exit(EXIT_CODE)


def check_disk_full(spec: dict[str, Any] | None, shard_dir: str | os.PathLike[str]) -> None:
    """Raise ENOSPC before a shard write once ``disk_full_after_shards`` shards exist."""
    if not spec or spec.get("disk_full_after_shards") is None:
        return
    gate = spec.get("unless_exists")
    if gate is not None and os.path.exists(gate):
        return
    folder = Path(shard_dir)
    n = sum(1 for p in folder.glob("*.npz")) if folder.is_dir() else 0
    if n >= int(spec["disk_full_after_shards"]):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC) + " (injected)", str(folder))


class FaultInjectingProvider:
    def __init__(self, inner: Provider, spec: dict[str, Any]) -> None:
        self.inner = inner
        self.name = getattr(inner, "name", "faulty")
        self.latency_s = float(spec.get("latency_s", 0.0))
        self.fail_items = {
            (round(float(a), 9), round(float(b), 9)) for a, b in spec.get("fail_items", [])
        }
        self.unless_exists = spec.get("unless_exists")
        self.transient = bool(spec.get("transient_every", False))
        self.crash = CrashOnce(spec)
        self.crash.starting()
        self._seen: set[tuple[float, float]] = set()
        self._lock = threading.Lock()

    def fetch(
        self,
        spatial: SpatialSpec,
        temporal: TemporalSpec | None,
        sensor: SensorSpec,
        *,
        n_frames: int | None = None,
    ) -> Patch:
        self.crash.tick()
        if self.latency_s:
            time.sleep(self.latency_s)
        c = spatial.center()
        key = (round(c[0], 9), round(c[1], 9))
        active = self.unless_exists is None or not os.path.exists(self.unless_exists)
        if key in self.fail_items and active:
            raise ProviderError(f"injected fault for place {key}")
        if self.transient:
            with self._lock:
                first = key not in self._seen
                self._seen.add(key)
            if first:
                raise ProviderError(f"injected transient fault for place {key} (first attempt)")
        return self.inner.fetch(spatial, temporal, sensor, n_frames=n_frames)

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close:
            close()
