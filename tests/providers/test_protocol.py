"""The provider protocol as the pipeline uses it: the registry, the defaults every provider
gets, capabilities instead of backend names, and the typed "no imagery" error deciding what the
fetch actor retries (not the text of a message).

The providers here are small in-process classes (the real ones are tested in
tests/providers/test_local.py and tests/ee/): they count calls, which a real backend cannot.
The FetchWorker is the real one, run in-process on a real shard directory.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rs_embed_ray.errors import NoImageryError, ProviderError
from rs_embed_ray.options import FetchOptions, RetryOptions
from rs_embed_ray.pipeline.fetch import FetchWorker
from rs_embed_ray.providers import (
    PROVIDERS,
    BaseProvider,
    Patch,
    Provider,
    create_provider,
    provider_class,
)
from rs_embed_ray.providers.base import ProviderAdapter, complete
from rs_embed_ray.specs import PointBuffer, SensorSpec, spatial_to_dict

SENSOR = SensorSpec(collection="COPERNICUS/S2_SR_HARMONIZED", bands=("B4",), scale_m=10)
PLACES = [PointBuffer(lon=float(i), lat=0.0, buffer_m=20) for i in range(3)]


class Counting(BaseProvider):
    """Place i gives a 1x2x2 patch of value i; lon 0 has no imagery."""

    name = "counting"

    def __init__(self, **_: Any) -> None:
        self.calls: list[float] = []

    def fetch(self, spatial, temporal, sensor, *, n_frames=None, frame_bins=None) -> Patch:
        self.calls.append(spatial.lon)
        if spatial.lon == 0.0:
            raise NoImageryError("nothing here")
        return Patch(np.full((1, 2, 2), spatial.lon, dtype=np.float32), {"lon": spatial.lon})


class Batchy(Counting):
    """Claims spatial batching; its fetch_many says "no imagery" for lon 0 (typed) and fails
    lon 1 with a plain error whose TEXT says "No images found" (a transient failure)."""

    name = "batchy"
    batches_places = True

    def fetch_many(self, spatials, temporal, sensor, **kw: Any) -> list[Patch | Exception]:
        out: list[Patch | Exception] = []
        for sp in spatials:
            if sp.lon == 0.0:
                out.append(NoImageryError("nothing here"))
            elif sp.lon == 1.0:
                out.append(ProviderError("No images found (the server hiccuped)"))
            else:
                out.append(Patch(np.full((1, 2, 2), 2.0, dtype=np.float32), {}))
        return out


class FetchOnly:
    """A provider-like object with only ``name`` and ``fetch`` (e.g. a third-party wrapper)."""

    name = "fetch-only"

    def fetch(self, spatial, temporal, sensor, *, n_frames=None) -> Patch:
        return Patch(np.zeros((1, 1, 1), dtype=np.float32))


def test_fetch_many_default_loops_over_fetch_in_order() -> None:
    p = Counting()
    got = p.fetch_many(PLACES, None, SENSOR)
    assert p.calls == [0.0, 1.0, 2.0]
    assert isinstance(got[0], NoImageryError) and isinstance(got[0], ProviderError)
    assert [float(g.data[0, 0, 0]) for g in got[1:]] == [1.0, 2.0]
    assert p.ensure_ready() is None and p.close() is None
    assert not (p.uses_request_quota or p.batches_places or p.checks_before_run)


def test_adapter_completes_a_partial_provider() -> None:
    inner = FetchOnly()
    assert not isinstance(inner, Provider)  # lacks fetch_many, ensure_ready, capabilities
    p = complete(inner)
    assert isinstance(p, ProviderAdapter) and isinstance(p, Provider)
    assert p.name == "fetch-only" and p.batches_places is False
    p.ensure_ready()
    assert [g.data.shape for g in p.fetch_many(PLACES[:2], None, SENSOR)] == [(1, 1, 1)] * 2
    p.close()
    full = Counting()
    assert complete(full) is full


def test_registry_names_capabilities_and_unknown_backend() -> None:
    gee = provider_class("gee")
    assert (gee.uses_request_quota, gee.batches_places, gee.checks_before_run) == (True,) * 3
    pytest.importorskip("rasterio")
    local = provider_class("local")
    assert (local.uses_request_quota, local.batches_places, local.checks_before_run) == (
        (False,) * 3
    )
    # the list may also hold test backends that other tests registered in this process
    with pytest.raises(ProviderError, match=r"Unknown backend 'nope'. Known: \[.*'gee', 'local'"):
        provider_class("nope")
    with pytest.raises(ProviderError, match="Unknown backend 'nope'"):
        create_provider("nope")
    p = create_provider("gee", url="http://127.0.0.1:9")  # builds, contacts nothing
    assert isinstance(p, BaseProvider) and isinstance(p, Provider)
    p.close()


def _worker(tmp_path: Path, backend: str, batching: bool) -> FetchWorker:
    return FetchWorker(
        backend=backend,
        provider_options={},
        sensor=dataclasses.asdict(SENSOR),
        n_frames=None,
        temporal=None,
        shard_dir=str(tmp_path),
        options=FetchOptions(
            in_flight=1,
            threads_per_actor=1,
            max_batch=len(PLACES),
            spatial_batching=batching,
            fail_on_bad_input=False,
        ),
        retry=RetryOptions(max_retries=0, backoff_s=0.0),
    )


def _batch() -> dict[str, np.ndarray]:
    return {
        "index": np.arange(len(PLACES)),
        "spatial": np.asarray([json.dumps(spatial_to_dict(p)) for p in PLACES], dtype=object),
    }


@pytest.mark.parametrize("batching", [False, True])
def test_fetch_worker_uses_capabilities_and_the_error_type(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batching: bool
) -> None:
    monkeypatch.setitem(PROVIDERS, "batchy", f"{__name__}:Batchy")
    worker = _worker(tmp_path, "batchy", batching)
    assert worker.batched is batching
    out = worker(_batch())
    assert list(out["status"]) == ["failed", "ok", "ok"]
    assert "nothing here" in out["error"][0]
    if batching:
        # lon 0 is typed "no imagery": not fetched again; lon 1 only SAYS "No images found":
        # it is retried alone, and succeeds
        assert worker.provider.calls == [1.0]
    else:
        assert worker.provider.calls == [0.0, 1.0, 2.0]


def test_fetch_worker_never_batches_a_provider_that_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(PROVIDERS, "counting", f"{__name__}:Counting")
    worker = _worker(tmp_path, "counting", batching=True)
    assert worker.batched is False
    assert list(worker(_batch())["status"]) == ["failed", "ok", "ok"]


def test_local_no_scene_in_window_is_no_imagery(tmp_path: Path) -> None:
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    from rs_embed_ray.specs import TemporalSpec

    with rasterio.open(
        tmp_path / "2022-06-01_B4.tif", "w", driver="GTiff", width=8, height=8, count=1,
        dtype="float32", crs="EPSG:4326", transform=from_origin(0.0, 0.001, 0.0001, 0.0001),
    ) as ds:  # fmt: skip
        ds.write(np.ones((1, 8, 8), dtype=np.float32))
    p = create_provider("local", source=str(tmp_path))
    place = PointBuffer(lon=0.0004, lat=0.0004, buffer_m=10)
    assert p.fetch(place, TemporalSpec.range("2022-01-01", "2023-01-01"), SENSOR).data.shape[0] == 1
    with pytest.raises(NoImageryError, match=r"no scene of local source .* in the time window"):
        p.fetch(place, TemporalSpec.range("2023-01-01", "2024-01-01"), SENSOR)
    p.close()


class _Bare:
    """A registered factory that states no capability (a third-party class)."""

    def __init__(self, **_: object) -> None: ...


def test_capabilities_default_for_a_factory_that_states_none() -> None:
    from rs_embed_ray.providers import provider_capability

    target = f"{__name__}:_Bare"
    for cap in ("uses_request_quota", "batches_places", "checks_before_run"):
        assert provider_capability("bare", cap, target=target) is False
    assert provider_capability("gee", "uses_request_quota") is True
