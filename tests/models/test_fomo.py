"""FoMo-Net_1: published file format, strict loading, weights resolution, the preprocessing on
fixed inputs (DN/10000 clipped, NaN -> 0, reflect pad to square, bilinear 64), the band
tokens and spectral keys, batching, ROI crops and the catalog entry.

The checkpoint is random-valued with the published key names and shapes
(rs_embed_ray.testing.checkpoints_fomo). Expected numbers are computed here by hand from the
published recipe; the network itself is checked against the official model in
tests/oracle/test_oracle_fomo.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rs_embed_ray.errors import ModelError, WeightsError
from rs_embed_ray.specs import OutputSpec

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """One intra-op thread: on a loaded 2-CPU machine spinning threads are much slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ckpt(module_scratch) -> Path:
    from rs_embed_ray.testing.checkpoints_fomo import write_fomo_checkpoint

    return write_fomo_checkpoint(module_scratch("fomo"), seed=1)


@pytest.fixture(scope="module")
def model(ckpt: Path):
    from rs_embed_ray.models.fomo import FoMo

    return FoMo(device="cpu", weights=str(ckpt), precision="float32")


def _embed(m, xs, output, metas=None):
    return m.embed_batch(
        xs,
        output=output,
        spatials=[None] * len(xs),
        temporal=None,
        fetch_metas=metas or [{}] * len(xs),
    )


def _s2(seed: int, side: int = 40, w: int | None = None) -> np.ndarray:
    rs = np.random.RandomState(seed)
    return rs.uniform(0, 6000, (12, side, w or side)).astype(np.float32)


def test_checkpoint_layout_and_strict_load(ckpt: Path, model) -> None:
    sd = torch.load(ckpt, map_location="cpu", weights_only=True)
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    # the published MultiSpectralViT: one embedding layer for all bands, 37 modalities + 1
    assert shapes["to_patch_embedding.1.weight"] == (256,)
    assert shapes["to_patch_embedding.2.weight"] == (768, 256)
    assert shapes["to_patch_embedding.3.bias"] == (768,)
    assert shapes["pos_embedding"] == (1, 17, 768)
    assert shapes["spectral_embedding"] == (1, 38, 768)
    assert shapes["cls_token"] == (1, 1, 768)
    assert shapes["transformer.layers.11.0.to_qkv.weight"] == (2304, 768)
    assert "transformer.layers.11.0.to_qkv.bias" not in shapes
    assert shapes["transformer.layers.11.0.to_out.0.weight"] == (768, 768)
    assert shapes["transformer.layers.11.1.net.1.weight"] == (2048, 768)
    assert shapes["transformer.layers.11.1.net.4.weight"] == (768, 2048)
    assert shapes["transformer.norm.weight"] == (768,)
    assert shapes["mlp_head.weight"] == (1000, 768)
    own = model.model.state_dict()
    assert set(own) == set(sd) - {"mlp_head.weight", "mlp_head.bias"}
    for k in ("transformer.layers.3.1.net.4.weight", "spectral_embedding"):
        torch.testing.assert_close(own[k], sd[k], rtol=0, atol=0)
    rec = model.weights_record
    assert rec["source"] == "explicit" and len(rec["sha256"]) == 64


def test_mismatches_are_named_and_wrappers_stripped(ckpt: Path, tmp_path: Path) -> None:
    from rs_embed_ray.models.fomo import FoMo

    sd = dict(torch.load(ckpt, map_location="cpu", weights_only=True))
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, wrapped)
    m = FoMo(device="cpu", weights=str(wrapped))
    torch.testing.assert_close(m.model.state_dict()["cls_token"], sd["cls_token"])
    sd.pop("transformer.layers.0.0.to_qkv.weight")
    sd["transformer.layers.0.0.to_qkv.bias"] = torch.zeros(2304)
    sd["spectral_embedding"] = torch.zeros(1, 20, 768)  # a per-dataset modality table
    bad = tmp_path / "bad.pt"
    torch.save(sd, bad)
    with pytest.raises(
        WeightsError,
        match=r"FoMo checkpoint.*1 missing.*to_qkv.weight.*1 unexpected.*to_qkv.bias"
        r".*1 shape mismatches.*spectral_embedding",
    ):
        FoMo(device="cpu", weights=str(bad))


