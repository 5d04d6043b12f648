"""THOR v1: published file format, strict loading, weights resolution, the preprocessing on
fixed inputs (THOR z-score, native_snap sides, 20 m bands at half the side, S1 log1p/p99),
ALiBi slopes, batching, ROI crops and the tiny variant.

The checkpoint is random-valued with the published key names and shapes
(rs_embed_ray.testing.checkpoints_thor). Expected numbers are computed here by hand from the
published formulas; the network itself is checked against the official encoder in
tests/oracle/test_oracle_thor.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rs_embed_ray.errors import ModelError, WeightsError
from rs_embed_ray.specs import OutputSpec

torch = pytest.importorskip("torch")
pytest.importorskip("timm")


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """One intra-op thread: on a loaded 2-CPU machine spinning threads are much slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ckpt(module_scratch) -> Path:
    from rs_embed_ray.testing.checkpoints_thor import write_thor_checkpoint

    extra = {"encoder.pos_embed.10": torch.zeros(1296, 640), "decoder.norm.weight": torch.ones(4)}
    return write_thor_checkpoint(module_scratch("thor"), seed=1, extra=extra)


@pytest.fixture(scope="module")
def model(ckpt: Path):
    from rs_embed_ray.models.thor import Thor

    return Thor(
        device="cpu",
        weights=str(ckpt),
        model_config={"resize_mode": "native_snap"},
        precision="float32",
    )


def _embed(m, xs, output, metas=None):
    return m.embed_batch(
        xs,
        output=output,
        spatials=[None] * len(xs),
        temporal=None,
        fetch_metas=metas or [{}] * len(xs),
    )


def _s2(seed: int, side: int = 32, w: int | None = None) -> np.ndarray:
    rs = np.random.RandomState(seed)
    return rs.uniform(0, 6000, (10, side, w or side)).astype(np.float32)


def test_checkpoint_layout_and_strict_load(ckpt: Path, model) -> None:
    obj = torch.load(ckpt, map_location="cpu", weights_only=True)
    sd = obj["state_dict"]
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert shapes["encoder.ind_patch_embed.patch_embed.S2:Red.weight"] == (768, 1, 16, 16)
    assert shapes["encoder.ind_patch_embed.patch_embed.S1:VV.weight"] == (768, 1, 16, 16)
    assert shapes["encoder.ind_patch_embed.patch_embed.S3:S9_BT_in.bias"] == (768,)
    assert shapes["encoder.band_embed.group9"] == (128,)
    assert shapes["encoder.encoder_slopes"] == (12,)
    assert shapes["encoder.blocks.11.attn.qkv.weight"] == (2304, 768)
    assert shapes["encoder.blocks.11.mlp.fc1.weight"] == (3072, 768)
    # 46 patch embeddings (12 S2, 4 S1 polarisations, 30 S3), 10 groups, 12 blocks of 12
    assert len([k for k in sd if k.endswith(".weight") and "patch_embed" in k]) == 46
    own = model.model.state_dict()
    enc = {k[len("encoder.") :] for k in sd if k.startswith("encoder.")}
    assert set(own) == enc - {"pos_embed.10"}  # the ALiBi encoder has no position table
    for k in ("blocks.3.attn.proj.weight", "ind_patch_embed.patch_embed.S2:SWIR2.bias"):
        torch.testing.assert_close(own[k], sd[f"encoder.{k}"], rtol=0, atol=0)
    rec = model.weights_record
    assert rec["source"] == "explicit" and len(rec["sha256"]) == 64


@pytest.fixture(scope="module")
def tiny_ckpt(module_scratch) -> Path:
    from rs_embed_ray.testing.checkpoints_thor import write_thor_checkpoint

    return write_thor_checkpoint(module_scratch("thor_tiny"), seed=2, variant="tiny")


def test_mismatches_are_named(tiny_ckpt: Path, tmp_path: Path) -> None:
    """(the tiny file: the same loader, a 24 MB rewrite instead of 380 MB)"""
    from rs_embed_ray.models.thor import Thor

    sd = dict(torch.load(tiny_ckpt, map_location="cpu", weights_only=True)["state_dict"])
    sd.pop("encoder.blocks.0.attn.qkv.bias")
    sd["encoder.norm.weight"] = torch.ones(384)
    sd["encoder.cls_token"] = torch.zeros(1, 1, 192)
    bad = tmp_path / "thor_v1_vit_tiny.pt"
    torch.save({"state_dict": sd}, bad)
    with pytest.raises(
        WeightsError, match=r"1 missing.*qkv.bias.*1 unexpected.*cls_token.*norm.weight"
    ):
        Thor(device="cpu", weights=str(bad), model_config={"variant": "tiny"})


