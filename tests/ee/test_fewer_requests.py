"""Fewer Earth Engine requests per place: the image-count band (one request for a single
composite) and spatial batching (``GEEProvider.fetch_many``), with the real earthengine-api
client against the local emulator."""

from __future__ import annotations

import json
import random
from typing import Any

import ee
import numpy as np
import pytest
from google.oauth2.credentials import Credentials

from rs_embed_ray import geo
from rs_embed_ray.errors import NoImageryError, ProviderError, SpecError
from rs_embed_ray.providers.base import Patch
from rs_embed_ray.providers.gee import (
    N_IMAGES_BAND,
    GEEProvider,
    plan_spatial_batches,
)
from rs_embed_ray.specs import BBox, PointBuffer, SensorSpec, TemporalSpec
from rs_embed_ray.testing import ee_emulator as emod
from rs_embed_ray.testing.ee_emulator import EEEmulator, date_range_starts, expected_pixels

S2 = SensorSpec(collection="COPERNICUS/S2_SR_HARMONIZED", bands=("B4", "B3", "B2"), scale_m=10)
S1 = SensorSpec(collection="COPERNICUS/S1_GRD", bands=("VV", "VH"), scale_m=10)
GSE = SensorSpec(collection="GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL", bands=(), scale_m=10)
MODIS = SensorSpec(collection="MODIS/061/MOD09GA", bands=("sur_refl_b01",), scale_m=500)
SUMMER = TemporalSpec.range("2022-06-01", "2022-09-01")
RGB = ["B4", "B3", "B2"]
VOLATILE = ("requests", "pixel_requests", "retries", "batched")


def provider(emu: EEEmulator, **kw: Any) -> GEEProvider:
    kw.setdefault("project", "test-project")
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("max_backoff_s", 0.05)
    prov = GEEProvider(url=emu.url, **kw)
    prov.ensure_ready()
    emu.reset_stats()  # count only what fetches cost
    return prov


def expected(spatial, scale: float, bands) -> np.ndarray:
    grid = geo.grid_for(geo.fetch_square(spatial)[0], scale)
    return expected_pixels(grid.affine, grid.width, grid.height, bands).astype(np.float32)


def api_requests(emu: EEEmulator) -> int:
    return len(emu.requests_of("computePixels")) + len(emu.requests_of("value"))


def clustered(n: int = 64, seed: int = 0, buffer_m: float = 160.0) -> list[PointBuffer]:
    """``n`` places scattered over about 2 km x 1.5 km near Zurich."""
    rng = random.Random(seed)
    return [
        PointBuffer(8.0 + rng.uniform(0, 0.02), 47.0 + rng.uniform(0, 0.014), buffer_m)
        for _ in range(n)
    ]


def on_lattice(x: float, y: float, buffer_m: float = 160.0) -> PointBuffer:
    lon, lat = geo.xy3857_to_lonlat(x, y)
    return PointBuffer(lon, lat, buffer_m)


def grid(r0: int, c0: int, h: int = 32, w: int = 32, scale: float = 10.0) -> geo.Grid:
    return geo.Grid(x0=c0 * scale, y0=-r0 * scale, scale=scale, width=w, height=h)


def same_meta(a: dict, b: dict) -> bool:
    return {k: v for k, v in a.items() if k not in VOLATILE} == {
        k: v for k, v in b.items() if k not in VOLATILE
    }


def bounds_of(expr: Any) -> list[tuple[float, float, float, float]]:
    return emod._geometry_bounds(expr)


# ---------------------------------------------------------------------------- one request