def test_weights_resolution(ckpt: Path, tmp_path, monkeypatch) -> None:
    from rs_embed_ray.models.fomo import FoMo

    with pytest.raises(WeightsError, match=r"fomo_single_embedding_layer_weights\.pt") as info:
        FoMo(device="cpu")
    assert "no Hugging Face repo" in str(info.value)
    # the plan-time check (no tensors read) knows the published file name too
    with pytest.raises(WeightsError, match=r"has no fomo_single_embedding_layer_weights\.pt"):
        FoMo.check_weights(str(tmp_path), None)
    FoMo.check_weights(str(ckpt.parent), None)
    wd = tmp_path / "wd" / "fomo"
    wd.mkdir(parents=True)
    (wd / "fomo_single_embedding_layer_weights.pt").symlink_to(ckpt)
    monkeypatch.setenv("RS_EMBED_RAY_WEIGHTS_DIR", str(tmp_path / "wd"))
    assert FoMo(device="cpu").weights_record["source"] == "env_dir"
    # a folder given explicitly is searched for the published file name
    assert FoMo(device="cpu", weights=str(wd)).weights_record["source"] == "explicit"
    with pytest.raises(WeightsError, match=r"other\.pt"):
        FoMo(device="cpu", model_config={"filename": "other.pt"})
    r = FoMo(device="cpu", weights="random")
    assert r.weights_record["weights"] == "random-init"


def test_preprocessing_golden(model) -> None:
    """DN/10000 clipped to [0, 1], NaN -> 0; a 64 px input is not resized."""
    x = np.zeros((12, 64, 64), np.float32)
    x[:] = (np.arange(1, 13, dtype=np.float32) * 500.0)[:, None, None]  # B1=500 .. B12=6000
    x[0, 0, 0:3] = [np.nan, 12000.0, -5.0]
    t, wins = model.preprocess([x])
    a = t[0].numpy()
    assert a.shape == (12, 64, 64) and wins == [(0.0, 1.0, 0.0, 1.0)]
    assert a[0, 0, :4].tolist() == pytest.approx([0.0, 1.0, 0.0, 0.05])
    assert a[11, 5, 5] == pytest.approx(0.6) and a[8, 5, 5] == pytest.approx(0.45)


def test_resize_and_pad_golden(model) -> None:
    """32 px -> 64 px bilinear (align_corners=False): output pixel (2i+1/2...) is the 3:1 /
    1:3 blend of neighbours; a 16 x 32 input is reflect-padded to 32 x 32 first."""
    ramp = np.tile(np.arange(32, dtype=np.float32) * 100.0, (12, 32, 1))  # along x
    t, _ = model.preprocess([ramp])
    row = t[0, 0, 10].numpy()
    # half-pixel centres: out x=1 -> in 0.25 (0 and 100: 25); x=2 -> in 0.75 (75); edge clamps
    assert row[:4].tolist() == pytest.approx([0.0, 0.0025, 0.0075, 0.0125], abs=1e-7)
    assert row[-1] == pytest.approx(0.31)
    rect = np.zeros((12, 20, 32), np.float32)
    rect[:, :, :] = (np.arange(20, dtype=np.float32) * 100.0)[None, :, None]  # along y
    t2, wins = model.preprocess([rect, rect[:, :16]])
    assert wins == [(0.1875, 0.8125, 0.0, 1.0), (0.25, 0.75, 0.0, 1.0)]
    col = t2[0, 0, :, 5].numpy()
    # reflect pad of 6 rows on each side: padded rows 0..7 = original rows 6..1, 0, 1
    # out row 0 -> in -0.25 (clamped to padded row 0); out row 16 -> in 7.75 (rows 1 and 2)
    assert col[0] == pytest.approx(0.06) and col[16] == pytest.approx(0.0175)
    # a pad as large as the short side (16 rows of 16) replicates the edge instead
    edge = t2[1, 0, :, 5].numpy()
    assert edge[0] == 0.0 and edge[-1] == pytest.approx(0.15)
    with pytest.raises(ModelError, match=r"\(12, H, W\) Sentinel-2"):
        model.preprocess([np.zeros((10, 8, 8), np.float32)])


