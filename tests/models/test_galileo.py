"""Galileo nano: published folder layout, strict loading, weights resolution, the two recipes'
preprocessing on fixed inputs, months of the 30-day bins, masked empty frames, batching and
ROI crops.

The checkpoint is random-valued with the published key names and shapes
(rs_embed_ray.testing.checkpoints_galileo). Expected numbers are computed here with numpy
from the published formulas; the network itself is checked against the official encoder in
tests/oracle/test_oracle_galileo.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rs_embed_ray.errors import ModelError, WeightsError
from rs_embed_ray.specs import BBox, OutputSpec, TemporalSpec

torch = pytest.importorskip("torch")

PLACE = BBox(minlon=10.0, minlat=45.0, maxlon=10.01, maxlat=45.01)
WIN = TemporalSpec.range("2022-03-01", "2022-06-01")  # 92 days: 4 bins of 30,30,30,2 days


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """One intra-op thread: on a loaded 2-CPU machine two spinning threads are ~20x slower
    for a network this small."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ckpt(module_scratch) -> Path:
    from rs_embed_ray.testing.checkpoints_galileo import write_galileo_checkpoint

    return write_galileo_checkpoint(module_scratch("galileo"), seed=3)


@pytest.fixture(scope="module")
def model(ckpt: Path):
    from rs_embed_ray.models.galileo import Galileo

    return Galileo(device="cpu", weights=str(ckpt.parent), precision="float32")


def _x(seed: int, t: int = 4, side: int = 64) -> np.ndarray:
    return np.random.RandomState(seed).uniform(0, 8000, (t, 10, side, side)).astype(np.float32)


def _embed(m, xs, output, metas=None, temporal=WIN):
    return m.embed_batch(
        xs,
        output=output,
        spatials=[PLACE] * len(xs),
        temporal=temporal,
        fetch_metas=metas or [{}] * len(xs),
    )


def test_checkpoint_layout_and_strict_load(ckpt: Path, model) -> None:
    sd = torch.load(ckpt, map_location="cpu", weights_only=True)
    cfg = json.loads((ckpt.parent / "config.json").read_text())["model"]["encoder"]
    assert cfg["embedding_size"] == 128 and cfg["depth"] == 4 and cfg["max_patch_size"] == 8
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert shapes["space_time_embed.S2_RGB.proj.weight"] == (128, 3, 8, 8)
    assert shapes["space_time_embed.NDVI.proj.weight"] == (128, 1, 8, 8)
    assert shapes["space_embed.DW.proj.weight"] == (128, 9, 8, 8)
    assert shapes["static_embed.location.weight"] == (128, 3)
    assert shapes["blocks.3.attn.q.weight"] == (128, 128)
    assert shapes["blocks.3.mlp.fc1.weight"] == (512, 128)
    assert shapes["pos_embed"] == (24, 32) and shapes["month_embed.weight"] == (12, 32)
    assert shapes["s_t_channel_embed"] == (7, 32)
    own = model.model.state_dict()
    assert set(own) == set(sd)
    for k in ("blocks.2.attn.k.weight", "space_time_embed.S2_SWIR.proj.bias", "norm.weight"):
        torch.testing.assert_close(own[k], sd[k], rtol=0, atol=0)
    rec = model.weights_record
    assert rec["source"] == "explicit" and len(rec["sha256"]) == 64


