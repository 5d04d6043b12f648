"""Oracle: gse (Google Satellite Embedding) against a direct rasterio/numpy reading of the
product as Earth Engine exports it.

``GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL`` is 64 float bands ``A00``..``A63`` per 10 m pixel
(already dequantised in Earth Engine: the int8 ``(v / 127.5)^2 * sign(v)`` coding applies
only to the bucket copies, which this project does not read). An export of it is a
64-band float GeoTIFF in EPSG:3857 with nodata -9999. The file here is written that way with
rasterio (band descriptions A00..A63, random unit-scale values, a block of nodata pixels);
ours reads it through the real ``local`` provider (the same lattice and fill as the Earth
Engine provider) and reduces it with the gse model. The oracle cuts the place's EPSG:3857
bounds straight out of the file with rasterio's ``from_bounds``, turns -9999 into NaN and
takes numpy's NaN-aware mean / max (pooled) or the pixels themselves (grid).
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.oracle._helpers_b import assert_close, embed_both, max_abs

pytestmark = pytest.mark.oracle

rasterio = pytest.importorskip("rasterio")

X0, Y0, SIDE = 1_499_800.0, 5_600_680.0, 120  # file: top-left corner (EPSG:3857), pixels
ROI = (1_500_000.0, 5_600_040.0, 1_500_640.0, 5_600_680.0)  # 64 x 64 px, on the lattice


@pytest.fixture(scope="module")
def export(module_scratch):
    from rasterio.transform import from_origin

    rng = np.random.default_rng(19)
    data = rng.normal(0, 0.125, size=(64, SIDE, SIDE)).astype(np.float32)
    data[:, 30:33, 40:43] = -9999.0
    path = module_scratch("gse_export") / "gse_2022.tif"
    profile = dict(
        driver="GTiff",
        width=SIDE,
        height=SIDE,
        count=64,
        dtype="float32",
        crs="EPSG:3857",
        transform=from_origin(X0, Y0, 10.0, 10.0),
        nodata=-9999.0,
    )
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
        for i in range(64):
            ds.set_band_description(i + 1, f"A{i:02d}")
    return path


def oracle_pixels(path) -> np.ndarray:
    from rasterio.windows import from_bounds

    with rasterio.open(path) as ds:
        win = from_bounds(*ROI, transform=ds.transform).round_offsets().round_lengths()
        a = ds.read(window=win).astype(np.float32)
    a[a == -9999.0] = np.nan
    return a


def test_local_export_matches_direct_read(export):
    from rasterio.warp import transform as warp

    from rs_embed_ray.models.catalog import CATALOG
    from rs_embed_ray.models.gse import GoogleSatelliteEmbedding
    from rs_embed_ray.providers.local import LocalProvider
    from rs_embed_ray.specs import BBox, OutputSpec, TemporalSpec

    (minlon, maxlon), (minlat, maxlat) = warp("EPSG:3857", "EPSG:4326", ROI[::2], ROI[1::2])
    place = BBox(minlon, minlat, maxlon, maxlat)
    year = TemporalSpec.year(2022)
    patch = LocalProvider(str(export)).fetch(place, year, CATALOG["gse"].sensor)
    m = GoogleSatelliteEmbedding()
    pooled, grid = embed_both(m, [patch.data], spatials=[place], temporal=year, metas=[patch.meta])
    want = oracle_pixels(export)
    assert want.shape == (64, 64, 64) and np.isnan(want).any()
    assert np.array_equal(np.isnan(grid[0]), np.isnan(want))
    ok = np.isfinite(want)
    assert_close(grid[0][ok], want[ok], "gse grid")
    assert_close(pooled[0], np.nanmean(want, axis=(1, 2)), "gse pooled")
    (mx,) = m.embed_batch(
        [patch.data],
        output=OutputSpec.pooled("max"),
        spatials=[place],
        temporal=year,
        fetch_metas=[patch.meta],
    )
    assert max_abs(mx.data, np.nanmax(want, axis=(1, 2))) == 0.0