def test_s2_single_fetch_is_one_request(emulator: EEEmulator) -> None:
    prov = provider(emulator)
    for i in range(3):
        sp = PointBuffer(lon=8.0 + 0.1 * i, lat=47.0, buffer_m=320)
        patch = prov.fetch(sp, SUMMER, S2)
        assert np.array_equal(patch.data, expected(sp, 10, RGB))
        assert patch.meta["requests"] == 1 and patch.meta["pixel_requests"] == 1
        assert patch.meta["n_images"] == emulator.default_count
        assert "batched" not in patch.meta
    assert emulator.requests_of("value") == []
    reqs = emulator.requests_of("computePixels")
    assert len(reqs) == 3  # one per place (was two: a size query, then the pixels)
    assert all(r["bands"] == RGB and r["count_bands"] == [N_IMAGES_BAND] for r in reqs)


@pytest.mark.parametrize("fill_value", [0.0, -1.0, 7.0])
def test_empty_window_still_raises_the_clear_error(emulator: EEEmulator, fill_value) -> None:
    sensor = SensorSpec(**{**S2.__dict__, "fill_value": fill_value})
    sp = PointBuffer(lon=8.0, lat=47.0, buffer_m=200)
    emulator.empty_regions.append(geo.grid_for(sp, 10).bounds())
    prov = provider(emulator)
    with pytest.raises(
        NoImageryError,
        match=r"No images found .*collection=COPERNICUS/S2_SR_HARMONIZED .*2022-06-01",
    ):
        prov.fetch(sp, SUMMER, sensor)
    assert len(emulator.requests_of("computePixels")) == 1 and emulator.requests_of("value") == []
    emulator.empty_regions.clear()
    emulator.empty_collections.add(S2.collection)
    with pytest.raises(NoImageryError, match="No images found"):
        prov.fetch(sp, SUMMER, sensor)


def test_tiled_single_fetch_needs_no_size_query(emulator: EEEmulator) -> None:
    sp = PointBuffer(lon=10.0, lat=45.0, buffer_m=10_500)  # 2100 x 2100 px: over 48 MB
    patch = provider(emulator).fetch(sp, SUMMER, S2)
    reqs = emulator.requests_of("computePixels")
    assert len(reqs) == patch.meta["pixel_requests"] == patch.meta["requests"] >= 2
    assert all(r["status"] == 200 for r in reqs) and emulator.requests_of("value") == []
    assert all(r["grid"]["width"] * r["grid"]["height"] * 4 * 4 <= 50331648 for r in reqs)
    assert np.array_equal(patch.data, expected(sp, 10, RGB))


def test_s1_paths_and_their_request_counts(emulator: EEEmulator) -> None:
    sp = PointBuffer(lon=8.0, lat=47.0, buffer_m=200)
    prov = provider(emulator)
    # IW scenes exist: one request
    patch = prov.fetch(sp, SUMMER, S1)
    assert patch.meta["s1_iw_applied"] is True and patch.meta["s1_iw_relaxed_on_empty"] is False
    assert patch.meta["collection"] == "COPERNICUS/S1_GRD_FLOAT" and patch.meta["requests"] == 1
    assert np.array_equal(patch.data, expected(sp, 10, ["VV", "VH"]))
    # no IW scenes: the relaxed filter, a second pixel request, no size query
    emulator.reset_stats()
    emulator.size_hook = lambda e: 0 if "instrumentMode" in json.dumps(e) else None
    patch = prov.fetch(sp, SUMMER, S1)
    assert patch.meta["s1_iw_relaxed_on_empty"] is True and patch.meta["s1_iw_applied"] is False
    assert np.array_equal(patch.data, expected(sp, 10, ["VV", "VH"]))
    assert patch.meta["requests"] == 2 and len(emulator.requests_of("computePixels")) == 2
    assert emulator.requests_of("value") == []
    # relaxation off: the clear error with the filter-stage counts (one value:compute)
    emulator.reset_stats()
    strict = SensorSpec(**{**S1.__dict__, "s1_relax_iw_on_empty": False})
    with pytest.raises(NoImageryError, match=r"No images found.*iw=0.*vh_no_iw=7"):
        prov.fetch(sp, SUMMER, strict)
    assert len(emulator.requests_of("computePixels")) == 1
    assert len(emulator.requests_of("value")) == 1
    # nothing at all
    emulator.empty_collections.add("COPERNICUS/S1_GRD_FLOAT")
    with pytest.raises(NoImageryError, match=r"No images found.*base=0"):
        prov.fetch(sp, SUMMER, S1)


