"""tessera: the tile folder (resolution, registries, refusals), the grid, pooling, years and
batched == one at a time, on seeded tile folders in the published layout
(rs_embed_ray.testing.checkpoints_tessera). Values against readers we did not write are in
tests/oracle/test_oracle_tessera.py; the end-to-end exports in tests/ee/test_export_tessera.py."""

from __future__ import annotations

import numpy as np
import pytest

from rs_embed_ray.errors import ModelError, WeightsError
from rs_embed_ray.models import tessera as tm
from rs_embed_ray.specs import BBox, OutputSpec, PointBuffer, TemporalSpec
from rs_embed_ray.testing.checkpoints_tessera import tile_arrays, tile_georef, write_tessera_tiles

pytest.importorskip("rasterio")

TILES = [(15.05, 44.95), (15.05, 45.05), (15.15, 45.05)]  # (15.15, 44.95) is open water
CORNER = PointBuffer(15.0995, 45.0004, 250.0)  # on the corner of the four cells
INSIDE = PointBuffer(15.03, 45.02, 300.0)


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv(tm.CACHE_ENV, raising=False)


@pytest.fixture(scope="module")
def root(module_scratch):
    return write_tessera_tiles(module_scratch("tess"), TILES, years=(2021, 2022), seed=3)


@pytest.fixture(scope="module")
def model(root):
    from rs_embed_ray.models.registry import load_embedder

    return load_embedder("tessera", weights=str(root))


def test_catalog_entry():
    from rs_embed_ray.models.registry import embedder_class, get_info

    info = get_info("tessera")
    assert info.status == "available" and info.kind == "precomputed" and info.sensor is None
    assert info.dim_pooled == info.dim_grid == 128
    assert embedder_class("tessera") is tm.Tessera


def test_tiles_for_bounds_and_grids():
    assert tm.tiles_for_bounds((15.02, 45.01, 15.08, 45.09)) == [(15.05, 45.05)]
    assert tm.tiles_for_bounds((15.0, 45.0, 15.1, 45.1)) == [(15.05, 45.05)]  # edges: no more
    assert tm.tiles_for_bounds((15.09, 44.99, 15.11, 45.01)) == [
        (15.05, 44.95), (15.05, 45.05), (15.15, 44.95), (15.15, 45.05)
    ]  # fmt: skip
    g = tm.output_grid(PointBuffer(15.0995, 45.0004, 255.0), "provider")
    c = tm.output_grid(PointBuffer(15.0995, 45.0004, 255.0), "common_grid")
    assert (g.height, g.width) == (51, 51) and (c.height, c.width) == (52, 52)
    box = BBox(15.094, 44.993, 15.107, 45.006)
    assert tm.output_grid(box, "provider") == tm.output_grid(box, "common_grid")


