"""End-to-end exports on a real local Ray cluster, the local raster backend and RemoteCLIP
loaded from a checkpoint in its published format (random values)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from rs_embed_ray import OutputSpec, TemporalSpec, export_batch, load_export
from rs_embed_ray.io.state import RunState
from tests.conftest import points

pytestmark = pytest.mark.usefixtures("ray_cluster")

WINDOW = TemporalSpec.range("2022-06-01", "2022-09-01")


def _kw(raster_source, ckpt, **kw):
    base = dict(
        temporal=WINDOW,
        backend="local",
        source=str(raster_source),
        weights={"remoteclip": str(ckpt)},
        show_progress=False,
        num_workers=2,
        chunk_size=4,
    )
    base.update(kw)
    return base


def _log(state_dir):
    return list(RunState(state_dir).read_log())


@pytest.mark.parametrize("fmt", ["npz", "netcdf"])
def test_per_item_two_models_fetch_once(tmp_path, raster_source, remoteclip_ckpt, fmt):
    spatials = points(5)
    out = tmp_path / "pi"
    res = export_batch(
        **_kw(raster_source, remoteclip_ckpt),
        spatials=spatials,
        models=["remoteclip", "spectral_stats"],
        out=str(out),
        layout="per_item",
        format=fmt,
    )
    assert [r["point_index"] for r in res] == list(range(5))
    assert all(r["status"] == "ok" for r in res)
    ext = ".npz" if fmt == "npz" else ".nc"
    for i in range(5):
        assert (out / f"p{i:05d}{ext}").exists() and (out / f"p{i:05d}.json").exists()
    # one band-union fetch per place, shared by both models
    recs = [r for r in _log(out / "_rs_embed_ray") if r["kind"] == "patch"]
    assert len(recs) == 5 and len({r["index"] for r in recs}) == 5
    man = json.loads((out / "p00000.json").read_text())
    rc, ss = man["models"]
    assert rc["sensor"]["bands"] == ["B4", "B3", "B2"]
    assert ss["sensor"]["bands"] == ["B2", "B3", "B4", "B8"]
    assert rc["weights"]["weights"] == str(remoteclip_ckpt.resolve())
    assert len(rc["weights"]["sha256"]) == 64
    assert rc["embedding"]["shape"] == [512]
    assert rc["input"]["shape"] == [3, 32, 32]
    assert man["temporal"]["year"] is None  # fixed anchor defect: no function object
    if fmt == "npz":
        with np.load(out / "p00000.npz", allow_pickle=False) as z:
            x_rc, x_ss = z["input_chw__remoteclip"], z["input_chw__spectral_stats"]
            # each model got its own channels, in its own order, from the same fetch
            np.testing.assert_array_equal(x_rc, x_ss[[2, 1, 0]])
            assert z["embedding__spectral_stats"].shape == (20,)
    else:
        with xr.open_dataset(out / "p00000.nc") as ds:
            assert ds["embedding__remoteclip"].dims == ("dim",)
            assert ds["input_chw__remoteclip"].dims == ("band", "y", "x")
            assert ds.attrs["Conventions"] == "CF-1.8"
    loaded = load_export(str(out))
    assert loaded.models["remoteclip"].embeddings.shape == (5, 512)


@pytest.mark.parametrize("fmt", ["npz", "netcdf"])
def test_combined_layout(tmp_path, raster_source, remoteclip_ckpt, fmt):
    spatials = points(6)
    res = export_batch(
        **_kw(raster_source, remoteclip_ckpt),
        spatials=spatials,
        models=["remoteclip", "spectral_stats"],
        out=str(tmp_path / "run"),
        layout="combined",
        format=fmt,
        output=OutputSpec.pooled(),
    )
    assert res["status"] == "ok" and res["n_items"] == 6
    path = tmp_path / ("run.npz" if fmt == "npz" else "run.nc")
    assert path.exists() and (tmp_path / "run.json").exists()
    if fmt == "npz":
        with np.load(path, allow_pickle=False) as z:
            assert z["embeddings__remoteclip"].shape == (6, 512)
            assert z["inputs_bchw__remoteclip"].shape == (6, 3, 32, 32)
            assert z["embeddings__spectral_stats"].shape == (6, 20)
    else:
        with xr.open_dataset(path) as ds:
            emb = ds["embeddings__remoteclip"]
            assert emb.dims == ("point", "dim")  # rs-embed's names (contract §2.16.3)
            assert ds["lon"].dims == ("point",)
            np.testing.assert_allclose(ds["lon"].values, [s.lon for s in spatials])
            np.testing.assert_allclose(ds["lat"].values, [s.lat for s in spatials])
            assert ds.attrs["Conventions"] == "CF-1.8"
            assert json.loads(ds.attrs["rs_embed_ray_manifest"])["n_items"] == 6
    loaded = load_export(str(path))
    assert loaded.models["spectral_stats"].embeddings.shape == (6, 20)


def test_per_item_matches_combined(tmp_path, raster_source, remoteclip_ckpt):
    """Both layouts carry the same arrays for the same request."""
    spatials = points(3)
    kw = _kw(raster_source, remoteclip_ckpt, spatials=spatials, models=["remoteclip"])
    export_batch(**kw, out=str(tmp_path / "pi"), layout="per_item")
    export_batch(**kw, out=str(tmp_path / "c.npz"), layout="combined")
    with np.load(tmp_path / "c.npz") as zc:
        for i in range(3):
            with np.load(tmp_path / "pi" / f"p{i:05d}.npz") as zi:
                np.testing.assert_allclose(
                    zi["embedding__remoteclip"], zc["embeddings__remoteclip"][i], rtol=1e-5
                )
                np.testing.assert_array_equal(
                    zi["input_chw__remoteclip"], zc["inputs_bchw__remoteclip"][i]
                )


def test_export_npz_one_place(tmp_path, raster_source, remoteclip_ckpt):
    from rs_embed_ray import export_npz

    res = export_npz(
        spatial=points(1)[0],
        temporal=WINDOW,
        models=["spectral_stats"],
        out_path=str(tmp_path / "sub" / "one"),
        backend="local",
        source=str(raster_source),
        show_progress=False,
    )
    assert res["status"] == "ok" and res["npz_path"].endswith("one.npz")
    with np.load(tmp_path / "sub" / "one.npz") as z:
        assert z["embeddings__spectral_stats"].shape == (1, 20)


def test_grid_output_and_tiling(tmp_path, raster_source, remoteclip_ckpt):
    """Grid embeddings (D, h, w) per place; input_prep='tile' records its tiling."""
    res = export_batch(
        **_kw(raster_source, remoteclip_ckpt),
        spatials=points(2, buffer_m=2400.0),  # 480 px a side: 4 tiles of 224 at 10 m
        models=["remoteclip"],
        out=str(tmp_path / "g"),
        layout="per_item",
        output=OutputSpec.grid(),
        input_prep="tile",
        save_inputs=False,
    )
    m = res[0]["models"][0]
    assert m["status"] == "ok"
    assert m["embedding"]["shape"][0] == 768 and len(m["embedding"]["shape"]) == 3
    assert m["meta"]["input_prep"]["resolved_mode"] == "tile"
    assert m["meta"]["input_prep"]["tile_count"] >= 4
    assert m["input"] is None