def test_gse_fully_masked_place_is_not_empty(emulator: EEEmulator) -> None:
    # the count is over image footprints: masked pixels (GSE no-data) still have an image
    sp = PointBuffer(lon=8.0, lat=47.0, buffer_m=200)
    emulator.nodata_regions.append(geo.grid_for(sp, 10).bounds())
    patch = provider(emulator).fetch(sp, TemporalSpec.year(2022), GSE)
    assert patch.data.shape == (64, 40, 40) and np.isnan(patch.data).all()
    assert patch.meta["nodata_fraction"] == 1.0 and patch.meta["requests"] == 1


def test_time_series_keeps_its_size_query(emulator: EEEmulator) -> None:
    sp = PointBuffer(lon=8.0, lat=47.0, buffer_m=5000)
    patch = provider(emulator).fetch(sp, SUMMER, MODIS, n_frames=3)
    assert patch.data.shape == (3, 1, 20, 20) and patch.meta["requests"] == 2
    assert len(emulator.requests_of("value")) == 1
    assert len(emulator.requests_of("computePixels")) == 1


def test_emulator_count_bands_and_partial_empty_regions(emulator: EEEmulator, monkeypatch):
    monkeypatch.setattr(ee.deprecation, "_FetchDataCatalogStac", lambda: {})
    ee.data.setMaxRetries(0)
    ee.Initialize(credentials=Credentials(token="t"), project="p", url=emulator.url)
    g = geo.Grid(x0=1000.0, y0=2000.0, scale=10.0, width=16, height=12)
    x0, y0, x1, y1 = g.bounds()
    emulator.empty_regions.append((x0, y0, (x0 + x1) / 2, y1))  # western half has no image
    region = ee.Geometry.Rectangle(list(g.bounds()), proj="EPSG:3857", geodesic=False)
    col = ee.ImageCollection("X/Y").filterBounds(region)
    count = col.select(["B4"]).count().rename(["n"]).toFloat()
    img = col.median().select(["B4"]).toFloat().unmask(-5, False).addBands(count)
    keys = ("scaleX", "shearX", "translateX", "shearY", "scaleY", "translateY")
    arr = ee.data.computePixels(
        {
            "expression": img,
            "fileFormat": "NUMPY_NDARRAY",
            "grid": {
                "dimensions": {"width": 16, "height": 12},
                "affineTransform": dict(zip(keys, g.affine, strict=True)),
                "crsCode": "EPSG:3857",
            },
        }
    )
    assert (arr["n"][:, :8] == 0).all() and (arr["n"][:, 8:] == 7).all()
    assert (arr["B4"][:, :8] == -5).all()
    exp = emod.encode_pixels(g.affine, 16, 12, "B4")
    assert np.array_equal(arr["B4"][:, 8:], exp[:, 8:])
    (req,) = emulator.requests_of("computePixels")
    assert req["bands"] == ["B4"] and req["count_bands"] == ["n"]
    # a region only partly in an empty region has images; one inside it has none
    assert col.size().getInfo() == 7
    inside = ee.Geometry.Rectangle([x0 + 1, y0 + 1, x0 + 20, y0 + 20], "EPSG:3857", False)
    assert ee.ImageCollection("X/Y").filterBounds(inside).size().getInfo() == 0


# ---------------------------------------------------------------------------- planning


