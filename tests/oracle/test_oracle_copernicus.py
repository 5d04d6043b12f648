"""Oracle: copernicus against a direct rasterio/numpy reading of the product file.

The product (HF dataset ``torchgeo/copernicus_embed``, ``embed_map_310k.tif``) is published
as a global EPSG:4326 GeoTIFF: 721 x 1440 cells of 0.25 deg whose outer edge is at
lon -180, lat 90.125, 768 float32 bands, one embedding per cell; a cell with no data holds
0. The file here is written with rasterio in that layout (a sparse file with random values
over one region, a NaN cell and an all-zero cell), not with our writer. The oracle reads it
the way the product's semantics and rs-embed's documented rules say: the cells a place
touches (rounded outward) located with rasterio's own ``rowcol`` on the file's transform,
a PointBuffer turned into degrees with 111320 m per degree (times cos(lat) for longitude),
NaN-aware mean / max over the cells for pooled, the cells themselves (north-up) for grid.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.oracle._helpers_b import assert_close, embed_both, max_abs

pytestmark = pytest.mark.oracle

rasterio = pytest.importorskip("rasterio")

ROW0, COL0, H, W = 170, 760, 24, 40  # filled region: lat 47.625..41.625, lon 10..20
NAN_CELL, EMPTY_CELL = (180, 781), (181, 782)


@pytest.fixture(scope="module")
def product(module_scratch):
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = np.random.default_rng(17)
    data = rng.normal(0, 0.05, size=(768, H, W)).astype(np.float32)
    data[:, NAN_CELL[0] - ROW0, NAN_CELL[1] - COL0] = np.nan
    data[:, EMPTY_CELL[0] - ROW0, EMPTY_CELL[1] - COL0] = 0.0
    path = module_scratch("copernicus_product") / "embed_map_310k.tif"
    profile = dict(
        driver="GTiff",
        width=1440,
        height=721,
        count=768,
        dtype="float32",
        crs="EPSG:4326",
        transform=from_origin(-180.0, 90.125, 0.25, 0.25),
        tiled=True,
        blockxsize=16,
        blockysize=16,
        sparse_ok=True,
        interleave="pixel",
    )
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data, window=Window(COL0, ROW0, W, H))
    return path


def oracle_cells(path, minlon, minlat, maxlon, maxlat) -> np.ndarray:
    """The (768, h, w) cells touching the box, rounded outward, via rasterio's rowcol."""
    from rasterio.windows import Window

    with rasterio.open(path) as ds:
        eps = 1e-9
        r0, c0 = ds.index(minlon + eps, maxlat - eps)  # cell holding the top-left corner
        r1, c1 = ds.index(maxlon - eps, minlat + eps)  # cell holding the bottom-right corner
        return ds.read(window=Window(c0, r0, c1 - c0 + 1, r1 - r0 + 1)).astype(np.float32)


def test_bbox_and_point_match_direct_read(product):
    from rs_embed_ray.models.copernicus import CopernicusEmbed
    from rs_embed_ray.specs import BBox, OutputSpec, PointBuffer, TemporalSpec

    m = CopernicusEmbed(weights=str(product))
    box = BBox(14.9, 42.6, 16.3, 43.55)  # not on cell edges: rounded outward
    lon, lat, buf = 15.4, 44.9, 40_000.0
    point = PointBuffer(lon=lon, lat=lat, buffer_m=buf)
    dlat = buf / 111_320.0
    dlon = buf / (111_320.0 * math.cos(math.radians(lat)))
    want = {
        "bbox": oracle_cells(product, 14.9, 42.6, 16.3, 43.55),
        "point": oracle_cells(product, lon - dlon, lat - dlat, lon + dlon, lat + dlat),
    }
    assert np.isnan(want["point"]).any() and (want["point"] == 0).all(axis=0).any()
    places = {"bbox": box, "point": point}
    for name, place in places.items():
        pooled, grid = embed_both(
            m, [np.zeros((1, 1, 1), np.float32)], spatials=[place], temporal=TemporalSpec.year(2021)
        )
        cells = want[name]
        assert_close(grid[0][np.isfinite(grid[0])], cells[np.isfinite(cells)], f"cop {name} grid")
        assert np.array_equal(np.isnan(grid[0]), np.isnan(cells))
        assert_close(pooled[0], np.nanmean(cells, axis=(1, 2)), f"copernicus {name} pooled")
        (mx,) = m.embed_batch(
            [np.zeros((1, 1, 1), np.float32)],
            output=OutputSpec.pooled("max"),
            spatials=[place],
            temporal=TemporalSpec.year(2021),
            fetch_metas=[{}],
        )
        assert max_abs(mx.data, np.nanmax(cells, axis=(1, 2))) == 0.0
    m.close()
