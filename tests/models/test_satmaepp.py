"""SatMAE++ ViT-L/16 (rgb): published checkpoint layout (MAE decoder + upsampling head),
strict loading, torchvision-exact preprocessing (normalise, then float bicubic), BGR option,
token-grid layout, batching, ROI crops, weights records and one end-to-end export on Ray.

The checkpoint is random-valued with the published key names and shapes (see
rs_embed_ray.testing.checkpoints.write_satmaepp_checkpoint); ~1.3 GB, written once per session.
"""

from __future__ import annotations

import hashlib
import json
import logging
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
HEAD_KEYS = {
    "proj_up_conv.weight": (12, 3, 1, 1),
    "proj_up_conv.bias": (12,),
    "proj_up_norm.weight": (12,),
    "proj_up_norm.bias": (12,),
    "up_block.up_conv.weight": (12, 12, 4, 4),
    "up_block.up_conv.bias": (12,),
    "up_block.up_norm.weight": (12,),
    "up_block.up_norm.bias": (12,),
    "up_block.res_block.conv1.weight": (12, 12, 3, 3),
    "up_block.res_block.conv1.bias": (12,),
    "up_block.res_block.conv2.weight": (12, 12, 3, 3),
    "up_block.res_block.conv2.bias": (12,),
    "up_block.res_norm.weight": (12,),
    "up_block.res_norm.bias": (12,),
    "up_block.proj_out.weight": (3, 12, 3, 3),
    "up_block.proj_out.bias": (3,),
}


def _embed(m, xs, output, metas=None):
    return m.embed_batch(
        xs,
        output=output,
        spatials=[None] * len(xs),
        temporal=None,
        fetch_metas=metas or [{}] * len(xs),
    )


def _torchvision_reference(x, mean, std, *, bgr=False):
    """rs-embed's path: DN/10000 clip -> astype(uint8) HWC -> [::-1] if BGR -> PIL ->
    torchvision ToTensor -> Normalize -> Resize((224, 224), BICUBIC) on the tensor."""
    from PIL import Image
    from torchvision import transforms

    u8 = (np.clip(x.astype(np.float32) / 10000.0, 0.0, 1.0).transpose(1, 2, 0) * 255.0).astype(
        np.uint8
    )
    if bgr:
        u8 = np.ascontiguousarray(u8[..., ::-1])
    tf = transforms.Compose(
        [
            transforms.ToTensor(),
            transforms.Normalize(mean=list(mean), std=list(std)),
            transforms.Resize((224, 224), interpolation=transforms.InterpolationMode.BICUBIC),
        ]
    )
    return tf(Image.fromarray(u8, mode="RGB")).numpy()


def _tiny_file(path, keys):
    from safetensors.torch import save_file

    save_file({k: torch.zeros(2) for k in keys}, str(path))
    return path


def test_checkpoint_layout(satmaepp_ckpt):
    from safetensors import safe_open

    with safe_open(str(satmaepp_ckpt), framework="pt") as fh:
        shapes = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
    assert satmaepp_ckpt.name == "model.safetensors" and len(shapes) == 414
    assert not any(k.startswith("model.") for k in shapes)
    # encoder: timm ViT-L/16 names
    assert shapes["pos_embed"] == (1, 197, 1024) and shapes["cls_token"] == (1, 1, 1024)
    assert shapes["patch_embed.proj.weight"] == (1024, 3, 16, 16)
    assert shapes["blocks.23.attn.qkv.weight"] == (3072, 1024)
    assert shapes["norm.weight"] == (1024,)
    # MAE decoder
    assert shapes["decoder_pos_embed"] == (1, 197, 512) and shapes["mask_token"] == (1, 1, 512)
    assert shapes["decoder_pred.weight"] == (768, 512)
    assert sum(k.startswith("decoder_blocks.") for k in shapes) == 96
    # SatMAE++ multi-scale upsampling head
    assert {k: v for k, v in shapes.items() if k.startswith(("proj_up", "up_block"))} == HEAD_KEYS
    cfg = json.loads((satmaepp_ckpt.parent / "config.json").read_text())
    assert cfg["in_chans"] == 3 and cfg["proj_ratio"] == 4 and cfg["decoder_depth"] == 8


