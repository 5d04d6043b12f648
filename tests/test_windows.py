"""Per-place time windows: points-file columns, the ``temporals`` keyword, fingerprints,
manifests and outputs, and the window each place's fetch really asks for."""

from __future__ import annotations

import datetime as dt
import json

import geopandas as gpd
import pandas as pd
import pytest
from click.testing import CliRunner

from rs_embed_ray import ModelError, PointBuffer, SpecError, TemporalSpec
from rs_embed_ray.api import export_batch, plan_export
from rs_embed_ray.cli import main
from rs_embed_ray.io.load import load_export
from rs_embed_ray.io.points import read_places, read_points
from tests.conftest import points, tiny_raster_source

RUN = TemporalSpec.range("2022-06-01", "2022-09-01")
JULY = TemporalSpec.range("2022-06-15", "2022-07-15")  # holds the 2022-07-01 scene only
AUGUST = TemporalSpec.range("2022-07-15", "2022-08-15")  # holds the 2022-08-01 scene only


# -- points files -------------------------------------------------------------------------------


def test_csv_windows(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text(
        "name,lon,lat,buffer_m,start,end,year\n"
        "a,15,45,100,2022-06-01,2022-07-01,\n"
        "b,15.01,45,100,,,2021\n"
        "c,15.02,45,100,,,\n"
    )
    spatials, names, temporals = read_places(f)
    assert names == ["a", "b", "c"] and len(spatials) == 3
    assert temporals == [
        TemporalSpec.range("2022-06-01", "2022-07-01"),
        TemporalSpec.year(2021),
        None,
    ]
    with pytest.raises(SpecError, match="read_places"):
        read_points(f)


def test_no_window_columns(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text("lon,lat,buffer_m\n15,45,100\n")
    assert read_places(f).temporals is None
    assert read_points(f)[1] is None


@pytest.mark.parametrize(
    "row, msg",
    [
        ("15,45,100,2022-06-01,,", "row 2: TemporalSpec.range requires start and end"),
        ("15,45,100,2022-07-01,2022-06-01,", "row 2: TemporalSpec.range requires start < end"),
        ("15,45,100,2022/06/01,2022-07-01,", "row 2: TemporalSpec.range requires ISO dates"),
        ("15,45,100,2022-06-01,2022-07-01,2022", "row 2: give either year or start,end"),
        ("15,45,100,,,2022.5", "row 2: TemporalSpec.year requires an integer year"),
        ("15,45,100,,,0", "row 2: TemporalSpec.year must be within [1, 9999]"),
    ],
)
def test_bad_window_names_the_row(tmp_path, row, msg):
    f = tmp_path / "p.csv"
    f.write_text(f"lon,lat,buffer_m,start,end,year\n15,45,100,,,\n{row}\n")
    with pytest.raises(SpecError, match=msg.replace("[", r"\[").replace("]", r"\]")):
        read_places(f)


def test_parquet_dates_and_geojson(tmp_path):
    pq_file = tmp_path / "p.parquet"
    pd.DataFrame(
        {
            "lon": [15.0, 15.01],
            "lat": [45.0, 45.0],
            "buffer_m": [100.0, 100.0],
            "start": [pd.Timestamp("2022-06-15"), pd.NaT],
            "end": [dt.date(2022, 7, 15), None],
        }
    ).to_parquet(pq_file)
    assert read_places(pq_file).temporals == [JULY, None]
    gj = tmp_path / "p.geojson"
    feats = [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [15, 45]}},
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [15.01, 45]},
            "properties": {"Year": 2020},
        },
    ]
    gj.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    assert read_places(gj, buffer_m=50).temporals == [None, TemporalSpec.year(2020)]


# -- plan ---------------------------------------------------------------------------------------


def _plan(tmp_path, **kw):
    d = dict(
        spatials=[PointBuffer(15.0, 45.0, 160.0), PointBuffer(15.01, 45.0, 160.0)],
        temporal=RUN,
        models=["spectral_stats"],
        out=str(tmp_path / "o"),
        layout="per_item",
        backend="local",
        source=str(tiny_raster_source(tmp_path)),
    )
    d.update(kw)
    return plan_export(**d)