def test_plan_groups_adjacent_grids_within_limits() -> None:
    grids = [grid(32 * r, 32 * c) for r in range(4) for c in range(4)]  # a 4x4 block, touching
    assert plan_spatial_batches(grids, max_pixels=10**6) == [list(range(16))]
    groups = plan_spatial_batches(grids, max_pixels=4096)  # 64 x 64 px per request
    assert sorted(i for g in groups for i in g) == list(range(16))
    assert len(groups) == 4 and all(len(g) == 4 for g in groups)
    for g in groups:
        u = geo.union_grid([grids[i] for i in g])
        assert u.width * u.height <= 4096
    assert plan_spatial_batches(grids, max_pixels=10**6, max_group=5)[0] == [0, 1, 2, 3, 5]
    assert groups == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]]  # strips
    blocks = plan_spatial_batches(grids, max_pixels=10**6, max_side=64)
    assert blocks == [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]
    assert plan_spatial_batches(grids, max_pixels=10**6, max_group=1) == [[i] for i in range(16)]


def test_plan_area_ratio_far_apart_scales_and_misfits() -> None:
    far = [grid(0, 0), grid(0, 1000), grid(1000, 0)]
    assert plan_spatial_batches(far, max_pixels=10**8) == [[0], [1], [2]]
    # a gap of one place's width: union 96 x 32 = 1.5 x the places' areas
    pair = [grid(0, 0), grid(0, 64)]
    assert plan_spatial_batches(pair, max_pixels=10**6, max_area_ratio=2.0) == [[0, 1]]
    assert plan_spatial_batches(pair, max_pixels=10**6, max_area_ratio=1.4) == [[0], [1]]
    # different scales never share a request; a grid over the pixel limit is alone
    mixed = [grid(0, 0), grid(0, 0, scale=20.0), grid(0, 32), grid(0, 64, h=100, w=100)]
    assert plan_spatial_batches(mixed, max_pixels=5000) == [[0, 2], [1], [3]]
    # off the lattice: alone
    odd = [grid(0, 0), geo.Grid(x0=325.5, y0=0.0, scale=10.0, width=32, height=32)]
    assert plan_spatial_batches(odd, max_pixels=10**6) == [[0], [1]]
    assert plan_spatial_batches([], max_pixels=10) == []
    with pytest.raises(ValueError):
        plan_spatial_batches(far, max_pixels=10, max_group=0)


def test_plan_clustered_places_is_a_partition_within_every_limit() -> None:
    grids = [geo.grid_for(sp, 10) for sp in clustered(200, seed=5)]
    groups = plan_spatial_batches(grids, max_pixels=20_000, max_group=16, max_area_ratio=2.0)
    assert sorted(i for g in groups for i in g) == list(range(200))
    assert groups == plan_spatial_batches(grids, max_pixels=20_000)  # deterministic
    for g in groups:
        assert g == sorted(g) and len(g) <= 16
        u = geo.union_grid([grids[i] for i in g])
        assert u.width * u.height <= 20_000
        assert u.width * u.height <= 2.0 * sum(grids[i].width * grids[i].height for i in g)
    assert len(groups) <= 200 / 8


def test_geo_union_and_offsets() -> None:
    a, b = grid(10, 20, h=5, w=6), grid(12, 18, h=7, w=3)
    u = geo.union_grid([a, b])
    assert (geo.lattice_origin(u), u.height, u.width) == ((10, 18), 9, 8)
    assert geo.grid_offset(u, a) == (0, 2) and geo.grid_offset(u, b) == (2, 0)
    with pytest.raises(ValueError):
        geo.grid_offset(a, b)
    with pytest.raises(ValueError):
        geo.union_grid([a, grid(0, 0, scale=20.0)])


# ---------------------------------------------------------------------------- fetch_many