def test_loads_strictly_and_records(satmaepp, satmaepp_ckpt):
    from safetensors import safe_open

    from rs_embed_ray.models.registry import embedder_class

    assert embedder_class("satmae++").__name__ == "SatMAEPP"
    assert embedder_class("satmaepp_rgb").__name__ == "SatMAEPP"
    rec = satmaepp.weights_record
    assert rec["weights"] == os.path.abspath(satmaepp_ckpt) and rec["source"] == "explicit"
    h = hashlib.sha256()
    with open(satmaepp_ckpt, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 24), b""):
            h.update(block)
    assert rec["sha256"] == h.hexdigest()
    own = satmaepp.model.state_dict()
    assert not any(k.startswith(("decoder", "mask_token", "proj_up", "up_block")) for k in own)
    with safe_open(str(satmaepp_ckpt), framework="pt") as fh:
        for k in ("blocks.11.mlp.fc1.weight", "pos_embed", "cls_token", "norm.bias"):
            torch.testing.assert_close(own[k], fh.get_tensor(k), rtol=0, atol=0)
    assert satmaepp.model.norm.eps == 1e-5 and satmaepp.mean == tuple(FMOW_MEAN)
    assert satmaepp.channel_order == "rgb"


def test_drop_only_decoder_and_head_by_name(satmaepp, satmaepp_ckpt):
    from safetensors import safe_open

    from rs_embed_ray.models.satmaepp import drop_satmaepp_decoder

    with safe_open(str(satmaepp_ckpt), framework="pt") as fh:
        keys = {k: None for k in fh.keys()}
    enc, dropped = drop_satmaepp_decoder(keys)
    assert set(enc) == set(satmaepp.model.state_dict())
    assert len(dropped) == 120 and set(HEAD_KEYS) <= set(dropped)


def test_wrong_or_missing_keys_fail_clearly(satmaepp, tmp_path):
    from rs_embed_ray.models.satmae import build_vit_large, check_and_load
    from rs_embed_ray.models.satmaepp import SatMAEPP

    sd = dict(satmaepp.model.state_dict())
    sd["blocks.3.attn.in_proj_weight"] = sd.pop("blocks.3.attn.qkv.weight")
    with pytest.raises(WeightsError, match=r"1 missing .*qkv\.weight.*1 unexpected"):
        check_and_load(build_vit_large(eps=1e-5, meta=True), sd, path="x", what="SatMAE++")
    # through the real loader: decoder/head keys vanish by name, anything else is refused
    p = _tiny_file(
        tmp_path / "model.safetensors",
        ["cls_token", "decoder_pred.weight", "up_block.proj_out.weight", "head.weight"],
    )
    with pytest.raises(WeightsError, match=r"293 missing .* 1 unexpected \(e\.g\. \['head"):
        SatMAEPP(device="cpu", weights=str(p))
    # a wrapper prefix is stripped before the decoder is dropped
    p = _tiny_file(tmp_path / "wrapped.safetensors", ["model.cls_token", "model.proj_up_conv.bias"])
    with pytest.raises(WeightsError, match=r"293 missing .* 0 unexpected"):
        SatMAEPP(device="cpu", weights=str(p))


def test_config_guards_fail_before_loading(tmp_path, monkeypatch):
    from rs_embed_ray.models.satmaepp import SatMAEPP

    p = _tiny_file(tmp_path / "model.safetensors", ["cls_token"])
    (tmp_path / "config.json").write_text(json.dumps({"in_chans": 10}))
    with pytest.raises(ModelError, match="in_chans=10"):
        SatMAEPP(device="cpu", weights=str(p))
    # s2_10b (issue 20) reads SatMAE++'s training checkpoint, not the rgb safetensors file
    with pytest.raises(WeightsError, match=r"SatMAE\+\+ Sentinel \(s2_10b\).*does not match"):
        SatMAEPP(device="cpu", weights=str(p), model_config={"modality": "s2_10b"})
    with pytest.raises(ModelError, match="modality"):
        SatMAEPP(device="cpu", weights=str(p), model_config={"modality": "s1"})
    monkeypatch.setenv("RS_EMBED_SATMAEPP_CHANNEL_ORDER", "rbg")
    with pytest.raises(ModelError, match="RS_EMBED_SATMAEPP_CHANNEL_ORDER='rbg'"):
        SatMAEPP(device="cpu", weights=str(p))


def test_channel_order_resolution(monkeypatch):
    from rs_embed_ray.models.satmaepp import resolve_channel_order

    monkeypatch.delenv("RS_EMBED_SATMAEPP_CHANNEL_ORDER", raising=False)
    assert resolve_channel_order({}) == "rgb"
    assert resolve_channel_order({"channel_order": "BGR"}) == "bgr"
    monkeypatch.setenv("RS_EMBED_SATMAEPP_CHANNEL_ORDER", "bgr")
    assert resolve_channel_order({}) == "bgr"
    assert resolve_channel_order({"channel_order": "rgb"}) == "rgb"  # config wins
    with pytest.raises(ModelError, match="channel_order"):
        resolve_channel_order({"channel_order": "grb"})


