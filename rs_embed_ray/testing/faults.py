"""Fault injection around a real provider and a real model, for tests, benchmarks and drills.

Faults are attached by wrapping, never through the options of a real provider or model:
``register()`` (in the driver) adds

- backend ``"faulty"`` (``FaultInjectingProvider``): ``provider_options`` name the wrapped
  backend (``wraps="local"``) and its own options (``source=...``), plus the fault settings
  below; ``faulty_local(source, **faults)`` spells the keywords for ``export_batch``;
- model ``"faulty_spectral_stats"`` (``CrashingSpectralStats``): ``spectral_stats`` with the
  same catalog facts, whose ``model_config`` holds only crash settings.

The plan carries each resolved "module:attr" target to Ray's workers, which import it, so the
registration needs no copy in the workers. The wrapped provider and model do the real work.

Provider settings:

- ``latency_s``: sleep before every fetch (to make runs slow enough to interrupt);
- ``hold_after`` + ``hold_while``: a count and a path; the process's fetches after its first
  ``hold_after`` wait while ``hold_while`` exists (``hold_from``; at most ``hold_timeout_s``,
  300): a test interrupts the run with some places done and the rest not fetched yet, however
  slowly the machine starts the other actors, then removes the file;
- ``fail_items``: list of places (lon, lat) whose fetch raises ``ProviderError``;
- ``unless_exists``: a path; while it is missing, ``fail_items`` fail (a "fixed later" fault)
  and ``disk_full_after_shards`` applies;
- ``transient_every``: the first attempt of every place fails once per actor (exercises retries);
- ``exit_on_call`` + ``exit_marker``: the process running the fetch dies (``os._exit``, no
  cleanup, like an OOM kill) on its k-th fetch call, once: the first process to create
  ``exit_marker`` dies, later calls and restarted actors see the marker and carry on;
- ``disk_full_after_shards``: once a folder holds that many patch shards, writing the next one
  raises ``OSError(ENOSPC)`` (while ``unless_exists`` is missing, when given). The provider
  wraps ``rs_embed_ray.io.shards.write_shard`` in its own process (the fetch actor's), which
  the fetch stage looks up at call time: the write fails where a full disk would fail it.

Model settings (``model_configs={"faulty_spectral_stats": {...}}``): ``exit_on_call`` +
``exit_marker``, counted in ``embed_batch`` calls (one per inference batch).

Both: ``exit_in_init`` + ``exit_marker``: the actor dies while it starts (loading weights,
opening the provider), once.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rs_embed_ray.errors import ProviderError
from rs_embed_ray.io import shards
from rs_embed_ray.models.registry import register_model
from rs_embed_ray.models.spectral_stats import SpectralStats
from rs_embed_ray.providers import create_provider, register_provider
from rs_embed_ray.providers.base import BaseProvider, Patch
from rs_embed_ray.specs import SensorSpec, SpatialSpec, TemporalSpec

log = logging.getLogger(__name__)
EXIT_CODE = 17
PROVIDER = "faulty"
MODEL = "faulty_spectral_stats"
CRASH_KEYS = frozenset({"exit_on_call", "exit_marker", "exit_in_init"})


def register() -> None:
    """Add backend ``PROVIDER`` and model ``MODEL`` in this process (the driver); idempotent."""
    register_provider(PROVIDER, f"{__name__}:FaultInjectingProvider")
    register_model(MODEL, f"{__name__}:CrashingSpectralStats", like="spectral_stats")


def faulty_local(source: str | os.PathLike[str], **faults: Any) -> dict[str, Any]:
    """``export_batch`` keywords that fetch from the local ``source`` through the fault
    injecting provider (``faults``: the provider settings above); registers it first."""
    register()
    options = {"wraps": "local", "source": str(Path(source).expanduser().resolve()), **faults}
    return {"backend": PROVIDER, "source": None, "provider_options": options}


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

    def __init__(self, spec: Mapping[str, Any] | None) -> None:
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


def check_disk_full(after: int, unless_exists: str | None, folder: str | os.PathLike[str]) -> None:
    """Raise ENOSPC once ``folder`` holds ``after`` shards (unless ``unless_exists`` exists)."""
    if unless_exists is not None and os.path.exists(unless_exists):
        return
    folder = Path(folder)
    n = sum(1 for p in folder.glob("*.npz")) if folder.is_dir() else 0
    if n >= int(after):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC) + " (injected)", str(folder))


def fill_disk_after(after: int, unless_exists: str | None) -> None:
    """From now on, in this process, a shard written into a folder that already holds
    ``after`` shards fails with ENOSPC (wraps ``shards.write_shard``; idempotent)."""
    real = getattr(shards.write_shard, "__wrapped__", shards.write_shard)

    @functools.wraps(real)
    def write_shard(path: str | Path, items: Mapping[int, tuple[np.ndarray, dict]]) -> None:
        check_disk_full(after, unless_exists, Path(path).parent)
        real(path, items)

    shards.write_shard = write_shard


def hold_from(
    first_held: int, released: Callable[[], bool], timeout_s: float = 120.0
) -> Callable[[int], None]:
    """A hold for the ``k``-th fetch (0-based): from ``first_held`` on, wait until
    ``released()`` (polled), all holds together at most ``timeout_s`` from the first.

    Tests whose outcome depends on timing (a file written while later places are still being
    fetched, a driver killed mid-run) hold the later places on a condition with it instead of
    racing the machine's load; the emulator's ``pixels_gate`` takes it as it is. When the
    condition never comes (a run that writes everything at the end), the fetches go on after
    ``timeout_s`` and the test's own assertion fails."""
    deadline: list[float] = []

    def hold(k: int) -> None:
        if k < first_held:
            return
        if not deadline:
            deadline.append(time.monotonic() + timeout_s)
        while not released():
            if time.monotonic() > deadline[0]:
                log.warning("hold: not released after %.0f s; going on", timeout_s)
                return
            time.sleep(0.05)

    return hold


