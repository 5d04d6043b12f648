"""WildSAT vitb16: published file format, strict loading and its refusals, weights
resolution, the preprocessing on fixed inputs (per-tile min-max, uint8, Pillow bicubic),
batching, ROI crops and the options.

The checkpoint is random-valued with the published key names and shapes
(rs_embed_ray.testing.checkpoints_wildsat). Expected numbers are computed here by hand from
the recipe or by Pillow; the network and the whole embedding are checked against torchvision
and rs-embed 0.3.1 in tests/oracle/test_oracle_wildsat.py.
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

import numpy as np
import pytest

from rs_embed_ray.errors import ModelError, WeightsError
from rs_embed_ray.specs import OutputSpec

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """One intra-op thread: on a loaded 2-CPU machine spinning threads are much slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ckpt(module_scratch) -> Path:
    from rs_embed_ray.testing.checkpoints_wildsat import write_wildsat_checkpoint

    return write_wildsat_checkpoint(module_scratch("wildsat"), seed=1)


@pytest.fixture(scope="module")
def model(ckpt: Path):
    from rs_embed_ray.models.wildsat import WildSAT

    return WildSAT(device="cpu", weights=str(ckpt), precision="float32")


def _embed(m, xs, output, metas=None):
    return m.embed_batch(
        xs,
        output=output,
        spatials=[None] * len(xs),
        temporal=None,
        fetch_metas=metas or [{}] * len(xs),
    )


def _rgb(seed: int, h: int = 32, w: int | None = None) -> np.ndarray:
    return np.random.RandomState(seed).uniform(0, 6000, (3, h, w or h)).astype(np.float32)


def test_checkpoint_layout_and_strict_load(ckpt: Path, model) -> None:
    with torch.serialization.safe_globals([argparse.Namespace]):
        obj = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert vars(obj["opt"])["satellite_head"] == "threelinearnobias"
    sd = obj["satellite_state_dict"]
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert shapes["module.backbone.conv_proj.weight"] == (768, 3, 16, 16)
    assert shapes["module.backbone.encoder.pos_embedding"] == (1, 197, 768)
    assert shapes["module.backbone.heads.head.weight"] == (1000, 768)
    assert shapes["module.backbone.encoder.layers.encoder_layer_11.mlp.3.weight"] == (768, 3072)
    dec = sorted(k for k in sd if ".decoder." in k)
    assert dec == [f"module.decoder.backbone{i}.0.weight" for i in (1, 2, 3)]
    assert shapes[dec[2]] == (256, 1000)
    own = model.model.state_dict()
    assert set(own) == {k[len("module.") :] for k in sd}
    for k in ("backbone.encoder.layers.encoder_layer_3.ln_2.weight", "decoder.backbone3.0.weight"):
        torch.testing.assert_close(own[k], sd[f"module.{k}"], rtol=0, atol=0)
    assert model.branch == "backbone3" and model.feature_source == "image_head"
    rec = model.weights_record
    assert rec["source"] == "explicit" and len(rec["sha256"]) == 64


def test_mismatches_are_named(tmp_path: Path) -> None:
    """(a small file: the same strict check, without rewriting 350 MB)"""
    from rs_embed_ray.models.wildsat import WildSAT

    sd = {
        "module.backbone.conv_proj.weight": torch.zeros(768, 3, 16, 16),
        "module.backbone.encoder.extra_token": torch.zeros(1, 1, 768),
        "module.backbone.heads.head.bias": torch.zeros(999),
        "module.decoder.backbone3.0.weight": torch.zeros(256, 1000),
    }
    bad = tmp_path / "vitb16-imagenet-bnfc.pth"
    torch.save({"satellite_state_dict": sd}, bad)
    with pytest.raises(
        WeightsError,
        match=r"WildSAT checkpoint .* \d+ missing .*1 unexpected.*extra_token.*1 shape.*"
        r"heads.head.bias: file \(999,\) vs model \(1000,\)",
    ):
        WildSAT(device="cpu", weights=str(bad))


def _small_file(path: Path, sd: dict, **top) -> str:
    torch.save({"satellite_state_dict": sd, **top}, path)
    return str(path)


