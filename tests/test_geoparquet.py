"""format="geoparquet": one row per place with its geometry, window, statuses and pooled
vectors, streamed in row groups; read back with geopandas / pyarrow / load_export."""

from __future__ import annotations

import json
import re
import struct

import geopandas as gpd
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from shapely.geometry import Point, box

from rs_embed_ray import BBox, ModelError, OutputSpec, PointBuffer, TemporalSpec
from rs_embed_ray.api import export_batch, plan_export
from rs_embed_ray.cli import main
from rs_embed_ray.io.assemble import write_combined
from rs_embed_ray.io.geoparquet import (
    geometry_to_spatial,
    parquet_intact,
    spatial_geometry,
)
from rs_embed_ray.io.load import load_export, summarize_export
from rs_embed_ray.io.shards import write_shard
from rs_embed_ray.testing.faults import faulty_local
from tests.conftest import points, tiny_raster_source
from tests.io.writer_ctx import model_spec, writer_ctx

WINDOW = TemporalSpec.range("2022-06-01", "2022-09-01")
MODELS = ["spectral_stats", "remoteclip"]


def _places():
    """Four points and one box inside the synthetic scene; point 1 is made to fail."""
    return [*points(4), BBox(14.995, 44.996, 15.004, 45.003)]


def _kw(raster_source, tmp_path, fail=True, **kw):
    """Export keywords; place 1 fails (the fault-injecting test provider) unless not ``fail``."""
    spatials = _places()
    d = dict(
        spatials=spatials,
        temporal=WINDOW,
        models=MODELS,
        weights={"remoteclip": "random"},
        backend="local",
        source=str(raster_source),
        layout="combined",
        save_inputs=False,
        continue_on_error=True,
        names=[f"site{i}" for i in range(len(spatials))],
        show_progress=False,
        num_workers=2,
        chunk_size=4,
    )
    if fail:
        d.update(faulty_local(raster_source, fail_items=[spatials[1].center()]))
    d.update(kw)
    return d


# -- plan validation (no Ray) ----------------------------------------------------------------


def _plan_kw(tmp_path, **kw):
    d = dict(
        spatials=[PointBuffer(15.0, 45.0, 160.0)],
        temporal=WINDOW,
        models=["spectral_stats"],
        out=str(tmp_path / "g"),
        layout="combined",
        format="geoparquet",
        save_inputs=False,
        backend="local",
        source=str(tiny_raster_source(tmp_path)),
    )
    d.update(kw)
    return d


def test_plan_geoparquet_target(tmp_path):
    plan = plan_export(**_plan_kw(tmp_path, out=str(tmp_path / "g.npz")))
    assert plan.format == "geoparquet" and plan.out_path.name == "g.parquet"
    assert plan.state_dir.name == "g.rs_embed_ray"


@pytest.mark.parametrize(
    "kw, msg",
    [
        (dict(layout="per_item"), "layout='combined'"),
        (dict(output=OutputSpec.grid()), "format='netcdf'"),
        (dict(save_inputs=True), "save_inputs=False (CLI --no-save-inputs)"),
        (dict(format="parquetz"), "Supported"),
    ],
)
def test_plan_geoparquet_refuses(tmp_path, kw, msg):
    with pytest.raises(ModelError, match=re.escape(msg)):
        plan_export(**_plan_kw(tmp_path, **kw))


def test_cli_geoparquet_needs_no_save_inputs(tmp_path, raster_source):
    pts = tmp_path / "p.csv"
    pts.write_text("lon,lat,buffer_m\n15.0,45.0,160\n")
    args = ["export", "--points", str(pts), "--models", "spectral_stats", "--year", "2022"]
    args += ["--out", str(tmp_path / "g"), "--backend", "local", "--source", str(raster_source)]
    res = CliRunner().invoke(main, [*args, "--format", "geoparquet", "--layout", "combined"])
    assert res.exit_code == 2
    assert "--no-save-inputs" in res.output and "npz" in res.output
    res = CliRunner().invoke(main, [*args, "--format", "geoparquet", "--no-save-inputs"])
    assert res.exit_code == 2 and "--layout combined" in res.output


# -- geometry and writer (no Ray) ------------------------------------------------------------


