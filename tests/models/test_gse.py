"""gse (Google Satellite Embedding): nodata handling, nanmean/nanmax pooling, pixel grids,
ROI crops, no tiling, and a round trip through the real GEE provider against the local
Earth Engine emulator (all 64 bands, -9999 -> NaN)."""

from __future__ import annotations

import numpy as np
import pytest

from rs_embed_ray.errors import ModelError
from rs_embed_ray.specs import InputPrepSpec, OutputSpec, PointBuffer, TemporalSpec


def _embed(m, xs, output, metas=None, temporal=None):
    return m.embed_batch(
        xs,
        output=output,
        spatials=[None] * len(xs),
        temporal=temporal or TemporalSpec.year(2022),
        fetch_metas=metas or [{}] * len(xs),
    )


@pytest.fixture(scope="module")
def gse():
    from rs_embed_ray.models.registry import load_embedder

    return load_embedder("gse_annual")


def _field(seed=0, hw=(6, 8)):
    rng = np.random.default_rng(seed)
    return rng.uniform(-0.3, 0.3, size=(64, *hw)).astype(np.float32)


def test_catalog_and_registry(gse):
    from rs_embed_ray.models.catalog import CATALOG, IMPLEMENTATIONS

    info = CATALOG["gse"]
    assert info.status == "available" and "gse" in IMPLEMENTATIONS
    assert info.kind == "precomputed" and info.sensor.bands[0] == "A00"
    assert len(info.sensor.bands) == 64 and info.sensor.fill_value == -9999.0
    assert info.sensor.composite == "mosaic" and info.sensor.cloudy_pct is None
    assert gse.weights_record == {
        "weights": "none (precomputed product)",
        "sha256": None,
        "source": "gee:GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL",
    }
    from rs_embed_ray.models.gse import GoogleSatelliteEmbedding

    with pytest.raises(ModelError, match="no weights"):
        GoogleSatelliteEmbedding(weights="/some/file.pt")


def test_pooled_nanmean_nanmax_golden(gse):
    x = _field()
    x[:, 0, :] = -9999.0  # fill row
    x[:, :, 7] = np.nan  # NaN column
    keep = x[:, 1:, :7].reshape(64, -1).astype(np.float64)
    (mean,) = _embed(gse, [x], OutputSpec.pooled())
    (mx,) = _embed(gse, [x], OutputSpec.pooled("max"))
    np.testing.assert_allclose(mean.data, keep.mean(axis=1), rtol=1e-6)
    np.testing.assert_array_equal(mx.data, keep.max(axis=1).astype(np.float32))
    assert mean.data.dtype == np.float32 and mean.data.shape == (64,)
    assert mean.meta["pooling"] == "nanmean" and mx.meta["pooling"] == "nanmax"
    assert mean.meta["nodata_fraction"] == pytest.approx(1 - (5 * 7) / (6 * 8))
    assert mean.meta["year"] == 2022
    assert x[0, 0, 0] == -9999.0  # the caller's array is untouched


def test_grid_keeps_nan_or_fills(gse):
    from rs_embed_ray.models.gse import GoogleSatelliteEmbedding

    x = _field(1)
    x[:, 2, 3] = -9999.0
    (g,) = _embed(gse, [x], OutputSpec.grid())
    assert g.data.shape == (64, 6, 8) and g.meta["grid_hw"] == [6, 8]
    assert np.isnan(g.data[:, 2, 3]).all()
    np.testing.assert_array_equal(
        np.delete(g.data.reshape(64, -1), 19, axis=1), np.delete(x.reshape(64, -1), 19, axis=1)
    )
    filled = GoogleSatelliteEmbedding(model_config={"grid_nodata": 0.0})
    (f,) = _embed(filled, [x], OutputSpec.grid())
    assert (f.data[:, 2, 3] == 0.0).all() and f.meta["grid_nodata"] == 0.0


