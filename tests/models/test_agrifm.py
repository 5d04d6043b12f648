"""AgriFM: strict loading of the published layout, the preprocessing of both recipes on fixed
inputs (against torchvision's own normalize/resize and numpy), the 1024 x 14 x 14 grid at
224, batching, ROI crops, frames and options.

The network runs with seeded random weights (``weights="random"``, the published architecture)
and 32 px inputs (``image_size=32``) to keep the forward cheap: the architecture takes any
size. The network itself is checked against the official source in
tests/oracle/test_oracle_agrifm.py (which also writes and loads a published-layout file).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from rs_embed_ray.errors import ModelError, WeightsError
from rs_embed_ray.specs import BBox, OutputSpec, TemporalSpec

torch = pytest.importorskip("torch")

PLACE = BBox(minlon=10.0, minlat=45.0, maxlon=10.01, maxlat=45.01)
WIN = TemporalSpec.range("2022-01-01", "2023-01-01")
CFG = {"image_size": 32}


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """One intra-op thread: the machine's other core belongs to the other test runs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model():
    from rs_embed_ray.models.agrifm import AgriFM

    return AgriFM(device="cpu", weights="random", model_config=CFG, precision="float32")


def _with(model, **cfg):
    """The same network with other options (a rebuild costs seconds)."""
    from rs_embed_ray.models.agrifm import parse_config

    m = copy.copy(model)
    m.opts = parse_config({**CFG, **cfg})
    return m


def _x(seed: int, t: int = 8, h: int = 32, w: int = 32) -> np.ndarray:
    rs = np.random.RandomState(seed)
    return rs.randint(0, 9000, size=(t, 10, h, w)).astype(np.float32)


def _embed(model, xs, output, metas=None):
    return model.embed_batch(
        xs,
        output=output,
        spatials=[PLACE] * len(xs),
        temporal=WIN,
        fetch_metas=metas or [{}] * len(xs),
    )


def _published(sd: dict) -> dict:
    """Our state dict in the published layout: the S2 stem as S2_patch_emd.*, the HLS and
    MODIS stems beside it."""
    from rs_embed_ray.testing.checkpoints_agrifm import other_stem_shapes

    out = {("S2_" + k if k.startswith("patch_emd.") else k): v.clone() for k, v in sd.items()}
    out.update({k: torch.zeros(s) for k, s in other_stem_shapes().items()})
    return out


def test_strict_load_of_the_published_layout(model) -> None:
    from rs_embed_ray.models.agrifm import prepare_state_dict

    own = model.model.state_dict()
    pub = _published(own)
    assert "S2_patch_emd.proj.weight" in pub and pub["S2_patch_emd.proj.weight"].shape == (
        128,
        10,
        4,
        2,
        2,
    )
    got = prepare_state_dict(model.model, pub, path="AgriFM.pth")
    assert set(got) == set(own)  # the other stems set aside, the S2 stem renamed
    wrapped = prepare_state_dict(
        model.model, {"module." + k: v for k, v in pub.items()}, path="AgriFM.pth"
    )
    assert set(wrapped) == set(own)  # the reference's ^module. revise key
    missing = dict(pub)
    missing.pop("backbone.layers.2.blocks.17.mlp.fc2.weight")
    with pytest.raises(WeightsError, match=r"1 missing.*layers\.2\.blocks\.17\.mlp\.fc2"):
        prepare_state_dict(model.model, missing, path="AgriFM.pth")
    extra = {**pub, "decoder.head.weight": torch.zeros(2)}
    with pytest.raises(WeightsError, match=r"1 unexpected.*decoder\.head\.weight"):
        prepare_state_dict(model.model, extra, path="AgriFM.pth")
    bad = {**pub, "backbone.norm.weight": torch.zeros(512)}
    with pytest.raises(WeightsError, match=r"backbone\.norm\.weight: file \(512,\)"):
        prepare_state_dict(model.model, bad, path="AgriFM.pth")


def test_weights_needed_unless_random(monkeypatch, tmp_path) -> None:
    from rs_embed_ray.models.agrifm import AgriFM

    monkeypatch.delenv("RS_EMBED_RAY_WEIGHTS_DIR", raising=False)
    with pytest.raises(WeightsError, match=r"AgriFM\.pth.*agrifm=/path/AgriFM\.pth"):
        AgriFM(device="cpu")
    assert AgriFM.info.status == "available"


