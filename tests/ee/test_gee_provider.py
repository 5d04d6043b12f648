"""GEEProvider with the real earthengine-api client against the local emulator."""

from __future__ import annotations

import json
import pickle
import threading
import time
from typing import Any

import numpy as np
import pytest
from google.oauth2.credentials import Credentials

from rs_embed_ray import geo
from rs_embed_ray.errors import ProviderError
from rs_embed_ray.providers import create_provider
from rs_embed_ray.providers.gee import (
    HIGH_VOLUME_URL,
    GEEProvider,
    classify_error,
    redact,
    split_date_range,
)
from rs_embed_ray.providers.ratelimit import LocalLimiter
from rs_embed_ray.specs import BBox, PointBuffer, SensorSpec, TemporalSpec
from rs_embed_ray.testing.ee_emulator import (
    EEEmulator,
    date_range_starts,
    decode_position,
    expected_pixels,
)

S2 = SensorSpec(collection="COPERNICUS/S2_SR_HARMONIZED", bands=("B4", "B3", "B2"), scale_m=10)
SUMMER = TemporalSpec.range("2022-06-01", "2022-09-01")


def provider(emu: EEEmulator, **kw: Any) -> GEEProvider:
    kw.setdefault("project", "test-project")
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("max_backoff_s", 0.05)
    return GEEProvider(url=emu.url, **kw)


def expected(grid: geo.Grid, bands) -> np.ndarray:
    return expected_pixels(grid.affine, grid.width, grid.height, bands).astype(np.float32)


# ---------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("lon,lat", [(8.54, 47.37), (-58.38, -34.6)])
def test_point_buffer_geometry_and_orientation(emulator: EEEmulator, lon, lat) -> None:
    spatial = PointBuffer(lon=lon, lat=lat, buffer_m=320)
    patch = provider(emulator).fetch(spatial, SUMMER, S2)
    grid = geo.grid_for(spatial, 10)
    assert patch.data.shape == (3, 64, 64) and patch.data.dtype == np.float32
    assert np.array_equal(patch.data, expected(grid, ["B4", "B3", "B2"]))
    # decode: row 0 is the northern edge, column 0 the western edge
    xs, ys = grid.pixel_centers()
    rows, cols = decode_position(patch.data[0], "B4")
    assert np.array_equal(rows[:, 0], np.floor(-np.asarray(ys) / 10).astype(int) % 4096)
    assert np.array_equal(cols[0], np.floor(np.asarray(xs) / 10).astype(int) % 4096)
    assert rows[0, 0] == (rows[1, 0] - 1) % 4096  # rows grow southwards (north-up)
    # the request carried exactly the grid from geo.grid_for
    (req,) = emulator.requests_of("computePixels")
    assert req["grid"] == {
        "width": 64,
        "height": 64,
        "affine": list(grid.affine),
        "crs": "EPSG:3857",
    }
    assert patch.meta["provider"] == "gee" and patch.meta["grid"] == grid.to_meta()
    assert patch.meta["collection"] == S2.collection
    assert patch.meta["requests"] == 1 and patch.meta["pixel_requests"] == 1
    assert "roi_window_geo" not in patch.meta


def test_bbox_is_fetched_as_square_with_roi_window(emulator: EEEmulator) -> None:
    spatial = BBox(minlon=12.40, minlat=41.88, maxlon=12.43, maxlat=41.89)
    patch = provider(emulator).fetch(spatial, SUMMER, S2)
    square, win = geo.fetch_square(spatial)
    grid = geo.grid_for(square, 10)
    assert grid.width == grid.height
    assert np.array_equal(patch.data, expected(grid, ["B4", "B3", "B2"]))
    assert patch.meta["roi_window_geo"] == list(win)
    assert patch.meta["grid"]["transform"] == list(grid.affine)


def test_band_aliases_order_and_duplicates(emulator: EEEmulator) -> None:
    sensor = SensorSpec(collection=S2.collection, bands=("NIR", "RED", "B2", "B4"), scale_m=20)
    spatial = PointBuffer(lon=2.35, lat=48.85, buffer_m=400)
    patch = provider(emulator).fetch(spatial, SUMMER, sensor)
    grid = geo.grid_for(spatial, 20)
    assert np.array_equal(patch.data, expected(grid, ["B8", "B4", "B2", "B4"]))
    assert emulator.requests_of("computePixels")[0]["bands"] == ["B8", "B4", "B2"]


