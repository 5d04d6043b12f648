"""SatMAE ViT-L/16: published checkpoint layout, strict loading, Pillow-exact preprocessing,
token-grid layout, batching and ROI crops.

The checkpoint is random-valued with the published key names and shapes (see
rs_embed_ray.testing.checkpoints.write_satmae_checkpoint); ~1.3 GB, written once per session.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from rs_embed_ray.errors import ModelError, WeightsError
from rs_embed_ray.specs import OutputSpec

torch = pytest.importorskip("torch")
pytest.importorskip("timm")
pytest.importorskip("safetensors")

FMOW_MEAN = np.array([0.4182007312774658, 0.4214799106121063, 0.3991275727748871])
FMOW_STD = np.array([0.28774282336235046, 0.27541765570640564, 0.2764017581939697])


def _embed(m, xs, output, metas=None):
    return m.embed_batch(
        xs,
        output=output,
        spatials=[None] * len(xs),
        temporal=None,
        fetch_metas=metas or [{}] * len(xs),
    )


def _pil_reference(x, mean, std):
    """rs-embed's path: float32 DN/10000 clip -> astype(uint8) -> PIL bicubic 224 -> norm."""
    from PIL import Image

    u8 = (np.clip(x.astype(np.float32) / 10000.0, 0.0, 1.0).transpose(1, 2, 0) * 255.0).astype(
        np.uint8
    )
    img = Image.fromarray(u8, mode="RGB").resize((224, 224), resample=Image.BICUBIC)
    t = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0
    return (t - np.asarray(mean, np.float32)[:, None, None]) / np.asarray(std, np.float32)[
        :, None, None
    ]


def test_checkpoint_layout(satmae_ckpt):
    from safetensors import safe_open

    with safe_open(str(satmae_ckpt), framework="pt") as fh:
        shapes = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
    assert satmae_ckpt.name == "model.safetensors" and len(shapes) == 398
    assert not any(k.startswith("model.") for k in shapes)
    assert shapes["pos_embed"] == (1, 197, 1024) and shapes["cls_token"] == (1, 1, 1024)
    assert shapes["patch_embed.proj.weight"] == (1024, 3, 16, 16)
    assert shapes["blocks.23.mlp.fc2.weight"] == (1024, 4096)
    assert shapes["norm.weight"] == (1024,)
    assert shapes["decoder_pos_embed"] == (1, 197, 512) and shapes["mask_token"] == (1, 1, 512)
    assert shapes["decoder_pred.weight"] == (768, 512)
    assert sum(k.startswith("decoder_blocks.") for k in shapes) == 96
    cfg = json.loads((satmae_ckpt.parent / "config.json").read_text())
    assert cfg["embed_dim"] == 1024 and cfg["decoder_depth"] == 8


def test_loads_strictly_and_records(satmae, satmae_ckpt):
    from safetensors import safe_open

    from rs_embed_ray.models.registry import embedder_class

    assert embedder_class("satmae_rgb").__name__ == "SatMAE"
    rec = satmae.weights_record
    assert rec["weights"] == str(satmae_ckpt.absolute()) and rec["source"] == "explicit"
    own = satmae.model.state_dict()
    assert "mask_token" not in own and "decoder_pred.weight" not in own
    with safe_open(str(satmae_ckpt), framework="pt") as fh:
        for k in ("blocks.7.attn.qkv.weight", "pos_embed", "norm.bias"):
            torch.testing.assert_close(own[k], fh.get_tensor(k), rtol=0, atol=0)
    assert satmae.model.norm.eps == 1e-5 and satmae.mean == tuple(FMOW_MEAN)


def test_strict_key_checks(satmae, tmp_path):
    from safetensors.torch import save_file

    from rs_embed_ray.models.satmae import SatMAE, build_vit_large, check_and_load

    sd = dict(satmae.model.state_dict())
    del sd["blocks.4.norm1.bias"]
    sd["head.weight"] = torch.zeros(2, 2)
    with pytest.raises(WeightsError, match=r"1 missing .*blocks\.4\.norm1\.bias.*1 unexpected"):
        check_and_load(build_vit_large(eps=1e-5, meta=True), sd, path="x", what="SatMAE")
    sd = dict(satmae.model.state_dict())
    sd["pos_embed"] = torch.zeros(1, 257, 1024)
    with pytest.raises(WeightsError, match="1 shape mismatches"):
        check_and_load(build_vit_large(eps=1e-5, meta=True), sd, path="x", what="SatMAE")
    p = tmp_path / "model.safetensors"
    save_file({"cls_token": torch.zeros(1, 1, 1024)}, str(p))
    with pytest.raises(WeightsError, match="293 missing"):
        SatMAE(device="cpu", weights=str(p))