def test_clustered_places_equal_single_fetches_with_a_quarter_of_the_requests(
    emulator: EEEmulator,
) -> None:
    places = clustered(64)
    prov = provider(emulator)
    many = prov.fetch_many(places, SUMMER, S2)
    n_requests = api_requests(emulator)
    assert n_requests / len(places) <= 0.25
    assert emulator.requests_of("value") == []
    sizes = [p.meta.get("batched", {}).get("group_size", 1) for p in many]
    assert max(sizes) == 16 and sum(1 / s for s in sizes) == pytest.approx(n_requests)
    emulator.reset_stats()
    singles = [prov.fetch(sp, SUMMER, S2) for sp in places]
    assert api_requests(emulator) == 64
    for sp, got, one in zip(places, many, singles, strict=True):
        assert isinstance(got, Patch)
        assert got.data.dtype == np.float32 and got.data.flags["C_CONTIGUOUS"]
        assert np.array_equal(got.data, one.data)
        assert np.array_equal(got.data, expected(sp, 10, RGB))
        assert same_meta(got.meta, one.meta)
        if "batched" in got.meta:
            b = got.meta["batched"]
            u = b["union_grid"]
            assert u["grid_hw"][0] * u["grid_hw"][1] * 16 <= 50331648
            ug = geo.Grid(
                x0=u["transform"][2], y0=u["transform"][5], scale=10.0,
                width=u["grid_hw"][1], height=u["grid_hw"][0],
            )  # fmt: skip
            assert tuple(b["offset"]) == geo.grid_offset(ug, geo.grid_for(sp, 10))


def test_far_apart_places_fall_back_to_one_request_each(emulator: EEEmulator) -> None:
    places = [PointBuffer(5.0 + 0.5 * i, 45.0 + 0.3 * (i % 3), 160) for i in range(10)]
    many = provider(emulator).fetch_many(places, SUMMER, S2)
    assert len(emulator.requests_of("computePixels")) == 10 and emulator.requests_of("value") == []
    for sp, got in zip(places, many, strict=True):
        assert "batched" not in got.meta and got.meta["requests"] == 1
        assert np.array_equal(got.data, expected(sp, 10, RGB))


def test_bbox_places_and_duplicates_batch_exactly(emulator: EEEmulator) -> None:
    places = [
        BBox(minlon=8.0, minlat=47.0, maxlon=8.004, maxlat=47.001),  # a wide box: square + window
        BBox(minlon=8.003, minlat=47.002, maxlon=8.006, maxlat=47.004),
        PointBuffer(8.002, 47.001, 150),
        PointBuffer(8.002, 47.001, 150),
    ]
    prov = provider(emulator)
    many = prov.fetch_many(places, SUMMER, S2)
    assert len(emulator.requests_of("computePixels")) == 1
    for sp, got in zip(places, many, strict=True):
        one = prov.fetch(sp, SUMMER, S2)
        assert np.array_equal(got.data, one.data) and same_meta(got.meta, one.meta)
        assert got.meta["batched"]["group_size"] == 4
    assert "roi_window_geo" in many[0].meta


def test_over_48mb_place_is_split_and_small_ones_batched(emulator: EEEmulator) -> None:
    big = PointBuffer(lon=8.01, lat=47.005, buffer_m=10_500)  # 2100 x 2100 px, over 48 MB
    places = [*clustered(16, seed=1), big, *clustered(16, seed=2)]
    many = provider(emulator).fetch_many(places, SUMMER, S2)
    reqs = emulator.requests_of("computePixels")
    assert all(r["status"] == 200 for r in reqs)
    assert all(r["grid"]["width"] * r["grid"]["height"] * 4 * 4 <= 50331648 for r in reqs)
    assert "batched" not in many[16].meta and many[16].meta["pixel_requests"] >= 2
    assert many[16].data.shape == (3, 2100, 2100)
    assert len(reqs) <= many[16].meta["pixel_requests"] + 32 * 0.25
    for sp, got in zip(places, many, strict=True):
        assert np.array_equal(got.data, expected(sp, 10, RGB))


