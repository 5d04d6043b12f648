"""The emulator itself, driven by the real earthengine-api client and by its CLI."""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
import time
import urllib.request

import ee
import numpy as np
import pytest

from rs_embed_ray import geo
from rs_embed_ray.testing import ee_emulator as emod
from rs_embed_ray.testing.ee_emulator import EEEmulator


def _grid_params(g: geo.Grid) -> dict:
    keys = ("scaleX", "shearX", "translateX", "shearY", "scaleY", "translateY")
    return {
        "dimensions": {"width": g.width, "height": g.height},
        "affineTransform": dict(zip(keys, g.affine, strict=True)),
        "crsCode": "EPSG:3857",
    }


def test_encoding_is_exact_in_float32_and_decodes() -> None:
    g = geo.Grid(x0=-1_234_560.0, y0=5_000_000.0, scale=10.0, width=50, height=40)
    for band in ("B4", "A63", "VV", "weird_band"):
        v = emod.encode_pixels(g.affine, g.width, g.height, band)
        assert v.max() < 2**24 and v.min() >= 0
        assert np.array_equal(v.astype(np.float32).astype(np.float64), v)
        rows, cols = emod.decode_position(v.astype(np.float32), band)
        xs, ys = g.pixel_centers()
        exp_cols = np.floor(np.array(xs) / 10.0).astype(int) % 4096
        exp_rows = np.floor(-np.array(ys) / 10.0).astype(int) % 4096
        assert np.array_equal(cols[0], exp_cols)
        assert np.array_equal(rows[:, 0], exp_rows)
    # a different band decodes to a different (wrong) position
    v = emod.encode_pixels(g.affine, g.width, g.height, "B4")
    rows, _ = emod.decode_position(v, "B3")
    assert not np.array_equal(rows[:, 0], np.floor(-np.array(g.pixel_centers()[1]) / 10) % 4096)


def test_initialize_and_value_compute(ee_client: EEEmulator) -> None:
    kinds = [r["kind"] for r in ee_client.request_log]
    assert kinds.count("discovery") >= 1 and "algorithms" in kinds
    col = ee.ImageCollection("COPERNICUS/S2_SR_HARMONIZED").filterDate("2022-01-01", "2022-02-01")
    assert col.size().getInfo() == ee_client.default_count
    assert ee.List([col.size(), col.size()]).getInfo() == [7, 7]


def test_empty_region_and_collection(ee_client: EEEmulator) -> None:
    ee_client.empty_regions.append((0.0, 0.0, 1000.0, 1000.0))
    inside = ee.Geometry.Rectangle([10, 10, 20, 20], proj="EPSG:3857", geodesic=False)
    outside = ee.Geometry.Rectangle([5000, 5000, 6000, 6000], proj="EPSG:3857", geodesic=False)
    col = ee.ImageCollection("X/Y")
    assert col.filterBounds(inside).size().getInfo() == 0
    assert col.filterBounds(outside).size().getInfo() == 7
    ee_client.empty_collections.add("X/Y")
    assert col.filterBounds(outside).size().getInfo() == 0


