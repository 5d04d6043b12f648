"""TerraFM-B: published checkpoint layout, strict loading, S2/S1 preprocessing, a
hand-composed reference forward (stem + projection in numpy), S1/S2 in one batch, ROI crops.

The checkpoint is random-valued with the published key names and shapes (see
rs_embed_ray.testing.checkpoints.write_terrafm_checkpoint).
"""

from __future__ import annotations

import numpy as np
import pytest

from rs_embed_ray.errors import ModelError, WeightsError
from rs_embed_ray.specs import OutputSpec

torch = pytest.importorskip("torch")
pytest.importorskip("timm")


def _embed(m, xs, output, metas=None):
    return m.embed_batch(
        xs,
        output=output,
        spatials=[None] * len(xs),
        temporal=None,
        fetch_metas=metas or [{}] * len(xs),
    )


def test_checkpoint_layout(terrafm_ckpt):
    sd = torch.load(terrafm_ckpt, map_location="cpu", weights_only=True)
    assert terrafm_ckpt.name == "TerraFM-B.pth" and len(sd) == 164
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert shapes["patch_embed.conv2d_s2_l2a.weight"] == (2304, 12, 16, 16)
    assert shapes["patch_embed.conv2d_s2_l1c.weight"] == (2304, 12, 16, 16)
    assert shapes["patch_embed.conv2d_s1.weight"] == (2304, 2, 16, 16)
    assert shapes["patch_embed.projection.proj1.weight"] == (2304, 2304)
    assert "patch_embed.projection.proj1.bias" not in shapes
    assert shapes["patch_embed.projection.proj3.weight"] == (768, 2304)
    assert shapes["patch_embed.s1_embed"] == (1, 2304) and shapes["pos_embed"] == (1, 197, 768)
    assert shapes["blocks.11.attn.qkv.bias"] == (2304,)


def test_loads_strictly_and_records(terrafm, terrafm_ckpt, tmp_path):
    from rs_embed_ray.models.registry import embedder_class
    from rs_embed_ray.models.terrafm import TerraFM, prepare_state_dict

    assert embedder_class("terrafm_b") is TerraFM
    assert terrafm.weights_record["weights"] == str(terrafm_ckpt.absolute())
    sd = torch.load(terrafm_ckpt, map_location="cpu", weights_only=True)
    own = terrafm.model.state_dict()
    torch.testing.assert_close(own["patch_embed.s1_embed"], sd["patch_embed.s1_embed"])
    wrapped = {f"module.{k}": v for k, v in sd.items()}
    wrapped["module.head.weight"] = torch.zeros(10, 768)  # a classifier head is ignored
    assert set(prepare_state_dict(terrafm.model, wrapped, path="x")) == set(own)
    bad = dict(sd)
    del bad["patch_embed.conv2d_s2_l1c.bias"]
    bad["patch_embed.conv2d_s2.weight"] = torch.zeros(1)
    with pytest.raises(WeightsError, match=r"1 missing .*conv2d_s2_l1c\.bias.*1 unexpected"):
        prepare_state_dict(terrafm.model, bad, path="x")
    p = tmp_path / "TerraFM-B.pth"
    torch.save({"cls_token": torch.zeros(1, 1, 768)}, p)
    with pytest.raises(WeightsError, match="missing"):
        TerraFM(device="cpu", weights=str(p))


def test_preprocess_golden(terrafm):
    from rs_embed_ray.models.tiling import resize_bilinear

    rng = np.random.default_rng(1)
    s2 = rng.uniform(-100, 11000, size=(12, 30, 40)).astype(np.float32)
    s1 = rng.gamma(2.0, 0.05, size=(2, 32, 32)).astype(np.float32)
    s1[0, 0, 0] = -0.01  # negative linear values clamp to 0
    xs, stems = terrafm.preprocess([s2, s1])
    assert stems == ["l1c", "s1"]  # the official forward's stem
    want_s2 = resize_bilinear(np.clip(s2 / 10000.0, 0, 1), (224, 224))
    np.testing.assert_allclose(xs[0].numpy(), want_s2, atol=1e-5)
    v = np.log1p(np.maximum(s1.astype(np.float64), 0.0))
    want_s1 = resize_bilinear(
        np.clip(v / np.percentile(v, 99), 0, 1).astype(np.float32), (224, 224)
    )
    np.testing.assert_allclose(xs[1].numpy(), want_s1, atol=1e-5)
    with pytest.raises(ModelError, match="dB-scaled"):
        terrafm.preprocess([np.full((2, 8, 8), -15.0, np.float32)])
    with pytest.raises(ModelError, match=r"\(12, H, W\)"):
        terrafm.preprocess([np.zeros((3, 8, 8), np.float32)])