# ---------------------------------------------------------------------------- splitting


def test_over_48mb_is_split_and_stitched_exactly(emulator: EEEmulator) -> None:
    spatial = PointBuffer(lon=10.0, lat=45.0, buffer_m=10_500)  # 2100 x 2100 x 3 x 4 B = 53 MB
    patch = provider(emulator).fetch(spatial, SUMMER, S2)
    grid = geo.grid_for(spatial, 10)
    assert patch.data.shape == (3, 2100, 2100)
    reqs = emulator.requests_of("computePixels")
    assert len(reqs) == patch.meta["pixel_requests"] >= 2
    assert all(r["status"] == 200 for r in reqs)
    assert np.array_equal(patch.data, expected(grid, ["B4", "B3", "B2"]))


def test_many_tiles_cover_the_grid_once(emulator: EEEmulator) -> None:
    spatial = PointBuffer(lon=-3.7, lat=40.4, buffer_m=505)  # 101 x 101 px
    patch = provider(emulator, max_request_bytes=101 * 30 * 16).fetch(spatial, SUMMER, S2)
    grid = geo.grid_for(spatial, 10)
    reqs = emulator.requests_of("computePixels")
    assert len(reqs) == 4  # 30 + 30 + 30 + 11 rows
    assert sum(r["grid"]["width"] * r["grid"]["height"] for r in reqs) == 101 * 101
    assert np.array_equal(patch.data, expected(grid, ["B4", "B3", "B2"]))


def test_side_limit_is_respected(emulator: EEEmulator) -> None:
    # the emulator enforces the real 32768 px limit (see test_ee_emulator); a 32k-px square
    # is too big for a unit test, so the same code path runs with a 50 px side limit
    spatial = PointBuffer(lon=8.0, lat=47.0, buffer_m=600)  # 120 x 120 px
    patch = provider(emulator, max_side=50).fetch(spatial, SUMMER, S2)
    reqs = emulator.requests_of("computePixels")
    assert len(reqs) == 9
    assert all(r["grid"]["width"] <= 50 and r["grid"]["height"] <= 50 for r in reqs)
    assert np.array_equal(patch.data, expected(geo.grid_for(spatial, 10), ["B4", "B3", "B2"]))


def test_reactive_split_when_the_server_says_too_large(emulator: EEEmulator) -> None:
    spatial = PointBuffer(lon=10.0, lat=45.0, buffer_m=10_500)
    prov = provider(emulator, max_request_bytes=10**10)  # believes the limit is far higher
    patch = prov.fetch(spatial, SUMMER, S2)
    codes = [r["status"] for r in emulator.requests_of("computePixels")]
    assert codes[0] == 400 and codes.count(200) >= 2
    assert np.array_equal(patch.data, expected(geo.grid_for(spatial, 10), ["B4", "B3", "B2"]))


# ---------------------------------------------------------------------------- retries


def test_injected_errors_are_retried_until_every_fetch_succeeds(emulator: EEEmulator) -> None:
    emulator.error_rate = 0.15
    prov = provider(emulator, max_retries=10)
    spatial = PointBuffer(lon=8.0, lat=47.0, buffer_m=160)
    grid = geo.grid_for(spatial, 10)
    retries = 0
    for i in range(50):
        sp = PointBuffer(lon=8.0 + i * 0.01, lat=47.0, buffer_m=160)
        patch = prov.fetch(sp, SUMMER, S2)
        assert np.array_equal(patch.data, expected(geo.grid_for(sp, 10), ["B4", "B3", "B2"]))
        retries += patch.meta["retries"]
    codes = [r["status"] for r in emulator.request_log]
    assert 429 in codes and 500 in codes
    assert retries >= 1 and grid.width == 32


@pytest.mark.parametrize("code,words", [(429, "quota exceeded"), (500, "failed")])
def test_without_retries_errors_are_clear(emulator: EEEmulator, code, words) -> None:
    prov = provider(emulator, max_retries=0)
    prov.ensure_ready()
    emulator.error_rate, emulator.error_codes = 1.0, (code,)
    with pytest.raises(ProviderError) as info:
        prov.fetch(PointBuffer(lon=8.0, lat=47.0, buffer_m=100), SUMMER, S2)
    msg = str(info.value)
    assert words in msg and f"HTTP {code}" in msg and "Earth Engine" in msg
    assert "retries" not in msg
    assert len(emulator.requests_of("computePixels")) == 1