def test_backbone_infix_is_dropped_and_mismatches_are_named(ckpt: Path, tmp_path: Path) -> None:
    from rs_embed_ray.models.galileo import Galileo

    sd = torch.load(ckpt, map_location="cpu", weights_only=True)
    d = tmp_path / "bb"
    d.mkdir()
    torch.save(
        {k.replace("blocks.", "blocks.backbone.", 1): v for k, v in sd.items()}, d / "encoder.pt"
    )
    Galileo(device="cpu", weights=str(d / "encoder.pt"))  # loads: ".backbone" removed

    bad = dict(sd)
    bad.pop("blocks.0.attn.q.bias")
    bad["norm.weight"] = torch.zeros(64)
    torch.save(bad, d / "encoder.pt")
    with pytest.raises(WeightsError, match=r"1 missing.*blocks.0.attn.q.bias.*norm.weight"):
        Galileo(device="cpu", weights=str(d / "encoder.pt"))

    torch.save(sd, d / "encoder.pt")
    other = {"model": {"encoder": {"embedding_size": 192, "depth": 12, "max_patch_size": 8}}}
    (d / "config.json").write_text(json.dumps(other))
    with pytest.raises(WeightsError, match="embedding_size=192"):
        Galileo(device="cpu", weights=str(d))


def test_weights_resolution_env_dir_and_hf_cache(ckpt: Path, tmp_path, monkeypatch) -> None:
    from rs_embed_ray.models.galileo import Galileo
    from rs_embed_ray.testing.checkpoints import write_hf_cache_entry

    with pytest.raises(WeightsError, match=r"models/nano/encoder\.pt"):
        Galileo(device="cpu")
    wd = tmp_path / "wd" / "galileo" / "models" / "nano"
    wd.mkdir(parents=True)
    for name in ("encoder.pt", "config.json"):
        (wd / name).symlink_to(ckpt.parent / name)
    monkeypatch.setenv("RS_EMBED_RAY_WEIGHTS_DIR", str(tmp_path / "wd"))
    assert Galileo(device="cpu").weights_record["source"] == "env_dir"
    monkeypatch.delenv("RS_EMBED_RAY_WEIGHTS_DIR")
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    for name in ("encoder.pt", "config.json"):
        write_hf_cache_entry(
            cache, "nasaharvest/galileo", f"models/nano/{name}", ckpt.parent / name
        )
    m = Galileo(device="cpu")
    assert m.weights_record["source"] == "hf_cache"
    assert (
        m.weights_record["sha256"]
        == Galileo(device="cpu", weights=str(ckpt)).weights_record["sha256"]
    )
    r = Galileo(device="cpu", weights="random")
    assert r.weights_record["weights"] == "random-init"


def test_upstream_preprocessing_golden(model) -> None:
    """(x - (mean - 2 std)) / (4 std) with Galileo's statistics; NDVI from DN, unscaled."""
    x = np.zeros((1, 10, 64, 64), np.float32)
    x[0, :, :, :] = np.arange(1, 11, dtype=np.float32)[:, None, None] * 500.0  # B2=500..B12=5000
    x[0, 2, :32] = 0.0  # B4 = 0 on the top half
    x[0, 6, :32] = 0.0  # B8 = 0 there too: NDVI 0 where B8 + B4 = 0
    groups, ok, win, side = model.preprocess(x)
    assert side == 64 and win == (0.0, 1.0, 0.0, 1.0) and bool(ok.all())
    # B3 (mean 1338.4026921784578, std 913.2988423581528) at 1000 DN
    want_b3 = (1000.0 - (1338.4026921784578 - 2 * 913.2988423581528)) / (4 * 913.2988423581528)
    assert float(groups["S2_RGB"][0, 1, 40, 40]) == pytest.approx(want_b3, rel=1e-6)
    # B12 (mean 1474.5311266077113, std 980.2429840007796) at 5000 DN
    want_b12 = (5000.0 - (1474.5311266077113 - 2 * 980.2429840007796)) / (4 * 980.2429840007796)
    assert float(groups["S2_SWIR"][0, 1, 40, 40]) == pytest.approx(want_b12, rel=1e-6)
    ndvi = groups["NDVI"][0, 0]
    assert float(ndvi[40, 40]) == pytest.approx((3500 - 1500) / (3500 + 1500), rel=1e-6)
    assert float(ndvi[10, 10]) == 0.0
    assert set(groups) == {"S2_RGB", "S2_Red_Edge", "S2_NIR_10m", "S2_NIR_20m", "S2_SWIR", "NDVI"}