def test_wkb_round_trip():
    wkb, kind, bounds = spatial_geometry({"lon": 15.5, "lat": -45.25, "buffer_m": 10})
    assert kind == "Point" and bounds == (15.5, -45.25, 15.5, -45.25)
    assert geometry_to_spatial(wkb) == {"lon": 15.5, "lat": -45.25}
    assert Point(15.5, -45.25).wkb == wkb  # byte-identical to shapely's
    b = {"minlon": 1.0, "minlat": 2.0, "maxlon": 3.0, "maxlat": 4.0}
    wkb, kind, bounds = spatial_geometry(b)
    assert kind == "Polygon" and bounds == (1.0, 2.0, 3.0, 4.0)
    assert geometry_to_spatial(wkb) == b
    from shapely import wkb as swkb

    assert swkb.loads(wkb).equals(box(1, 2, 3, 4))
    big_endian = struct.pack(">BIdd", 0, 1, 7.0, 8.0)
    assert geometry_to_spatial(big_endian) == {"lon": 7.0, "lat": 8.0}
    assert geometry_to_spatial(b"") == {}


def _fake_combined(tmp_path, n=300, dim=6, failed=(2,), save_manifest=True):
    """A geoparquet combined file from hand-made embedding shards (several row groups)."""
    shard = tmp_path / "s.npz"
    ok = {
        i: (np.arange(dim, dtype=np.float32) + i, {"weights": {"w": "x"}, "i": i})
        for i in range(n)
        if i not in failed
    }
    write_shard(shard, ok)
    src = {
        i: {"status": "ok", "shard": str(shard), "shape": [dim], "error": None}
        if i not in failed
        else {"status": "failed", "shard": "", "shape": None, "error": "boom"}
        for i in range(n)
    }
    model = model_spec("m-1", "m_1", None, describe={"dim_pooled": dim})
    year = {"mode": "year", "year": 2022, "start": None, "end": None}
    ctx = writer_ctx(
        "geoparquet", [model], save_inputs=False, save_manifest=save_manifest, temporal=year
    )
    spatials = [{"lon": 10 + i * 1e-3, "lat": 40.0, "buffer_m": 5.0} for i in range(n)]
    path = tmp_path / "f.parquet"
    man = write_combined(
        ctx,
        path,
        spatials=spatials,
        names=[f"n{i}" for i in range(n)],
        centers=[],
        patch_src={},
        embed_src={"m_1": src},
        fingerprint="fp",
    )
    return path, man


def test_writer_streams_row_groups_and_loads(tmp_path, monkeypatch):
    import rs_embed_ray.io.geoparquet as gp

    monkeypatch.setattr(gp, "rows_per_group", lambda dims: 128)
    path, man = _fake_combined(tmp_path)
    assert pq.ParquetFile(path).num_row_groups == 3  # 128 + 128 + 44 rows
    assert man["parquet_path"] == str(path) and man["n_items"] == 300
    entry = man["models"][0]
    assert entry["status"] == "partial" and entry["failed_indices"] == [2]
    assert entry["embeddings"]["parquet_column"] == "embedding"  # one model: TorchGeo's name
    assert entry["weights"] == {"w": "x"} and entry["metas"][3] == {"i": 3}
    t = pq.read_table(path)
    assert t.schema.field("embedding").type == pa.list_(pa.float32(), 6)
    assert t.column("datetime").to_pylist()[0].isoformat() == "2022-01-01T00:00:00+00:00"
    assert t.column("status_m_1").to_pylist()[:3] == ["ok", "ok", "failed"]
    assert t.column("window_start").to_pylist()[0].isoformat() == "2022-01-01"
    geo = json.loads(t.schema.metadata[b"geo"])
    assert geo["primary_column"] == "geometry"
    assert geo["columns"]["geometry"]["geometry_types"] == ["Point"]
    assert geo["columns"]["geometry"]["crs"]["id"] == {"authority": "EPSG", "code": 4326}
    assert parquet_intact(path, man)
    res = load_export(path)
    emb = res.embedding("m-1")
    assert emb.shape == (300, 6) and np.isnan(emb[2]).all()
    np.testing.assert_array_equal(emb[5], np.arange(6) + 5)
    assert res.spatials[7]["lon"] == pytest.approx(10.007)
    # the sidecar is optional: the file carries a compact manifest and its places
    (tmp_path / "f.json").unlink()
    res2 = load_export(path)
    assert res2.status == "partial" and res2.models["m-1"].status == "partial"
    assert res2.spatials[7] == {"lon": pytest.approx(10.007), "lat": 40.0}
    np.testing.assert_array_equal(res2.embedding("m-1")[5], emb[5])
    s = summarize_export(path)
    assert s["format"] == "geoparquet" and s["models"]["m-1"]["failed"] == 1


def test_truncated_file_is_not_intact(tmp_path):
    path, man = _fake_combined(tmp_path, n=20)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert not parquet_intact(path, man)


# -- end to end on Ray ------------------------------------------------------------------------


