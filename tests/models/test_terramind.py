"""TerraMind v1 small: published checkpoint layout, strict loading, the reference
preprocessing on fixed inputs (golden), batched == one at a time, layer choice, ROI crops.

The checkpoint is random-valued with the published key names and shapes (see
rs_embed_ray.testing.checkpoints_terramind); the oracle comparison with terratorch's own
TerraMindViT is in tests/oracle/test_oracle_terramind.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rs_embed_ray.errors import ModelError, WeightsError
from rs_embed_ray.specs import OutputSpec

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def terramind_ckpt(module_scratch) -> Path:
    from rs_embed_ray.testing.checkpoints_terramind import write_terramind_checkpoint

    return write_terramind_checkpoint(module_scratch("terramind"), seed=0)


@pytest.fixture(scope="module")
def terramind(terramind_ckpt: Path):
    from rs_embed_ray.models.terramind import TerraMind

    return TerraMind(device="cpu", weights=str(terramind_ckpt), precision="float32")


def _embed(m, xs, output, metas=None):
    return m.embed_batch(
        xs,
        output=output,
        spatials=[None] * len(xs),
        temporal=None,
        fetch_metas=metas or [{}] * len(xs),
    )


def test_checkpoint_layout_and_strict_load(terramind, terramind_ckpt, tmp_path):
    from rs_embed_ray.models.registry import embedder_class
    from rs_embed_ray.models.terramind import TerraMind, prepare_state_dict

    assert embedder_class("terramind") is TerraMind
    sd = torch.load(terramind_ckpt, map_location="cpu", weights_only=True)
    assert terramind_ckpt.name == "TerraMind_v1_small.pt"
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert shapes["encoder_embeddings.untok_sen2l2a@224.proj.weight"] == (384, 12 * 16 * 16)
    assert shapes["encoder_embeddings.untok_sen2l2a@224.pos_emb"] == (1, 196, 384)
    assert shapes["encoder.11.attn.qkv.weight"] == (1152, 384)
    assert shapes["encoder.0.mlp.fc1.weight"] == (1536, 384)
    assert "encoder.12.norm1.weight" not in shapes
    assert terramind.weights_record["weights"] == str(terramind_ckpt.absolute())
    assert len(terramind.weights_record["sha256"]) == 64
    own = terramind.model.state_dict()
    key = "encoder.3.attn.proj.weight"
    torch.testing.assert_close(own[key], sd[key])
    # decoder / other modalities are dropped by name; buffers may be absent from the file
    extra = dict(sd)
    extra["decoder.0.norm1.weight"] = torch.zeros(384)
    del extra["encoder_norm.bias"], extra["encoder_embeddings.untok_sen2l2a@224.pos_emb"]
    assert set(prepare_state_dict(terramind.model, extra, path="x")) == set(own)
    bad = dict(sd)
    del bad["encoder.5.mlp.fc2.bias"]
    bad["encoder.5.mlp.fc3.bias"] = torch.zeros(384)
    with pytest.raises(WeightsError, match=r"1 missing .*fc2\.bias.*1 unexpected"):
        prepare_state_dict(terramind.model, bad, path="x")
    p = tmp_path / "TerraMind_v1_small.pt"
    torch.save({"encoder_norm.weight": torch.ones(384)}, p)
    with pytest.raises(WeightsError, match="missing"):
        TerraMind(device="cpu", weights=str(p))
    with pytest.raises(ModelError, match="model_key"):
        TerraMind(device="cpu", weights="random", model_config={"model_key": "terramind_v2"})
    with pytest.raises(ModelError, match="preprocess"):
        TerraMind(device="cpu", weights="random", model_config={"preprocess": "minmax"})


def test_bad_model_config_refused_at_plan_time():
    """The planner's check (no torch, no weights) names the key to change."""
    from rs_embed_ray.models.terramind import TerraMind, parse_config

    check = TerraMind.check_request
    assert parse_config({"variant": "base", "layer_index": "5"}) == (
        "terramind_v1_base",
        "upstream",
        5,
    )
    assert parse_config({"model_key": "terramind_v01_base"})[0] == "terramind_v01_base"
    for cfg, msg in [
        ({"variant": "huge"}, "model_key"),
        ({"preprocess": "minmax"}, "preprocess"),
        ({"layer_index": 12}, "layer_index"),
        ({"layer_index": "last"}, "layer_index"),
        ({"modality": "S1GRD"}, "unknown model_config"),
    ]:
        with pytest.raises(ModelError, match=msg):
            check(weights=None, model_config=cfg, temporals=[None])


