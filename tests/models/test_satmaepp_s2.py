"""satmaepp ``modality="s2_10b"`` (SatMAE++ grouped-channel ViT-L): loading refusals,
batched == one-at-a-time, ROI cropping, the planner's modality choice and config checks.

The model is the published architecture (ViT-L, 96 px, patch 8) with seeded random weights
(``weights="random"``, built once); the strict load of the published file and the numbers
against the official class are in tests/oracle/test_oracle_s2o.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rs_embed_ray.errors import ModelError, WeightsError
from rs_embed_ray.specs import OutputSpec

pytest.importorskip("timm")

CFG = {"modality": "s2_10b"}


@pytest.fixture(scope="module")
def model():
    import torch

    from rs_embed_ray.models.satmaepp import SatMAEPP

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield SatMAEPP(weights="random", model_config=CFG, precision="float32")
    torch.set_num_threads(before)


def _raw(seed: int, hw: tuple[int, int] = (16, 16)) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 6000, (10, *hw)).astype(np.float32)


def _embed(model, xs, output, metas=None):
    return model.embed_batch(
        xs,
        output=output,
        spatials=[None] * len(xs),
        temporal=None,
        fetch_metas=metas or [{}] * len(xs),
    )


def test_batched_equals_one_at_a_time_and_roi_crop(model) -> None:
    xs = [_raw(1), _raw(2, (20, 20))]  # two shapes in one batch
    metas = [{}, {"roi_window_geo": [0.25, 0.75, 0.0, 0.5]}]
    both = _embed(model, xs, OutputSpec.grid(), metas)
    assert both[0].data.shape == (1024, 12, 12) and both[0].meta["grid_hw"] == [12, 12]
    assert both[1].data.shape == (1024, 6, 6) and both[1].meta["roi_cropped"] is True
    assert both[0].meta["modality"] == "s2_10b" and both[0].meta["weights"]
    # one at a time (pooled, so the pooling paths are checked too): full frame = the mean
    # of all 432 group tokens = the mean of the group-mean grid
    (p0,) = _embed(model, xs[:1], OutputSpec.pooled(), metas[:1])
    np.testing.assert_allclose(p0.data, both[0].data.mean(axis=(1, 2)), rtol=0, atol=1e-5)
    assert p0.meta["pooling"] == "group_tokens_mean"
    # a squared fetch: pooled from the ROI crop of the grid
    (p1,) = _embed(model, xs[1:], OutputSpec.pooled(), metas[1:])
    np.testing.assert_allclose(p1.data, both[1].data.mean(axis=(1, 2)), rtol=0, atol=1e-5)
    assert p1.meta["pooling"] == "roi_grid_mean"
    assert not np.allclose(p0.data, p1.data, atol=1e-3)


def test_wrong_band_count_is_refused(model) -> None:
    with pytest.raises(ModelError, match="10 bands"):
        _embed(model, [np.zeros((3, 16, 16), np.float32)], OutputSpec.pooled())


def test_tiling_hook_reports_96(model) -> None:
    assert model.resolve_input_image_size(CFG) == 96


def test_checkpoint_with_wrong_keys_is_refused(tmp_path: Path) -> None:
    import argparse

    import torch

    from rs_embed_ray.models.satmaepp import SatMAEPP

    path = tmp_path / "checkpoint_ViT-L_pretrain_fmow_sentinel.pth"
    sd = {"cls_token": torch.zeros(1, 1, 1024), "head.weight": torch.zeros(2, 2)}
    torch.save({"model": sd, "args": argparse.Namespace(model="x")}, path)
    with pytest.raises(WeightsError, match=r"missing.*unexpected.*head\.weight"):
        SatMAEPP(weights=str(path), model_config=CFG)
    torch.save({"epoch": 1}, path)
    with pytest.raises(WeightsError, match="does not match the architecture"):
        SatMAEPP(weights=str(path), model_config=CFG)


def test_config_checks() -> None:
    from rs_embed_ray.models.satmaepp import SatMAEPP

    def check(cfg):
        SatMAEPP.check_model_config(cfg)
        SatMAEPP.check_request(weights=None, model_config=cfg, temporals=[None])

    check({"modality": "s2_10b", "variant": "large"})
    with pytest.raises(ModelError, match="variant"):
        check({"modality": "s2_10b", "variant": "base"})
    with pytest.raises(ModelError, match="modality"):
        check({"modality": "s1"})
    with pytest.raises(ModelError, match="unknown model_config"):
        check({"modality": "s2_10b", "bands": 3})


def _resolve(**kw):
    from rs_embed_ray.plan import resolve_models

    return resolve_models(
        ["satmaepp"],
        sensor=None,
        per_model_sensors=None,
        weights=None,
        output=OutputSpec.pooled(),
        **kw,
    )[0]


def test_planner_picks_the_modality_sensor() -> None:
    from rs_embed_ray.models.catalog import S2_10

    rgb = _resolve(model_configs=None)
    assert rgb.sensor.bands == ("B4", "B3", "B2") and not (rgb.model_config or {})
    by_arg = _resolve(model_configs=None, modality="s2_10b")
    by_cfg = _resolve(model_configs={"satmaepp": {"modality": "s2_10b"}})
    for r in (by_arg, by_cfg):
        assert r.sensor.bands == S2_10 and r.sensor.scale_m == 10
        assert r.model_config == {"modality": "s2_10b"}
    with pytest.raises(ModelError, match="Conflicting modality"):
        _resolve(model_configs={"satmaepp": {"modality": "rgb"}}, modality="s2_10b")
    with pytest.raises(ModelError, match="does not expose"):
        _resolve(model_configs=None, modality="s1")