def test_weights_resolution_env_dir_and_hf_cache(ckpt: Path, tmp_path, monkeypatch) -> None:
    from rs_embed_ray.models.thor import Thor
    from rs_embed_ray.models.weights import file_sha256
    from rs_embed_ray.testing.checkpoints import write_hf_cache_entry

    with pytest.raises(WeightsError, match=r"thor_v1_vit_base\.pt"):
        Thor(device="cpu")
    wd = tmp_path / "wd" / "thor"
    wd.mkdir(parents=True)
    (wd / "thor_v1_vit_base.pt").symlink_to(ckpt)
    monkeypatch.setenv("RS_EMBED_RAY_WEIGHTS_DIR", str(tmp_path / "wd"))
    assert Thor(device="cpu").weights_record["source"] == "env_dir"
    monkeypatch.delenv("RS_EMBED_RAY_WEIGHTS_DIR")
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    write_hf_cache_entry(cache, "FM4CS/THOR-1.0-base", "thor_v1_vit_base.pt", ckpt)
    m = Thor(device="cpu")
    assert m.weights_record["source"] == "hf_cache"
    assert m.weights_record["sha256"] == file_sha256(ckpt)
    with pytest.raises(WeightsError, match=r"thor_v1_vit_small\.pt"):
        Thor(device="cpu", model_config={"variant": "small"})
    r = Thor(device="cpu", weights="random")
    assert r.weights_record["weights"] == "random-init"


def test_s2_preprocessing_golden() -> None:
    """DN/10000 then the THOR z-score; the 20 m bands are the 2x2 means (bilinear halving)."""
    from rs_embed_ray.models.thor import ThorConfig, prepare

    x = np.zeros((10, 32, 32), np.float32)
    x[:] = (np.arange(1, 11, dtype=np.float32) * 500.0)[:, None, None]  # B2=500 .. B12=5000
    x[2, 4:6, 6:8] = [[1000.0, 2000.0], [3000.0, 4000.0]]  # B4 (Red), 10 m
    x[3, 4:6, 6:8] = [[0.0, 12000.0], [np.nan, 2000.0]]  # B5 (RE1), 20 m: clip, NaN -> 0
    p = prepare(x, ThorConfig(resize_mode="native_snap"))
    assert p.side == 32 and p.modality == "s2" and p.strategy == "native_snap"
    red = p.bands["S2:Red"][0].numpy()
    assert red.shape == (32, 32)
    # B4 mean 0.213948, std 0.259180 (THOR statistics, reflectance)
    assert red[5, 6] == pytest.approx((0.3 - 0.213948) / 0.259180, rel=1e-5)
    assert red[0, 0] == pytest.approx((0.15 - 0.213948) / 0.259180, rel=1e-5)
    re1 = p.bands["S2:RE1"][0].numpy()
    assert re1.shape == (16, 16)
    # B5 mean 0.263378, std 0.272771; 20 m pixel (2, 3) = mean of 0, 10000 (clipped), 0, 2000
    assert re1[2, 3] == pytest.approx((0.3 - 0.263378) / 0.272771, rel=1e-5)
    # B8 is the 10 m NIR, B8A the 20 m RE4
    assert p.bands["S2:NIR"].shape[-1] == 32 and p.bands["S2:RE4"].shape[-1] == 16
    nir = float(p.bands["S2:NIR"][0, 0, 0])
    assert nir == pytest.approx((0.35 - 0.308133) / 0.226434, rel=1e-5)


@pytest.mark.parametrize(
    "shape,side,strategy",
    [
        ((10, 40, 40), 32, "native_snap"),  # 40 -> 32 (ties go down), centre crop
        ((10, 44, 44), 48, "native_snap"),  # 44 -> 48, zero pad
        ((10, 40, 46), 32, "native_snap"),  # 6 px off square: crop to 40 first
        ((10, 40, 56), 288, "fixed_resize:rectangular_above_tolerance"),
        ((10, 400, 400), 288, "fixed_resize:native_side_limit"),
        ((2, 28, 28), 24, "native_snap"),  # S1: an 8 px unit
    ],
)
def test_native_snap_sides(shape, side, strategy) -> None:
    from rs_embed_ray.models.thor import ThorConfig, prepare

    x = np.full(shape, 0.05 if shape[0] == 2 else 1000.0, np.float32)
    p = prepare(x, ThorConfig(resize_mode="native_snap"))
    assert (p.side, p.strategy) == (side, strategy)
    first = next(iter(p.bands.values()))
    assert first.shape[-1] == side
    if shape == (10, 44, 44):  # the pad is raw 0 -> 0 reflectance -> (0 - mean) / std
        assert float(first[0, 0, 0]) == pytest.approx(-0.176620 / 0.264520, rel=1e-5)
    fixed = prepare(x, ThorConfig())
    assert fixed.side == 288 and fixed.strategy == "fixed_resize"


