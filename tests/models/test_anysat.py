"""AnySat base: published checkpoint layout, strict loading, weights resolution, the
preprocessing (z-score, pad/resize) and day-of-year dates on fixed inputs, the patch size in
metres, batching, ROI crops and options.

The checkpoint is random-valued with the published key names and shapes
(rs_embed_ray.testing.checkpoints_anysat, the full base architecture). Expected numbers are
computed here with numpy from the published formulas; the network itself is checked against
the official source in tests/oracle/test_oracle_anysat.py. Inputs are 12 px
(``image_size=12``) to keep the forward cheap: the architecture takes any size.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from rs_embed_ray.errors import ModelError, WeightsError
from rs_embed_ray.specs import BBox, OutputSpec, TemporalSpec

torch = pytest.importorskip("torch")

PLACE = BBox(minlon=10.0, minlat=45.0, maxlon=10.01, maxlat=45.01)
WIN = TemporalSpec.range("2022-01-01", "2023-01-01")  # 365 days: 8 bins of 45-46 days
CFG = {"image_size": 12}


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """One intra-op thread: the machine's other core belongs to the other test runs."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ckpt(module_scratch) -> Path:
    from rs_embed_ray.testing.checkpoints_anysat import write_anysat_checkpoint

    return write_anysat_checkpoint(module_scratch("anysat") / "AnySat.pth", seed=5)


@pytest.fixture(scope="module")
def model(ckpt: Path):
    from rs_embed_ray.models.anysat import AnySat

    return AnySat(device="cpu", weights=str(ckpt), model_config=CFG, precision="float32")


def _with(model, **cfg):
    """The same loaded network with other options (a reload costs seconds per file read)."""
    from rs_embed_ray.models.anysat import parse_config

    m = copy.copy(model)
    m.opts = parse_config({**CFG, **cfg})
    return m


def _x(seed: int, t: int = 8, h: int = 12, w: int | None = None) -> np.ndarray:
    rs = np.random.RandomState(seed)
    return rs.uniform(0, 6000, (t, 10, h, w or h)).astype(np.float32)


def _embed(m, xs, output, metas=None, temporal=WIN):
    return m.embed_batch(
        xs,
        output=output,
        spatials=[PLACE] * len(xs),
        temporal=temporal,
        fetch_metas=metas or [{}] * len(xs),
    )


def test_checkpoint_layout_and_strict_load(ckpt: Path, model) -> None:
    from rs_embed_ray.models.anysat import prepare_state_dict

    sd = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert len(shapes) == 418  # the official AnyModule's count (oracle test: the same keys)
    assert shapes["projector_s2.patch_embed.inconv.0.weight"] == (96, 10)
    assert shapes["projector_s2.patch_embed.attention_heads.Q"] == (16, 8)
    assert shapes["spatial_encoder.predictor_blocks.5.attn.rpe_k.lookup_table_weight"] == (
        1,
        64,
        8,
    )
    assert shapes["blocks.6.attn.q_learned"] == (1, 1, 768)
    assert shapes["projector_naip.patch_embed.weight"] == (768, 4, 8, 8)
    assert "projector_s1.patch_embed.in_norm.weight" not in shapes
    own = model.model.state_dict()
    assert all(torch.equal(own[k], sd[k]) for k in own)  # every S2-path tensor from the file
    net = model.model

    def fails(d: dict, pattern: str) -> None:
        with pytest.raises(WeightsError, match=pattern):
            prepare_state_dict(net, d, path="AnySat.pth")

    bad = dict(sd)
    bad.pop("projector_aerial.mlp.4.bias")
    fails(bad, r"other projectors: 1 missing.*projector_aerial\.mlp\.4\.bias")
    bad = dict(sd)
    bad["projector_l8.patch_embed.inconv.0.weight"] = torch.zeros(96, 10)
    fails(bad, r"1 shape mismatches.*projector_l8.*\(96, 11\)")
    bad = dict(sd)
    bad["projector_planet.x"] = torch.zeros(1)
    fails(bad, r"1 unexpected.*projector_planet\.x")
    bad = dict(sd)
    bad.pop("blocks.6.attn.q_learned")
    fails(bad, r"AnySat checkpoint.*1 missing.*blocks\.6\.attn\.q_learned")
    wrapped = {f"model.{k}": v for k, v in sd.items()}
    assert set(prepare_state_dict(net, wrapped, path="x")) == set(own)