def test_upstream_recipe_matches_torchvision() -> None:
    """Upstream's MapNormalize + MapResize are torchvision's F.normalize and F.resize
    (bilinear, antialiased on tensors); no clip, NaN -> 0 first."""
    TF = pytest.importorskip("torchvision.transforms.functional")  # via open_clip_torch

    from rs_embed_ray.models.agrifm import MEAN, STD, preprocess

    x = _x(1, t=3, h=40, w=40)
    x[0, 0, 0, 0] = 14000.0  # kept: upstream does not clip
    x[1, 3, 5, 5] = np.nan
    got, win = preprocess(x, "upstream", 24)
    assert win == (0.0, 1.0, 0.0, 1.0) and got.shape == (3, 10, 24, 24)
    ref = torch.from_numpy(np.nan_to_num(x, nan=0.0))
    ref = TF.normalize(ref, MEAN.tolist(), STD.tolist())
    ref = TF.resize(ref, [24, 24], TF.InterpolationMode.BILINEAR, antialias=True)
    np.testing.assert_allclose(got.numpy(), ref.numpy(), atol=2e-5, rtol=0)
    same, _ = preprocess(x, "upstream", 40)  # no resize: the plain z-score
    want = (np.nan_to_num(x, nan=0.0) - MEAN[None, :, None, None]) / STD[None, :, None, None]
    np.testing.assert_allclose(same.numpy(), want, atol=1e-5, rtol=0)
    assert float(same[0, 0, 0, 0]) == pytest.approx((14000.0 - MEAN[0]) / STD[0], rel=1e-6)


def test_rs_embed_recipe_clips_pads_and_resizes_without_antialias() -> None:
    import torch.nn.functional as F

    from rs_embed_ray.models.agrifm import MEAN, STD, preprocess

    x = _x(2, t=2, h=30, w=40)
    x[0, 1, 2, 3] = 15000.0
    x[1, 0, 4, 4] = -5.0
    got, win = preprocess(x, "rs_embed", 40)
    z = (np.clip(x, 0, 10000) - MEAN[None, :, None, None]) / STD[None, :, None, None]
    want = np.pad(z, ((0, 0), (0, 0), (5, 5), (0, 0)), mode="reflect")
    np.testing.assert_allclose(got.numpy(), want, atol=1e-5, rtol=0)
    assert win == pytest.approx((5 / 40, 35 / 40, 0.0, 1.0))
    small, _ = preprocess(x, "rs_embed", 16)
    ref = F.interpolate(torch.from_numpy(want).float(), size=(16, 16), mode="bilinear")
    np.testing.assert_allclose(small.numpy(), ref.numpy(), atol=1e-5, rtol=0)
    up, _ = preprocess(x, "upstream", 16)
    assert np.abs(up.numpy() - small.numpy()).max() > 1e-2  # antialias and clip differ


def test_grid_is_1024x14x14_at_224(model) -> None:
    (g,) = _embed(_with(model, image_size=224), [_x(3)], OutputSpec.grid())
    assert g.data.shape == (1024, 14, 14) and np.isfinite(g.data).all()
    assert g.meta["grid_hw"] == [14, 14] and g.meta["weights"]["weights"] == "random-init"


def test_pooled_is_the_mean_or_max_of_the_grid(model) -> None:
    x = _x(4)
    (g,) = _embed(model, [x], OutputSpec.grid())
    (p,) = _embed(model, [x], OutputSpec.pooled())
    np.testing.assert_allclose(p.data, g.data.mean(axis=(1, 2)), atol=1e-5, rtol=0)
    (mx,) = _embed(model, [x], OutputSpec.pooled(pooling="max"))
    np.testing.assert_allclose(mx.data, g.data.max(axis=(1, 2)), atol=1e-5, rtol=0)
    assert p.meta["pooling"] == "grid_mean" and mx.meta["pooling"] == "grid_max"


