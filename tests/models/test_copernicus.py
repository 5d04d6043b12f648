"""copernicus (Copernicus-Embed precomputed product): window maths, values and orientation,
pooling and NaN handling, the 2021-only year, LFS pointers, where the file is found, the
manifest record, and end-to-end exports on the real Ray cluster with no Earth Engine.

Product files are written by ``testing.checkpoints.write_copernicus_product`` in the
published layout (768 float32 bands, EPSG:4326, ModelPixelScale/ModelTiepoint on the 0.25
deg global grid) but covering a 20 x 30 cell region, or the whole grid as a sparse file.
Expected values come from ``copernicus_cell_values`` (a formula of the global row/col), not
from reading the file back, so orientation and indexing are checked independently.
"""

from __future__ import annotations

import hashlib
import json
import math
import time

import numpy as np
import pytest

from rs_embed_ray.errors import ModelError, WeightsError
from rs_embed_ray.models import copernicus as cop
from rs_embed_ray.models.copernicus import Georef, bbox_window, spatial_bbox_4326
from rs_embed_ray.specs import BBox, OutputSpec, PointBuffer, SensorSpec, TemporalSpec
from rs_embed_ray.testing.checkpoints import (
    copernicus_cell_values,
    write_copernicus_product,
    write_hf_cache_entry,
)
from tests.conftest import tiny_raster_source

pytest.importorskip("rasterio")

Y2021 = TemporalSpec.year(2021)
# default region of write_copernicus_product: global rows 176..195, cols 776..805
# -> lon 14.0..21.5, lat 41.125..46.125
GEO = Georef(left=14.0, top=46.125, xres=0.25, yres=0.25, height=20, width=30)
ROI = BBox(15.1, 43.1, 15.9, 43.9)  # global rows 184..188, cols 780..783 (outward)
ROI_ROWS, ROI_COLS = range(184, 189), range(780, 784)


@pytest.fixture(autouse=True)
def _no_cop_dir(monkeypatch):
    monkeypatch.delenv(cop.COP_DIR_ENV, raising=False)


@pytest.fixture(scope="module")
def product(module_scratch):
    return write_copernicus_product(
        module_scratch("cop"), nan_cells=((185, 781),), empty_cells=((186, 782),)
    )


@pytest.fixture(scope="module")
def model(product):
    from rs_embed_ray.models.registry import load_embedder

    m = load_embedder("copernicus_embed", weights=str(product))
    yield m
    m.close()


def _embed(m, spatials, output, temporal=Y2021):
    return m.embed_batch(
        [np.zeros((0,), np.float32)] * len(spatials),
        output=output,
        spatials=spatials,
        temporal=temporal,
        fetch_metas=[{}] * len(spatials),
    )


def _expected(rows, cols, nan=((185, 781),), empty=((186, 782),)):
    x = copernicus_cell_values(list(rows), list(cols))
    for cells, v in ((nan, np.nan), (empty, 0.0)):
        for r, c in cells:
            if r in rows and c in cols:
                x[:, list(rows).index(r), list(cols).index(c)] = v
    return x


# ---- catalog -----------------------------------------------------------------------------


def test_catalog_entry():
    from rs_embed_ray.models.base import Embedder
    from rs_embed_ray.models.catalog import CATALOG, IMPLEMENTATIONS
    from rs_embed_ray.models.registry import embedder_class, get_info

    info = get_info("copernicus_embed")
    assert info.model_id == "copernicus" and info.status == "available"
    assert info.kind == "precomputed" and info.sensor is None and info.dim_pooled == 768
    has_check = embedder_class("copernicus").check_request.__func__ is not (
        Embedder.check_request.__func__
    )
    assert "copernicus" in IMPLEMENTATIONS and has_check  # a plan-time check of its own
    assert embedder_class("copernicus").info is CATALOG["copernicus"]


# ---- window maths ------------------------------------------------------------------------


def test_bbox_window_rounds_outward_and_not_on_boundaries():
    exact = (14.5, 43.125, 15.5, 44.125)  # edges on cell boundaries: cols 2..6, rows 8..12
    assert bbox_window(exact, GEO) == ((8, 12, 2, 6), False)
    inner = (14.51, 43.135, 15.49, 44.115)  # inside those cells: same window
    assert bbox_window(inner, GEO) == ((8, 12, 2, 6), False)
    outer = (14.49, 43.115, 15.51, 44.135)  # just past them: one more cell on every side
    assert bbox_window(outer, GEO) == ((7, 13, 1, 7), False)
    assert GEO.window_bounds((8, 12, 2, 6)) == pytest.approx(exact)