class FaultInjectingProvider(BaseProvider):
    """Backend ``PROVIDER``: the provider ``wraps`` (built with ``inner_options``), with faults.

    Its capabilities are the defaults (no request quota, no batching, no pre-run check),
    whatever it wraps, so a run through it fetches place by place."""

    def __init__(
        self,
        *,
        wraps: str,
        latency_s: float = 0.0,
        fail_items: Sequence[Sequence[float]] = (),
        unless_exists: str | None = None,
        transient_every: bool = False,
        exit_on_call: int = 0,
        exit_in_init: bool = False,
        exit_marker: str | None = None,
        disk_full_after_shards: int | None = None,
        hold_after: int | None = None,
        hold_while: str | None = None,
        hold_timeout_s: float = 300.0,
        **inner_options: Any,
    ) -> None:
        self.inner = create_provider(wraps, **inner_options)
        self.name = getattr(self.inner, "name", PROVIDER)
        self.latency_s = float(latency_s)
        self.fail_items = {(round(float(a), 9), round(float(b), 9)) for a, b in fail_items}
        self.unless_exists = unless_exists
        self.transient = bool(transient_every)
        self.crash = CrashOnce(
            {"exit_on_call": exit_on_call, "exit_in_init": exit_in_init, "exit_marker": exit_marker}
        )
        self.crash.starting()
        if disk_full_after_shards is not None:
            fill_disk_after(int(disk_full_after_shards), unless_exists)
        self._seen: set[tuple[float, float]] = set()
        self._lock = threading.Lock()
        self._hold: Callable[[int], None] | None = None
        if hold_after is not None and hold_while is not None:
            path = hold_while
            self._hold = hold_from(hold_after, lambda: not os.path.exists(path), hold_timeout_s)
        self._calls = 0

    def _next_call(self) -> int:
        with self._lock:
            self._calls += 1
            return self._calls - 1

    def fetch(
        self,
        spatial: SpatialSpec,
        temporal: TemporalSpec | None,
        sensor: SensorSpec,
        *,
        n_frames: int | None = None,
        **kwargs: Any,
    ) -> Patch:
        self.crash.tick()
        if self._hold is not None:
            self._hold(self._next_call())
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
        return self.inner.fetch(spatial, temporal, sensor, n_frames=n_frames, **kwargs)

    def ensure_ready(self) -> None:
        self.inner.ensure_ready()

    def close(self) -> None:
        self.inner.close()


class CrashingSpectralStats(SpectralStats):
    """Model ``MODEL``: ``spectral_stats`` whose process dies once (``CRASH_KEYS``)."""

    info = dataclasses.replace(SpectralStats.info, model_id=MODEL)
    CONFIG_KEYS = CRASH_KEYS

    def __init__(self, *, model_config: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.crash = CrashOnce(model_config)
        self.crash.starting()
        super().__init__(model_config=None, **kwargs)

    def embed_batch(self, inputs: list[np.ndarray], **kwargs: Any) -> list:
        self.crash.tick()
        return super().embed_batch(inputs, **kwargs)