def test_lower_request_limit_makes_smaller_groups(emulator: EEEmulator) -> None:
    # a 4 x 4 block of touching 32 px places; 64 x 64 px x 4 bands x 4 bytes per request
    places = [
        on_lattice(900_000 + 320 * c, 5_900_000 - 320 * r) for r in range(4) for c in range(4)
    ]
    prov = provider(emulator, max_request_bytes=64 * 64 * 16)
    many = prov.fetch_many(places, SUMMER, S2)
    reqs = emulator.requests_of("computePixels")
    assert len(reqs) == 4 and all(r["grid"]["width"] * r["grid"]["height"] == 4096 for r in reqs)
    for sp, got in zip(places, many, strict=True):
        assert got.meta["batched"]["group_size"] == 4
        assert np.array_equal(got.data, expected(sp, 10, RGB))
    emulator.reset_stats()
    assert provider(emulator).fetch_many(places, SUMMER, S2)[0].meta["batched"]["group_size"] == 16
    assert len(emulator.requests_of("computePixels")) == 1


def test_empty_place_in_a_group_gets_the_clear_error(emulator: EEEmulator) -> None:
    places = [on_lattice(900_000 + 320 * c, 5_900_000) for c in range(4)]
    emulator.empty_regions.append(geo.grid_for(places[2], 10).bounds())
    many = provider(emulator).fetch_many(places, SUMMER, S2)
    assert isinstance(many[2], NoImageryError) and "No images found" in str(many[2])
    for i in (0, 1, 3):
        assert np.array_equal(many[i].data, expected(places[i], 10, RGB))
        assert many[i].meta["batched"]["group_size"] == 4
    assert api_requests(emulator) == 1


def test_failed_group_request_is_every_places_error(emulator: EEEmulator) -> None:
    places = [on_lattice(900_000 + 320 * c, 5_900_000) for c in range(8)]
    prov = provider(emulator, max_retries=0)
    emulator.error_rate, emulator.error_codes = 1.0, (500,)
    many = prov.fetch_many(places, SUMMER, S2)
    assert len(many) == 8 and all(isinstance(r, ProviderError) for r in many)
    assert all("HTTP 500" in str(r) for r in many)
    assert len(emulator.requests_of("computePixels")) == 1


def test_bad_places_and_bad_specs_are_returned_not_raised(emulator: EEEmulator) -> None:
    places = [*clustered(3), PointBuffer(lon=500.0, lat=0.0, buffer_m=10), *clustered(3, seed=9)]
    prov = provider(emulator)
    many = prov.fetch_many(places, SUMMER, S2)
    assert isinstance(many[3], SpecError)
    assert all(isinstance(r, Patch) for i, r in enumerate(many) if i != 3)
    assert prov.fetch_many([], SUMMER, S2) == []
    emulator.reset_stats()
    bad = SensorSpec(collection=S2.collection, bands=(), scale_m=10)
    out = prov.fetch_many(places, SUMMER, bad)
    assert all(isinstance(r, SpecError) for r in out) and emulator.request_log == []


def test_threads_give_the_same_patches_in_input_order(emulator: EEEmulator) -> None:
    places = clustered(48, seed=3)
    random.Random(1).shuffle(places)
    prov = provider(emulator, batch_max_group=8)
    seq = prov.fetch_many(places, SUMMER, S2)
    par = prov.fetch_many(places, SUMMER, S2, threads=4)
    for sp, a, b in zip(places, seq, par, strict=True):
        assert np.array_equal(a.data, b.data) and np.array_equal(a.data, expected(sp, 10, RGB))
        assert a.meta.get("batched") == b.meta.get("batched")
        assert a.meta.get("batched", {}).get("group_size", 1) <= 8


def test_s1_batch_relaxes_like_single_fetches(emulator: EEEmulator) -> None:
    places = [on_lattice(900_000 + 320 * c, 5_900_000) for c in range(4)]
    prov = provider(emulator)
    many = prov.fetch_many(places, SUMMER, S1)
    assert api_requests(emulator) == 1
    assert all(p.meta["s1_iw_applied"] for p in many)
    emulator.reset_stats()
    emulator.size_hook = lambda e: 0 if "instrumentMode" in json.dumps(e) else None
    many = prov.fetch_many(places, SUMMER, S1)
    assert api_requests(emulator) == 1 + 4  # the strict group request, then each alone
    for sp, got in zip(places, many, strict=True):
        one = prov.fetch(sp, SUMMER, S1)
        assert got.meta["s1_iw_relaxed_on_empty"] is True and same_meta(got.meta, one.meta)
        assert got.meta["batched"]["refetched_alone"] is True
        assert np.array_equal(got.data, one.data)