def test_point_buffer_in_ground_metres():
    pb = PointBuffer(lon=15.0, lat=60.0, buffer_m=20_000.0)
    minlon, minlat, maxlon, maxlat = spatial_bbox_4326(pb)
    dlat = 20_000.0 / 111_320.0
    assert (maxlat - minlat) / 2 == pytest.approx(dlat)
    # cos(60 deg) = 0.5: twice as many degrees of longitude for the same ground metres
    assert (maxlon - minlon) / 2 == pytest.approx(dlat / math.cos(math.radians(60.0)))
    assert (minlon + maxlon) / 2 == pytest.approx(15.0)
    # not the EPSG:3857 square of fetched models: its half-side is 20 km in 3857 metres,
    # i.e. 20 km * cos(60 deg) = 10 km on the ground, half our latitude extent
    from rs_embed_ray import geo

    _, y0, _, y1 = geo.grid_for(pb, 10).bounds()
    lat = [math.degrees(2 * math.atan(math.exp(y / 6378137.0)) - math.pi / 2) for y in (y0, y1)]
    assert (lat[1] - lat[0]) / (maxlat - minlat) == pytest.approx(0.5, rel=1e-2)
    assert (maxlat - minlat) * 111_320.0 / 2 == pytest.approx(20_000.0)


def test_roi_smaller_than_a_cell_raises():
    with pytest.raises(ModelError, match="smaller than one product cell"):
        bbox_window((15.0, 43.0, 15.2, 43.5), GEO)  # 0.2 deg wide
    tiny = spatial_bbox_4326(PointBuffer(lon=15.0, lat=0.0, buffer_m=10_000.0))
    with pytest.raises(ModelError, match=r"buffer_m >= 1391[0-9]"):
        bbox_window(tiny, Georef(-180.0, 90.125, 0.25, 0.25, 721, 1440))
    big = spatial_bbox_4326(PointBuffer(lon=15.0, lat=0.0, buffer_m=14_000.0))
    assert bbox_window(big, Georef(-180.0, 90.125, 0.25, 0.25, 721, 1440))[0][1] > 0


def test_coverage_clip_and_outside():
    win, clipped = bbox_window((13.0, 45.0, 14.6, 47.0), GEO)  # north-west corner overhang
    assert clipped and win == (0, 5, 0, 3)
    with pytest.raises(ModelError, match="outside the product"):
        bbox_window((0.0, 0.0, 1.0, 1.0), GEO)


def test_georef_from_tags_fallback_and_refusals():
    from rasterio.crs import CRS
    from rasterio.transform import Affine

    ident = Affine.identity()
    g = cop.georef_from(ident, None, 721, 1440)
    assert (g.left, g.top, g.xres, g.yres, g.from_tags) == (-180.0, 90.125, 0.25, 0.25, False)
    with pytest.raises(ModelError, match="no georeferencing tags"):
        cop.georef_from(ident, None, 20, 30)
    tagged = cop.georef_from(Affine(0.25, 0, 14.0, 0, -0.25, 46.125), CRS.from_epsg(4326), 20, 30)
    assert tagged == GEO
    with pytest.raises(ModelError, match="not north-up"):
        cop.georef_from(Affine(0.25, 0, 14.0, 0, 0.25, 41.125), CRS.from_epsg(4326), 20, 30)
    with pytest.raises(ModelError, match="expected EPSG:4326"):
        cop.georef_from(Affine(10, 0, 0, 0, -10, 0), CRS.from_epsg(3857), 20, 30)


# ---- values, orientation, pooling --------------------------------------------------------


