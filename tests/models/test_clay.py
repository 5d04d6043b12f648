"""Clay v1.5: published checkpoint layout loaded strictly, weights resolution, the reference
preprocessing and side inputs (golden values), batching, ROI crop-back, outputs.

The checkpoint is the real large encoder (311 M random values, published key names and
shapes, Lightning layout; rs_embed_ray.testing.checkpoints_clay), built once per session
directory and shared by the clay test modules. Forwards run at 32 px (``image_size=32``, 4x4
tokens): the architecture is the published one, only the input is small. The golden side
inputs were produced by rs-embed 0.3.1's own ``_clay_time_vec`` / ``_normalize_clay_latlon``.
"""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from rs_embed_ray.errors import ModelError, WeightsError
from rs_embed_ray.specs import BBox, OutputSpec, PointBuffer, TemporalSpec

torch = pytest.importorskip("torch")

PLACES = [PointBuffer(15.0, 45.0, 160.0), PointBuffer(-70.6, -33.9, 160.0)]
T = TemporalSpec.range("2022-06-01", "2022-09-01")


@pytest.fixture(scope="module")
def clay_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rs_embed_ray.testing.checkpoints_clay import write_clay_checkpoint

    return write_clay_checkpoint(tmp_path_factory.getbasetemp() / "clay-ckpt", reuse=True)


@pytest.fixture(scope="module")
def clay(clay_ckpt: Path):
    from rs_embed_ray.models.clay import Clay

    return Clay(weights=str(clay_ckpt), model_config={"image_size": 32}, precision="float32")


def _inputs(n: int, hw=(32, 32), seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(0, 6000, size=(10, *hw)).astype(np.float32) for _ in range(n)]


def _embed(m, xs, output, spatials=None, metas=None, temporal=T):
    return m.embed_batch(
        xs,
        output=output,
        spatials=spatials or PLACES[: len(xs)],
        temporal=temporal,
        fetch_metas=metas or [{}] * len(xs),
    )


def test_checkpoint_is_the_published_layout_and_loads_strictly(clay, clay_ckpt):
    payload = torch.load(clay_ckpt, map_location="cpu", weights_only=True)
    sd = payload["state_dict"]
    enc = {k[len("model.encoder.") :]: v for k, v in sd.items() if k.startswith("model.encoder.")}
    assert tuple(enc["patch_embedding.weight_generator.fc_weight.weight"].shape) == (65536, 128)
    assert tuple(enc["transformer.layers.23.0.to_qkv.weight"].shape) == (3072, 1024)
    assert tuple(enc["transformer.layers.23.1.net.3.weight"].shape) == (1024, 4096)
    assert "transformer.layers.24.0.norm.weight" not in enc
    assert sum(v.numel() for v in enc.values()) > 3.1e8  # the large encoder, not a toy
    assert any(k.startswith("model.decoder.") for k in sd)
    own = clay.model.state_dict()
    assert set(own) == set(enc)
    for k in ("cls_token", "transformer.norm.bias", "transformer.layers.5.1.net.1.weight"):
        torch.testing.assert_close(own[k], enc[k], rtol=0, atol=0)
    assert clay.weights_record["source"] == "explicit"
    assert clay.weights_record["weights"] == str(clay_ckpt.absolute())
    assert len(clay.weights_record["sha256"]) == 64


