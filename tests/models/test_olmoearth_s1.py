"""olmoearth ``modality="s1"``: VV/VH input through the package's sentinel1 path (Nano v1.2,
random values in the published layout, 32 px): batched == one at a time with empty frames
and an ROI, the linear-to-dB conversion, config checks and the planner's modality choice
(the dB collection by default, ``s1_units="linear"`` for a linear fetch). The numbers
against the package's own usage are in tests/oracle/test_oracle_s2o.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rs_embed_ray.errors import ModelError
from rs_embed_ray.specs import OutputSpec, SensorSpec, TemporalSpec

pytest.importorskip("olmoearth_pretrain_minimal")

WINDOW = TemporalSpec.range("2022-01-01", "2022-03-15")
CFG = {"variant": "nano_v1_2", "image_size": 32, "modality": "s1"}


@pytest.fixture(scope="module")
def nano_ckpt(module_scratch) -> Path:
    from rs_embed_ray.testing.checkpoints import write_olmoearth_checkpoint

    return write_olmoearth_checkpoint(module_scratch("oe_s1"), variant="nano_v1_2", seed=1)


@pytest.fixture(scope="module")
def s1(nano_ckpt: Path):
    from rs_embed_ray.models.olmoearth import OlmoEarth

    return OlmoEarth(weights=str(nano_ckpt), model_config=CFG, precision="float32")


def _db(t: int, seed: int, h: int = 32, w: int = 32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(-25.0, 0.0, (t, 2, h, w)).astype(np.float32)


def _embed(m, xs, output, metas):
    return m.embed_batch(
        xs, output=output, spatials=[None] * len(xs), temporal=WINDOW, fetch_metas=metas
    )


def test_batched_equals_single_with_empty_frames_and_roi(s1) -> None:
    xs = [_db(3, 1), _db(2, 2), _db(1, 3, h=24)]
    xs[0][1] = np.nan  # an empty 30-day bin: dropped
    metas = [{}, {}, {"roi_window_geo": [0.25, 0.75, 0.0, 1.0]}]
    for out in (OutputSpec.pooled(), OutputSpec.grid()):
        batch = _embed(s1, xs, out, metas)
        for i, x in enumerate(xs):
            (one,) = _embed(s1, [x], out, [metas[i]])
            np.testing.assert_allclose(batch[i].data, one.data, rtol=0, atol=1e-5)
    assert batch[0].data.shape == (128, 8, 8) and batch[2].meta["roi_cropped"] is True
    assert batch[0].meta["n_empty_frames_dropped"] == 1
    assert batch[0].meta["modality"] == "s1" and batch[0].meta["band_names"] == ["vv", "vh"]


def test_linear_input_is_converted_to_db(s1, nano_ckpt) -> None:
    from rs_embed_ray.models.olmoearth import OlmoEarth

    lin = OlmoEarth(
        weights=str(nano_ckpt), model_config={**CFG, "s1_units": "linear"}, precision="float32"
    )
    x_lin = np.random.default_rng(4).gamma(1.0, 0.05, (2, 2, 32, 32)).astype(np.float32)
    x_db = 10.0 * np.log10(np.clip(x_lin, 1e-10, None))
    (a,) = _embed(lin, [x_lin], OutputSpec.pooled(), [{}])
    (b,) = _embed(s1, [x_db], OutputSpec.pooled(), [{}])
    (c,) = _embed(s1, [x_lin], OutputSpec.pooled(), [{}])
    np.testing.assert_allclose(a.data, b.data, rtol=0, atol=1e-5)
    assert np.abs(a.data - c.data).max() > 1e-3  # linear read as dB is another input


def test_wrong_band_count_and_config() -> None:
    from rs_embed_ray.models.olmoearth import OlmoEarth

    with pytest.raises(ModelError, match="modality"):
        OlmoEarth.check_request(weights=None, model_config={"modality": "s3"}, temporals=[None])
    with pytest.raises(ModelError, match="s1_units"):
        OlmoEarth.check_request(
            weights=None, model_config={"modality": "s1", "s1_units": "x"}, temporals=[None]
        )


def test_wrong_band_count_is_refused(s1) -> None:
    with pytest.raises(ModelError, match="C=2 bands"):
        _embed(s1, [np.zeros((1, 12, 32, 32), np.float32)], OutputSpec.pooled(), [{}])


def _resolve(**kw):
    from rs_embed_ray.plan import resolve_models

    kw.setdefault("sensor", None)
    kw.setdefault("model_configs", None)
    return resolve_models(
        ["olmoearth"], per_model_sensors=None, weights=None, output=OutputSpec.pooled(), **kw
    )[0]


def test_planner_picks_the_s1_sensor() -> None:
    r = _resolve(modality="s1")
    assert r.sensor.collection == "COPERNICUS/S1_GRD" and r.sensor.bands == ("VV", "VH")
    assert r.sensor.use_float_linear is False and r.model_config == {"modality": "s1"}
    s2 = _resolve()
    assert len(s2.sensor.bands) == 12 and not (s2.model_config or {})
    lin = SensorSpec(collection="COPERNICUS/S1_GRD_FLOAT", bands=("VV", "VH"), scale_m=10)
    r = _resolve(modality="s1", sensor=lin)
    assert r.sensor.collection == "COPERNICUS/S1_GRD_FLOAT"
    assert r.model_config == {"modality": "s1", "s1_units": "linear"}