def test_grid_values_are_the_files_cells_north_up(model):
    (g,) = _embed(model, [ROI], OutputSpec.grid())
    assert g.data.shape == (768, 5, 4) and g.data.dtype == np.float32
    want = _expected(ROI_ROWS, ROI_COLS)
    np.testing.assert_array_equal(g.data, want)  # NaN in the same place, else exact
    # row 0 of the grid is the northern edge (global row 184 = lat 44.125..43.875)
    np.testing.assert_array_equal(g.data[:, 0, 0], copernicus_cell_values([184], [780])[:, 0, 0])
    m = g.meta
    assert m["window"] == {"row0": 8, "row1": 13, "col0": 4, "col1": 8}
    assert m["output_crs"] == "EPSG:4326" and m["product_resolution_deg"] == [0.25, 0.25]
    assert m["bbox_4326"] == [15.1, 43.1, 15.9, 43.9]
    assert m["window_bounds_4326"] == pytest.approx([15.0, 42.875, 16.0, 44.125])
    assert m["transform"] == pytest.approx([0.25, 0, 15.0, 0, -0.25, 44.125])
    assert m["grid_hw"] == [5, 4] and m["year"] == 2021 and m["georef"] == "tags"
    assert m["nodata_fraction"] == pytest.approx(1 / 20)
    assert m["empty_fraction"] == pytest.approx(1 / 20)


def test_pooled_nanmean_nanmax(model):
    want = _expected(ROI_ROWS, ROI_COLS).reshape(768, -1).astype(np.float64)
    (mean,) = _embed(model, [ROI], OutputSpec.pooled())
    (mx,) = _embed(model, [ROI], OutputSpec.pooled("max"))
    assert mean.data.shape == (768,) and mean.data.dtype == np.float32
    np.testing.assert_allclose(mean.data, np.nanmean(want, axis=1), rtol=1e-6)
    np.testing.assert_array_equal(mx.data, np.nanmax(want, axis=1).astype(np.float32))
    assert np.isfinite(mean.data).all()
    assert mean.meta["pooling"] == "nanmean" and mx.meta["pooling"] == "nanmax"


def test_mask_empty_and_all_nodata(product):
    m = cop.CopernicusEmbed(weights=str(product), model_config={"mask_empty": True})
    try:
        (g,) = _embed(m, [ROI], OutputSpec.grid())
        assert np.isnan(g.data[:, 2, 2]).all()  # the empty cell (186, 782) -> NaN
        assert g.meta["nodata_fraction"] == pytest.approx(2 / 20)
        (p,) = _embed(m, [ROI], OutputSpec.pooled())
        keep = _expected(ROI_ROWS, ROI_COLS, empty=()).reshape(768, -1)
        keep = np.delete(keep, [1 * 4 + 1, 2 * 4 + 2], axis=1).astype(np.float64)
        np.testing.assert_allclose(p.data, keep.mean(axis=1), rtol=1e-6)
        one_empty = BBox(15.5, 43.375, 15.75, 43.625)  # exactly cell (186, 782)
        with pytest.raises(ModelError, match="no valid cell"):
            _embed(m, [one_empty], OutputSpec.pooled())
    finally:
        m.close()


def test_all_nan_roi_raises_and_batch_equals_single(model):
    one_nan = BBox(15.25, 43.625, 15.5, 43.875)  # exactly cell (185, 781)
    with pytest.raises(ModelError, match="no valid cell"):
        _embed(model, [one_nan], OutputSpec.pooled())
    (g,) = _embed(model, [one_nan], OutputSpec.grid())  # a grid keeps the NaN
    assert g.data.shape == (768, 1, 1) and np.isnan(g.data).all()
    pb = PointBuffer(lon=17.0, lat=44.0, buffer_m=30_000.0)
    both = _embed(model, [ROI, pb], OutputSpec.pooled())
    for s, e in zip([ROI, pb], both, strict=True):
        np.testing.assert_array_equal(e.data, _embed(model, [s], OutputSpec.pooled())[0].data)
    assert both[1].meta["buffer_convention"].startswith("ground metres")


def test_full_extent_file_with_and_without_tags(tmp_path):
    """The whole 721 x 1440 grid (sparse): the tags and the spec's fallback (left=-180,
    top=90.125) put the same cells at the same place; unwritten cells read as 0."""
    for georef in (True, False):
        p = write_copernicus_product(tmp_path / str(georef), full_extent=True, georef=georef)
        m = cop.CopernicusEmbed(weights=str(p))
        try:
            assert (m.geo.height, m.geo.width) == (721, 1440)
            assert m.geo.from_tags is georef
            (g,) = _embed(m, [ROI], OutputSpec.grid())
            assert g.meta["window"] == {"row0": 184, "row1": 189, "col0": 780, "col1": 784}
            np.testing.assert_array_equal(g.data, copernicus_cell_values(ROI_ROWS, ROI_COLS))
            (sea,) = _embed(m, [BBox(-30.0, 0.0, -29.0, 1.0)], OutputSpec.grid())
            assert (sea.data == 0).all() and sea.meta["empty_fraction"] == 1.0
        finally:
            m.close()