def test_weight_file_fallback_to_pytorch_model_bin(tmp_path):
    from rs_embed_ray.models.satmae import HF_FILENAMES, HF_REPO, resolve_hf_weights
    from rs_embed_ray.testing.checkpoints import write_hf_cache_entry

    src = tmp_path / "pytorch_model.bin"
    torch.save({"x": torch.zeros(1)}, src)
    write_hf_cache_entry(os.environ["HF_HUB_CACHE"], HF_REPO, "pytorch_model.bin", src)
    got = resolve_hf_weights("satmae", None, {}, repo=HF_REPO, filenames=HF_FILENAMES)
    assert got.path is not None and got.path.name == "pytorch_model.bin"
    assert got.source == "hf_cache"
    with pytest.raises(WeightsError, match="does not exist"):
        resolve_hf_weights("satmae", "/nope.bin", {}, repo=HF_REPO, filenames=HF_FILENAMES)
    got = resolve_hf_weights("satmae", str(tmp_path), {}, repo=HF_REPO, filenames=HF_FILENAMES)
    assert got.path == src.absolute() and got.source == "explicit"  # a directory: each name


def test_preprocess_golden_matches_pillow(satmae):
    rng = np.random.default_rng(2)
    x = rng.uniform(-300, 11000, size=(3, 40, 60)).astype(np.float32)
    y = rng.uniform(0, 3000, size=(3, 224, 224)).astype(np.float32)
    t = satmae.preprocess([x, y]).numpy()
    np.testing.assert_allclose(t[0], _pil_reference(x, FMOW_MEAN, FMOW_STD), atol=1e-6)
    np.testing.assert_allclose(t[1], _pil_reference(y, FMOW_MEAN, FMOW_STD), atol=1e-6)


def test_grid_layout_batching_and_roi(satmae):
    """4 image forwards: a batch of 2, x1 alone through timm's forward_features (one-by-one
    reference and token layout), x2 alone pooled with an ROI window."""
    rng = np.random.default_rng(4)
    x1 = rng.uniform(0, 4000, size=(3, 64, 64)).astype(np.float32)
    x2 = rng.uniform(0, 4000, size=(3, 48, 48)).astype(np.float32)
    batched = _embed(satmae, [x1, x2], OutputSpec.grid())
    assert [e.data.shape for e in batched] == [(1024, 14, 14), (1024, 14, 14)]
    assert batched[0].meta["grid_hw"] == [14, 14] and "roi_cropped" not in batched[0].meta
    # the grid is the token sequence of x1 alone (CLS dropped) in row-major order
    with torch.inference_mode():
        tok = satmae.model.forward_features(satmae.preprocess([x1]))[0].numpy()
    assert tok.shape == (197, 1024)
    np.testing.assert_allclose(batched[0].data[:, 2, 5], tok[1 + 2 * 14 + 5], atol=2e-4)
    want = tok[1:].reshape(14, 14, 1024).transpose(2, 0, 1)
    np.testing.assert_allclose(batched[0].data, want, atol=2e-4, rtol=0)
    # rows [0.25, 0.75) of 14 tokens -> 3..11 (rounded outward), cols [0, 0.5) -> 0..7
    roi = {"roi_window_geo": [0.25, 0.75, 0.0, 0.5]}
    (p2,) = _embed(satmae, [x2], OutputSpec.pooled(), [roi])
    assert p2.data.shape == (1024,) and p2.meta["pooling"] == "roi_grid_mean"
    np.testing.assert_allclose(p2.data, batched[1].data[:, 3:11, :7].mean(axis=(1, 2)), atol=2e-4)
    m = batched[0].meta
    assert m["model"] == "satmae" and m["input_hw"] == [64, 64] and m["precision"] == "float32"


def test_rejects_wrong_bands(satmae):
    with pytest.raises(ModelError, match="3 bands"):
        _embed(satmae, [np.zeros((4, 8, 8), np.float32)], OutputSpec.pooled())