def test_strict_loading_names_the_offending_keys():
    from rs_embed_ray.models.clay import build_clay_encoder, prepare_state_dict

    with torch.device("meta"):
        model = build_clay_encoder("large")
    good = {f"model.encoder.{k}": v for k, v in model.state_dict().items()}
    good["model.decoder.enc_to_dec.weight"] = torch.empty(512, 1024, device="meta")
    assert set(prepare_state_dict(model, dict(good), path="f")) == set(model.state_dict())

    renamed = dict(good)
    renamed["model.encoder.transformer.norm.gamma"] = renamed.pop(
        "model.encoder.transformer.norm.weight"
    )
    with pytest.raises(WeightsError, match=r"transformer\.norm\.weight"):
        prepare_state_dict(model, renamed, path="f")
    stray = dict(good, **{"model.head.weight": torch.empty(2, device="meta")})
    with pytest.raises(WeightsError, match=r"1 unexpected"):
        prepare_state_dict(model, stray, path="f")
    small = dict(good)
    small["model.encoder.cls_token"] = torch.empty(1, 1, 768, device="meta")
    with pytest.raises(WeightsError, match=r"cls_token: file \(1, 1, 768\)"):
        prepare_state_dict(model, small, path="f")


def test_weights_resolution_env_dir_and_the_missing_file_message(clay_ckpt, tmp_path, monkeypatch):
    from rs_embed_ray.models.clay import Clay

    with pytest.raises(WeightsError, match=r"clay/v1\.5/clay-v1\.5\.ckpt"):
        Clay(weights=None)  # offline, empty cache: nothing is built, nothing random
    d = tmp_path / "w" / "clay" / "v1.5"
    d.mkdir(parents=True)
    (d / "clay-v1.5.ckpt").symlink_to(clay_ckpt)
    monkeypatch.setenv("RS_EMBED_RAY_WEIGHTS_DIR", str(tmp_path / "w"))
    m = Clay(weights=None, model_config={"image_size": 32})
    assert m.weights_record["source"] == "env_dir"


def test_normalisation_and_resize_golden():
    """(DN - mean) / std with the v1.5 metadata statistics, no clip; pad + bilinear."""
    from rs_embed_ray.models.clay import Clay

    m = Clay.__new__(Clay)
    m.device, m.image_size, m.recipe, m.scale_m = "cpu", 8, "upstream", 10.0
    m._mean = torch.tensor([1105.0, 1355.0, 1552.0, 1887.0, 2422.0, 2630.0, 2743.0, 2785.0,
                            2388.0, 1835.0]).view(1, -1, 1, 1)  # fmt: skip
    m._std = torch.tensor([1809.0, 1757.0, 1888.0, 1870.0, 1732.0, 1697.0, 1742.0, 1648.0,
                           1470.0, 1379.0]).view(1, -1, 1, 1)  # fmt: skip
    x = np.full((10, 8, 8), 2914.0, dtype=np.float32)
    x[:, 0, 0] = 12000.0  # above 10000: not clipped
    t, wins, gsds = m.preprocess([x])
    assert wins == [(0.0, 1.0, 0.0, 1.0)] and gsds == [10.0]
    assert t[0, 0, 1, 1].item() == pytest.approx(1.0)  # (2914 - 1105) / 1809
    assert t[0, 9, 1, 1].item() == pytest.approx((2914 - 1835) / 1379)
    assert t[0, 2, 0, 0].item() == pytest.approx((12000 - 1552) / 1888)
    # a 6x8 rectangle: centre reflect-pad to 8x8 (content rows 1..7), no resize
    ramp = x[:, :6, :] + np.arange(6, dtype=np.float32)[None, :, None] * 100.0
    r, wins, _ = m.preprocess([ramp])
    assert wins == [(0.125, 0.875, 0.0, 1.0)]
    norm = (ramp[0, :, 1:] - 1105.0) / 1809.0
    np.testing.assert_allclose(r[0, 0, 1:7, 1:].numpy(), norm, rtol=1e-6)
    np.testing.assert_allclose(r[0, 0, 0, 1:].numpy(), norm[1], rtol=1e-6)  # reflect
    np.testing.assert_allclose(r[0, 0, 7, 1:].numpy(), norm[4], rtol=1e-6)
    # 16 px -> 8 px bilinear (align_corners=False): the 2x2 means
    big = np.arange(16 * 16, dtype=np.float32).reshape(1, 16, 16).repeat(10, 0) + 3000.0
    b, _, gsds = m.preprocess([big])
    expect = (big[0].reshape(8, 2, 8, 2).mean(axis=(1, 3)) - 1105.0) / 1809.0
    np.testing.assert_allclose(b[0, 0].numpy(), expect, rtol=1e-5)
    assert gsds == [20.0]  # upstream: 16 px of 10 m shown as 8 px of 20 m
    with pytest.raises(ModelError, match="already scaled"):
        m.preprocess([np.full((10, 8, 8), 0.2, dtype=np.float32)])