def test_preprocess_golden(terramind):
    """Fixed inputs: a band at mean + k*std becomes k exactly (a constant survives the
    resize); DN above 10000 are kept upstream and clipped in rs-embed mode; NaN -> 0."""
    from rs_embed_ray.models.terramind import TerraMind
    from rs_embed_ray.models.tiling import resize_bilinear

    mean = np.array([1390.458, 1503.317, 1718.197, 1853.91, 2199.1, 2779.975, 2987.011,
                     3083.234, 3132.22, 3162.988, 2424.884, 1857.648], np.float32)  # fmt: skip
    std = np.array([2106.761, 2141.107, 2038.973, 2134.138, 2085.321, 1889.926, 1820.257,
                    1871.918, 1753.829, 1797.379, 1434.261, 1334.311], np.float32)  # fmt: skip
    k = np.linspace(-1.0, 2.0, 12, dtype=np.float32)
    const = np.broadcast_to((mean + k * std)[:, None, None], (12, 20, 30)).copy()
    x = terramind.preprocess([const])
    assert tuple(x.shape) == (1, 12, 224, 224)
    np.testing.assert_allclose(x[0].numpy(), np.broadcast_to(k[:, None, None], (12, 224, 224)),
                               atol=1e-5)  # fmt: skip
    rng = np.random.default_rng(5)
    raw = rng.uniform(-500, 14000, size=(12, 48, 40)).astype(np.float32)
    raw[3, 2, 2] = np.nan
    up = terramind.preprocess([raw])[0].numpy()
    z = np.nan_to_num((raw - mean[:, None, None]) / std[:, None, None], nan=0.0)
    np.testing.assert_allclose(up, resize_bilinear(z, (224, 224)), atol=1e-4)
    compat = TerraMind(device="cpu", weights="random", model_config={"preprocess": "rs_embed"})
    assert compat.weights_record["weights"] == "random-init"
    # rs-embed: NaN -> DN 0, clip to 0..10000, z-score, resize
    zc = (np.clip(np.nan_to_num(raw, nan=0.0), 0, 10000) - mean[:, None, None]) / std[:, None, None]
    got_c = compat.preprocess([raw])[0].numpy()
    np.testing.assert_allclose(got_c, resize_bilinear(zc, (224, 224)), atol=1e-4)
    assert np.abs(up - compat.preprocess([raw])[0].numpy()).max() > 0.5
    with pytest.raises(ModelError, match=r"\(12, H, W\)"):
        terramind.preprocess([np.zeros((10, 8, 8), np.float32)])


def test_batched_equals_single_layers_and_roi(terramind):
    rng = np.random.default_rng(3)
    a = rng.uniform(0, 6000, size=(12, 224, 224)).astype(np.float32)
    b = rng.uniform(0, 6000, size=(12, 40, 40)).astype(np.float32)
    grids = _embed(terramind, [a, b], OutputSpec.grid())
    assert [g.data.shape for g in grids] == [(384, 14, 14)] * 2
    (gb,) = _embed(terramind, [b], OutputSpec.grid())
    np.testing.assert_allclose(grids[1].data, gb.data, atol=1e-4, rtol=0)
    pooled = _embed(terramind, [a, b], OutputSpec.pooled())
    assert pooled[0].data.shape == (384,) and pooled[0].meta["pooling"] == "mean"
    np.testing.assert_allclose(pooled[0].data, grids[0].data.mean(axis=(1, 2)), atol=1e-5)
    (mx,) = _embed(terramind, [a], OutputSpec.pooled(pooling="max"))
    np.testing.assert_allclose(mx.data, grids[0].data.max(axis=(1, 2)), atol=1e-6)
    roi = {"roi_window_geo": [0.5, 1.0, 0.0, 0.5]}
    (pr,) = _embed(terramind, [b], OutputSpec.pooled(), [roi])
    assert pr.meta["pooling"] == "roi_grid_mean" and pr.meta["roi_cropped"] is True
    np.testing.assert_allclose(pr.data, grids[1].data[:, 7:, :7].mean(axis=(1, 2)), atol=1e-5)
    (gr,) = _embed(terramind, [b], OutputSpec.grid(), [roi])
    assert gr.data.shape == (384, 7, 7)
    # layer 0: the first block's output, un-normed (terratorch's list element 0)
    x = terramind.preprocess([a])
    with torch.no_grad():
        emb = terramind.model.encoder_embeddings["untok_sen2l2a@224"](x)
        want = terramind.model.encoder[0](emb)[0].numpy()
    terramind.layer_index = 0
    try:
        (g0,) = _embed(terramind, [a], OutputSpec.grid())
    finally:
        terramind.layer_index = -1
    np.testing.assert_allclose(g0.data, want.reshape(14, 14, 384).transpose(2, 0, 1), atol=1e-5)


def test_weights_found_in_env_dir_and_hf_cache(terramind_ckpt, tmp_path, monkeypatch):
    """The published file name under RS_EMBED_RAY_WEIGHTS_DIR/terramind/, then in the Hugging
    Face cache layout of ibm-esa-geospatial/TerraMind-1.0-small; each recorded with sha256."""
    import shutil

    from rs_embed_ray.models.terramind import TerraMind
    from rs_embed_ray.testing.checkpoints import write_hf_cache_entry

    cache = tmp_path / "hub"
    write_hf_cache_entry(
        cache, "ibm-esa-geospatial/TerraMind-1.0-small", "TerraMind_v1_small.pt", terramind_ckpt
    )
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    m = TerraMind(device="cpu", precision="float32")
    assert m.weights_record["source"] == "hf_cache"
    wd = tmp_path / "wdir"
    (wd / "terramind").mkdir(parents=True)
    shutil.copyfile(terramind_ckpt, wd / "terramind" / "TerraMind_v1_small.pt")
    monkeypatch.setenv("RS_EMBED_RAY_WEIGHTS_DIR", str(wd))
    m2 = TerraMind(device="cpu", precision="float32")
    assert m2.weights_record["source"] == "env_dir"
    assert m2.weights_record["sha256"] == m.weights_record["sha256"]