def test_wrong_band_count_refused(tmp_path):
    p = write_copernicus_product(tmp_path, bands=4)
    with pytest.raises(ModelError, match="has 4 bands, expected 768"):
        cop.CopernicusEmbed(weights=str(p))


# ---- year --------------------------------------------------------------------------------


def test_year_checks():
    ok = [None, Y2021, TemporalSpec.range("2021-03-01", "2022-02-01")]
    for t in ok:
        assert cop.check_year(t) == 2021
    for t, what in (
        (TemporalSpec.year(2022), r"year\(2022\)"),
        (TemporalSpec.range("2020-12-01", "2021-06-01"), "a range starting in 2020"),
    ):
        with pytest.raises(ModelError, match=what):
            cop.check_year(t)


def test_year_refused_at_plan_time(tmp_path, product, model):
    from rs_embed_ray.api import plan_export

    kw = dict(
        spatials=[ROI, ROI],
        models=["copernicus"],
        out_dir=str(tmp_path / "o"),
        weights={"copernicus": str(product)},
    )
    with pytest.raises(ModelError, match="single-year product"):
        plan_export(temporal=TemporalSpec.year(2020), **kw)
    with pytest.raises(ModelError, match="single-year product"):
        plan_export(temporal=Y2021, temporals=[None, TemporalSpec.year(2023)], **kw)
    assert plan_export(temporal=Y2021, **kw).models[0].fetch_key is None
    assert not (tmp_path / "o").exists()  # nothing was written
    with pytest.raises(ModelError, match="single-year product"):  # and again at embed time
        _embed(model, [ROI], OutputSpec.pooled(), temporal=TemporalSpec.year(2019))


# ---- file resolution, LFS pointers, random, manifest record -------------------------------


def test_lfs_pointer_detected_by_content(tmp_path, monkeypatch):
    from rs_embed_ray.api import plan_export

    ptr = tmp_path / "clone" / "embed_map_310k.tif"
    ptr.parent.mkdir()
    ptr.write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:" + "0" * 64 + "\nsize 3189473280\n"
    )
    assert cop.is_lfs_pointer(ptr)
    with pytest.raises(WeightsError, match="git-LFS pointer") as exc:
        plan_export(
            spatials=[ROI],
            temporal=Y2021,
            models=["copernicus"],
            out_dir=str(tmp_path / "o"),
            weights={"copernicus": str(ptr.parent)},
        )
    assert "git lfs pull" in str(exc.value) and "--repo-type dataset" in str(exc.value)
    monkeypatch.setenv(cop.COP_DIR_ENV, str(ptr.parent))  # found by a search, same answer
    with pytest.raises(WeightsError, match="git-LFS pointer"):
        cop.CopernicusEmbed()


def test_random_refused(tmp_path, product):
    from rs_embed_ray.api import plan_export

    with pytest.raises(ModelError, match="no weights to initialise at random"):
        plan_export(
            spatials=[ROI],
            temporal=Y2021,
            models=["copernicus"],
            out_dir=str(tmp_path / "o"),
            weights={"copernicus": "random"},
        )
    with pytest.raises(ModelError, match="no weights to initialise at random"):
        cop.CopernicusEmbed(weights="random")