def test_s1_preprocessing_and_db_refused() -> None:
    from rs_embed_ray.models.thor import ThorConfig, prepare

    x = np.random.RandomState(0).gamma(1.0, 0.1, (2, 24, 24)).astype(np.float32)
    p = prepare(x, ThorConfig(resize_mode="native_snap"))
    v = np.log1p(x)
    want = np.clip(v / np.percentile(v, 99), 0, 1)
    assert set(p.bands) == {"S1:IW-VV", "S1:IW-VH"} and p.modality == "s1"
    np.testing.assert_allclose(p.bands["S1:IW-VV"][0].numpy(), want[0], rtol=1e-6)
    np.testing.assert_allclose(p.bands["S1:IW-VH"][0].numpy(), want[1], rtol=1e-6)
    with pytest.raises(ModelError, match="dB"):
        prepare(-np.abs(x) - 10.0, ThorConfig())
    with pytest.raises(ModelError, match=r"\(10, H, W\) Sentinel-2"):
        prepare(np.zeros((4, 8, 8), np.float32), ThorConfig())


def test_alibi_slopes_and_config() -> None:
    from rs_embed_ray.models.thor import Thor, alibi_slopes, parse_config

    # ALiBi (Press et al.): 8 heads 2^-1..2^-8; 12 heads add the odd powers of 2^-0.5
    assert alibi_slopes(8) == [2.0**-i for i in range(1, 9)]
    got = alibi_slopes(12)
    want = [2.0**-i for i in range(1, 9)] + [2.0 ** -(i + 0.5) for i in range(0, 4)]
    assert got == pytest.approx(want, rel=1e-12)
    with pytest.raises(ModelError, match="resize_mode"):
        parse_config({"resize_mode": "stretch"})
    with pytest.raises(ModelError, match="multiple of 16"):
        parse_config({"image_size": 100})
    with pytest.raises(ModelError, match="unknown model_config"):
        Thor.check_model_config({"patch_size": 4})
    with pytest.raises(ModelError, match="variant"):
        Thor.check_model_config({"variant": "huge"})


def test_batched_equals_single_and_outputs(model) -> None:
    xs = [_s2(0), _s2(1, 44), np.random.RandomState(2).gamma(1.0, 0.1, (2, 24, 24))]
    xs = [x.astype(np.float32) for x in xs] + [_s2(3)]
    batch = _embed(model, xs, OutputSpec.pooled())
    for x, e in zip(xs, batch, strict=True):
        (one,) = _embed(model, [x], OutputSpec.pooled())
        assert e.data.shape == (768,)
        np.testing.assert_allclose(e.data, one.data, atol=1e-5)
    assert [e.meta["modality"] for e in batch] == ["s2", "s2", "s1", "s2"]
    assert batch[0].meta["pooling"] == "token_mean"
    grids = _embed(model, xs, OutputSpec.grid())
    assert [g.data.shape for g in grids] == [(768, 4, 4), (768, 6, 6), (768, 3, 3), (768, 4, 4)]
    assert grids[1].meta["grid_type"] == "thor_group_grid_mean"
    assert np.abs(batch[0].data - batch[3].data).max() > 1e-3  # inputs matter


def test_roi_window_crops_grid_and_pools_it(model) -> None:
    meta = {"roi_window_geo": [0.25, 0.75, 0.0, 0.5]}
    x = _s2(5)
    (full,) = _embed(model, [x], OutputSpec.grid())
    (g,) = _embed(model, [x], OutputSpec.grid(), [meta])
    assert g.data.shape == (768, 2, 2) and g.meta["roi_cropped"]
    np.testing.assert_allclose(g.data, full.data[:, 1:3, 0:2], atol=1e-6)
    (v,) = _embed(model, [x], OutputSpec.pooled(), [meta])
    assert v.meta["pooling"] == "roi_grid_mean"
    np.testing.assert_allclose(v.data, full.data[:, 1:3, 0:2].mean(axis=(1, 2)), atol=1e-5)


def test_tiny_variant_loads_strictly(tiny_ckpt: Path) -> None:
    from rs_embed_ray.models.thor import Thor

    assert tiny_ckpt.name == "thor_v1_vit_tiny.pt"
    m = Thor(
        device="cpu",
        weights=str(tiny_ckpt),
        model_config={"variant": "tiny", "resize_mode": "native_snap"},
    )
    (e,) = _embed(m, [_s2(0)], OutputSpec.grid())
    assert e.data.shape == (192, 4, 4) and e.meta["variant"] == "tiny"
    with pytest.raises(WeightsError, match="shape mismatches"):
        Thor(device="cpu", weights=str(tiny_ckpt))  # base architecture, tiny file


def test_catalog_entry_and_registry() -> None:
    from rs_embed_ray.models.registry import embedder_class, get_info
    from rs_embed_ray.models.thor import Thor

    info = get_info("thor_1_0_base")  # rs-embed's alias
    assert info.model_id == "thor" and info.status == "available"
    assert embedder_class("thor") is Thor
    assert info.sensor.bands == ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")
    assert (info.image_size, info.dim_pooled, info.grid_hw) == (288, 768, (36, 36))