def test_side_inputs_golden():
    """Values from rs-embed 0.3.1's _clay_time_vec / _normalize_clay_latlon."""
    from rs_embed_ray.models.clay import latlon_code, midpoint_of, time_code

    assert midpoint_of(T) == date(2022, 7, 17)
    assert midpoint_of(TemporalSpec.year(2021)) == date(2021, 7, 2)
    assert midpoint_of(TemporalSpec.range("2020-12-20", "2021-01-05")) == date(2020, 12, 28)
    np.testing.assert_allclose(
        time_code(date(2022, 7, 17)), [-0.23931566, -0.97094184, 0.0, 1.0], atol=1e-7
    )
    np.testing.assert_allclose(
        time_code(date(2020, 12, 28)), [0.12053668, 0.99270886, 0, 1], atol=1e-7
    )
    np.testing.assert_allclose(
        latlon_code(45.0, 15.0), [0.70710677, 0.70710677, 0.25881904, 0.96592581], atol=1e-7
    )
    np.testing.assert_allclose(
        latlon_code(-33.9, -70.6), [-0.5577451, 0.83001226, -0.94322264, 0.33216113], atol=1e-7
    )


def test_position_code_scales_with_gsd():
    from rs_embed_ray.models.clay import gsd_pos_table

    tab = gsd_pos_table(4, 1016, torch.tensor([10.0, 20.0]))
    assert tab.shape == (2, 16, 1016)
    q = 1016 // 4
    omega0 = 10.0  # k = 0: 1 / 1e4^0 * gsd
    # token 1 is (y=0, x=1): sin(x * omega) in the first quarter
    assert tab[0, 1, 0].item() == pytest.approx(math.sin(omega0))
    assert tab[1, 1, 0].item() == pytest.approx(math.sin(2 * omega0))
    assert tab[0, 4, 2 * q].item() == pytest.approx(math.sin(omega0))  # token 4 is (1, 0)


def test_outputs_batching_and_roi(clay):
    xs = _inputs(2)
    pooled = _embed(clay, xs, OutputSpec.pooled())
    grid = _embed(clay, xs, OutputSpec.grid())
    assert [e.data.shape for e in pooled] == [(1024,), (1024,)]
    assert [e.data.shape for e in grid] == [(1024, 4, 4), (1024, 4, 4)]
    assert pooled[0].meta["pooling"] == "model_cls" and pooled[0].meta["gsd_m"] == 10.0
    assert pooled[0].meta["time_midpoint"] == "2022-07-17"
    assert pooled[1].meta["latlon_center"] == [-33.9, -70.6]
    # CLS is its own token, not the mean of the patch tokens
    assert not np.allclose(pooled[0].data, grid[0].data.mean(axis=(1, 2)), atol=1e-3)
    # batched == one at a time
    for i in range(2):
        (one,) = _embed(clay, [xs[i]], OutputSpec.pooled(), spatials=[PLACES[i]])
        np.testing.assert_allclose(one.data, pooled[i].data, rtol=1e-4, atol=1e-4)
    # the place and the time condition the embedding
    (moved,) = _embed(clay, [xs[0]], OutputSpec.pooled(), spatials=[PLACES[1]])
    assert np.abs(moved.data - pooled[0].data).max() > 1e-3
    (later,) = _embed(clay, [xs[0]], OutputSpec.pooled(), temporal=TemporalSpec.year(2021))
    assert np.abs(later.data - pooled[0].data).max() > 1e-3
    # a fetch-square ROI window: grid cropped (rounded outward), pooled = mean of the crop
    meta = {"roi_window_geo": [0.0, 0.5, 0.25, 1.0]}
    (g,) = _embed(clay, [xs[0]], OutputSpec.grid(), metas=[meta])
    (p,) = _embed(clay, [xs[0]], OutputSpec.pooled(), metas=[meta])
    assert g.data.shape == (1024, 2, 3) and g.meta["roi_cropped"]
    np.testing.assert_allclose(g.data, grid[0].data[:, :2, 1:], rtol=1e-5, atol=1e-5)
    assert p.meta["pooling"] == "roi_grid_mean"
    np.testing.assert_allclose(p.data, g.data.mean(axis=(1, 2)), rtol=1e-5, atol=1e-5)