def test_quota_exceeded_after_retries_and_retry_after_honoured() -> None:
    with EEEmulator(error_codes=(429,), retry_after_s=1) as emu:
        prov = provider(emu, max_retries=1, backoff_s=0.001)
        prov.ensure_ready()
        emu.error_rate = 1.0
        t0 = time.monotonic()
        with pytest.raises(ProviderError, match=r"quota exceeded .*after 1 retries"):
            prov.fetch(PointBuffer(lon=8.0, lat=47.0, buffer_m=100), SUMMER, S2)
        assert time.monotonic() - t0 >= 0.95  # waited for Retry-After, not 1 ms
        assert len(emu.requests_of("computePixels")) == 2


def test_classify_error_reads_status_and_retry_after() -> None:
    import httplib2
    from googleapiclient.errors import HttpError

    def ee_error(status: int, headers: dict) -> Exception:
        resp = httplib2.Response({"status": status, **headers})
        try:
            try:
                raise HttpError(resp, b'{"error": {"message": "x"}}', uri="http://h/p?key=SECRET")
            except HttpError:
                raise RuntimeError("x") from None
        except RuntimeError as exc:
            exc.__context__ = HttpError(resp, b"{}")
            return exc

    f = classify_error(ee_error(429, {"retry-after": "7"}))
    assert (f.kind, f.status, f.retry_after, f.retryable) == ("quota", 429, 7.0, True)
    assert classify_error(ee_error(503, {})).kind == "server"
    assert classify_error(ee_error(401, {})).kind == "auth"
    assert classify_error(ee_error(400, {})).retryable is False
    assert classify_error(ConnectionError("boom")).kind == "transient"


def test_redact_removes_secrets() -> None:
    text = (
        "Authorization: Bearer abc.def token ya29.a0AfH6 url https://x.googleapis.com/v1?key=K1 "
        "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY----- mysecret"
    )
    out = redact(text, ("mysecret",))
    for s in ("abc.def", "ya29.a0AfH6", "key=K1", "MIIE", "mysecret"):
        assert s not in out


# ---------------------------------------------------------------------------- quota


def _fetch_in_threads(prov: GEEProvider, n_threads: int, per_thread: int) -> list[BaseException]:
    errors: list[BaseException] = []

    def work(t: int) -> None:
        for i in range(per_thread):
            sp = PointBuffer(lon=5.0 + t, lat=45.0 + 0.01 * i, buffer_m=100)
            try:
                prov.fetch(sp, SUMMER, S2)
            except BaseException as exc:  # collected for the assertion
                errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return errors


def test_local_limiter_keeps_peak_in_flight_under_limit() -> None:
    with EEEmulator(latency_ms=40, max_concurrent=2) as emu:
        prov = provider(emu, limiter=LocalLimiter(max_concurrent=2, qps=None), max_retries=0)
        errors = _fetch_in_threads(prov, n_threads=4, per_thread=3)
        assert errors == []
        assert emu.peak_in_flight == 2
        assert all(r["status"] == 200 for r in emu.request_log)
    # control: without the limiter the same load overruns the emulator's limit
    with EEEmulator(latency_ms=40) as emu:
        prov = provider(emu, limiter=LocalLimiter(max_concurrent=None, qps=None))
        assert _fetch_in_threads(prov, n_threads=4, per_thread=3) == []
        assert emu.peak_in_flight > 2


def test_local_limiter_keeps_qps_under_limit() -> None:
    with EEEmulator(qps=40) as emu:
        prov = provider(emu, limiter=LocalLimiter(max_concurrent=None, qps=40), max_retries=0)
        errors = _fetch_in_threads(prov, n_threads=4, per_thread=4)
        assert errors == []
        assert all(r["status"] == 200 for r in emu.request_log)


# ---------------------------------------------------------------------------- composites


def test_no_images_in_window(emulator: EEEmulator) -> None:
    spatial = PointBuffer(lon=8.0, lat=47.0, buffer_m=200)
    emulator.empty_regions.append(geo.grid_for(spatial, 10).bounds())
    with pytest.raises(ProviderError, match=r"No images found .*COPERNICUS/S2_SR_HARMONIZED"):
        provider(emulator).fetch(spatial, SUMMER, S2)
    assert len(emulator.requests_of("computePixels")) == 1  # the image count said: none
    assert emulator.requests_of("value") == []