def test_other_layouts_are_refused_by_name(tmp_path: Path) -> None:
    from rs_embed_ray.models.wildsat import load_wildsat, read_checkpoint

    conv = {"module.backbone.conv_proj.weight": torch.zeros(768, 3, 16, 16)}
    rn = _small_file(
        tmp_path / "r.pth",
        {"module.backbone.layer1.0.conv1.weight": torch.zeros(1)},
        opt=argparse.Namespace(satellite_encoder="resnet50"),
    )
    with pytest.raises(WeightsError, match=r"not the vitb16 model \(satellite_encoder='resnet50'"):
        load_wildsat(rn)
    bn = {**conv, "module.decoder.backbone.1.running_mean": torch.zeros(1024)}
    with pytest.raises(WeightsError, match=r"unsupported decoder key 'decoder.backbone.1.running"):
        load_wildsat(_small_file(tmp_path / "b.pth", bn))
    odd = _small_file(tmp_path / "d.pth", conv, when=datetime.date(2024, 1, 1))
    with pytest.raises(WeightsError, match="trusted_pickle=true"):
        read_checkpoint(odd)
    sd, opt = read_checkpoint(odd, trusted_pickle=True)
    assert list(sd) == ["backbone.conv_proj.weight"] and opt == {}


def test_head_spec_and_branch_choice() -> None:
    from rs_embed_ray.models.wildsat import build_wildsat, head_spec, image_branch

    sd = {
        "decoder.backbone.0.weight": torch.zeros(64, 1000),
        "decoder.backbone.2.weight": torch.zeros(32, 64),
        "decoder.backbone.2.bias": torch.zeros(32),
    }
    spec = head_spec(sd, path="x")
    assert spec == {"backbone": [(0, 1000, 64, False), (2, 64, 32, True)]}
    assert image_branch(spec) == "backbone"
    assert image_branch({"backbone1": [], "backbone2": []}) == "backbone2"
    assert image_branch({"backbone1": [], "backbone3": []}, prefer=1) == "backbone1"
    net = build_wildsat(spec)
    assert [type(m).__name__ for m in net.decoder.backbone] == ["Linear", "ReLU", "Linear"]
    assert set(net.state_dict()) - {
        k for k in net.state_dict() if k.startswith("backbone.")
    } == set(sd)


def test_weights_resolution(ckpt: Path, tmp_path: Path, monkeypatch) -> None:
    from rs_embed_ray.models.wildsat import WildSAT

    with pytest.raises(
        WeightsError, match=r'(?s)vitb16-imagenet-bnfc\.pth.*"wildsat": "random".*Google Drive'
    ):
        WildSAT(device="cpu")
    (tmp_path / "wildsat").mkdir()
    (tmp_path / "wildsat" / ckpt.name).symlink_to(ckpt)
    monkeypatch.setenv("RS_EMBED_RAY_WEIGHTS_DIR", str(tmp_path))
    m = WildSAT(device="cpu")
    assert m.weights_record["source"] == "env_dir"


def test_random_init_is_recorded_and_published_shape() -> None:
    from rs_embed_ray.models.wildsat import WildSAT

    m = WildSAT(device="cpu", weights="random", precision="float32")
    assert m.weights_record["weights"] == "random-init"
    assert tuple(m.model.state_dict()["decoder.backbone3.0.weight"].shape) == (256, 1000)
    (e,) = _embed(m, [_rgb(0)], OutputSpec.pooled())
    assert e.data.shape == (256,) and np.isfinite(e.data).all()


def test_uint8_levels_by_hand() -> None:
    """clip 0..10000, /10000, one min-max over all three channels, x255 truncated."""
    from rs_embed_ray.models.wildsat import to_uint8_levels

    x = np.array([[[1000, 2000]], [[3000, 12000]], [[np.nan, -5]]], dtype=np.float32)
    # reflectance: 0.1 0.2 / 0.3 1.0 / 0 0 -> min 0, max 1 -> x 255, truncated
    np.testing.assert_array_equal(to_uint8_levels(x)[:, 0, :], [[25, 51], [76, 255], [0, 0]])
    y = np.array([[[2000, 3000]], [[4000, 6000]], [[2000, 2000]]], dtype=np.float32)
    # min 0.2, max 0.6: (v - 0.2) / 0.4 * 255
    np.testing.assert_array_equal(to_uint8_levels(y)[:, 0, :], [[0, 63], [127, 255], [0, 0]])
    np.testing.assert_array_equal(to_uint8_levels(y * 1.5), to_uint8_levels(y))  # gain-free
    np.testing.assert_array_equal(to_uint8_levels(np.full((3, 2, 2), 700.0)), 0)  # flat tile
    np.testing.assert_array_equal(
        to_uint8_levels(y, "unit_scale")[:, 0, :], [[51, 76], [102, 153], [51, 51]]
    )