def test_rectangles_in_a_batch_and_both_recipes(clay, clay_ckpt):
    from rs_embed_ray.models.clay import Clay

    rect = _inputs(1, hw=(16, 32), seed=3)[0]
    sq = _inputs(1, seed=4)[0]
    both = _embed(clay, [rect, sq], OutputSpec.grid())
    (alone,) = _embed(clay, [rect], OutputSpec.grid())
    assert both[0].data.shape == (1024, 2, 4)  # padded rows cut off: 16 of 32 px
    np.testing.assert_allclose(both[0].data, alone.data, rtol=1e-4, atol=1e-4)
    # 16 px resized to 32: upstream tells the model 5 m pixels, rs_embed says 10 m
    small = _inputs(1, hw=(16, 16), seed=5)
    (up,) = _embed(clay, small, OutputSpec.pooled())
    rs = Clay(weights=str(clay_ckpt), model_config={"image_size": 32, "recipe": "rs_embed"})
    (compat,) = _embed(rs, small, OutputSpec.pooled())
    assert up.meta["gsd_m"] == 5.0 and compat.meta["gsd_m"] == 10.0
    assert np.abs(up.data - compat.data).max() > 1e-4
    (same,) = _embed(rs, [sq], OutputSpec.pooled())  # no resize: the recipes agree
    (ref,) = _embed(clay, [sq], OutputSpec.pooled())
    np.testing.assert_allclose(same.data, ref.data, rtol=1e-5, atol=1e-5)


def test_requests_that_cannot_work_are_refused(clay, clay_ckpt):
    from rs_embed_ray.models.clay import Clay

    with pytest.raises(ModelError, match="georeferenced"):
        _embed(clay, _inputs(1), OutputSpec.pooled(), spatials=[None])
    with pytest.raises(ModelError, match="10 bands"):
        _embed(clay, [np.ones((9, 32, 32), np.float32) * 100], OutputSpec.pooled())
    with pytest.raises(ModelError, match="recipe"):
        Clay(weights=str(clay_ckpt), model_config={"recipe": "other"})
    with pytest.raises(ModelError, match="multiple of 8"):
        Clay(weights=str(clay_ckpt), model_config={"image_size": 30})
    box = BBox(15.0, 45.0, 15.01, 45.02)
    (e,) = _embed(clay, _inputs(1), OutputSpec.pooled(), spatials=[box])
    assert e.meta["latlon_center"] == pytest.approx([45.01, 15.005])


def test_bad_model_config_is_refused_at_plan_time(tmp_path):
    """Before Ray starts: the export's planner runs Clay.check_request (no weights, no torch
    forward), and the message names the key to change."""
    from rs_embed_ray import export_batch

    with pytest.raises(ModelError, match="clay recipe must be one of"):
        export_batch(
            spatials=PLACES[:1],
            temporal=T,
            models=["clay"],
            weights={"clay": "random"},
            model_configs={"clay": {"recipe": "rs-embed-ish"}},
            out=str(tmp_path / "o"),
            layout="per_item",
            show_progress=False,
        )
    assert not (tmp_path / "o").exists()