def test_compute_pixels_npy_geotiff_and_get_pixels(ee_client: EEEmulator) -> None:
    g = geo.Grid(x0=1000.0, y0=2000.0, scale=10.0, width=16, height=12)
    img = ee.ImageCollection("COPERNICUS/S2_SR_HARMONIZED").median().select(["B4", "B3"])
    arr = ee.data.computePixels(
        {"expression": img.toFloat(), "fileFormat": "NUMPY_NDARRAY", "grid": _grid_params(g)}
    )
    assert arr.shape == (12, 16) and arr.dtype.names == ("B4", "B3")
    assert arr.dtype["B4"] == np.float32
    exp = emod.expected_pixels(g.affine, g.width, g.height, ["B4", "B3"])
    assert np.array_equal(arr["B4"], exp[0]) and np.array_equal(arr["B3"], exp[1])
    # without a cast the emulator answers float64, like a median of integers on the server
    arr64 = ee.data.computePixels(
        {"expression": img, "fileFormat": "NUMPY_NDARRAY", "grid": _grid_params(g)}
    )
    assert arr64.dtype["B4"] == np.float64

    tif = ee.data.computePixels(
        {"expression": img.toFloat(), "fileFormat": "GEO_TIFF", "grid": _grid_params(g)}
    )
    assert tif[:4] == b"II*\x00"
    ifd = struct.unpack_from("<I", tif, 4)[0]
    tags = {}
    for i in range(struct.unpack_from("<H", tif, ifd)[0]):
        tag, typ, count, val = struct.unpack_from("<HHII", tif, ifd + 2 + 12 * i)
        tags[tag] = (typ, count, val)
    assert tags[256][2] == 16 and tags[257][2] == 12 and tags[277][2] == 2
    strip = np.frombuffer(tif, dtype="<f4", count=16 * 12 * 2, offset=tags[273][2])
    assert np.array_equal(np.moveaxis(strip.reshape(12, 16, 2), -1, 0), exp)

    px = ee.data.getPixels(
        {
            "assetId": "COPERNICUS/S2_SR_HARMONIZED/20220601T000000_X",
            "bandIds": ["B8"],
            "grid": _grid_params(g),
            "fileFormat": "NUMPY_NDARRAY",
        }
    )
    assert np.array_equal(px["B8"], emod.encode_pixels(g.affine, 16, 12, "B8"))
    assert ee_client.requests_of("getPixels")[0]["bands"] == ["B8"]


def test_pixel_fn_serves_its_values_at_the_grid_centre(ee_client: EEEmulator, tmp_path) -> None:
    """``--pixels-from`` (the side-by-side benchmark serves the reference's pixels): the image
    bands are the function's planes, asked for at the grid centre's lon/lat."""
    src = tmp_path / "px.py"
    src.write_text(
        "import numpy as np\n"
        "def px(lon, lat, bands, h, w):\n"
        "    base = np.arange(h * w, dtype=np.float32).reshape(h, w)\n"
        "    return np.stack([base + 1000 * lon + len(b) + lat for b in bands])\n"
    )
    ee_client.pixel_fn = emod.load_pixel_fn(f"{src}:px")
    try:
        lon, lat = 15.0, 45.0
        x, y = emod._lonlat_to_3857(lon, lat)
        g = geo.Grid(x0=x - 80.0, y0=y + 60.0, scale=10.0, width=16, height=12)
        img = ee.ImageCollection("COPERNICUS/S2_SR_HARMONIZED").median().select(["B4", "B11"])
        arr = ee.data.computePixels(
            {"expression": img.toFloat(), "fileFormat": "NUMPY_NDARRAY", "grid": _grid_params(g)}
        )
    finally:
        ee_client.pixel_fn = None
    base = np.arange(12 * 16, dtype=np.float32).reshape(12, 16)
    np.testing.assert_allclose(arr["B4"], base + 1000 * lon + 2 + lat, rtol=0, atol=1e-3)
    np.testing.assert_allclose(arr["B11"], base + 1000 * lon + 3 + lat, rtol=0, atol=1e-3)
    with pytest.raises(ValueError, match=r"FILE\.py:FUNC"):
        emod.load_pixel_fn("no-function-named")


def test_pixels_gate_sees_pixel_requests_only_in_order(ee_client: EEEmulator) -> None:
    """``pixels_gate(k)`` runs before the k-th pixel request (the streaming tests hold later
    places with it), in the request's thread: a blocking gate delays the answer; value
    requests do not count."""
    seen: list[int] = []

    def gate(k: int) -> None:
        seen.append(k)
        if k == 2:
            time.sleep(0.5)

    g = geo.Grid(x0=1000.0, y0=2000.0, scale=10.0, width=4, height=4)
    img = ee.ImageCollection("COPERNICUS/S2_SR_HARMONIZED").median().select(["B4"]).toFloat()
    req = {"expression": img, "fileFormat": "NUMPY_NDARRAY", "grid": _grid_params(g)}
    ee_client.pixels_gate = gate
    try:
        ee.data.computePixels(req)
        assert ee.ImageCollection("COPERNICUS/S2_SR_HARMONIZED").size().getInfo() == 7
        ee.data.computePixels(req)
        assert seen == [0, 1]  # the fixture's emulator is fresh: counted from its start
        t0 = time.monotonic()
        ee.data.computePixels(req)
        assert seen == [0, 1, 2] and time.monotonic() - t0 >= 0.5
    finally:
        ee_client.pixels_gate = None


