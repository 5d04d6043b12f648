"""Scale-MAE ViT-L/16: rshf checkpoint layout (``model.`` prefix, no pos_embed), strict
loading, the ground-resolution sin-cos positions, input_res, a hand-composed reference
forward, batching and ROI crops.

The checkpoint is random-valued with the published key names and shapes (see
rs_embed_ray.testing.checkpoints.write_scalemae_checkpoint); ~1.2 GB, written once.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from rs_embed_ray.errors import WeightsError
from rs_embed_ray.specs import OutputSpec

torch = pytest.importorskip("torch")
pytest.importorskip("timm")
pytest.importorskip("safetensors")

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])


def _embed(m, xs, output, metas=None):
    return m.embed_batch(
        xs,
        output=output,
        spatials=[None] * len(xs),
        temporal=None,
        fetch_metas=metas or [{}] * len(xs),
    )


def _sincos(dim, pos):
    k = np.arange(dim // 2, dtype=np.float64)
    ang = float(pos) / 10000.0 ** (k / (dim // 2))
    return np.concatenate([np.sin(ang), np.cos(ang)])


def test_checkpoint_layout(scalemae_ckpt):
    from safetensors import safe_open

    with safe_open(str(scalemae_ckpt), framework="pt") as fh:
        shapes = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
    assert len(shapes) == 293 and all(k.startswith("model.") for k in shapes)
    assert "model.pos_embed" not in shapes and not any(".head." in k for k in shapes)
    assert shapes["model.cls_token"] == (1, 1, 1024)
    assert shapes["model.patch_embed.proj.weight"] == (1024, 3, 16, 16)
    assert shapes["model.blocks.23.attn.qkv.weight"] == (3072, 1024)
    assert shapes["model.norm.weight"] == (1024,)
    assert json.loads((scalemae_ckpt.parent / "config.json").read_text())["global_pool"] is False


def test_loads_strictly_and_records(scalemae, scalemae_ckpt):
    from safetensors import safe_open

    from rs_embed_ray.models.registry import embedder_class

    assert embedder_class("scalemae_rgb").__name__ == "ScaleMAE"
    rec = scalemae.weights_record
    assert rec["weights"] == str(scalemae_ckpt.absolute()) and len(rec["sha256"]) == 64
    own = scalemae.model.state_dict()
    assert "pos_embed" not in own
    with safe_open(str(scalemae_ckpt), framework="pt") as fh:
        torch.testing.assert_close(
            own["blocks.9.mlp.fc1.weight"], fh.get_tensor("model.blocks.9.mlp.fc1.weight")
        )
    assert scalemae.final_norm is False and scalemae.model.norm.eps == 1e-6


def test_prepare_state_dict_layouts(scalemae):
    from rs_embed_ray.models.satmae import build_vit_large, check_and_load
    from rs_embed_ray.models.scalemae import prepare_state_dict

    base = {f"model.{k}": v for k, v in scalemae.model.state_dict().items()}
    sd, fc = prepare_state_dict(base)
    assert fc is False and set(sd) == set(scalemae.model.state_dict())
    gp = dict(base)
    gp["model.fc_norm.weight"] = gp.pop("model.norm.weight")
    gp["model.fc_norm.bias"] = gp.pop("model.norm.bias")
    gp["model.mask_token"] = torch.zeros(1, 1, 512)  # MAE extras are dropped by name
    sd, fc = prepare_state_dict(gp)
    assert fc is True and "norm.weight" in sd and "mask_token" not in sd
    bad = dict(base)
    bad["model.pos_embed"] = torch.zeros(1, 197, 1024)
    sd, _ = prepare_state_dict(bad)
    with pytest.raises(WeightsError, match=r"1 unexpected \(e\.g\. \['pos_embed'\]\)"):
        check_and_load(
            build_vit_large(eps=1e-6, pos_embed=False, meta=True), sd, path="x", what="ScaleMAE"
        )


def test_gsd_pos_embed_golden():
    from rs_embed_ray.models.scalemae import gsd_pos_embed

    pe = gsd_pos_embed(torch.tensor([10.0, 2.5])).numpy()
    assert pe.shape == (2, 197, 1024)
    np.testing.assert_array_equal(pe[:, 0], 0.0)
    for b, res in enumerate([10.0, 2.5]):
        for r, c in [(0, 0), (3, 7), (13, 12)]:
            row = pe[b, 1 + r * 14 + c]
            # float32 angles up to 130 rad, as rshf computes them: ~1e-5 from float64
            np.testing.assert_allclose(row[:512], _sincos(512, c * res), atol=5e-5)
            np.testing.assert_allclose(row[512:], _sincos(512, r * res), atol=5e-5)


def test_input_res(scalemae):
    x = np.zeros((3, 448, 500), np.float32)
    assert scalemae.input_res(x, {"grid": {"scale_m": 10.0}}) == pytest.approx(20.0)
    assert scalemae.input_res(np.zeros((3, 224, 224)), {"grid": {"scale_m": 30}}) == 30.0
    assert scalemae.input_res(np.zeros((3, 112, 112)), {}) == pytest.approx(5.0)  # sensor 10 m


def test_preprocess_golden_matches_pillow(scalemae):
    from PIL import Image

    x = np.random.default_rng(8).uniform(-100, 10500, size=(3, 50, 30)).astype(np.float32)
    u8 = (np.clip(x / 10000.0, 0.0, 1.0).transpose(1, 2, 0) * 255.0).astype(np.uint8)
    img = np.asarray(Image.fromarray(u8, "RGB").resize((224, 224), Image.BICUBIC), np.float32)
    want = (img.transpose(2, 0, 1) / 255.0 - IMAGENET_MEAN[:, None, None]) / IMAGENET_STD[
        :, None, None
    ]
    np.testing.assert_allclose(scalemae.preprocess([x])[0].numpy(), want, atol=1e-6)


def test_reference_forward_batching_and_roi(scalemae):
    """4 image forwards. A batch of 2 (10 m and 30 m inputs); x1 alone hand-composed: patch
    embed by numpy matmul + formula positions at res = 10 * 64/224 m, CLS without a
    position, the loaded timm blocks, no final norm; x2 alone pooled (max) in an ROI."""
    rng = np.random.default_rng(9)
    x1 = rng.uniform(0, 4000, size=(3, 64, 64)).astype(np.float32)
    x2 = rng.uniform(0, 4000, size=(3, 32, 48)).astype(np.float32)
    m1, m2 = {"grid": {"scale_m": 10.0}}, {"grid": {"scale_m": 30.0}}
    batched = _embed(scalemae, [x1, x2], OutputSpec.grid(), [m1, m2])
    assert batched[0].meta["input_res_m"] == pytest.approx(10 * 64 / 224, abs=1e-6)
    assert batched[1].meta["input_res_m"] == pytest.approx(30 * 32 / 224, abs=1e-6)
    assert batched[0].meta["final_norm_applied"] is False
    sd = {k: v.detach().double().numpy() for k, v in scalemae.model.state_dict().items()}
    px = scalemae.preprocess([x1])[0].double().numpy()
    patches = px.reshape(3, 14, 16, 14, 16).transpose(1, 3, 0, 2, 4).reshape(196, -1)
    w = sd["patch_embed.proj.weight"].reshape(1024, -1)
    tok = patches @ w.T + sd["patch_embed.proj.bias"]
    res = np.float32(10 * 64 / 224)
    tok = tok + np.stack(
        [
            np.concatenate([_sincos(512, c * res), _sincos(512, r * res)])
            for r in range(14)
            for c in range(14)
        ]
    )
    seq = np.concatenate([sd["cls_token"][0], tok])[None]
    with torch.no_grad():
        h = torch.from_numpy(seq).float()
        for blk in scalemae.model.blocks:
            h = blk(h)
    want = h[0, 1:].numpy().reshape(14, 14, 1024).transpose(2, 0, 1)
    np.testing.assert_allclose(batched[0].data, want, atol=3e-4, rtol=0)
    roi = {"grid": {"scale_m": 30.0}, "roi_window_geo": [0.0, 0.5, 0.5, 1.0]}
    (p2,) = _embed(scalemae, [x2], OutputSpec.pooled("max"), [roi])
    assert p2.meta["pooling"] == "roi_grid_max" and p2.meta["roi_cropped"] is True
    np.testing.assert_allclose(p2.data, batched[1].data[:, :7, 7:].max(axis=(1, 2)), atol=2e-4)