def test_band_tokens_and_spectral_keys(model) -> None:
    """Tokens are band after band (12 x 16); the grid is their band mean; swapping two bands'
    pixels changes the output (keys tell bands apart), a band order that keeps the key with
    its pixels does not."""
    from rs_embed_ray.models.fomo import S2_KEYS, grid_of

    x = torch.from_numpy(np.random.RandomState(0).uniform(0, 0.5, (1, 12, 64, 64))).float()
    tok = model.forward(x)
    assert tok.shape == (1, 192, 768)
    g = grid_of(tok, 12)
    np.testing.assert_allclose(g[0, :, 1, 2], tok[0].reshape(12, 16, 768)[:, 6].mean(0), atol=1e-6)
    perm = [1, 0, *range(2, 12)]
    with torch.inference_mode():
        same = model.model.forward_tokens(x[:, perm], [S2_KEYS[i] for i in perm]).numpy()
        swapped = model.model.forward_tokens(x[:, perm], S2_KEYS).numpy()
    np.testing.assert_allclose(same.mean(1), tok.mean(1), atol=1e-5)  # a token permutation
    assert np.abs(swapped.mean(1) - tok.mean(1)).max() > 1e-3


def test_batched_equals_single_and_outputs(model) -> None:
    xs = [_s2(0), _s2(1, 64), _s2(2, 24, 40), _s2(3)]
    batch = _embed(model, xs, OutputSpec.pooled())
    for x, e in zip(xs, batch, strict=True):
        (one,) = _embed(model, [x], OutputSpec.pooled())
        assert e.data.shape == (768,) and e.data.dtype == np.float32
        np.testing.assert_allclose(e.data, one.data, atol=1e-5)
    assert batch[0].meta["pooling"] == "token_mean" and batch[0].meta["image_size"] == 64
    assert batch[2].meta["pooling"] == "roi_grid_mean"  # padded: cut to the real area
    grids = _embed(model, xs, OutputSpec.grid())
    assert [g.data.shape for g in grids] == [(768, 4, 4), (768, 4, 4), (768, 4, 4), (768, 4, 4)]
    assert grids[0].meta["grid_type"] == "fomo_band_mean_patch_tokens"
    np.testing.assert_allclose(grids[0].data.mean(axis=(1, 2)), batch[0].data, atol=1e-5)
    assert np.abs(batch[0].data - batch[3].data).max() > 1e-3  # inputs matter
    mx = _embed(model, xs[:1], OutputSpec.pooled(pooling="max"))[0]
    assert mx.meta["pooling"] == "token_max" and (mx.data >= batch[0].data).all()


def test_roi_window_crops_grid_and_pools_it(model) -> None:
    meta = {"roi_window_geo": [0.25, 0.75, 0.0, 0.5]}
    x = _s2(5, 48)
    (full,) = _embed(model, [x], OutputSpec.grid())
    (g,) = _embed(model, [x], OutputSpec.grid(), [meta])
    assert g.data.shape == (768, 2, 2) and g.meta["roi_cropped"]
    np.testing.assert_allclose(g.data, full.data[:, 1:3, 0:2], atol=1e-6)
    (v,) = _embed(model, [x], OutputSpec.pooled(), [meta])
    assert v.meta["pooling"] == "roi_grid_mean"
    np.testing.assert_allclose(v.data, full.data[:, 1:3, 0:2].mean(axis=(1, 2)), atol=1e-5)


def test_catalog_entry_and_registry() -> None:
    from rs_embed_ray.models.fomo import FoMo
    from rs_embed_ray.models.registry import embedder_class, get_info

    info = get_info("fomo")
    assert info.status == "available" and embedder_class("fomo") is FoMo
    assert info.sensor.bands == (
        "B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12",
    )  # fmt: skip
    assert (info.image_size, info.dim_pooled, info.grid_hw) == (64, 768, (4, 4))
    with pytest.raises(ModelError, match="unknown model_config"):
        FoMo.check_model_config({"spectral_keys": [1]})