def test_s1_relaxes_iw_filter_on_empty(emulator: EEEmulator) -> None:
    emulator.size_hook = lambda expr: 0 if "instrumentMode" in json.dumps(expr) else None
    s1 = SensorSpec(collection="COPERNICUS/S1_GRD", bands=("VV", "VH"), scale_m=10)
    spatial = PointBuffer(lon=8.0, lat=47.0, buffer_m=200)
    patch = provider(emulator).fetch(spatial, SUMMER, s1)
    assert patch.meta["s1_iw_relaxed_on_empty"] is True and patch.meta["s1_iw_applied"] is False
    assert patch.meta["collection"] == "COPERNICUS/S1_GRD_FLOAT"
    assert np.array_equal(patch.data, expected(geo.grid_for(spatial, 10), ["VV", "VH"]))
    strict = SensorSpec(**{**s1.__dict__, "s1_relax_iw_on_empty": False})
    with pytest.raises(ProviderError, match=r"No images found.*iw=0.*vh_no_iw=7"):
        provider(emulator).fetch(spatial, SUMMER, strict)


def test_multiframe_bins_and_backfill(emulator: EEEmulator) -> None:
    bins = split_date_range("2022-06-01", "2022-09-01", 3)
    assert bins == [
        ("2022-06-01", "2022-07-01"),
        ("2022-07-01", "2022-08-01"),
        ("2022-08-01", "2022-09-01"),
    ]
    emulator.size_hook = lambda e: 0 if "2022-07-01" in date_range_starts(e) else None
    modis = SensorSpec(collection="MODIS/061/MOD09GA", bands=("sur_refl_b01",), scale_m=500)
    spatial = PointBuffer(lon=8.0, lat=47.0, buffer_m=5000)
    patch = provider(emulator).fetch(spatial, SUMMER, modis, n_frames=3)
    assert patch.data.shape == (3, 1, 20, 20)
    exp = expected(geo.grid_for(spatial, 500), ["sur_refl_b01"])
    for t in range(3):
        assert np.array_equal(patch.data[t], exp)
    assert patch.meta["n_backfilled_frames"] == 1
    assert [f["empty"] for f in patch.meta["frames"]] == [False, True, False]
    assert len(emulator.requests_of("computePixels")) == 1  # frames stacked in one request
    assert len(emulator.requests_of("value")) == 1


def test_s2_multiframe_is_clipped(emulator: EEEmulator) -> None:
    spatial = PointBuffer(lon=8.0, lat=47.0, buffer_m=200)
    patch = provider(emulator).fetch(spatial, SUMMER, S2, n_frames=2)
    assert patch.data.shape == (2, 3, 40, 40)
    assert patch.data.max() <= 10000 and patch.data.min() >= 0


def test_gse_all_bands_and_nodata_to_nan(emulator: EEEmulator) -> None:
    gse = SensorSpec(collection="GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL", bands=(), scale_m=10)
    spatial = PointBuffer(lon=8.0, lat=47.0, buffer_m=200)
    grid = geo.grid_for(spatial, 10)
    x0, y0, x1, y1 = grid.bounds()
    emulator.nodata_regions.append((x0, y0, (x0 + x1) / 2, y1))  # western half masked
    patch = provider(emulator).fetch(spatial, TemporalSpec.year(2022), gse)
    assert patch.data.shape == (64, 40, 40)
    assert np.isnan(patch.data[:, :, :20]).all()
    exp = expected(grid, [f"A{i:02d}" for i in range(64)])
    assert np.array_equal(patch.data[:, :, 20:], exp[:, :, 20:])
    assert patch.meta["nodata_fraction"] == pytest.approx(0.5)
    assert patch.meta["window"] == ["2022-01-01", "2023-01-01"]


def test_nan_pixels_become_fill_value(emulator: EEEmulator) -> None:
    sensor = SensorSpec(collection=S2.collection, bands=("B4",), scale_m=10, fill_value=-1.0)
    spatial = PointBuffer(lon=8.0, lat=47.0, buffer_m=200)
    x0, y0, x1, y1 = geo.grid_for(spatial, 10).bounds()
    emulator.nan_regions.append((x0, (y0 + y1) / 2, x1, y1))  # northern half NaN
    patch = provider(emulator).fetch(spatial, SUMMER, sensor)
    assert (patch.data[:, :20] == -1.0).all() and np.isfinite(patch.data).all()
    assert (patch.data[:, 20:] != -1.0).all()