def test_preprocess_golden_matches_torchvision(satmaepp):
    from rs_embed_ray.models.satmae import rgb_uint8_batch
    from rs_embed_ray.models.satmaepp import satmaepp_rgb_batch

    rng = np.random.default_rng(2)
    x = rng.uniform(-300, 11000, size=(3, 40, 60)).astype(np.float32)  # clipped both ways
    y = rng.uniform(0, 3000, size=(3, 224, 224)).astype(np.float32)  # already 224: no resize
    z = rng.uniform(0, 6000, size=(3, 300, 250)).astype(np.float32)  # antialiased downsample
    t = satmaepp.preprocess([x, y, z]).numpy()
    assert t.shape == (3, 3, 224, 224) and t.dtype == np.float32
    for got, raw in zip(t, (x, y, z), strict=True):
        np.testing.assert_allclose(got, _torchvision_reference(raw, FMOW_MEAN, FMOW_STD), atol=2e-5)
    # BGR: the uint8 channels are swapped, then normalised with the stats in listed order
    kw = dict(size=224, mean=tuple(FMOW_MEAN), std=tuple(FMOW_STD), device="cpu")
    b = satmaepp_rgb_batch([x], channel_order="bgr", **kw)[0].numpy()
    want = _torchvision_reference(x, FMOW_MEAN, FMOW_STD, bgr=True)
    np.testing.assert_allclose(b, want, atol=2e-5)
    assert np.abs(b - t[0]).max() > 0.5
    # normalise-then-float-resize is not satmae's uint8 Pillow resize: bicubic overshoot on a
    # hard edge leaves the [0, 255] level range, which an 8-bit resize would clamp
    edge = np.zeros((3, 16, 16), np.float32)
    edge[:, :, 8:] = 10000.0
    pp = satmaepp_rgb_batch([edge], channel_order="rgb", **kw)[0].numpy()
    sm = rgb_uint8_batch([edge], **kw)[0].numpy()
    lo = ((0.0 - FMOW_MEAN) / FMOW_STD)[:, None, None]
    hi = ((1.0 - FMOW_MEAN) / FMOW_STD)[:, None, None]
    assert (pp < lo - 0.05).any() and (pp > hi + 0.05).any()
    assert (sm >= lo - 1e-6).all() and (sm <= hi + 1e-6).all()
    np.testing.assert_allclose(pp, _torchvision_reference(edge, FMOW_MEAN, FMOW_STD), atol=2e-5)


def test_grid_layout_batching_and_roi(satmaepp):
    """3 image forwards: a batch of 2, x1 alone through timm's forward_features (one-by-one
    reference and token layout), x2 alone pooled with an ROI window."""
    rng = np.random.default_rng(4)
    x1 = rng.uniform(0, 4000, size=(3, 64, 64)).astype(np.float32)
    x2 = rng.uniform(0, 4000, size=(3, 48, 48)).astype(np.float32)
    batched = _embed(satmaepp, [x1, x2], OutputSpec.grid())
    assert [e.data.shape for e in batched] == [(1024, 14, 14), (1024, 14, 14)]
    assert batched[0].meta["grid_hw"] == [14, 14] and "roi_cropped" not in batched[0].meta
    with torch.inference_mode():
        tok = satmaepp.model.forward_features(satmaepp.preprocess([x1]))[0].numpy()
    assert tok.shape == (197, 1024)
    want = tok[1:].reshape(14, 14, 1024).transpose(2, 0, 1)  # CLS dropped, row-major
    np.testing.assert_allclose(batched[0].data, want, atol=2e-4, rtol=0)
    # rows [0.25, 0.75) of 14 tokens -> 3..11 (rounded outward), cols [0, 0.5) -> 0..7
    roi = {"roi_window_geo": [0.25, 0.75, 0.0, 0.5]}
    (p2,) = _embed(satmaepp, [x2], OutputSpec.pooled(), [roi])
    assert p2.data.shape == (1024,) and p2.meta["pooling"] == "roi_grid_mean"
    np.testing.assert_allclose(p2.data, batched[1].data[:, 3:11, :7].mean(axis=(1, 2)), atol=2e-4)
    m = batched[0].meta
    assert m["model"] == "satmaepp" and m["channel_order"] == "rgb"
    assert m["input_hw"] == [64, 64] and m["precision"] == "float32"
    assert m["weights"] == satmaepp.weights_record