def test_resolution_order(tmp_path, monkeypatch):
    """explicit > model_config data_dir > RS_EMBED_COP_DIR > RS_EMBED_RAY_WEIGHTS_DIR > HF
    cache (dataset repo, pinned revision) > download (offline here: fails fast)."""
    files = {
        name: write_copernicus_product(tmp_path / name, region=(176 + i, 776, 20, 30))
        for i, name in enumerate(("explicit", "data_dir", "cop_dir", "weights_dir", "hf"))
    }
    wdir = tmp_path / "wdir"
    (wdir / "copernicus").mkdir(parents=True)
    (wdir / "copernicus" / cop.HF_FILENAME).symlink_to(files["weights_dir"])
    cache = tmp_path / "hf_cache"
    write_hf_cache_entry(
        cache,
        cop.HF_REPO,
        cop.HF_FILENAME,
        files["hf"],
        commit=cop.HF_REVISION,
        repo_type="dataset",
    )
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("RS_EMBED_RAY_WEIGHTS_DIR", str(wdir))
    monkeypatch.setenv(cop.COP_DIR_ENV, str(files["cop_dir"].parent))
    cfg = {"data_dir": str(files["data_dir"].parent)}

    got = cop.resolve_product(str(files["explicit"]), cfg)
    assert (got.path, got.source) == (files["explicit"], "explicit")
    got = cop.resolve_product(None, cfg)
    assert (got.path, got.source) == (files["data_dir"], "model_config.data_dir")
    got = cop.resolve_product(None, {})
    assert (got.path, got.source) == (files["cop_dir"], f"env:{cop.COP_DIR_ENV}")
    monkeypatch.delenv(cop.COP_DIR_ENV)
    got = cop.resolve_product(None, {})
    assert got.source == "env_dir" and got.path.resolve() == files["weights_dir"]
    monkeypatch.delenv("RS_EMBED_RAY_WEIGHTS_DIR")
    got = cop.resolve_product(None, {})
    assert got.source == "hf_cache" and got.path.resolve() == files["hf"]
    assert f"datasets--torchgeo--copernicus_embed/snapshots/{cop.HF_REVISION}" in str(got.path)

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    t0 = time.perf_counter()
    with pytest.raises(WeightsError) as exc:
        cop.resolve_product(None, {})
    assert time.perf_counter() - t0 < 5.0
    msg = str(exc.value)
    for part in ("model_config.data_dir: not set", "RS_EMBED_COP_DIR: not set", "hf_cache:"):
        assert part in msg
    assert "HF_HUB_OFFLINE" in msg and "--repo-type dataset" in msg
    assert "random" not in msg
    # an explicit folder holding another embed_map_*.tif name is searched by glob
    other = write_copernicus_product(tmp_path / "glob", filename="embed_map_220k.tif")
    assert cop.resolve_product(str(other.parent)).path == other
    (tmp_path / "no_product").mkdir()
    with pytest.raises(WeightsError, match="has no embed_map"):
        cop.resolve_product(str(tmp_path / "no_product"))


def test_manifest_record(model, product):
    sha = hashlib.sha256(product.read_bytes()).hexdigest()
    rec = model.weights_record
    assert rec["weights"] == str(product) and rec["sha256"] == sha
    assert rec["source"] == "explicit" and rec["product"] == cop.PRODUCT
    (e,) = _embed(model, [ROI], OutputSpec.pooled())
    assert e.meta["weights"] == rec and e.meta["product"].endswith("@" + cop.HF_REVISION)


def test_plan_fit_no_fetch_no_sensor_any_backend(tmp_path, product, monkeypatch):
    from rs_embed_ray.api import plan_export, preflight
    from rs_embed_ray.providers import gee

    def no_ee(*a, **k):  # guard: preflight must not start Earth Engine for this plan
        raise AssertionError("Earth Engine was started for a copernicus-only run")

    monkeypatch.setattr(gee.GEEProvider, "__init__", no_ee)
    kw = dict(
        spatials=[ROI],
        temporal=Y2021,
        out_dir=str(tmp_path / "o"),
        weights={"copernicus": str(product)},
    )
    for backend in ("gee", "auto", "local"):
        plan = plan_export(models=["copernicus"], backend=backend, **kw)
        assert plan.groups == [] and plan.models[0].sensor is None
        preflight(plan)
    # a run-wide sensor is for the fetching models only
    s2 = SensorSpec(collection="COPERNICUS/S2_SR_HARMONIZED", bands=("B2", "B3", "B4", "B8"))
    plan = plan_export(
        models=["copernicus", "spectral_stats"],
        backend="local",
        source=str(tiny_raster_source(tmp_path)),  # a local source must hold a raster
        sensor=s2,
        **kw,
    )
    assert plan.model("copernicus").sensor is None and len(plan.groups) == 1
    with pytest.raises(ModelError, match="needs source"):  # a fetching model still needs it
        plan_export(models=["copernicus", "spectral_stats"], backend="local", **kw)
    with pytest.raises(ModelError, match="takes no sensor"):
        plan_export(models=["copernicus"], per_model_sensors={"copernicus": s2}, **kw)