def test_temporals_validation(tmp_path):
    with pytest.raises(ModelError, match="same length"):
        _plan(tmp_path, temporals=[JULY])
    with pytest.raises(SpecError, match=r"temporals\[1\] must be a TemporalSpec"):
        _plan(tmp_path, temporals=[JULY, "2022"])
    bad = TemporalSpec.range("2022-07-01", "2022-06-01")
    with pytest.raises(SpecError, match=r"temporals\[1\]: TemporalSpec.range requires start < end"):
        _plan(tmp_path, temporals=[None, bad])


def test_fingerprints_use_the_place_window(tmp_path):
    base = _plan(tmp_path)
    same = _plan(tmp_path, temporals=[None, RUN])  # nothing of their own: same request
    assert same.temporals is None
    assert same.run_fingerprint() == base.run_fingerprint()
    assert same.item_fingerprint(1) == base.item_fingerprint(1)
    own = _plan(tmp_path, temporals=[None, JULY])
    assert own.temporal_of(0) == RUN and own.temporal_of(1) == JULY
    assert own.item_fingerprint(0) == base.item_fingerprint(0)
    assert own.item_fingerprint(1) != base.item_fingerprint(1)
    assert own.run_fingerprint() != base.run_fingerprint()
    g = own.groups[0]
    assert own.patch_fingerprint(0, g) == base.patch_fingerprint(0, g)
    assert own.patch_fingerprint(1, g) != base.patch_fingerprint(1, g)
    m = own.models[0]
    assert own.pair_fingerprint(1, m) != base.pair_fingerprint(1, m)
    moved = _plan(tmp_path, temporals=[None, AUGUST])
    assert moved.item_fingerprint(1) != own.item_fingerprint(1)


# -- end to end -----------------------------------------------------------------------------


def _kw(raster_source, **kw):
    d = dict(
        temporal=RUN,
        backend="local",
        source=str(raster_source),
        show_progress=False,
        num_workers=2,
        chunk_size=4,
    )
    d.update(kw)
    return d


@pytest.mark.usefixtures("ray_cluster")
def test_per_item_windows_reach_the_provider(tmp_path, raster_source):
    out = tmp_path / "pi"
    res = export_batch(
        **_kw(raster_source),
        spatials=points(1) * 3,  # one place, three windows
        temporals=[JULY, AUGUST, None],
        models=["spectral_stats", "remoteclip"],
        weights={"remoteclip": "random"},
        out=str(out),
        layout="per_item",
    )
    assert [r["status"] for r in res] == ["ok"] * 3
    want = [
        (JULY, ["2022-06-15", "2022-07-15"], ["2022-07-01"]),
        (AUGUST, ["2022-07-15", "2022-08-15"], ["2022-08-01"]),
        (RUN, ["2022-06-01", "2022-09-01"], ["2022-07-01", "2022-08-01"]),
    ]
    for i, (spec, window, dates) in enumerate(want):
        man = json.loads((out / f"p{i:05d}.json").read_text())
        assert man["temporal"] == {
            "mode": "range",
            "year": None,
            "start": spec.start,
            "end": spec.end,
        }
        for entry in man["models"]:
            assert entry["fetch_meta"]["window"] == window
            assert entry["fetch_meta"]["scene_dates"] == dates
    loaded = load_export(out)
    assert [t["start"] for t in loaded.temporals] == ["2022-06-15", "2022-07-15", "2022-06-01"]
    # the August scene is the July one + 100 (DN) everywhere; the run's window takes the
    # median of both: the embeddings (mean reflectance first) see which scenes were fetched
    ss = loaded.embedding("spectral_stats")
    assert ss[1][0] - ss[0][0] == pytest.approx(0.01, abs=1e-4)
    assert ss[2][0] - ss[0][0] == pytest.approx(0.005, abs=1e-4)


