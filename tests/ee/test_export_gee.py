"""End-to-end exports through the real earthengine-api client against the local emulator,
on a real local Ray cluster: both layouts, fetch-once across models, 429/5xx resilience,
and clear errors before any item runs."""

from __future__ import annotations

import numpy as np
import pytest

from rs_embed_ray import PointBuffer, ProviderError, TemporalSpec, export_batch, geo
from rs_embed_ray.testing.ee_emulator import EEEmulator, expected_pixels

pytestmark = pytest.mark.usefixtures("ray_cluster")

T = TemporalSpec.range("2022-06-01", "2022-09-01")
PLACES = [PointBuffer(15.0 + 0.01 * i, 45.0 - 0.01 * i, 160.0) for i in range(5)]


def run(emu, tmp_path, layout, **kw):
    args = dict(
        spatials=PLACES,
        temporal=T,
        models=["remoteclip", "spectral_stats"],
        backend="gee",
        provider_options={"url": emu.url},
        weights={"remoteclip": "random"},
        out=str(tmp_path / ("pi" if layout == "per_item" else "c.npz")),
        layout=layout,
        show_progress=False,
        num_workers=4,
        chunk_size=4,
    )
    args.update(kw)
    return export_batch(**args)


@pytest.mark.parametrize("layout", ["per_item", "combined"])
def test_gee_export_fetches_each_place_once(tmp_path, layout):
    with EEEmulator(retry_after_s=0) as emu:
        res = run(emu, tmp_path, layout)
        pixel_requests = emu.requests_of("computePixels")
    items = [res] if isinstance(res, dict) else list(res)
    assert all(r["status"] == "ok" for r in items)
    # two models, one band-union fetch per place
    assert len(pixel_requests) == len(PLACES)
    assert all(sorted(r["bands"]) == ["B2", "B3", "B4", "B8"] for r in pixel_requests)
    if layout == "per_item":
        with np.load(tmp_path / "pi" / "p00000.npz") as z:
            x = z["input_chw__spectral_stats"]
        grid = geo.grid_for(PLACES[0], 10)
        want = expected_pixels(grid.affine, grid.width, grid.height, ["B2", "B3", "B4", "B8"])
        np.testing.assert_array_equal(x, np.asarray(want, dtype=np.float32))
        assert res[0]["models"][0]["weights"]["weights"] == "random-init"
    else:
        with np.load(tmp_path / "c.npz") as z:
            assert z["embeddings__remoteclip"].shape == (5, 512)


def test_gee_export_survives_injected_errors(tmp_path):
    with EEEmulator(retry_after_s=0, error_rate=0.1, seed=3) as emu:
        res = run(emu, tmp_path, "per_item", provider_options={"url": emu.url, "backoff_s": 0.01})
        codes = [r["status"] for r in emu.request_log]
    assert all(r["status"] == "ok" for r in res)
    assert any(c in (429, 500) for c in codes)  # errors were injected and retried


def test_gee_bad_project_fails_before_any_item(tmp_path):
    with EEEmulator(retry_after_s=0, projects=["good-project"]) as emu:
        with pytest.raises(ProviderError, match="project"):
            run(
                emu,
                tmp_path,
                "per_item",
                provider_options={"url": emu.url, "project": "other-project"},
            )
        assert emu.requests_of("computePixels") == []
    assert not (tmp_path / "pi").exists()