def test_rs_embed_recipe_and_resize_golden(ckpt: Path) -> None:
    """rs_embed recipe: raw DN clipped to 0..10000, no NDVI, pad + bilinear 64, 10 m claimed."""
    from rs_embed_ray.models.galileo import Galileo

    m = Galileo(device="cpu", weights=str(ckpt), model_config={"recipe": "rs_embed"})
    x = np.full((1, 10, 64, 96), 12000.0, np.float32)
    x[:, :, :, :47] = -5.0
    groups, _, win, side = m.preprocess(x)
    assert "NDVI" not in groups and side == 96.0
    assert win == pytest.approx((16 / 96, 80 / 96, 0.0, 1.0))
    g = groups["S2_RGB"][0, 0].numpy()
    assert g.shape == (64, 64) and g.max() == 10000.0 and g.min() == 0.0
    # bilinear, align_corners=False, 96 -> 64: column j samples 1.5 j + 0.25, so column 31
    # sits at 46.75, a quarter of the way from a 0 pixel (46) to a 10000 one (47)
    assert g[32, 30] == 0.0 and g[32, 31] == pytest.approx(7500.0) and g[32, 32] == 10000.0
    (e,) = _embed(m, [np.full((2, 10, 224, 224), 900.0, np.float32)], OutputSpec.pooled())
    assert e.meta["input_resolution_m"] == 10.0 and e.meta["normalization"] == "none_raw_dn"


def test_months_from_bins_and_resolution(model) -> None:
    from rs_embed_ray.models.galileo import frame_months

    # 30-day bins from 2022-03-01: Mar 1-31 (mid Mar 16), Mar 31-Apr 30 (Apr 15),
    # Apr 30-May 30 (May 15), May 30-Jun 1 (May 31) -> months 2, 3, 4, 4
    assert frame_months(4, WIN, {}) == ([2, 3, 4, 4], "window_bins")
    frames = [
        {"start": "2022-11-20", "end": "2022-12-20"},
        {"start": "2022-12-20", "end": "2023-01-19"},
    ]
    assert frame_months(2, WIN, {"frames": frames}) == ([11, 0], "fetch_meta_frames")
    assert frame_months(3, WIN, {})[1] == "window_split"
    (e,) = _embed(model, [_x(0, t=4, side=224)], OutputSpec.pooled())
    assert e.meta["month_indices"] == [2, 3, 4, 4]
    assert e.meta["input_resolution_m"] == pytest.approx(35.0)  # 224 px * 10 m / 64
    assert e.data.shape == (128,) and e.meta["pooling"] == "token_mean"
    (e20,) = _embed(model, [_x(0, t=1, side=96)], OutputSpec.pooled(), [{"grid": {"scale_m": 20}}])
    assert e20.meta["input_resolution_m"] == pytest.approx(30.0)  # 96 px * 20 m / 64


def test_empty_frame_is_masked_not_embedded(model) -> None:
    x = _x(1, t=3)
    nan = x.copy()
    nan[1] = np.nan
    zero = x.copy()
    zero[1] = 0.0
    (a, b) = _embed(model, [nan, zero], OutputSpec.pooled())
    assert a.meta["n_frames_masked"] == 1 and b.meta["n_frames_masked"] == 0
    assert np.abs(a.data - b.data).max() > 1e-3  # a zero frame is data, a NaN frame is not
    with pytest.raises(ModelError, match="every frame is empty"):
        _embed(model, [np.full((2, 10, 64, 64), np.nan, np.float32)], OutputSpec.pooled())