def test_time_series_batch_shares_the_size_query(emulator: EEEmulator) -> None:
    sensor = SensorSpec(collection=S2.collection, bands=("B4", "B8"), scale_m=10)
    places = [
        on_lattice(900_000 + 320 * c, 5_900_000 - 320 * r) for r in range(2) for c in range(4)
    ]
    west = 900_000 + 320 * 1.5

    def hook(e: Any) -> int | None:  # July has no image in the western half only
        if "2022-07-01" in date_range_starts(e) and all(b[2] <= west for b in bounds_of(e)):
            return 0
        return None

    emulator.size_hook = hook
    prov = provider(emulator)
    many = prov.fetch_many(places, SUMMER, sensor, n_frames=3)
    assert len(emulator.requests_of("value")) == 1
    assert len(emulator.requests_of("computePixels")) == 2  # west and east disagree on July
    for sp, got in zip(places, many, strict=True):
        one = prov.fetch(sp, SUMMER, sensor, n_frames=3)
        assert got.data.shape == (3, 2, 32, 32)
        assert np.array_equal(got.data, one.data) and same_meta(got.meta, one.meta)
        assert got.meta["batched"]["value_group_size"] == 8
        assert got.meta["batched"]["group_size"] == 4
    assert [f["empty"] for f in many[0].meta["frames"]] == [False, True, False]
    assert [f["empty"] for f in many[3].meta["frames"]] == [False, False, False]


def test_gse_batch(emulator: EEEmulator) -> None:
    places = [on_lattice(900_000 + 320 * c, 5_900_000) for c in range(3)]
    emulator.nodata_regions.append(geo.grid_for(places[1], 10).bounds())
    prov = provider(emulator)
    many = prov.fetch_many(places, TemporalSpec.year(2022), GSE)
    assert api_requests(emulator) == 1
    assert np.isnan(many[1].data).all() and many[1].meta["nodata_fraction"] == 1.0
    gse_bands = [f"A{i:02d}" for i in range(64)]
    assert np.array_equal(many[0].data, expected(places[0], 10, gse_bands))
    for sp, got in zip(places, many, strict=True):
        one = prov.fetch(sp, TemporalSpec.year(2022), GSE)
        assert np.array_equal(got.data, one.data, equal_nan=True) and same_meta(got.meta, one.meta)


def test_s1_time_series_batch_relaxes_and_reports_empty_places(emulator: EEEmulator) -> None:
    places = [on_lattice(900_000 + 320 * c, 5_900_000) for c in range(4)]
    emulator.size_hook = lambda e: 0 if "instrumentMode" in json.dumps(e) else None
    emulator.empty_regions.append(geo.grid_for(places[3], 10).bounds())
    prov = provider(emulator)
    many = prov.fetch_many(places, SUMMER, S1, n_frames=2)
    assert isinstance(many[3], ProviderError) and "No images found" in str(many[3])
    assert len(emulator.requests_of("computePixels")) == 1
    assert len(emulator.requests_of("value")) == 2  # the sizes, then place 3's diagnostics
    for sp, got in zip(places[:3], many[:3], strict=True):
        one = prov.fetch(sp, SUMMER, S1, n_frames=2)
        assert got.data.shape == (2, 2, 32, 32) and np.array_equal(got.data, one.data)
        assert got.meta["s1_iw_relaxed_on_empty"] is True and same_meta(got.meta, one.meta)
        assert got.meta["batched"]["group_size"] == 3