def test_grid_values_are_tile_pixels(model, root):
    """Inside one tile every output pixel is the dequantised tile pixel under its centre."""
    from pyproj import Transformer

    e = model.embed_one(INSIDE, OutputSpec.grid(), 2021)
    assert e.data.shape == (128, 60, 60) and e.meta["coverage"] == 1.0
    assert e.meta["output_crs"] == "EPSG:3857" and e.meta["tile_crs"] == ["EPSG:32633"]
    epsg, aff, h, w = tile_georef(15.05, 45.05, 50.0)
    q, s = tile_arrays(15.05, 45.05, 2021, h, w, seed=3, scales_3d=False)
    a, _, c, _, ee, f = e.meta["transform"]
    tf = Transformer.from_crs("EPSG:3857", f"EPSG:{epsg}", always_xy=True)
    for r, col in [(0, 0), (7, 41), (59, 59)]:
        x, y = tf.transform(c + (col + 0.5) * a, f + (r + 0.5) * ee)
        tr, tc = int((aff[5] - y) // 50.0), int((x - aff[2]) // 50.0)
        np.testing.assert_array_equal(e.data[:, r, col], q[tr, tc].astype(np.float32) * s[tr, tc])


def test_pooling_open_water_and_mask_uncovered(model, root):
    g = model.embed_one(CORNER, OutputSpec.grid(), 2021)
    assert 0.6 < g.meta["coverage"] < 1.0 and len(g.meta["tiles"]) == 3  # 4th: open water
    covered = np.any(g.data != 0, axis=0)
    mean = model.embed_one(CORNER, OutputSpec.pooled("mean"), 2021)
    mx = model.embed_one(CORNER, OutputSpec.pooled("max"), 2021)
    np.testing.assert_allclose(mean.data, g.data.mean(axis=(1, 2)), atol=1e-5)  # zeros count
    np.testing.assert_array_equal(mx.data, g.data.max(axis=(1, 2)))
    masked = tm.Tessera(weights=str(root), model_config={"mask_uncovered": True})
    mg = masked.embed_one(CORNER, OutputSpec.grid(), 2021)
    assert np.isnan(mg.data[:, ~covered]).all()
    mm = masked.embed_one(CORNER, OutputSpec.pooled("mean"), 2021)
    want = g.data[:, covered].mean(axis=1, dtype=np.float64)
    np.testing.assert_allclose(mm.data, want, rtol=1e-5)
    assert mm.meta["pooling"] == "nanmean"
    sea = PointBuffer(15.17, 44.93, 200.0)  # inside the open-water cell only
    with pytest.raises(ModelError, match="no tile of the product"):
        model.embed_one(sea, OutputSpec.pooled(), 2021)


def test_years_and_batch_equals_single(model):
    a = model.embed_one(INSIDE, OutputSpec.pooled(), 2021).data
    b = model.embed_one(INSIDE, OutputSpec.pooled(), 2022).data
    assert not np.allclose(a, b)  # another year, other tiles
    places = [INSIDE, CORNER, PointBuffer(15.12, 45.07, 150.0)]
    for output in (OutputSpec.pooled(), OutputSpec.grid()):
        batched = model.embed_batch(
            [np.zeros(0)] * 3,
            output=output,
            spatials=places,
            temporal=TemporalSpec.range("2022-03-01", "2022-09-01"),
            fetch_metas=[{}] * 3,
        )
        for p, e in zip(places, batched, strict=True):
            one = model.embed_one(p, output, 2022)
            np.testing.assert_array_equal(e.data, one.data)
            assert e.meta["year"] == 2022
    (none,) = model.embed_batch(
        [np.zeros(0)], output=OutputSpec.pooled(), spatials=[INSIDE], temporal=None,
        fetch_metas=[{}],
    )  # fmt: skip
    np.testing.assert_array_equal(none.data, a)  # no window: 2021


def test_scales_3d_and_no_registry(tmp_path):
    root = write_tessera_tiles(
        tmp_path / "t", [(15.05, 45.05)], seed=1, scales_3d=True, registries=()
    )
    m = tm.Tessera(weights=str(root))
    assert m.weights_record["registry"] is None
    e = m.embed_one(INSIDE, OutputSpec.pooled(), 2021)
    assert e.data.shape == (128,) and np.isfinite(e.data).all()
    # no registry: a needed cell that is not on disk cannot be told from open water
    with pytest.raises(
        ModelError, match=r"(?s)grid_15\.15_45\.05.*no registry.*geotessera download"
    ):
        m.embed_one(PointBuffer(15.0995, 45.05, 250.0), OutputSpec.pooled(), 2021)


def test_listed_tile_missing_on_disk_refused(tmp_path):
    root = write_tessera_tiles(tmp_path / "t", TILES, seed=1, registries=("manifest",))
    (root / tm.EMB_DIR / "2021" / "grid_15.05_45.05" / "grid_15.05_45.05_scales.npy").unlink()
    m = tm.Tessera(weights=str(root))
    assert m.weights_record["registry"].endswith("manifest.parquet")
    with pytest.raises(ModelError, match=r"grid_15\.05_45\.05 for 2021 are listed in the registry"):
        m.embed_one(INSIDE, OutputSpec.pooled(), 2021)


def test_folder_resolution_order(tmp_path, root, monkeypatch):
    other = write_tessera_tiles(tmp_path / "o", [(15.05, 45.05)], seed=9, registries=())
    assert tm.resolve_tile_root(str(root), {"cache_dir": str(other)}).source == "explicit"
    r = tm.resolve_tile_root(None, {"cache_dir": str(other / tm.EMB_DIR)})
    assert (r.path, r.source) == (other.resolve(), "model_config.cache_dir")
    monkeypatch.setenv(tm.CACHE_ENV, str(root))
    assert tm.resolve_tile_root(None, {"cache_dir": str(other)}).path == other.resolve()
    assert tm.resolve_tile_root(None, None).source == f"env:{tm.CACHE_ENV}"
    monkeypatch.delenv(tm.CACHE_ENV)
    with pytest.raises(WeightsError, match="no tile folder given"):
        tm.resolve_tile_root(None, None)
    with pytest.raises(WeightsError, match="not a GeoTessera tile folder"):
        tm.resolve_tile_root(str(tmp_path), None)
    with pytest.raises(ModelError, match="no weights to initialise at random"):
        tm.resolve_tile_root("random", None)


def test_request_checks_at_plan_time(tmp_path, root):
    from rs_embed_ray.api import plan_export

    kw = dict(spatials=[INSIDE], out_dir=str(tmp_path / "o"), weights={"tessera": str(root)})
    plan = plan_export(models=["tessera"], backend="gee", temporal=TemporalSpec.year(2022), **kw)
    assert plan.groups == [] and plan.models[0].sensor is None
    with pytest.raises(ModelError, match=r"no tiles for 2019 \(years present: \['2021', '2022'\]"):
        plan_export(models=["tessera"], temporal=TemporalSpec.year(2019), **kw)
    with pytest.raises(ModelError, match="unknown model_config"):
        plan_export(models=["tessera"], temporal=None, model_configs={"tessera": {"size": 3}}, **kw)
    with pytest.raises(ModelError, match="grid='utm'"):
        plan_export(
            models=["tessera"], temporal=None, model_configs={"tessera": {"grid": "utm"}}, **kw
        )


def test_roi_across_utm_zones(tmp_path, caplog):
    """Tiles of zones 33 and 34 (the 18 deg E meridian) each placed through their own CRS;
    the seam is logged, the grid is fully covered."""
    root = write_tessera_tiles(tmp_path / "z", [(17.95, 45.05), (18.05, 45.05)], seed=2)
    m = tm.Tessera(weights=str(root))
    with caplog.at_level("WARNING", logger="rs_embed_ray.models.tessera"):
        e = m.embed_one(PointBuffer(18.0, 45.05, 300.0), OutputSpec.grid(), 2021)
    assert e.meta["tile_crs"] == ["EPSG:32633", "EPSG:32634"] and e.meta["coverage"] == 1.0
    assert "spans UTM zones" in caplog.text
    west, east = e.data[:, :, :25], e.data[:, :, -25:]
    assert not np.array_equal(west[:, :, :1], east[:, :, -1:])


def test_rs_embed_registry_cache_layout(tmp_path):
    """rs-embed 0.3.1 runs in the tile folder with RS_EMBED_TESSERA_CACHE=<tiles>/registry
    (geotessera 0.11's cache: registry/v1.1-cam/manifest.parquet): that folder is accepted and
    its manifest decides what is open water."""
    root = write_tessera_tiles(tmp_path / "t", TILES, seed=1, registries=("manifest",))
    cache = root / "registry" / "v1.1-cam"
    cache.mkdir(parents=True)
    (root / "manifest.parquet").rename(cache / "manifest.parquet")
    r = tm.resolve_tile_root(None, {"cache_dir": str(root / "registry")})
    assert r.path == root.resolve()
    m = tm.Tessera(model_config={"cache_dir": str(root / "registry")})
    assert m.weights_record["registry"] == str(cache.resolve() / "manifest.parquet")
    e = m.embed_one(CORNER, OutputSpec.grid(), 2021)
    assert len(e.meta["tiles"]) == 3 and e.meta["coverage"] < 1.0


def test_missing_tile_refused_at_plan_time(tmp_path):
    """A needed tile missing from the folder stops the plan (before Ray), naming the tile
    and the download command; open water (not in the registry) does not."""
    from rs_embed_ray.api import plan_export

    root = write_tessera_tiles(tmp_path / "t", TILES, seed=1)
    kw = dict(out_dir=str(tmp_path / "o"), weights={"tessera": str(root)}, models=["tessera"])
    plan_export(spatials=[INSIDE, CORNER], temporal=None, **kw)  # open water is fine
    (root / tm.LANDMASK_DIR / "grid_15.15_45.05.tiff").unlink()
    with pytest.raises(ModelError, match=r"(?s)grid_15\.15_45\.05 for 2021.*geotessera download"):
        plan_export(spatials=[INSIDE, CORNER], temporal=None, **kw)
    plan_export(spatials=[INSIDE], temporal=None, **kw)  # a place that does not need it
    with pytest.raises(ModelError, match=r"grid_15\.15_45\.05"):
        plan_export(
            spatials=[INSIDE, CORNER],
            temporal=None,
            temporals=[TemporalSpec.year(2021)] * 2,
            **kw,
        )


def test_south_west_tile(tmp_path):
    """Negative lon/lat: names, registry keys and a southern UTM zone (EPSG:327zz)."""
    root = write_tessera_tiles(tmp_path / "sw", [(-47.95, -15.75)], seed=4)
    m = tm.Tessera(weights=str(root))
    e = m.embed_one(PointBuffer(-47.93, -15.77, 200.0), OutputSpec.grid(), 2021)
    assert e.meta["tiles"] == ["grid_-47.95_-15.75"] and e.meta["tile_crs"] == ["EPSG:32723"]
    assert e.meta["coverage"] == 1.0 and np.isfinite(e.data).all()