def test_request_limits_answer_400_with_the_real_message(ee_client: EEEmulator) -> None:
    img = ee.Image("X/Y").select(["B1", "B2", "B3"]).toFloat()
    big = geo.Grid(x0=0.0, y0=0.0, scale=10.0, width=2100, height=2100)
    with pytest.raises(ee.EEException) as info:
        ee.data.computePixels(
            {"expression": img, "fileFormat": "NUMPY_NDARRAY", "grid": _grid_params(big)}
        )
    n = 2100 * 2100 * 3 * 4
    assert str(info.value) == (
        f"Total request size ({n} bytes) must be less than or equal to 50331648 bytes."
    )
    wide = geo.Grid(x0=0.0, y0=0.0, scale=10.0, width=32769, height=1)
    with pytest.raises(ee.EEException, match="32768"):
        ee.data.computePixels(
            {"expression": img, "fileFormat": "NUMPY_NDARRAY", "grid": _grid_params(wide)}
        )
    assert [r["status"] for r in ee_client.requests_of("computePixels")] == [400, 400]


def _post(url: str, path: str = "/v1/projects/p/value:compute") -> tuple[int, dict]:
    body = json.dumps({"expression": {"result": "0", "values": {"0": {"constantValue": 1}}}})
    req = urllib.request.Request(url + path, data=body.encode(), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


def test_injected_errors_and_qps_answer_429_like_the_service() -> None:
    with EEEmulator(error_rate=1.0, error_codes=(429,), retry_after_s=3) as emu:
        status, headers = _post(emu.url)
        assert status == 429 and headers["Retry-After"] == "3"
    with EEEmulator(error_rate=1.0, error_codes=(500,)) as emu:
        assert _post(emu.url)[0] == 500
    with EEEmulator(qps=2) as emu:
        codes = [_post(emu.url)[0] for _ in range(4)]
        assert codes[:2] == [200, 200] and 429 in codes[2:]
    with EEEmulator(auth_token="good", projects={"p"}) as emu:
        assert _post(emu.url)[0] == 401


def test_max_concurrent_answers_429() -> None:
    import threading

    with EEEmulator(latency_ms=300, max_concurrent=1) as emu:
        codes: list[int] = []
        threads = [
            threading.Thread(target=lambda: codes.append(_post(emu.url)[0])) for _ in range(3)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(codes)[0] == 200 and codes.count(429) >= 1
        assert emu.peak_in_flight >= 2


def test_refuses_non_loopback_host() -> None:
    with pytest.raises(ValueError, match="loopback"):
        EEEmulator(host="0.0.0.0")


def test_cli_prints_listening_line_and_serves() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "rs_embed_ray.testing.ee_emulator", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        m = re.fullmatch(r"listening on (http://127\.0\.0\.1:(\d+))", line)
        assert m, line
        with urllib.request.urlopen(m.group(1) + "/$discovery/rest?version=v1", timeout=10) as r:
            doc = json.loads(r.read())
        assert doc["version"] == "v1" and "v1alpha" not in json.dumps(doc)
        # another process reads what the CLI-started emulator saw: the discovery call above
        # is logged, the stats call itself is not
        stats = emod.fetch_stats(m.group(1))
        assert [r["kind"] for r in stats["request_log"]] == ["discovery"]
        assert stats["peak_in_flight"] == 1
        assert emod.fetch_stats(m.group(1))["request_log"] == stats["request_log"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_cli_refuses_0000() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "rs_embed_ray.testing.ee_emulator", "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2
    assert "loopback" in res.stderr and "listening" not in res.stdout