def test_weights_resolution_env_dir_and_hf_cache(ckpt: Path, tmp_path, monkeypatch) -> None:
    from rs_embed_ray.models.anysat import AnySat
    from rs_embed_ray.testing.checkpoints import write_hf_cache_entry

    with pytest.raises(WeightsError, match=r"models/AnySat\.pth"):
        AnySat(device="cpu")
    wd = tmp_path / "wd" / "anysat" / "models"
    wd.mkdir(parents=True)
    (wd / "AnySat.pth").symlink_to(ckpt)
    monkeypatch.setenv("RS_EMBED_RAY_WEIGHTS_DIR", str(tmp_path / "wd"))
    env = AnySat(device="cpu")
    assert env.weights_record["source"] == "env_dir"
    monkeypatch.delenv("RS_EMBED_RAY_WEIGHTS_DIR")
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    write_hf_cache_entry(cache, "g-astruc/AnySat", "models/AnySat.pth", ckpt)
    hf = AnySat(device="cpu")
    assert hf.weights_record["source"] == "hf_cache"
    assert hf.weights_record["sha256"] == env.weights_record["sha256"]
    assert len(hf.weights_record["sha256"]) == 64
    r = AnySat(device="cpu", weights="random")
    assert r.weights_record["weights"] == "random-init"


def test_zscore_and_resize_golden(model) -> None:
    """Per channel over (T, H, W): (x - nanmean) / nanstd (population), NaN -> 0; a
    non-square input is centre-padded (reflect) before the bilinear resize."""
    from rs_embed_ray.models.anysat import zscore_tchw

    x = _x(1, t=3, h=12)
    x[1, 2, 3:5, 4:9] = np.nan
    z = zscore_tchw(torch.from_numpy(x)).numpy()
    mu = np.nanmean(x.astype(np.float64), axis=(0, 2, 3), keepdims=True)
    sd = np.nanstd(x.astype(np.float64), axis=(0, 2, 3), keepdims=True)
    ref = np.nan_to_num((x - mu) / sd, nan=0.0)
    np.testing.assert_allclose(z, ref, atol=1e-5)
    assert (z[1, 2, 3:5, 4:9] == 0).all()
    flat = np.ones((2, 10, 12, 12), np.float32) * 300.0
    assert np.abs(zscore_tchw(torch.from_numpy(flat)).numpy()).max() == 0.0  # std floored

    # 12 x 8 -> reflect pad to 12 x 12 (2 columns each side) -> already 12: no resize
    raw = _x(2, t=2, h=12, w=8)
    raw[0, 0, 0, 0] = 20000.0  # clipped to 10000 first
    t, win = model.preprocess(raw)
    padded = np.pad(np.clip(raw, 0, 10000), ((0, 0), (0, 0), (0, 0), (2, 2)), mode="reflect")
    mu = padded.mean(axis=(0, 2, 3), keepdims=True, dtype=np.float64)
    sd = padded.std(axis=(0, 2, 3), keepdims=True, dtype=np.float64)
    np.testing.assert_allclose(t.numpy(), (padded - mu) / sd, atol=1e-5)
    assert win == (0.0, 1.0, 2 / 12, 10 / 12)