def test_gee_spatial_batching_fewer_requests(tmp_path):
    """Opt-in batching: clustered places share requests; arrays equal an unbatched run."""
    places = [
        PointBuffer(15.0 + 0.002 * (i % 8), 45.0 + 0.002 * (i // 8), 160.0) for i in range(32)
    ]
    with EEEmulator(retry_after_s=0) as emu:
        run(
            emu,
            tmp_path / "a",
            "per_item",
            spatials=places,
            spatial_batching=True,
            chunk_size=16,
            models=["spectral_stats"],
            weights=None,
        )
        batched = len(emu.requests_of("computePixels")) + len(emu.requests_of("value"))
    with EEEmulator(retry_after_s=0) as emu:
        run(
            emu,
            tmp_path / "b",
            "per_item",
            spatials=places,
            models=["spectral_stats"],
            weights=None,
        )
        single = len(emu.requests_of("computePixels")) + len(emu.requests_of("value"))
    assert batched / len(places) <= 0.25 and single == len(places)
    for i in range(len(places)):
        with (
            np.load(tmp_path / "a" / "pi" / f"p{i:05d}.npz") as za,
            np.load(tmp_path / "b" / "pi" / f"p{i:05d}.npz") as zb,
        ):
            np.testing.assert_array_equal(
                za["input_chw__spectral_stats"], zb["input_chw__spectral_stats"]
            )


MANY = [PointBuffer(15.0 + 0.002 * i, 45.0, 100.0) for i in range(24)]


def test_gee_export_stays_under_the_quota_split_among_fetch_actors(tmp_path):
    """8 workers over 4 fetch actors against a project allowing 3 requests in flight and 15/s:
    the run caps itself (3 in flight, 15/s split among the actors), so the emulator, which
    answers 429 past either limit, never has to refuse a request."""
    with EEEmulator(latency_ms=40, max_concurrent=3, qps=15, retry_after_s=0) as emu:
        res = run(
            emu,
            tmp_path,
            "combined",
            spatials=MANY,
            models=["spectral_stats"],
            weights=None,
            num_workers=8,
            fetch_threads=2,
            ee_max_concurrent=3,
            ee_max_qps=15,
            max_retries=0,
        )
        log = [r for r in emu.request_log if r["kind"] == "computePixels"]
    assert res["status"] == "ok" and res["n_items"] == len(MANY)
    assert emu.peak_in_flight <= 3 and len(log) == len(MANY)
    assert all(r["status"] == 200 for r in log)  # no 429: the limits held on the client side
    starts = sorted(r["time"] for r in log)
    # token buckets of 15/s in all (burst 15): any 2 s window holds at most 15 + 2 * 15
    assert max(sum(1 for t in starts if s <= t < s + 2.0) for s in starts) <= 45


def test_gee_export_shared_quota_actor(tmp_path):
    """With ee_quota_actor every request takes a lease from one named, detached actor, which
    outlives the run so the next job of the same project shares it."""
    import ray

    from rs_embed_ray.pipeline.ee_quota import SHARED_NAMESPACE, RayLimiter

    name = f"rs_embed_ray_test_quota_{tmp_path.name}"
    with EEEmulator(latency_ms=20, max_concurrent=2, retry_after_s=0) as emu:
        res = run(
            emu,
            tmp_path,
            "combined",
            spatials=MANY[:8],
            models=["spectral_stats"],
            weights=None,
            num_workers=6,
            fetch_threads=2,
            ee_max_concurrent=2,
            ee_quota_actor=name,
            max_retries=0,
        )
        n_requests = len(emu.request_log)  # every HTTP call of the client takes a lease
    assert res["status"] == "ok"
    assert emu.peak_in_flight <= 2
    actor = ray.get_actor(name, namespace=SHARED_NAMESPACE)  # still there after the run
    try:
        stats = RayLimiter(actor).stats()
        assert stats["granted"] >= 8 and stats["granted"] <= n_requests
        assert stats["peak_in_use"] <= 2
    finally:
        ray.kill(actor)


def test_bad_quota_settings_fail_before_ray(tmp_path):
    from rs_embed_ray import plan_export
    from rs_embed_ray.errors import ModelError

    base = dict(
        spatials=PLACES, temporal=T, models=["spectral_stats"], backend="gee", layout="per_item"
    )
    with pytest.raises(ModelError, match="ee_max_concurrent"):
        plan_export(**base, out=str(tmp_path / "a"), ee_max_concurrent=0)
    with pytest.raises(ModelError, match="ee_quota_actor"):
        plan_export(**base, out=str(tmp_path / "b"), ee_quota_actor="bad name!")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