def test_batched_equals_one_at_a_time(ckpt: Path) -> None:
    """Different T (two forwards), a masked frame (a key-masked batch), pooled and grid
    (image_size 32 keeps it cheap: 4 x 4 patches)."""
    from rs_embed_ray.models.galileo import Galileo

    small = Galileo(device="cpu", weights=str(ckpt), model_config={"image_size": 32})
    xs = [_x(2, t=3, side=32), _x(3, t=3, side=32), _x(4, t=2, side=32), _x(5, t=3, side=32)]
    xs[1][2] = np.nan
    for out in (OutputSpec.pooled(), OutputSpec.grid()):
        batch = _embed(small, xs, out)
        for x, e in zip(xs, batch, strict=True):
            (one,) = _embed(small, [x], out)
            np.testing.assert_allclose(e.data, one.data, rtol=0, atol=1e-5)
    grid = _embed(small, xs[:1], OutputSpec.grid())[0]
    assert grid.data.shape == (128, 4, 4) and grid.meta["grid_hw"] == [4, 4]
    # pooled (token mean) = grid mean when every patch sees the same tokens
    pooled = _embed(small, xs[:1], OutputSpec.pooled())[0]
    np.testing.assert_allclose(pooled.data, grid.data.mean(axis=(1, 2)), atol=1e-5)


def test_roi_crop_and_max_pooling(model) -> None:
    x = _x(6, t=1)
    roi = {"roi_window_geo": [0.0, 0.5, 0.5, 1.0]}
    (full,) = _embed(model, [x], OutputSpec.grid())
    (cut,) = _embed(model, [x], OutputSpec.grid(), metas=[roi])
    np.testing.assert_allclose(cut.data, full.data[:, :4, 4:], atol=1e-6)
    (p,) = _embed(model, [x], OutputSpec.pooled(), metas=[roi])
    assert p.meta["pooling"] == "roi_grid_mean" and p.meta["roi_cropped"]
    np.testing.assert_allclose(p.data, full.data[:, :4, 4:].mean(axis=(1, 2)), atol=1e-6)
    (mx,) = _embed(model, [x], OutputSpec.pooled(pooling="max"))
    assert mx.meta["pooling"] == "grid_max"
    np.testing.assert_allclose(mx.data, full.data.max(axis=(1, 2)), atol=1e-6)


def test_bad_inputs_and_config(model, ckpt: Path) -> None:
    from rs_embed_ray.models.galileo import Galileo

    with pytest.raises(ModelError, match="C=10 bands"):
        _embed(model, [np.zeros((2, 9, 64, 64), np.float32)], OutputSpec.pooled())
    with pytest.raises(ModelError, match="at most 12 frames"):
        _embed(model, [np.zeros((13, 10, 64, 64), np.float32)], OutputSpec.pooled())
    with pytest.raises(ModelError, match="recipe"):
        Galileo(device="cpu", weights=str(ckpt), model_config={"recipe": "nope"})
    with pytest.raises(ModelError, match="divisible"):
        Galileo(device="cpu", weights=str(ckpt), model_config={"image_size": 60})


def test_catalog_entry() -> None:
    from rs_embed_ray.models.galileo import Galileo
    from rs_embed_ray.models.registry import embedder_class, get_info

    info = get_info("galileo")
    assert info.status == "available" and embedder_class("galileo") is Galileo
    assert info.fetch_semantics == "bins:30d:max12"
    assert info.sensor.bands == ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")


def test_bad_model_config_fails_at_plan_time(tmp_path) -> None:
    """A bad recipe stops the export before any cluster work, naming the choices."""
    from rs_embed_ray.api import plan_export
    from rs_embed_ray.specs import PointBuffer
    from tests.conftest import tiny_raster_source

    source = tiny_raster_source(tmp_path)

    def plan(cfg):
        return plan_export(
            spatials=[PointBuffer(15.0, 45.0, 160.0)],
            temporal=WIN,
            models=["galileo"],
            out=str(tmp_path / "o"),
            layout="per_item",
            backend="local",
            source=str(source),
            model_configs={"galileo": cfg},
        )

    with pytest.raises(ModelError, match=r"recipe 'upstrem'.*upstream.*rs_embed"):
        plan({"recipe": "upstrem"})
    with pytest.raises(ModelError, match=r"unknown model_config key\(s\) \['n_frames'\]"):
        plan({"n_frames": 4})
    assert plan({"recipe": "rs_embed", "image_size": 32}).models[0].model_id == "galileo"
