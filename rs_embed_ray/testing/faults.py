"""Fault injection around a real provider, for tests, benchmarks and fire drills.

Enabled only through ``provider_options={"faults": {...}}``; the wrapped provider still does
the real work. Keys:
- ``latency_s``: sleep before every fetch (to make runs slow enough to interrupt);
- ``fail_items``: list of places (lon, lat) whose fetch raises ``ProviderError``;
- ``unless_exists``: a path; while it is missing, ``fail_items`` fail (a "fixed later" fault);
- ``transient_every``: the first attempt of every place fails once per actor (exercises retries).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from rs_embed_ray.errors import ProviderError
from rs_embed_ray.providers.base import Patch, Provider
from rs_embed_ray.specs import SensorSpec, SpatialSpec, TemporalSpec


class FaultInjectingProvider:
    def __init__(self, inner: Provider, spec: dict[str, Any]) -> None:
        self.inner = inner
        self.name = getattr(inner, "name", "faulty")
        self.latency_s = float(spec.get("latency_s", 0.0))
        self.fail_items = {(round(float(a), 9), round(float(b), 9)) for a, b in spec.get("fail_items", [])}
        self.unless_exists = spec.get("unless_exists")
        self.transient = bool(spec.get("transient_every", False))
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