def test_roi_crop_and_all_nodata(gse):
    x = _field(2, hw=(10, 10))
    meta = {"roi_window_geo": [0.2, 0.55, 0.0, 0.5], "grid": {"scale_m": 10.0}}
    (g,) = _embed(gse, [x], OutputSpec.grid(), [meta])
    # rows [2, 5.5) -> 2..6 (outward), cols [0, 5)
    np.testing.assert_array_equal(g.data, x[:, 2:6, 0:5])
    assert g.meta["roi_pixel_box"] == [2, 6, 0, 5] and g.meta["scale_m"] == 10.0
    (p,) = _embed(gse, [x], OutputSpec.pooled(), [meta])
    np.testing.assert_allclose(p.data, x[:, 2:6, 0:5].mean(axis=(1, 2)), rtol=1e-5)
    empty = np.full((64, 4, 4), -9999.0, np.float32)
    with pytest.raises(ModelError, match="every pixel of the ROI is nodata"):
        _embed(gse, [empty], OutputSpec.pooled())
    with pytest.raises(ModelError, match="C=64"):
        _embed(gse, [np.zeros((3, 4, 4), np.float32)], OutputSpec.pooled())


def test_batch_equals_single_and_no_tiling(gse):
    from rs_embed_ray.models.tiling import embed_with_prep

    xs = [_field(3), _field(4, hw=(5, 5))[None]]  # a 1-frame TCHW is squeezed
    batched = _embed(gse, xs, OutputSpec.pooled())
    for x, b in zip(xs, batched, strict=True):
        np.testing.assert_array_equal(b.data, _embed(gse, [x], OutputSpec.pooled())[0].data)
    big = _field(5, hw=(300, 300))
    (e,) = embed_with_prep(
        gse,
        [big],
        prep=InputPrepSpec.tile(tile_size=64),
        output=OutputSpec.grid(),
        spatials=[None],
        temporal=TemporalSpec.year(2021),
        fetch_metas=[{}],
        batch_size=8,
    )
    assert e.data.shape == (64, 300, 300) and e.meta["input_prep"]["resolved_mode"] == "resize"


def test_gee_provider_emulator_round_trip(monkeypatch, tmp_path, gse):
    """The catalog sensor fetched by the real GEE provider from the emulator, then embedded."""
    pytest.importorskip("ee")
    from rs_embed_ray import geo
    from rs_embed_ray.models.catalog import CATALOG
    from rs_embed_ray.providers.gee import GEEProvider
    from rs_embed_ray.testing.ee_emulator import EEEmulator, expected_pixels

    for name in ("RS_EMBED_RAY_EE_URL", "EE_PROJECT", "GOOGLE_CLOUD_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    sensor = CATALOG["gse"].sensor
    spatial = PointBuffer(lon=8.0, lat=47.0, buffer_m=200)
    grid = geo.grid_for(spatial, 10)
    x0, y0, x1, y1 = grid.bounds()
    with EEEmulator(retry_after_s=0) as emu:
        emu.nodata_regions.append((x0, y0, (x0 + x1) / 2, y1))  # western half has no data
        prov = GEEProvider(url=emu.url, project="test-project", backoff_s=0.01, max_backoff_s=0.05)
        patch = prov.fetch(spatial, TemporalSpec.year(2022), sensor)
    assert patch.data.shape == (64, 40, 40) and np.isnan(patch.data[:, :, :20]).all()
    want = expected_pixels(grid.affine, grid.width, grid.height, sensor.bands)[:, :, 20:]
    (p,) = _embed(gse, [patch.data], OutputSpec.pooled(), [patch.meta])
    np.testing.assert_allclose(p.data, want.reshape(64, -1).mean(axis=1), rtol=1e-6)
    assert p.meta["nodata_fraction"] == pytest.approx(0.5) and p.meta["scale_m"] == 10.0
    (g,) = _embed(gse, [patch.data], OutputSpec.grid(), [patch.meta])
    np.testing.assert_array_equal(g.data[:, :, 20:], want.astype(np.float32))
