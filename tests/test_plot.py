"""``rs-embed-ray inspect PATH --plot OUT.png``: PCA colours of pooled exports on a map, and
PCA-to-RGB grids next to their inputs; matplotlib is an optional extra."""

from __future__ import annotations

import json
import struct
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from rs_embed_ray import OutputSpec, TemporalSpec
from rs_embed_ray.api import export_batch
from rs_embed_ray.cli import main
from rs_embed_ray.io.plot import input_rgb, pca_rgb, plot_size
from rs_embed_ray.testing.faults import faulty_local
from tests.conftest import points

WINDOW = TemporalSpec.range("2022-06-01", "2022-09-01")


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_pca_rgb():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 16)).astype(np.float32)
    c = pca_rgb(x)
    assert c.shape == (50, 3) and c.min() >= 0 and c.max() <= 1
    assert c.std(axis=0).min() > 0.1  # three spread-out components
    assert pca_rgb(x[:1]).tolist() == [[0.5, 0.5, 0.5]]
    assert pca_rgb(np.zeros((0, 16))).shape == (0, 3)
    img = input_rgb(rng.uniform(size=(4, 8, 8)), ["B2", "B3", "B4", "B8"])
    assert img.shape == (8, 8, 3) and 0 <= img.min() and img.max() <= 1


def test_plot_needs_matplotlib(tmp_path, monkeypatch):
    for mod in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    res = CliRunner().invoke(main, ["inspect", str(tmp_path), "--plot", str(tmp_path / "x.png")])
    assert res.exit_code == 2
    assert "pip install 'rs-embed-ray[plot]'" in res.output
    assert not (tmp_path / "x.png").exists()


def _kw(raster_source, **kw):
    d = dict(
        temporal=WINDOW,
        models=["spectral_stats", "remoteclip"],
        weights={"remoteclip": "random"},
        backend="local",
        source=str(raster_source),
        show_progress=False,
        num_workers=2,
        chunk_size=4,
    )
    d.update(kw)
    return d


@pytest.mark.usefixtures("ray_cluster")
def test_plot_pooled_geoparquet(tmp_path, raster_source):
    spatials = points(6)
    export_batch(
        **_kw(raster_source, **faulty_local(raster_source, fail_items=[spatials[2].center()])),
        spatials=spatials,
        out=str(tmp_path / "g"),
        layout="combined",
        format="geoparquet",
        save_inputs=False,
        continue_on_error=True,
    )
    png = tmp_path / "look.png"
    res = CliRunner().invoke(main, ["inspect", str(tmp_path / "g.parquet"), "--plot", str(png)])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["plot"]["kind"] == "pooled"
    assert info["plot"]["models"] == ["spectral_stats", "remoteclip"]
    assert png_size(png) == plot_size("pooled", 2) == (800, 400)
    assert (info["plot"]["width"], info["plot"]["height"]) == (800, 400)
    res = CliRunner().invoke(
        main, ["inspect", str(tmp_path / "g.parquet"), "--plot", str(png), "--dpi", "50"]
    )
    assert res.exit_code == 0 and png_size(png) == (400, 200)


@pytest.mark.usefixtures("ray_cluster")
def test_plot_grid_with_inputs(tmp_path, raster_source):
    export_batch(
        **_kw(raster_source),
        spatials=points(5),
        out=str(tmp_path / "grid.npz"),
        layout="combined",
        output=OutputSpec.grid(),
    )
    png = tmp_path / "grid.png"
    res = CliRunner().invoke(
        main,
        ["inspect", str(tmp_path / "grid.npz"), "--plot", str(png), "--plot-places", "3"],
    )
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)["plot"]
    assert info["kind"] == "grid" and info["places"] == [0, 1, 2]
    # rows: places; columns: the input, then one PCA image per model
    assert png_size(png) == plot_size("grid", 2, 3) == (1200, 1200)