def test_day_of_year_of_bin_midpoints() -> None:
    """8 equal whole-day bins of 2022: bounds 0,45,91,136,182,228,273,319,365; midpoints
    (start + days//2) as day of year from 0; fetch_meta frames win when they match T."""
    from rs_embed_ray.models.anysat import frame_doys

    doys, src = frame_doys(8, WIN, None)
    assert src == "window_split" and doys == [22, 68, 113, 159, 205, 250, 296, 342]
    frames = [
        {"start": "2022-12-01", "end": "2023-01-31"},
        {"start": "2023-02-01", "end": "2023-02-03"},
    ]
    doys, src = frame_doys(2, WIN, {"frames": frames})
    assert src == "fetch_meta_frames" and doys == [364, 32]  # Dec 31 -> 364; Feb 2 -> 32
    doys, _ = frame_doys(3, WIN, {"frames": frames})  # wrong length: the window split
    assert doys == [60, 182, 304]


def test_patch_size_in_metres_and_grid_modes(model) -> None:
    x = _x(3)
    (dense,) = _embed(model, [x], OutputSpec.grid())
    assert dense.data.shape == (1536, 12, 12) and dense.meta["patch_size_m"] == 10
    (patch,) = _embed(_with(model, grid_feature_mode="patch"), [x], OutputSpec.grid())
    assert patch.data.shape == (768, 12, 12)
    # at 10 m every pixel is its own patch: dense = [patch token | pixel feature]
    np.testing.assert_allclose(dense.data[:768], patch.data, atol=1e-5)
    meta20 = [{"grid": {"scale_m": 20}}]
    (d20,) = _embed(model, [x], OutputSpec.grid(), metas=meta20)
    (p20,) = _embed(_with(model, grid_feature_mode="patch"), [x], OutputSpec.grid(), metas=meta20)
    assert d20.meta["patch_size_m"] == 20 and d20.data.shape == (1536, 12, 12)
    assert p20.data.shape == (768, 6, 6)
    # each 2 x 2 block of the dense grid carries its patch's token
    np.testing.assert_allclose(d20.data[:768, ::2, ::2], p20.data, atol=1e-5)
    np.testing.assert_allclose(d20.data[:768, 1::2, 1::2], p20.data, atol=1e-5)
    (pool20,) = _embed(model, [x], OutputSpec.pooled(), metas=meta20)
    assert pool20.meta["pooling"] == "patch_mean"
    np.testing.assert_allclose(pool20.data, p20.data.mean(axis=(1, 2)), atol=1e-5)
    # image_size=0 keeps the input's own pixels (the upstream geometry): a 10 px input
    native = _with(model, image_size=0, grid_feature_mode="patch")
    (n10,) = _embed(native, [_x(3, h=10)], OutputSpec.grid())
    assert n10.data.shape == (768, 10, 10) and n10.meta["image_size"] == 10
    with pytest.raises(ModelError, match="multiple of 10"):
        _embed(model, [x], OutputSpec.pooled(), metas=[{"grid": {"scale_m": 15}}])
    with pytest.raises(ModelError, match="does not divide the 12 px"):
        _embed(_with(model, patch_size_m=50), [x], OutputSpec.pooled())


def test_dates_change_the_embedding(model) -> None:
    x = _x(4)
    (a,) = _embed(model, [x], OutputSpec.pooled())
    (b,) = _embed(
        model, [x], OutputSpec.pooled(), temporal=TemporalSpec.range("2022-05-01", "2022-07-01")
    )
    assert a.meta["doy0_values"] != b.meta["doy0_values"]
    assert np.abs(a.data - b.data).max() > 1e-4


def test_batched_equals_one_at_a_time(model) -> None:
    """Different T (two forwards in one call) and a non-square input; pooled and the dense
    grid (the tile token comes out of the same forward as the pooled patch mean)."""
    xs = [_x(5), _x(6, t=3), _x(8, h=12, w=10)]
    for out in (OutputSpec.pooled(), OutputSpec.grid()):
        batch = _embed(model, xs, out)
        for x, e in zip(xs, batch, strict=True):
            (one,) = _embed(model, [x], out)
            assert e.data.shape == one.data.shape
            np.testing.assert_allclose(e.data, one.data, rtol=0, atol=1e-4)
    assert batch[1].meta["n_frames"] == 3 and batch[0].meta["n_frames"] == 8
    assert batch[2].data.shape == (1536, 12, 10)  # cropped back from the padded square