@pytest.mark.usefixtures("ray_cluster")
def test_geoparquet_matches_npz(tmp_path, raster_source):
    spatials = _places()
    res = export_batch(**_kw(raster_source, tmp_path), out=str(tmp_path / "g"), format="geoparquet")
    path = tmp_path / "g.parquet"
    assert res["parquet_path"] == str(path) and res["status"] == "partial"
    side = json.loads((tmp_path / "g.json").read_text())
    assert side["parquet_path"] == str(path) and side["n_items"] == 5
    assert [m["failed_indices"] for m in side["models"]] == [[1], [1]]
    assert side["models"][1]["weights"]["weights"] == "random-init"

    gdf = gpd.read_parquet(path)
    assert gdf.crs.to_epsg() == 4326 and len(gdf) == 5
    assert list(gdf["name"]) == [f"site{i}" for i in range(5)]
    for i, s in enumerate(spatials[:4]):
        assert gdf.geometry[i].equals(Point(s.lon, s.lat))
    assert gdf.geometry[4].equals(box(14.995, 44.996, 15.004, 45.003))
    for m in ("spectral_stats", "remoteclip"):
        assert list(gdf[f"status_{m}"]) == ["ok", "failed", "ok", "ok", "ok"]
        assert "injected fault" in gdf[f"error_{m}"][1]
        assert gdf[f"embedding_{m}"][1] is None
    assert str(gdf["window_start"][0]) == "2022-06-01" and str(gdf["window_end"][0]) == "2022-09-01"

    table = pq.read_table(path)
    assert table.schema.field("embedding_remoteclip").type == pa.list_(pa.float32(), 512)

    # each model also has a one-model view in TorchGeo's shape: geometry + embedding + datetime
    for m in ("spectral_stats", "remoteclip"):
        view = gpd.read_parquet(tmp_path / f"g.{m}.parquet")
        assert view.crs.to_epsg() == 4326 and list(view["name"]) == list(gdf["name"])
        assert {"embedding", "datetime", "geometry"} <= set(view.columns)
        assert view.geometry.equals(gdf.geometry)
        assert view["embedding"][1] is None and list(view[f"status_{m}"]) == list(
            gdf[f"status_{m}"]
        )
        for i in (0, 2, 3, 4):
            np.testing.assert_array_equal(view["embedding"][i], gdf[f"embedding_{m}"][i])

    ref = export_batch(**_kw(raster_source, tmp_path), out=str(tmp_path / "r"), format="npz")
    assert ref["status"] == "partial"
    npz = load_export(tmp_path / "r.npz")
    ok = [0, 2, 3, 4]
    for m in ("spectral_stats", "remoteclip"):
        got = np.stack(gdf[f"embedding_{m}"][ok].to_list()).astype(np.float32)
        want = np.asarray(npz.embedding(m))[ok]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=m)
        loaded = load_export(path).embedding(m)
        np.testing.assert_allclose(loaded, np.asarray(npz.embedding(m)), rtol=1e-4, atol=1e-5)

    xa = load_export(path, as_xarray=True).embedding("remoteclip")
    assert xa.dims == ("item", "dim") and xa.shape == (5, 512)
    assert list(xa["name"].values) == [f"site{i}" for i in range(5)]
    np.testing.assert_allclose(xa["lon"].values[:4], [s.lon for s in spatials[:4]])
    assert xa["lon"].values[4] == pytest.approx((14.995 + 15.004) / 2)
    assert np.isnan(xa.values[1]).all()

    info = json.loads(CliRunner().invoke(main, ["inspect", str(path)]).stdout)
    assert info["format"] == "geoparquet" and info["models"]["remoteclip"]["failed"] == 1


@pytest.mark.usefixtures("ray_cluster")
def test_geoparquet_resume_retries_failed_places(tmp_path, raster_source):
    spatials = _places()
    marker = tmp_path / "fixed"
    faults = faulty_local(
        raster_source, fail_items=[spatials[1].center()], unless_exists=str(marker)
    )
    kw = _kw(raster_source, tmp_path, **faults)
    out = str(tmp_path / "g")
    assert export_batch(**kw, out=out, format="geoparquet")["status"] == "partial"
    marker.write_text("ok")
    res = export_batch(**kw, out=out, format="geoparquet", resume=True)
    assert res["status"] == "ok"
    gdf = gpd.read_parquet(tmp_path / "g.parquet")
    assert list(gdf["status_remoteclip"]) == ["ok"] * 5
    assert np.stack(gdf["embedding_remoteclip"].to_list()).shape == (5, 512)


@pytest.mark.usefixtures("ray_cluster")
def test_geoparquet_complete_file_short_circuits_resume(tmp_path, raster_source):
    kw = _kw(raster_source, tmp_path, fail=False, continue_on_error=False)
    out = str(tmp_path / "g")
    assert export_batch(**kw, out=out, format="geoparquet")["status"] == "ok"
    res = export_batch(**kw, out=out, format="geoparquet", resume=True)
    assert res.get("resume_skipped") is True