def test_reference_forward_s1_s2_batch_and_roi(terrafm):
    """S2 alone hand-composed (stem conv as a numpy matmul, modality vector, token
    projection, CLS + pos, the loaded blocks, norm) vs the embedder; then a batch of
    S2, S2 and S1 (two forwards) vs one by one; ROI pooling."""
    rng = np.random.default_rng(3)
    a = rng.uniform(0, 5000, size=(12, 224, 224)).astype(np.float32)
    b = rng.uniform(0, 5000, size=(12, 48, 48)).astype(np.float32)
    s1 = rng.gamma(2.0, 0.05, size=(2, 40, 40)).astype(np.float32)
    sd = {k: v.detach().double().numpy() for k, v in terrafm.model.state_dict().items()}
    x = np.clip(a / 10000.0, 0, 1).astype(np.float64)
    patches = x.reshape(12, 14, 16, 14, 16).transpose(1, 3, 0, 2, 4).reshape(196, -1)
    pe = "patch_embed."
    t = patches @ sd[pe + "conv2d_s2_l1c.weight"].reshape(2304, -1).T
    t = t + sd[pe + "conv2d_s2_l1c.bias"] + sd[pe + "s2_l1c_embed"]
    t = t @ sd[pe + "projection.proj1.weight"].T
    mu, var = t.mean(-1, keepdims=True), t.var(-1, keepdims=True)
    t = (t - mu) / np.sqrt(var + 1e-5) * sd[pe + "projection.norm_input.weight"]
    t = t + sd[pe + "projection.norm_input.bias"]
    t = t @ sd[pe + "projection.proj2.weight"].T + sd[pe + "projection.proj2.bias"]
    t = t @ sd[pe + "projection.proj3.weight"].T + sd[pe + "projection.proj3.bias"]
    seq = np.concatenate([sd["cls_token"][0], t]) + sd["pos_embed"][0]
    with torch.no_grad():
        h = torch.from_numpy(seq[None]).float()
        for blk in terrafm.model.blocks:
            h = blk(h)
        h = terrafm.model.norm(h)[0].numpy()
    batched = _embed(terrafm, [a, b, s1], OutputSpec.grid())
    assert [e.data.shape for e in batched] == [(768, 14, 14)] * 3
    assert [e.meta["patch_embed"] for e in batched] == ["l1c", "l1c", "s1"]
    want = h[1:].reshape(14, 14, 768).transpose(2, 0, 1)
    np.testing.assert_allclose(batched[0].data, want, atol=3e-4, rtol=0)
    (p_a,) = _embed(terrafm, [a], OutputSpec.pooled())
    assert p_a.meta["pooling"] == "cls"
    np.testing.assert_allclose(p_a.data, h[0], atol=3e-4, rtol=0)
    (g_s1,) = _embed(terrafm, [s1], OutputSpec.grid())
    np.testing.assert_allclose(batched[2].data, g_s1.data, atol=2e-4, rtol=0)
    roi = {"roi_window_geo": [0.5, 1.0, 0.0, 0.5]}
    (p_b,) = _embed(terrafm, [b], OutputSpec.pooled(), [roi])
    assert p_b.meta["pooling"] == "roi_grid_mean" and p_b.meta["roi_cropped"] is True
    np.testing.assert_allclose(p_b.data, batched[1].data[:, 7:, :7].mean(axis=(1, 2)), atol=2e-4)


def test_bad_s2_stem_is_refused_at_plan_time():
    """Before any weights or cluster: the planner's model checks refuse it (exit 2 in the CLI)."""
    from rs_embed_ray.models.registry import embedder_class

    check = embedder_class("terrafm").check_request
    check(weights=None, model_config={"s2_stem": "L2A"}, temporals=[None])
    check(weights=None, model_config=None, temporals=[None])
    with pytest.raises(ModelError, match=r"s2_stem must be 'l1c' .* got 'l3'"):
        check(weights=None, model_config={"s2_stem": "l3"}, temporals=[None])