def test_resize_is_pillow_bicubic() -> None:
    from PIL import Image

    from rs_embed_ray.models.wildsat import preprocess, to_uint8_levels

    raws = [_rgb(3, 40), _rgb(4, 24, 30), _rgb(5, 224)]
    x = preprocess(raws).numpy()
    assert x.shape == (3, 3, 224, 224) and x.dtype == np.float32
    for raw, got in zip(raws, x, strict=True):
        u8 = to_uint8_levels(raw).astype(np.uint8).transpose(1, 2, 0)
        im = Image.fromarray(u8, mode="RGB").resize((224, 224), resample=Image.BICUBIC)
        want = np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / 255.0
        np.testing.assert_array_equal(got, want)  # no mean/std


def test_batched_equals_one_at_a_time(model) -> None:
    xs = [_rgb(10, 32), _rgb(11, 48)]  # two sizes: two resize groups, one forward
    for output in (OutputSpec.pooled(), OutputSpec.grid()):
        batched = _embed(model, xs, output)
        for x, b in zip(xs, batched, strict=True):
            (one,) = _embed(model, [x], output)
            np.testing.assert_allclose(b.data, one.data, rtol=0, atol=1e-5)
    assert batched[0].data.shape == (768, 14, 14)
    assert batched[0].meta["grid_type"] == "vit_patch_tokens"
    (p,) = _embed(model, [xs[0]], OutputSpec.pooled())
    assert p.data.shape == (256,) and p.meta["pooling"] == "image_head"


def test_roi_window_crops_grid_and_pools_its_tokens(model) -> None:
    x = _rgb(20, 40)
    meta = [{"roi_window_geo": [0.25, 0.75, 0.0, 1.0]}]
    (full,) = _embed(model, [x], OutputSpec.grid())
    (g,) = _embed(model, [x], OutputSpec.grid(), meta)
    # rows 0.25 * 14 = 3.5 .. 10.5, rounded outward: 3..11
    assert g.data.shape == (768, 8, 14) and g.meta["roi_cropped"] is True
    np.testing.assert_allclose(g.data, full.data[:, 3:11, :], rtol=0, atol=1e-6)
    (p,) = _embed(model, [x], OutputSpec.pooled(), meta)
    assert p.data.shape == (768,) and p.meta["pooling"] == "roi_grid_mean"
    # float32 means summed in another order: a few ulp at |x| ~ 3
    np.testing.assert_allclose(p.data, g.data.mean(axis=(1, 2)), rtol=0, atol=1e-5)
    (pm,) = _embed(model, [x], OutputSpec.pooled(pooling="max"), meta)
    np.testing.assert_allclose(pm.data, g.data.max(axis=(1, 2)), rtol=0, atol=1e-6)


def test_backbone_feature_and_bad_options(ckpt: Path) -> None:
    from rs_embed_ray.models.wildsat import WildSAT, parse_config

    m = WildSAT(device="cpu", weights=str(ckpt), model_config={"feature": "backbone"})
    (e,) = _embed(m, [_rgb(30)], OutputSpec.pooled())
    assert e.data.shape == (1000,) and e.meta["feature_source"] == "backbone"
    with pytest.raises(ModelError, match="norm must be one of"):
        parse_config({"norm": "zscore"})
    with pytest.raises(ModelError, match=r"unknown variant 'vitl16'; choose one of \['resnet50'"):
        parse_config({"variant": "vitl16"})
    assert parse_config({"variant": "ResNet-50"}).variant == "resnet50"
    with pytest.raises(WeightsError, match=r"not the swint model \(satellite_encoder='vitb16'\)"):
        WildSAT(device="cpu", weights=str(ckpt), model_config={"variant": "swint"})
    with pytest.raises(ModelError, match="unknown model_config key"):
        WildSAT.check_model_config({"image_sizee": 224})
    with pytest.raises(ModelError, match="wildsat expects CHW input with 3 bands"):
        _embed(m, [np.zeros((4, 8, 8), np.float32)], OutputSpec.pooled())
