"""RemoteCLIP: published checkpoint layout, strict loading, shapes, batching, ROI crops.

The checkpoint is random-valued but has the published key names and shapes (see
rs_embed_ray.testing.checkpoints); the reference outputs below come from a separately built
open_clip model loaded from the same file, not from the embedder's own code path.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from rs_embed_ray.errors import ModelError, WeightsError
from rs_embed_ray.specs import OutputSpec

torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")


def _inputs(n: int, hw=(64, 64), seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(0, 4000, size=(3, *hw)).astype(np.float32) for _ in range(n)]


def _embed(m, xs, output, metas=None):
    return m.embed_batch(
        xs,
        output=output,
        spatials=[None] * len(xs),
        temporal=None,
        fetch_metas=metas or [{}] * len(xs),
    )


def test_checkpoint_has_published_layout(remoteclip_ckpt):
    from safetensors import safe_open

    cfg = json.loads((remoteclip_ckpt.parent / "config.json").read_text())
    assert cfg == {"model_name": "ViT-B-32"}
    with safe_open(str(remoteclip_ckpt), framework="pt") as fh:
        keys = list(fh.keys())
        shapes = {k: tuple(fh.get_slice(k).get_shape()) for k in keys}
        assert fh.metadata() == {"format": "pt"}
    assert all(k.startswith("model.") for k in keys)
    assert len(keys) == 302
    assert shapes["model.visual.conv1.weight"] == (768, 3, 32, 32)
    assert shapes["model.visual.positional_embedding"] == (50, 768)
    assert shapes["model.visual.proj"] == (768, 512)
    assert shapes["model.text_projection"] == (512, 512)
    assert shapes["model.token_embedding.weight"] == (49408, 512)
    assert shapes["model.logit_scale"] == ()


def test_loads_and_records_weights(remoteclip, remoteclip_ckpt):
    rec = remoteclip.weights_record
    assert rec["weights"] == str(remoteclip_ckpt.absolute())
    assert rec["source"] == "explicit" and len(rec["sha256"]) == 64
    assert remoteclip.device == "cpu"
    assert not hasattr(remoteclip, "model")  # text tower dropped after the strict load


def test_shapes_and_meta(remoteclip):
    xs = _inputs(3)
    pooled = _embed(remoteclip, xs, OutputSpec.pooled())
    grid = _embed(remoteclip, xs, OutputSpec.grid())
    assert len(pooled) == len(grid) == 3
    assert np.stack([e.data for e in pooled]).shape == (3, 512)
    for e in pooled + grid:
        assert e.data.dtype == np.float32 and np.isfinite(e.data).all()
    assert all(e.data.shape == (768, 7, 7) for e in grid)
    m = pooled[0].meta
    assert m["model"] == "remoteclip" and m["weights"] == remoteclip.weights_record
    assert m["input_hw"] == [64, 64] and m["image_size"] == 224
    assert m["preprocess"] == "clip_rgb_uint8" and m["output_mode"] == "pooled"
    assert m["pooling"] == "encode_image" and m["l2_normalized"] is False
    assert grid[0].meta["grid_hw"] == [7, 7] and grid[0].meta["output_mode"] == "grid"


def test_outputs_match_independent_open_clip(remoteclip, remoteclip_ckpt):
    """pooled == encode_image; grid == last resblock patch tokens before ln_post."""
    import open_clip
    from safetensors.torch import load_file

    ref = open_clip.create_model("ViT-B-32", pretrained=None)
    sd = {k.removeprefix("model."): v for k, v in load_file(str(remoteclip_ckpt)).items()}
    ref.load_state_dict(sd, strict=True)
    ref.eval()
    xs = _inputs(2, hw=(80, 96), seed=3)
    x, _ = remoteclip.preprocess(xs)
    captured = {}
    hook = ref.visual.transformer.resblocks[-1].register_forward_hook(
        lambda _m, _i, o: captured.__setitem__("t", o)
    )
    with torch.no_grad():
        want_pooled = ref.encode_image(x).numpy()
    hook.remove()
    tokens = captured["t"]
    if tokens.shape[0] != 2:  # sequence-first transformer
        tokens = tokens.permute(1, 0, 2)
    want_grid = tokens[:, 1:, :].reshape(2, 7, 7, 768).permute(0, 3, 1, 2).numpy()
    pooled = _embed(remoteclip, xs, OutputSpec.pooled())
    grid = _embed(remoteclip, xs, OutputSpec.grid())
    np.testing.assert_allclose(np.stack([e.data for e in pooled]), want_pooled, atol=1e-4)
    np.testing.assert_allclose(np.stack([e.data for e in grid]), want_grid, atol=1e-4)


def test_batched_equals_one_by_one(remoteclip):
    xs = _inputs(2, seed=1) + _inputs(1, hw=(50, 70), seed=2)  # mixed shapes in one batch
    for out in (OutputSpec.pooled(), OutputSpec.grid()):
        batched = _embed(remoteclip, xs, out)
        for x, b in zip(xs, batched, strict=True):
            (single,) = _embed(remoteclip, [x], out)
            np.testing.assert_allclose(b.data, single.data, atol=1e-4, rtol=0)


def test_roi_window_crops_grid_and_is_ignored_for_pooled(remoteclip):
    xs = _inputs(2, seed=4)
    metas = [{"roi_window_geo": (0.25, 0.75, 0.0, 1.0)}, {}]
    full = _embed(remoteclip, xs, OutputSpec.grid())
    g = _embed(remoteclip, xs, OutputSpec.grid(), metas)
    # 0.25*7 = 1.75 -> 1, 0.75*7 = 5.25 -> 6 (outward)
    assert g[0].data.shape == (768, 5, 7) and g[0].meta["roi_cropped"] is True
    np.testing.assert_allclose(g[0].data, full[0].data[:, 1:6, :], atol=1e-5)
    assert g[1].data.shape == (768, 7, 7) and "roi_cropped" not in g[1].meta
    p = _embed(remoteclip, xs, OutputSpec.pooled(), metas)
    assert p[0].data.shape == (512,) and p[0].meta["roi_window_ignored"] is True


def test_rejects_wrong_band_count(remoteclip):
    with pytest.raises(ModelError, match="3 bands"):
        _embed(remoteclip, [np.zeros((4, 8, 8), np.float32)], OutputSpec.pooled())


def test_strict_loading_rejects_incomplete_checkpoint(tmp_path):
    from safetensors.torch import save_file

    from rs_embed_ray.models.remoteclip import RemoteCLIP

    bad = tmp_path / "model.safetensors"
    save_file({"model.visual.proj": torch.zeros(768, 512)}, str(bad))
    with pytest.raises(WeightsError, match="missing"):
        RemoteCLIP(weights=str(bad), device="cpu")


def test_original_pt_format_loads_without_prefix(remoteclip, remoteclip_ckpt, tmp_path):
    from safetensors.torch import load_file

    from rs_embed_ray.models.remoteclip import RemoteCLIP

    sd = {k.removeprefix("model."): v for k, v in load_file(str(remoteclip_ckpt)).items()}
    pt = tmp_path / "RemoteCLIP-ViT-B-32.pt"
    torch.save(sd, pt)
    del sd
    m = RemoteCLIP(weights=str(pt), device="cpu")
    xs = _inputs(1, seed=5)
    a = _embed(m, xs, OutputSpec.pooled())[0].data
    b = _embed(remoteclip, xs, OutputSpec.pooled())[0].data
    np.testing.assert_array_equal(a, b)


def test_random_init_is_explicit_and_recorded(caplog):
    from rs_embed_ray.models.remoteclip import RemoteCLIP

    with caplog.at_level(logging.WARNING):
        m = RemoteCLIP(weights="random", device="cpu")
    assert m.weights_record == {"weights": "random-init", "sha256": None}
    assert any("RANDOM" in r.getMessage() for r in caplog.records)
    e = _embed(m, _inputs(1), OutputSpec.pooled())[0]
    assert e.meta["weights"] == {"weights": "random-init", "sha256": None}


def test_no_weights_offline_raises_weights_error():
    from rs_embed_ray.models.remoteclip import RemoteCLIP

    with pytest.raises(WeightsError, match="--weights remoteclip=random"):
        RemoteCLIP(device="cpu")


def test_registry_loads_remoteclip(remoteclip_ckpt):
    from rs_embed_ray.models.registry import embedder_class, get_info

    assert get_info("remoteclip_s2rgb").model_id == "remoteclip"
    assert embedder_class("remoteclip").__name__ == "RemoteCLIP"
