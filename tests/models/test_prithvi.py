"""Prithvi-EO-2.0-100M-TL: published checkpoint layout, strict loading, preprocessing, frame
dates, coordinate encoders, a hand-composed reference forward, batching and ROI crops.

The checkpoint is random-valued with the published key names and shapes (see
rs_embed_ray.testing.checkpoints.write_prithvi_checkpoint). Expected numbers are computed
here with numpy from the formulas, not with the module's own helpers.
"""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pytest

from rs_embed_ray.errors import ModelError, WeightsError
from rs_embed_ray.specs import BBox, InputPrepSpec, OutputSpec, PointBuffer, TemporalSpec

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

PLACE = BBox(minlon=10.0, minlat=45.0, maxlon=10.1, maxlat=45.1)
YEAR = TemporalSpec.range("2022-01-01", "2023-01-01")


def _embed(m, xs, output, metas=None, spatials=None, temporal=YEAR):
    return m.embed_batch(
        xs,
        output=output,
        spatials=spatials or [PLACE] * len(xs),
        temporal=temporal,
        fetch_metas=metas or [{}] * len(xs),
    )


def _sincos(dim, pos):
    k = np.arange(dim // 2, dtype=np.float64)
    ang = float(pos) / 10000.0 ** (k / (dim // 2))
    return np.concatenate([np.sin(ang), np.cos(ang)])


def test_checkpoint_layout(prithvi_ckpt):
    sd = torch.load(prithvi_ckpt, map_location="cpu", weights_only=True)
    assert prithvi_ckpt.name == "Prithvi_EO_V2_100M_TL.pt"
    enc = [k for k in sd if k.startswith("encoder.")]
    dec = [k for k in sd if k.startswith("decoder.")]
    assert len(enc) == 152 and len(dec) == 106 and len(sd) == 258
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert shapes["encoder.patch_embed.proj.weight"] == (768, 6, 1, 16, 16)
    assert shapes["encoder.pos_embed"] == (1, 1 + 4 * 196, 768)
    assert shapes["encoder.temporal_embed_enc.scale"] == (1,)
    assert shapes["encoder.location_embed_enc.scale"] == (1,)
    assert shapes["encoder.blocks.11.mlp.fc1.weight"] == (3072, 768)
    assert shapes["decoder.decoder_pos_embed"] == (1, 785, 512)
    assert shapes["decoder.decoder_pred.weight"] == (16 * 16 * 6, 512)
    assert shapes["decoder.decoder_blocks.7.attn.qkv.weight"] == (1536, 512)
    assert "decoder.temporal_embed_dec.scale" in sd and "decoder.mask_token" in sd
    cfg = json.loads((prithvi_ckpt.parent / "config.json").read_text())["pretrained_cfg"]
    assert cfg["num_frames"] == 4 and cfg["coords_encoding"] == ["time", "location"]


def test_loads_strictly_and_records(prithvi, prithvi_ckpt):
    rec = prithvi.weights_record
    assert rec["weights"] == str(prithvi_ckpt.absolute()) and rec["source"] == "explicit"
    assert len(rec["sha256"]) == 64
    sd = torch.load(prithvi_ckpt, map_location="cpu", weights_only=True)
    own = prithvi.model.state_dict()
    for k in ("blocks.5.attn.qkv.weight", "patch_embed.proj.weight", "norm.bias", "cls_token"):
        torch.testing.assert_close(own[k], sd[f"encoder.{k}"], rtol=0, atol=0)
    assert float(own["temporal_embed_enc.scale"]) == pytest.approx(0.37)
    assert float(own["location_embed_enc.scale"]) == pytest.approx(0.21)


def test_registry_and_catalog():
    from rs_embed_ray.models.catalog import CATALOG, IMPLEMENTATIONS
    from rs_embed_ray.models.prithvi import Prithvi, grid_side, normalize_variant
    from rs_embed_ray.models.registry import embedder_class, get_info

    assert embedder_class("prithvi_eo_v2_s2_6b") is Prithvi
    info = get_info("prithvi")
    assert info.status == "available" and "prithvi" in IMPLEMENTATIONS
    assert info.fetch_semantics == "multi:4" and info.sensor.scale_m == 30
    assert CATALOG["prithvi"].dim_pooled == 768 and CATALOG["prithvi"].grid_hw == (14, 14)
    assert normalize_variant("300m_tl") == "prithvi_eo_v2_300_tl"
    assert normalize_variant("600_TL") == "prithvi_eo_v2_600_tl"
    assert grid_side("600_tl") == 16 and grid_side("100_tl") == 14
    with pytest.raises(ModelError, match="Unknown prithvi variant"):
        normalize_variant("prithvi_eo_v1_100")


def test_strict_key_checks(prithvi):
    from rs_embed_ray.models.prithvi import prepare_state_dict

    model = prithvi.model
    own = {f"encoder.{k}": v.clone() for k, v in model.state_dict().items()}
    # pos_embed of another frame count is replaced by the regenerated table; decoder dropped
    ok = dict(own)
    ok["encoder.pos_embed"] = torch.zeros(1, 1 + 3 * 196, 768)
    ok["decoder.decoder_pred.weight"] = torch.zeros(3, 3)
    out = prepare_state_dict(model, ok, path="x")
    assert set(out) == set(model.state_dict())
    torch.testing.assert_close(out["pos_embed"], model.state_dict()["pos_embed"])
    bad = dict(own)
    del bad["encoder.blocks.3.norm2.weight"]
    bad["encoder.head.weight"] = torch.zeros(2, 2)
    bad["mask_token"] = torch.zeros(1)
    with pytest.raises(WeightsError, match=r"1 missing .*blocks\.3\.norm2\.weight.*2 unexpected"):
        prepare_state_dict(model, bad, path="x")
    shape = dict(own)
    shape["encoder.patch_embed.proj.weight"] = torch.zeros(768, 6, 16, 16)
    with pytest.raises(WeightsError, match="1 shape mismatches"):
        prepare_state_dict(model, shape, path="x")


def test_loader_rejects_wrong_file_and_config(tmp_path):
    from rs_embed_ray.models.prithvi import Prithvi

    p = tmp_path / "Prithvi_EO_V2_100M_TL.pt"
    torch.save({"encoder.cls_token": torch.zeros(1, 1, 768)}, p)
    with pytest.raises(WeightsError, match="missing"):
        Prithvi(device="cpu", weights=str(p))
    (tmp_path / "config.json").write_text(
        json.dumps({"pretrained_cfg": {"embed_dim": 1024, "depth": 24, "patch_size": [1, 16, 16]}})
    )
    with pytest.raises(WeightsError, match="embed_dim=1024"):
        Prithvi(device="cpu", weights=str(p))


MEAN = np.array([1087.0, 1342.0, 1433.0, 2734.0, 1958.0, 1363.0], np.float32)[:, None, None]
STD = np.array([2248.0, 2179.0, 2178.0, 1850.0, 1242.0, 1049.0], np.float32)[:, None, None]


def test_preprocess_golden(prithvi):
    """(DN - mean) / std (the published stats from config.json) -> centre reflect pad to
    square -> bilinear 224 (half-pixel); NaN -> 0.0001 after normalising."""
    from rs_embed_ray.models.tiling import resize_bilinear

    assert prithvi.normalization == "upstream" and prithvi.mean[0] == 1087.0
    rng = np.random.default_rng(3)
    x = rng.uniform(-500, 12000, size=(1, 6, 20, 30)).astype(np.float32)
    t, wins = prithvi.preprocess([x])
    unit = (x - MEAN) / STD
    padded = np.pad(unit, ((0, 0), (0, 0), (5, 5), (0, 0)), mode="reflect")
    want = resize_bilinear(padded, (224, 224))
    assert tuple(t[0].shape) == (1, 6, 224, 224)
    np.testing.assert_allclose(t[0].numpy(), want, atol=5e-5)  # float32 weights, |z| <= 5
    assert wins == [(5 / 30, 25 / 30, 0.0, 1.0)]
    # a 224 square passes unresized, only normalised; a missing pixel is upstream's 0.0001
    y = rng.uniform(0, 10000, size=(2, 6, 224, 224)).astype(np.float32)
    y[1, :, 7, 9] = np.nan
    t2, _ = prithvi.preprocess([y])
    want2 = (y - MEAN) / STD
    want2[1, :, 7, 9] = 0.0001
    np.testing.assert_allclose(t2[0].numpy(), want2, rtol=1e-6, atol=1e-6)


def test_preprocess_rs_embed_normalization(prithvi_ckpt):
    """``normalization="rs_embed"`` keeps rs-embed 0.3.1's DN/10000 clip [0,1], NaN -> 0."""
    from rs_embed_ray.models.prithvi import Prithvi

    m = Prithvi(
        device="cpu",
        weights=str(prithvi_ckpt),
        model_config={"normalization": "rs_embed"},
        precision="float32",
    )
    rng = np.random.default_rng(4)
    y = rng.uniform(-500, 12000, size=(1, 6, 224, 224)).astype(np.float32)
    y[0, :, 3, 3] = np.nan
    t, _ = m.preprocess([y])
    want = np.clip(np.nan_to_num(y, nan=0.0) / 10000.0, 0.0, 1.0)
    np.testing.assert_allclose(t[0].numpy(), want, rtol=1e-6)
    with pytest.raises(ModelError, match="normalization must be one of"):
        Prithvi(device="cpu", weights="random", model_config={"normalization": "zscore"})


def test_pos_embed_matches_formula(prithvi):
    from rs_embed_ray.models.prithvi import pos_embed_3d

    table = prithvi.model.pos_embed[0].numpy()
    assert table.shape == (785, 768)
    np.testing.assert_array_equal(table[0], 0.0)
    for t, r, c in [(0, 0, 0), (2, 3, 5), (3, 13, 1)]:
        row = table[1 + t * 196 + r * 14 + c]
        np.testing.assert_allclose(row[:288], _sincos(288, c), atol=1e-6)
        np.testing.assert_allclose(row[288:576], _sincos(288, r), atol=1e-6)
        np.testing.assert_allclose(row[576:], _sincos(192, t), atol=1e-6)
    # fewer frames: the first T*196 rows of the pretraining table
    np.testing.assert_array_equal(pos_embed_3d(768, 2, 14, 14), table[: 1 + 2 * 196])


def test_frame_dates():
    from rs_embed_ray.models.prithvi import frame_dates, split_days
    from rs_embed_ray.providers.gee import split_date_range

    for s, e, n in [
        ("2022-01-01", "2023-01-01", 4),
        ("2022-06-01", "2022-09-01", 4),
        ("2021-03-05", "2021-03-09", 3),
    ]:
        got = [(a.isoformat(), b.isoformat()) for a, b in split_days(s, e, n)]
        assert got == split_date_range(s, e, n)
    dates, src = frame_dates(4, YEAR, {})
    assert src == "window_split"
    assert dates == [date(2022, 2, 15), date(2022, 5, 17), date(2022, 8, 16), date(2022, 11, 16)]
    assert [d.timetuple().tm_yday for d in dates] == [46, 137, 228, 320]
    frames = [
        {"start": "2022-07-01", "end": "2022-07-11"},
        {"start": "2022-07-11", "end": "2022-08-01"},
    ]
    dates, src = frame_dates(2, YEAR, {"frames": frames})
    assert src == "fetch_meta_frames" and dates == [date(2022, 7, 6), date(2022, 7, 21)]
    assert frame_dates(1, TemporalSpec.year(2021), None)[0] == [date(2021, 7, 2)]


def test_coordinate_encoders_golden(prithvi):
    enc = prithvi.model
    with torch.no_grad():
        tv = enc.temporal_embed_enc(torch.tensor([[[2022.0, 46.0]]]))[0, 0].numpy()
        lv = enc.location_embed_enc(torch.tensor([[45.05, 10.05]]))[0].numpy()
    want_t = 0.37 * np.concatenate([_sincos(384, 2022.0), _sincos(384, 46.0)])
    want_l = 0.21 * np.concatenate([_sincos(384, 45.05), _sincos(384, 10.05)])
    np.testing.assert_allclose(tv, want_t, atol=2e-4)  # float32 angles up to ~2000 rad
    np.testing.assert_allclose(lv, want_l, atol=1e-5)


def test_forward_matches_hand_composed_reference(prithvi):
    """Patch embed by numpy matmul, pos/time/place codes from the formulas, then the loaded
    timm blocks + norm: must equal the embedder's grid (CLS dropped, frames averaged)."""
    rng = np.random.default_rng(7)
    x = rng.uniform(0, 8000, size=(2, 6, 224, 224)).astype(np.float32)
    (got,) = _embed(prithvi, [x], OutputSpec.grid())
    sd = {k: v.detach().double().numpy() for k, v in prithvi.model.state_dict().items()}
    unit = ((x - MEAN) / STD).astype(np.float64)
    patches = unit.reshape(2, 6, 14, 16, 14, 16).transpose(0, 2, 4, 1, 3, 5).reshape(2 * 196, -1)
    tok = patches @ sd["patch_embed.proj.weight"].reshape(768, -1).T + sd["patch_embed.proj.bias"]
    rows = []
    for t in range(2):
        for r in range(14):
            for c in range(14):
                rows.append(np.concatenate([_sincos(288, c), _sincos(288, r), _sincos(192, t)]))
    tok = tok + np.stack(rows)
    # 2 bins over 2022: [Jan 1, Jul 2) and [Jul 2, Jan 1); midpoints Apr 2 and Oct 1
    doy = [92.0, 274.0]
    for t in range(2):
        tok[t * 196 : (t + 1) * 196] += sd["temporal_embed_enc.scale"][0] * np.concatenate(
            [_sincos(384, 2022.0), _sincos(384, doy[t])]
        )
    tok = tok + sd["location_embed_enc.scale"][0] * np.concatenate(
        [_sincos(384, 45.05), _sincos(384, 10.05)]
    )
    seq = np.concatenate([sd["cls_token"][0], tok])[None]
    with torch.no_grad():
        h = torch.from_numpy(seq).float()
        for blk in prithvi.model.blocks:
            h = blk(h)
        h = prithvi.model.norm(h)[0, 1:].numpy()
    want = h.reshape(2, 14, 14, 768).mean(axis=0).transpose(2, 0, 1)
    assert got.data.shape == (768, 14, 14)
    assert got.meta["frame_dates"] == ["2022-04-02", "2022-10-01"]
    np.testing.assert_allclose(got.data, want, atol=2e-4, rtol=0)


def test_batched_equals_single_dedupe_and_roi(prithvi):
    """11 frame forwards: a batch (two 3-frame series in one forward, one 1-frame), series a
    alone, and the 1-frame input alone pooled in an ROI window."""
    rng = np.random.default_rng(11)
    a = rng.uniform(0, 6000, size=(4, 6, 32, 32)).astype(np.float32)
    a[2] = a[0]  # a back-filled duplicate: dropped, T=3
    b = rng.uniform(0, 6000, size=(3, 6, 24, 40)).astype(np.float32)  # non-square
    c = rng.uniform(0, 6000, size=(6, 32, 32)).astype(np.float32)  # CHW: one frame
    frames_b = [
        {"start": "2022-05-01", "end": "2022-06-01"},
        {"start": "2022-06-01", "end": "2022-07-01"},
        {"start": "2022-07-01", "end": "2022-08-01"},
    ]
    spatials = [PLACE, PointBuffer(lon=-3.0, lat=40.0, buffer_m=500), PLACE]
    metas = [{}, {"frames": frames_b}, {}]
    batched = _embed(prithvi, [a, b, c], OutputSpec.grid(), metas, spatials)
    assert [e.meta["n_frames_used"] for e in batched] == [3, 3, 1]
    assert batched[0].meta["n_duplicate_frames_dropped"] == 1
    assert batched[0].meta["frame_dates"] == ["2022-02-15", "2022-05-17", "2022-11-16"]
    assert batched[1].meta["temporal_coords"][:2] == [[2022.0, 136.0], [2022.0, 167.0]]
    assert batched[1].meta["location_coords"] == [40.0, -3.0]
    (s,) = _embed(prithvi, [a], OutputSpec.grid(), [metas[0]], [spatials[0]])
    np.testing.assert_allclose(batched[0].data, s.data, atol=1e-4, rtol=0)
    # b is 24x40, padded to 40x40: rows 8..32 of 40 -> tokens 2..12 (outward)
    assert batched[1].data.shape == (768, 10, 14) and batched[1].meta["roi_cropped"] is True
    assert batched[0].data.shape == (768, 14, 14) and "roi_cropped" not in batched[0].meta
    roi = {"roi_window_geo": [0.0, 0.5, 0.5, 1.0]}
    (p,) = _embed(prithvi, [c], OutputSpec.pooled(), [roi])
    assert p.data.shape == (768,) and p.meta["pooling"] == "roi_grid_mean"
    np.testing.assert_allclose(p.data, batched[2].data[:, :7, 7:].mean(axis=(1, 2)), atol=1e-4)


def test_tiles_through_embed_with_prep(prithvi):
    from rs_embed_ray.models.tiling import embed_with_prep

    x = np.random.default_rng(5).uniform(0, 5000, size=(1, 6, 32, 64)).astype(np.float32)
    (e,) = embed_with_prep(
        prithvi,
        [x],
        prep=InputPrepSpec.tile(tile_size=32),
        output=OutputSpec.grid(),
        spatials=[PLACE],
        temporal=YEAR,
        fetch_metas=[{}],
        batch_size=4,
    )
    assert e.data.shape == (768, 14, 28) and e.meta["input_prep"]["tile_count"] == 2
    assert np.isfinite(e.data).all()


def test_rejects_bad_inputs(prithvi):
    x = np.zeros((6, 16, 16), np.float32)
    with pytest.raises(ModelError, match="georeferenced"):
        _embed(prithvi, [x], OutputSpec.pooled(), spatials=[None])
    with pytest.raises(ModelError, match="C=6"):
        _embed(prithvi, [np.zeros((3, 16, 16), np.float32)], OutputSpec.pooled())
    with pytest.raises(ModelError, match="at most 4 frames"):
        _embed(prithvi, [np.zeros((5, 6, 16, 16), np.float32)], OutputSpec.pooled())