# ---- end to end on the real Ray cluster --------------------------------------------------


@pytest.mark.ray
def test_export_per_item_grid_npz_no_earth_engine(ray_cluster, tmp_path, monkeypatch):
    from rs_embed_ray import export_batch, load_export
    from rs_embed_ray.providers import gee

    def no_ee(*a, **k):
        raise AssertionError("Earth Engine was started for a copernicus-only run")

    monkeypatch.setattr(gee.GEEProvider, "__init__", no_ee)
    # a NaN cell travels through the pipeline (precomputed grids keep NaN)
    product = write_copernicus_product(
        tmp_path / "prod", nan_cells=((185, 781),), empty_cells=((186, 782),)
    )
    spatials = [ROI, BBox(18.0, 42.125, 18.5, 42.625), PointBuffer(16.0, 45.0, 20e3)]
    res = export_batch(
        spatials=spatials,
        temporal=Y2021,
        models=["copernicus"],
        out=str(tmp_path / "pi"),
        layout="per_item",
        format="npz",
        backend="gee",
        output=OutputSpec.grid(),
        weights={"copernicus": str(product)},
        show_progress=False,
        chunk_size=2,
    )
    assert [r["status"] for r in res] == ["ok"] * 3
    sha = hashlib.sha256(product.read_bytes()).hexdigest()
    man = json.loads((tmp_path / "pi" / "p00000.json").read_text())
    (entry,) = man["models"]
    assert entry["weights"]["sha256"] == sha and entry["weights"]["weights"] == str(product)
    assert entry["input"] is None and entry["embedding"]["shape"] == [768, 5, 4]
    assert entry["meta"]["output_crs"] == "EPSG:4326"
    with np.load(tmp_path / "pi" / "p00000.npz", allow_pickle=False) as z:
        np.testing.assert_array_equal(z["embedding__copernicus"], _expected(ROI_ROWS, ROI_COLS))
    with np.load(tmp_path / "pi" / "p00001.npz", allow_pickle=False) as z:
        # lon 18..18.5 -> cols 792..793, lat 42.125..42.625 -> rows 190..191: exact cells
        want = copernicus_cell_values(range(190, 192), range(792, 794))
        np.testing.assert_array_equal(z["embedding__copernicus"], want)
    loaded = load_export(str(tmp_path / "pi"))
    assert "copernicus" in loaded.models


@pytest.mark.ray
@pytest.mark.parametrize("fmt", ["npz", "netcdf"])
def test_export_combined(ray_cluster, tmp_path, fmt):
    import xarray as xr

    from rs_embed_ray import export_batch

    product = write_copernicus_product(tmp_path / "prod")
    # equal-size windows (2 x 3 cells each), so grids stack into one [N, 768, 2, 3] array
    spatials = [BBox(14.0 + k, 42.125, 14.75 + k, 42.625) for k in range(3)]
    output = OutputSpec.pooled() if fmt == "npz" else OutputSpec.grid()
    res = export_batch(
        spatials=spatials,
        temporal=TemporalSpec.range("2021-01-01", "2022-01-01"),
        models=["copernicus"],
        out=str(tmp_path / "run"),
        layout="combined",
        format=fmt,
        backend="local",  # no source: nothing is fetched
        output=output,
        weights={"copernicus": str(product)},
        show_progress=False,
    )
    assert res["status"] == "ok" and res["n_items"] == 3
    wants = [
        copernicus_cell_values(range(190, 192), range(776 + 4 * k, 779 + 4 * k)) for k in range(3)
    ]
    if fmt == "npz":
        with np.load(tmp_path / "run.npz", allow_pickle=False) as z:
            emb = z["embeddings__copernicus"]
            assert emb.shape == (3, 768) and "inputs_bchw__copernicus" not in z.files
            for k in range(3):
                np.testing.assert_allclose(emb[k], wants[k].mean(axis=(1, 2)), rtol=1e-6)
    else:
        with xr.open_dataset(tmp_path / "run.nc") as ds:
            emb = ds["embeddings__copernicus"]
            assert emb.shape == (3, 768, 2, 3) and emb.dims[0] == "point"
            np.testing.assert_array_equal(emb.values, np.stack(wants))