def test_roi_crop_pooling_and_tile(model) -> None:
    x = _x(9)
    m = _with(model, grid_feature_mode="patch")
    roi = {"roi_window_geo": [0.0, 0.5, 0.5, 1.0]}
    (full,) = _embed(m, [x], OutputSpec.grid())
    (cut,) = _embed(m, [x], OutputSpec.grid(), metas=[roi])
    np.testing.assert_allclose(cut.data, full.data[:, :6, 6:], atol=1e-6)
    assert cut.meta["roi_cropped"]
    (p,) = _embed(model, [x], OutputSpec.pooled(), metas=[roi])
    np.testing.assert_allclose(p.data, full.data[:, :6, 6:].mean(axis=(1, 2)), atol=1e-5)
    (mx,) = _embed(model, [x], OutputSpec.pooled(pooling="max"))
    assert mx.meta["pooling"] == "patch_max"
    np.testing.assert_allclose(mx.data, full.data.max(axis=(1, 2)), atol=1e-5)
    tile = _with(model, pooled_source="tile")
    (t_full,) = _embed(tile, [x], OutputSpec.pooled())
    (t_cut,) = _embed(tile, [x], OutputSpec.pooled(), metas=[roi])
    assert t_full.meta["pooling"] == "tile_native" and t_full.data.shape == (768,)
    np.testing.assert_array_equal(t_full.data, t_cut.data)  # the class token is not cropped
    assert np.abs(t_full.data - p.data).max() > 1e-3


def test_bad_inputs_and_config(model, ckpt: Path) -> None:
    from rs_embed_ray.models.anysat import AnySat

    with pytest.raises(ModelError, match="C=10 bands"):
        _embed(model, [np.zeros((2, 9, 12, 12), np.float32)], OutputSpec.pooled())
    for cfg, pattern in (
        ({"grid_feature_mode": "nope"}, "grid_feature_mode"),
        ({"pooled_source": "cls"}, "pooled_source"),
        ({"variant": "large"}, "only 'base'"),
        ({"patch_size_m": 25}, "multiple of 10"),
        ({"n_frames": 4}, r"unknown model_config key\(s\) \['n_frames'\]"),
    ):
        with pytest.raises(ModelError, match=pattern):
            AnySat(device="cpu", weights=str(ckpt), model_config=cfg)


def test_catalog_entry() -> None:
    from rs_embed_ray.models.anysat import AnySat
    from rs_embed_ray.models.registry import embedder_class, get_info

    info = get_info("anysat")
    assert info.status == "available" and embedder_class("anysat") is AnySat
    assert info.fetch_semantics == "multi:8" and info.n_frames == 8
    assert info.sensor.bands == ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")
    assert (info.dim_pooled, info.dim_grid, info.grid_hw) == (768, 1536, (24, 24))


def test_bad_model_config_fails_at_plan_time(tmp_path) -> None:
    """A bad option stops the export before any cluster work, naming the choices."""
    from rs_embed_ray.api import plan_export
    from rs_embed_ray.specs import PointBuffer
    from tests.conftest import tiny_raster_source

    source = tiny_raster_source(tmp_path)

    def plan(cfg):
        return plan_export(
            spatials=[PointBuffer(15.0, 45.0, 160.0)],
            temporal=WIN,
            models=["anysat"],
            out=str(tmp_path / "o"),
            layout="per_item",
            backend="local",
            source=str(source),
            model_configs={"anysat": cfg},
        )

    with pytest.raises(ModelError, match=r"grid_feature_mode 'dens'.*dense.*patch"):
        plan({"grid_feature_mode": "dens"})
    with pytest.raises(ModelError, match="multiple of 10"):
        plan({"patch_size_m": 15})
    assert plan({"pooled_source": "tile", "image_size": 12}).models[0].model_id == "anysat"