# ---------------------------------------------------------------------------- init and auth


def test_settings_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    assert GEEProvider(high_volume=True).url == HIGH_VOLUME_URL
    assert GEEProvider(high_volume=True).emulator is False
    monkeypatch.setenv("RS_EMBED_RAY_EE_URL", "http://127.0.0.1:9/")
    p = GEEProvider()
    assert p.url == "http://127.0.0.1:9" and p.emulator is True
    assert GEEProvider(url="http://localhost:1").url == "http://localhost:1"


def test_env_url_and_project(emulator: EEEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RS_EMBED_RAY_EE_URL", emulator.url)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "from-gcp-env")
    prov = create_provider("gee")
    prov.fetch(PointBuffer(lon=8.0, lat=47.0, buffer_m=50), SUMMER, S2)
    assert {r["project"] for r in emulator.request_log if r["project"]} == {"from-gcp-env"}
    monkeypatch.setenv("EE_PROJECT", "from-ee-env")
    assert GEEProvider().client._resolve_project() == "from-ee-env"
    assert GEEProvider(project="arg").client._resolve_project() == "arg"


def test_initialises_once_and_again_after_another_provider(emulator: EEEmulator) -> None:
    a = provider(emulator)
    sp = PointBuffer(lon=8.0, lat=47.0, buffer_m=50)
    a.fetch(sp, SUMMER, S2)
    a.fetch(sp, SUMMER, S2)
    assert len(emulator.requests_of("algorithms")) == 1
    with EEEmulator() as other:
        provider(other).fetch(sp, SUMMER, S2)
    a.fetch(sp, SUMMER, S2)  # takes the process back to its own endpoint
    assert len(emulator.requests_of("algorithms")) == 2
    assert len(emulator.requests_of("computePixels")) == 3


def test_missing_project_is_clear() -> None:
    prov = GEEProvider(credentials=Credentials(token="x"))  # real endpoint; fails before network
    with pytest.raises(ProviderError, match="EE_PROJECT"):
        prov.ensure_ready()


def test_bad_token_is_clear_and_not_leaked() -> None:
    secret = "wrong-secret-token-123"
    with EEEmulator(auth_token="the-right-token") as emu:
        prov = provider(emu, credentials=Credentials(token=secret))
        with pytest.raises(ProviderError) as info:
            prov.ensure_ready()
    msg = str(info.value)
    assert "earthengine authenticate" in msg and "GOOGLE_APPLICATION_CREDENTIALS" in msg
    assert secret not in msg and secret not in repr(info.value.__cause__)


def test_unknown_project_is_clear() -> None:
    with EEEmulator(projects={"good-project"}) as emu:
        with pytest.raises(ProviderError, match=r"project 'bad-project'.*EE_PROJECT"):
            provider(emu, project="bad-project").ensure_ready()
        provider(emu, project="good-project").ensure_ready()


def test_bad_service_account_key_is_clear(tmp_path, monkeypatch, caplog) -> None:
    key = tmp_path / "key.json"
    pem = "-----BEGIN PRIVATE KEY-----\nTOPSECRETKEYMATERIAL\n-----END PRIVATE KEY-----\n"
    key.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "sa-project",
                "private_key_id": "abc",
                "private_key": pem,
                "client_email": "sa@sa-project.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": "https://oauth2.googleapis.com/token",
            }
        )
    )
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    with pytest.raises(ProviderError) as info:
        GEEProvider().ensure_ready()
    msg = str(info.value)
    assert "earthengine authenticate" in msg and str(key) in msg
    assert "TOPSECRET" not in msg and "TOPSECRET" not in caplog.text
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    with pytest.raises(ProviderError, match=r"GOOGLE_APPLICATION_CREDENTIALS.*not a file"):
        GEEProvider().ensure_ready()


def test_no_credentials_anywhere_is_clear() -> None:
    with pytest.raises(ProviderError, match="earthengine authenticate"):
        GEEProvider(project="p").ensure_ready()


def test_provider_pickles_without_runtime_state(emulator: EEEmulator) -> None:
    prov = provider(emulator)
    prov.ensure_ready()
    clone = pickle.loads(pickle.dumps(prov))
    assert clone.url == prov.url and clone.client._transport is None
    clone.fetch(PointBuffer(lon=8.0, lat=47.0, buffer_m=50), SUMMER, S2)