def test_bgr_env_and_config_json_stats(satmaepp, satmaepp_ckpt, tmp_path, monkeypatch):
    """A second real load: BGR from the env var, img_mean/img_std from the repo config.json."""
    from rs_embed_ray.models.satmaepp import SatMAEPP

    snap = tmp_path / "snapshot"
    snap.mkdir()
    (snap / "model.safetensors").symlink_to(satmaepp_ckpt)
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    (snap / "config.json").write_text(json.dumps({"in_chans": 3, "img_mean": mean, "img_std": std}))
    monkeypatch.setenv("RS_EMBED_SATMAEPP_CHANNEL_ORDER", "bgr")
    m = SatMAEPP(device="cpu", weights=str(snap), precision="float32")
    assert m.channel_order == "bgr" and m.mean == tuple(mean) and m.std == tuple(std)
    x = np.random.default_rng(7).uniform(0, 5000, size=(3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(
        m.preprocess([x])[0].numpy(), _torchvision_reference(x, mean, std, bgr=True), atol=2e-5
    )
    (e,) = _embed(m, [x], OutputSpec.pooled())
    assert e.meta["channel_order"] == "bgr" and e.meta["norm_mean"] == mean
    (ref,) = _embed(satmaepp, [x], OutputSpec.pooled())
    assert not np.allclose(e.data, ref.data, atol=1e-3)


def test_random_init_is_explicit_and_recorded(caplog):
    from rs_embed_ray.models.satmaepp import SatMAEPP

    with caplog.at_level(logging.WARNING):
        m = SatMAEPP(device="cpu", weights="random", precision="float32")
    assert m.weights_record == {"weights": "random-init", "sha256": None}
    assert any("RANDOM" in r.getMessage() for r in caplog.records)
    x = np.full((3, 16, 16), 1500.0, np.float32)
    (e,) = _embed(m, [x], OutputSpec.pooled())
    assert e.data.shape == (1024,) and np.isfinite(e.data).all()
    assert e.meta["weights"] == {"weights": "random-init", "sha256": None}


def test_no_weights_offline_raises_weights_error():
    from rs_embed_ray.models.satmaepp import SatMAEPP

    with pytest.raises(WeightsError, match="--weights satmaepp=random"):
        SatMAEPP(device="cpu")


def test_rejects_wrong_bands(satmaepp):
    with pytest.raises(ModelError, match="3 bands"):
        _embed(satmaepp, [np.zeros((4, 8, 8), np.float32)], OutputSpec.pooled())


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.usefixtures("ray_cluster")
def test_export_end_to_end_per_item_and_combined(tmp_path, raster_source, satmaepp_ckpt):
    """Real Ray export with the local raster backend: both layouts, same arrays, manifest
    weights record (path + sha256 of the checkpoint)."""
    from rs_embed_ray import TemporalSpec, export_batch
    from rs_embed_ray.models.weights import file_sha256
    from tests.conftest import points

    kw = dict(
        spatials=points(2),
        temporal=TemporalSpec.range("2022-06-01", "2022-09-01"),
        models=["satmaepp"],
        backend="local",
        source=str(raster_source),
        weights={"satmaepp": str(satmaepp_ckpt)},
        show_progress=False,
        num_workers=1,
        chunk_size=2,
    )
    res = export_batch(**kw, out=str(tmp_path / "pi"), layout="per_item")
    assert [r["status"] for r in res] == ["ok", "ok"]
    export_batch(**kw, out=str(tmp_path / "c.npz"), layout="combined")
    man = json.loads((tmp_path / "pi" / "p00000.json").read_text())
    (rec,) = man["models"]
    assert rec["sensor"]["bands"] == ["B4", "B3", "B2"]
    assert rec["weights"]["weights"] == os.path.abspath(satmaepp_ckpt)
    assert rec["weights"]["sha256"] == file_sha256(satmaepp_ckpt)
    assert rec["embedding"]["shape"] == [1024]
    with np.load(tmp_path / "c.npz") as zc:
        assert zc["embeddings__satmaepp"].shape == (2, 1024)
        for i in range(2):
            with np.load(tmp_path / "pi" / f"p{i:05d}.npz") as zi:
                np.testing.assert_allclose(
                    zi["embedding__satmaepp"], zc["embeddings__satmaepp"][i], rtol=1e-5, atol=1e-6
                )
                np.testing.assert_array_equal(
                    zi["input_chw__satmaepp"], zc["inputs_bchw__satmaepp"][i]
                )
        assert not np.allclose(zc["embeddings__satmaepp"][0], zc["embeddings__satmaepp"][1])