@pytest.mark.usefixtures("ray_cluster")
def test_combined_windows_in_manifest_and_geoparquet(tmp_path, raster_source):
    kw = dict(
        **_kw(raster_source),
        spatials=points(1) * 3,
        temporals=[JULY, None, AUGUST],
        models=["spectral_stats"],
        layout="combined",
        save_inputs=False,
    )
    man = export_batch(**kw, out=str(tmp_path / "c"), format="npz")
    assert [t["start"] for t in man["temporals"]] == ["2022-06-15", "2022-06-01", "2022-07-15"]
    assert man["temporal"]["start"] == "2022-06-01"
    assert load_export(tmp_path / "c.npz").temporals == man["temporals"]
    export_batch(**kw, out=str(tmp_path / "g"), format="geoparquet")
    gdf = gpd.read_parquet(tmp_path / "g.parquet")
    assert [str(d) for d in gdf["window_start"]] == ["2022-06-15", "2022-06-01", "2022-07-15"]
    assert [str(d) for d in gdf["window_end"]] == ["2022-07-15", "2022-09-01", "2022-08-15"]
    # a one-model file names its vectors as TorchGeo reads them: ``embedding``, and its
    # ``datetime`` is each place's own window start
    assert [str(d)[:10] for d in gdf["datetime"]] == ["2022-06-15", "2022-06-01", "2022-07-15"]
    means = [v[0] for v in gdf["embedding"]]
    assert means[1] - means[0] == pytest.approx(0.005, abs=1e-4)
    assert means[2] - means[0] == pytest.approx(0.01, abs=1e-4)
    res = load_export(tmp_path / "g.parquet", as_xarray=True)
    assert res.temporals[0]["start"] == "2022-06-15"
    xa = res.embedding("spectral_stats")
    assert str(xa["window_start"].values[0])[:10] == "2022-06-15"


@pytest.mark.usefixtures("ray_cluster")
def test_cli_points_file_windows(tmp_path, raster_source):
    pts = points(2)
    f = tmp_path / "p.csv"
    f.write_text(
        "name,lon,lat,buffer_m,start,end\n"
        f"july,{pts[0].lon},{pts[0].lat},160,2022-06-15,2022-07-15\n"
        f"run,{pts[1].lon},{pts[1].lat},160,,\n"
    )
    args = ["export", "--points", str(f), "--models", "spectral_stats", "--start", "2022-06-01"]
    args += ["--end", "2022-09-01", "--out", str(tmp_path / "o"), "--backend", "local"]
    args += ["--source", str(raster_source), "--num-workers", "2", "--no-progress"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    july = json.loads((tmp_path / "o" / "july.json").read_text())
    run = json.loads((tmp_path / "o" / "run.json").read_text())
    assert july["temporal"]["start"] == "2022-06-15"
    assert july["models"][0]["fetch_meta"]["scene_dates"] == ["2022-07-01"]
    assert run["temporal"]["start"] == "2022-06-01"
    assert run["models"][0]["fetch_meta"]["window"] == ["2022-06-01", "2022-09-01"]
    bad = tmp_path / "bad.csv"
    bad.write_text("lon,lat,buffer_m,start,end\n15,45,160,2022-07-01,2022-06-01\n")
    res = CliRunner().invoke(main, [*args[:2], str(bad), *args[3:]])
    assert res.exit_code == 2 and "bad.csv row 1" in res.output


@pytest.mark.usefixtures("ray_cluster")
def test_gee_spatial_batching_keeps_each_place_window(tmp_path, monkeypatch):
    """Batched Earth Engine fetches (one request for nearby places) split by window."""
    from rs_embed_ray.testing.ee_emulator import EEEmulator

    for name in ("RS_EMBED_RAY_EE_URL", "EE_PROJECT", "GOOGLE_APPLICATION_CREDENTIALS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    monkeypatch.setenv("HOME", str(tmp_path))
    places = [PointBuffer(15.0 + 0.002 * (i % 4), 45.0 + 0.002 * (i // 4), 160.0) for i in range(8)]
    windows = [JULY if i % 2 else None for i in range(8)]
    with EEEmulator(retry_after_s=0) as emu:
        res = export_batch(
            spatials=places,
            temporal=RUN,
            temporals=windows,
            models=["spectral_stats"],
            backend="gee",
            provider_options={"url": emu.url},
            out=str(tmp_path / "pi"),
            layout="per_item",
            spatial_batching=True,
            show_progress=False,
            num_workers=2,
            chunk_size=8,
        )
    assert [r["status"] for r in res] == ["ok"] * 8
    assert all("batched" in r["models"][0]["fetch_meta"] for r in res)  # fetch_many served
    for i, r in enumerate(res):
        want = JULY if i % 2 else RUN
        assert r["temporal"]["start"] == want.start
        assert r["models"][0]["fetch_meta"]["window"] == [want.start, want.end]