def test_batched_equals_one_at_a_time(model) -> None:
    """Different T (two forwards in one call) and a non-square input (pooled is the grid's
    mean, tested above)."""
    xs = [_x(5), _x(6, t=5), _x(7, h=16, w=48)]
    batch = _embed(model, xs, OutputSpec.grid())
    for x, e in zip(xs, batch, strict=True):
        (one,) = _embed(model, [x], OutputSpec.grid())
        assert e.data.shape == one.data.shape
        np.testing.assert_allclose(e.data, one.data, rtol=0, atol=1e-4)
    assert batch[1].meta["n_frames"] == 5 and batch[0].meta["n_frames"] == 8
    assert batch[2].data.shape == (1024, 2, 2)  # 16 x 48 padded (edge) to 48, then 32 px


def test_roi_crop_of_the_padded_square_and_the_fetch_window(model) -> None:
    m = _with(model, image_size=64)  # a 4 x 4 grid
    x = _x(9, h=16, w=48)  # content at rows 1/3..2/3 of the square -> token rows 1..3
    (g,) = _embed(m, [x], OutputSpec.grid())
    assert g.data.shape == (1024, 2, 4) and g.meta["roi_cropped"]
    sq = _x(10, h=48, w=48)
    (full,) = _embed(m, [sq], OutputSpec.grid())
    roi = {"roi_window_geo": [0.0, 0.5, 0.5, 1.0]}
    (cut,) = _embed(m, [sq], OutputSpec.grid(), metas=[roi])
    np.testing.assert_allclose(cut.data, full.data[:, :2, 2:], atol=1e-6)
    (p,) = _embed(m, [sq], OutputSpec.pooled(), metas=[roi])
    np.testing.assert_allclose(p.data, full.data[:, :2, 2:].mean(axis=(1, 2)), atol=1e-5)


def test_frames_matter_and_a_single_composite_is_repeated(model) -> None:
    x = _x(11)
    (a,) = _embed(model, [x], OutputSpec.pooled())
    (b,) = _embed(model, [x[::-1].copy()], OutputSpec.pooled())
    assert np.abs(a.data - b.data).max() > 1e-3  # the windows mix the frames in order
    (one,) = _embed(model, [x[0]], OutputSpec.pooled())
    (rep,) = _embed(model, [np.repeat(x[:1], 8, axis=0)], OutputSpec.pooled())
    assert one.meta["input_repeated_to_t"] and one.meta["n_frames"] == 8
    np.testing.assert_allclose(one.data, rep.data, atol=1e-6, rtol=0)


def test_bad_inputs_and_config(model) -> None:
    from rs_embed_ray.models.agrifm import AgriFM

    with pytest.raises(ModelError, match="C=10 bands"):
        _embed(model, [np.zeros((8, 9, 32, 32), np.float32)], OutputSpec.pooled())
    with pytest.raises(ModelError, match="at most 32 frames"):
        _embed(model, [np.zeros((33, 10, 16, 16), np.float32)], OutputSpec.pooled())
    for cfg, pattern in (
        ({"recipe": "official"}, r"recipe 'official'.*upstream.*rs_embed"),
        ({"image_size": 8}, "image_size must be >= 16"),
        ({"n_frames": 4}, r"unknown model_config key\(s\) \['n_frames'\]"),
    ):
        with pytest.raises(ModelError, match=pattern):
            AgriFM(device="cpu", weights="random", model_config=cfg)


def test_catalog_entry() -> None:
    from rs_embed_ray.models.agrifm import AgriFM
    from rs_embed_ray.models.registry import embedder_class, get_info

    info = get_info("agrifm")
    assert info.status == "available" and embedder_class("agrifm") is AgriFM
    assert info.fetch_semantics == "multi:8" and info.n_frames == 8
    assert info.sensor.bands == ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")
    assert (info.dim_pooled, info.dim_grid, info.grid_hw) == (1024, 1024, (14, 14))


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
            models=["agrifm"],
            out=str(tmp_path / "o"),
            layout="per_item",
            backend="local",
            source=str(source),
            model_configs={"agrifm": cfg},
        )

    with pytest.raises(ModelError, match=r"recipe 'rsembed'.*upstream.*rs_embed"):
        plan({"recipe": "rsembed"})
    assert plan({"recipe": "rs-embed", "image_size": 32}).models[0].model_id == "agrifm"
