"""OlmoEarth (olmoearth-pretrain-minimal): published file layout, strict loading through our
loader and the package's own, weights resolution, golden preprocessing, frames/timestamps,
NaN-frame dropping, batching, ROI crops, output shapes and the Base default.

Checkpoints are random-valued with the published key names and shapes
(rs_embed_ray.testing.checkpoints.write_olmoearth_checkpoint). Most tests use the published
Nano v1.2 config (same loader, ``model_config["variant"]``) at a small ``image_size`` because
Base costs ~35 s per 256 px forward on two CPU cores; Base itself is loaded and run once.
Expected preprocessing numbers are computed here with numpy from the normaliser's statistics
file and the textbook bilinear formula, not with the module's helpers.
"""

from __future__ import annotations

import hashlib
import json
import time
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest

from rs_embed_ray.errors import ModelError, WeightsError
from rs_embed_ray.specs import BBox, OutputSpec, PointBuffer, TemporalSpec

torch = pytest.importorskip("torch")
pytest.importorskip("olmoearth_pretrain_minimal")

from rs_embed_ray.models.olmoearth import (  # noqa: E402
    S2_BANDS_MODEL,
    OlmoEarth,
    frame_starts,
    normalize_variant,
    published_v12_config,
    timestamp,
)

NANO = {"variant": "nano_v1_2", "image_size": 32}
WINDOW = TemporalSpec.range("2022-01-01", "2022-04-01")  # 3 bins: Jan 1, Jan 31, Mar 2
PLACE = PointBuffer(lon=10.0, lat=45.0, buffer_m=160)
# the inventory the Base / Nano releases hold for their three encoder-input modalities
# (encoder blocks, norm, month embedding, S2/S1/Landsat channel + patch embeddings)
RELEASE_INVENTORY = {"nano_v1_2": (86, 1_090_224), "base_v1_2": (222, 94_513_984)}
CHANNEL_EMB = "encoder.composite_encodings.per_modality_channel_embeddings"


def _encoder_inventory(sd: dict) -> tuple[int, int]:
    mods = ("sentinel2_l2a", "sentinel1", "landsat")
    keep = [
        k
        for k in sd
        if k.startswith(("encoder.blocks.", "encoder.norm."))
        or k == "encoder.composite_encodings.month_embed.weight"
        or any(
            k.startswith(f"encoder.composite_encodings.per_modality_channel_embeddings.{m}")
            or k.startswith(f"encoder.patch_embeddings.per_modality_embeddings.{m}.")
            for m in mods
        )
    ]
    return len(keep), sum(int(sd[k].numel()) for k in keep)


@pytest.fixture(scope="module")
def nano_ckpt(module_scratch) -> Path:
    from rs_embed_ray.testing.checkpoints import write_olmoearth_checkpoint

    return write_olmoearth_checkpoint(
        module_scratch("OlmoEarth-v1_2-Nano"), variant="nano_v1_2", seed=1
    )


@pytest.fixture(scope="module")
def nano(nano_ckpt: Path) -> OlmoEarth:
    return OlmoEarth(device="cpu", weights=str(nano_ckpt), model_config=NANO, precision="float32")


def _embed(m, xs, output=None, metas=None, temporal=WINDOW, spatials=None):
    return m.embed_batch(
        list(xs),
        output=output or OutputSpec.pooled(),
        spatials=spatials or [PLACE] * len(xs),
        temporal=temporal,
        fetch_metas=metas or [{}] * len(xs),
    )


def _series(t=3, h=32, w=32, seed=0):
    return np.random.default_rng(seed).uniform(0, 6000, (t, 12, h, w)).astype(np.float32)


def _frames_meta(starts, empty=()):
    from datetime import date, timedelta

    out = []
    for i, s in enumerate(starts):
        d = date.fromisoformat(s)
        out.append({"start": s, "end": (d + timedelta(days=30)).isoformat(), "empty": i in empty})
    return {"frames": out}


# ---------------------------------------------------------------------------- files, loading


def test_checkpoint_layout(nano_ckpt):
    cfg = json.loads((nano_ckpt.parent / "config.json").read_text())
    enc = cfg["model"]["encoder_config"]
    assert cfg["model"]["_CLASS_"] == "olmoearth_pretrain.nn.latent_mim.LatentMIMConfig"
    assert enc["embedding_size"] == 128 and enc["depth"] == 4 and enc["num_heads"] == 8
    assert enc["spatial_pos_encoding"] == "rope_3d_mixed" and enc["max_patch_size"] == 8
    s2 = enc["tokenization_config"]["overrides"]["sentinel2_l2a"]["band_groups"]
    assert s2 == [list(S2_BANDS_MODEL)]
    sd = torch.load(nano_ckpt, map_location="cpu", weights_only=True)
    assert nano_ckpt.name == "weights.pth" and len(sd) == 323
    assert {k.split(".")[0] for k in sd} == {"encoder", "decoder", "target_encoder"}
    assert _encoder_inventory(sd) == RELEASE_INVENTORY["nano_v1_2"]
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert shapes["encoder.blocks.0.attn.rope_mixed_freqs"] == (3, 8, 8)
    # one S2 band group (v1.1+), a quarter of the width per encoding type
    assert shapes[f"{CHANNEL_EMB}.sentinel2_l2a"] == (1, 32)


def test_package_loader_reads_our_files(nano_ckpt, nano):
    """The package's own loader (strict load_state_dict) accepts the files as published."""
    from olmoearth_pretrain_minimal import load_model_from_path

    ref = load_model_from_path(nano_ckpt.parent)
    own = nano.encoder.state_dict()
    theirs = ref.encoder.state_dict()
    assert set(own) == set(theirs)
    for k in ("blocks.2.attn.q.weight", "norm.bias", "blocks.0.attn.rope_mixed_freqs"):
        torch.testing.assert_close(own[k], theirs[k], rtol=0, atol=0)


def test_loads_strictly_and_records(nano, nano_ckpt):
    rec = nano.weights_record
    assert rec["weights"] == str(nano_ckpt.absolute()) and rec["source"] == "explicit"
    assert rec["sha256"] == hashlib.sha256(nano_ckpt.read_bytes()).hexdigest()
    cfg = nano_ckpt.parent / "config.json"
    assert rec["config"] == str(cfg.absolute())
    assert rec["config_sha256"] == hashlib.sha256(cfg.read_bytes()).hexdigest()
    assert rec["model_id"] == "OlmoEarth-v1_2-Nano"
    sd = torch.load(nano_ckpt, map_location="cpu", weights_only=True)
    own = nano.encoder.state_dict()
    for k in ("blocks.3.mlp.fc2.weight", "norm.weight", "composite_encodings.month_embed.weight"):
        torch.testing.assert_close(own[k], sd[f"encoder.{k}"], rtol=0, atol=0)
    rnd = OlmoEarth(device="cpu", weights="random", model_config=NANO)
    assert rnd.weights_record["weights"] == "random-init" and rnd.weights_record["sha256"] is None
    assert rnd.weights_record["config"] == "builtin:nano_v1_2"
    assert not torch.equal(rnd.encoder.state_dict()["norm.weight"], own["norm.weight"])


def _copy_ckpt(src: Path, dst: Path, edit=None) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "config.json").write_text((src.parent / "config.json").read_text())
    sd = torch.load(src, map_location="cpu", weights_only=True)
    if edit is not None:
        edit(sd)
    torch.save(sd, dst / "weights.pth")
    return dst / "weights.pth"


def test_strict_key_checks(nano_ckpt, tmp_path):
    def drop(sd):
        sd.pop("encoder.norm.weight")

    def extra(sd):
        sd["encoder.bogus"] = torch.zeros(2)

    def reshape(sd):
        sd["encoder.norm.bias"] = torch.zeros(7)

    for name, edit, words in (
        ("drop", drop, "1 missing"),
        ("extra", extra, "1 unexpected"),
        ("shape", reshape, "1 shape mismatches"),
    ):
        path = _copy_ckpt(nano_ckpt, tmp_path / name, edit)
        with pytest.raises(WeightsError, match=words):
            OlmoEarth(weights=str(path), model_config=NANO)

    def training_head(sd):  # the package's loader drops these; so does ours
        sd["supervision_head.proj.weight"] = torch.zeros(3, 3)

    path = _copy_ckpt(nano_ckpt, tmp_path / "head", training_head)
    OlmoEarth(weights=str(path), model_config=NANO)


def test_config_must_match_the_variant(nano_ckpt, tmp_path):
    with pytest.raises(WeightsError, match="128-D OlmoEarth, not variant 'base_v1_2'"):
        OlmoEarth(weights=str(nano_ckpt), model_config={"image_size": 32})
    bad = tmp_path / "bad"
    _copy_ckpt(nano_ckpt, bad)
    (bad / "config.json").write_text(json.dumps({"run_name": "x"}))
    with pytest.raises(WeightsError, match="no 'model' section"):
        OlmoEarth(weights=str(bad), model_config=NANO)


def test_weights_resolution(nano_ckpt, tmp_path, monkeypatch):
    from rs_embed_ray.testing.checkpoints import write_hf_cache_entry

    # explicit directory: weights.pth + config.json inside
    m = OlmoEarth(weights=str(nano_ckpt.parent), model_config=NANO)
    assert m.weights_record["source"] == "explicit"
    # RS_EMBED_RAY_WEIGHTS_DIR/olmoearth/{weights.pth, config.json}
    env = tmp_path / "wd" / "olmoearth"
    _copy_ckpt(nano_ckpt, env)
    monkeypatch.setenv("RS_EMBED_RAY_WEIGHTS_DIR", str(tmp_path / "wd"))
    m = OlmoEarth(model_config=NANO)
    assert m.weights_record["source"] == "env_dir"
    assert m.weights_record["config"] == str(env / "config.json")
    monkeypatch.delenv("RS_EMBED_RAY_WEIGHTS_DIR")
    # the HF hub cache of allenai/OlmoEarth-v1_2-Nano (both files of one snapshot)
    cache = tmp_path / "hf"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    for name in ("weights.pth", "config.json"):
        write_hf_cache_entry(cache, "allenai/OlmoEarth-v1_2-Nano", name, nano_ckpt.parent / name)
    m = OlmoEarth(model_config=NANO)
    assert m.weights_record["source"] == "hf_cache"
    assert m.weights_record["sha256"] == hashlib.sha256(nano_ckpt.read_bytes()).hexdigest()
    # nothing anywhere, hub offline: a fast, clear error naming every place tried
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    t0 = time.monotonic()
    with pytest.raises(WeightsError, match=r"(?s)weights\.pth.*hf_cache.*OlmoEarth-v1_2-Base"):
        OlmoEarth(model_config={"image_size": 32})
    assert time.monotonic() - t0 < 10
    # a weights file whose config.json is nowhere to be found
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "weights.pth").write_bytes(nano_ckpt.read_bytes())
    with pytest.raises(WeightsError, match=r"config\.json"):
        OlmoEarth(weights=str(lone / "weights.pth"), model_config=NANO)
    with pytest.raises(WeightsError, match="does not exist"):
        OlmoEarth(weights=str(tmp_path / "nope.pth"), model_config=NANO)


def test_variants_and_model_config():
    assert normalize_variant(None) == "base_v1_2"
    assert normalize_variant("OlmoEarth-v1_2-Base") == "base_v1_2"
    assert normalize_variant("base_12") == "base_v1_2"
    assert normalize_variant("nano") == "nano_v1"  # rs-embed: a bare size is v1
    assert normalize_variant("small") == "small_v1_2"
    with pytest.raises(ModelError, match="Unknown olmoearth variant"):
        normalize_variant("huge")
    with pytest.raises(ModelError, match=r"v1\.2 variants only"):
        published_v12_config("base_v1")
    for cfg, words in (
        ({"patch_size": 9}, "patch_size must be in 1..8"),
        ({"patch_size": 3, "image_size": 32}, "multiple of patch_size"),
        ({"shape_adjust": "stretch"}, "shape_adjust"),
    ):
        with pytest.raises(ModelError, match=words):
            OlmoEarth(weights="random", model_config={**NANO, **cfg})


def test_registry_catalog_and_fetch_semantics():
    from rs_embed_ray.models.catalog import CATALOG, IMPLEMENTATIONS
    from rs_embed_ray.models.registry import embedder_class
    from rs_embed_ray.plan import ModelRequest, build_groups

    assert embedder_class("olmoearth") is OlmoEarth and "olmoearth" in IMPLEMENTATIONS
    info = CATALOG["olmoearth"]
    assert info.status == "available" and info.frame_bins == "30d" and info.n_frames == 12
    assert info.sensor.bands == (
        "B2",
        "B3",
        "B4",
        "B8",
        "B5",
        "B6",
        "B7",
        "B8A",
        "B11",
        "B12",
        "B1",
        "B9",
    )
    assert (info.dim_pooled, info.dim_grid, info.grid_hw) == (768, 768, (64, 64))
    assert info.fetch_semantics == "bins:30d:max12"
    assert CATALOG["prithvi"].fetch_semantics == "multi:4"
    reqs = [
        ModelRequest(name=k, model_id=k, key=k, info=CATALOG[k], sensor=CATALOG[k].sensor,
                     weights=None, model_config=None)
        for k in ("olmoearth", "prithvi")
    ]  # fmt: skip
    _, groups = build_groups(reqs)
    by_member = {g.members[0]: g for g in groups}
    assert by_member["olmoearth"].frame_bins == "30d" and by_member["olmoearth"].n_frames == 12
    assert by_member["prithvi"].frame_bins is None


# ---------------------------------------------------------------------------- preprocessing


def _norm_stats() -> tuple[np.ndarray, np.ndarray]:
    """Per-band (min, max) of the package's normaliser: mean -/+ 2 std from computed.json."""
    path = files("olmoearth_pretrain_minimal.olmoearth_pretrain_v1.data.norm_configs")
    stats = json.loads((path / "computed.json").read_text())["sentinel2_l2a"]
    mean = np.array([stats[b]["mean"] for b in S2_BANDS_MODEL])
    std = np.array([stats[b]["std"] for b in S2_BANDS_MODEL])
    return mean - 2 * std, mean + 2 * std


def _bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of half-pixel-centre bilinear resampling (align_corners=False)."""
    m = np.zeros((n_out, n_in))
    for o in range(n_out):
        src = max((o + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = min(int(np.floor(src)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        f = src - i0
        m[o, i0] += 1 - f
        m[o, i1] += f
    return m


def test_preprocess_golden_band_order_and_normaliser(nano):
    lo, hi = _norm_stats()
    x = np.empty((1, 12, 32, 32), np.float32)
    for c in range(12):
        x[0, c] = 100.0 * (c + 1) + np.arange(32)[None, :]  # band c: its own values
    x[0, 5, 0, 0] = np.nan  # a missing pixel becomes 0 after normalising
    (t,), (win,) = nano.preprocess([x])
    got = t.cpu().numpy()[0]
    want = (x[0].astype(np.float64) - lo[:, None, None]) / (hi - lo)[:, None, None]
    want[5, 0, 0] = 0.0
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    assert win == (0.0, 1.0, 0.0, 1.0)


def test_preprocess_golden_pad_and_resize(nano):
    lo, hi = _norm_stats()
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 5000, (2, 12, 12, 16)).astype(np.float32)  # H=12, W=16
    (t,), (win,) = nano.preprocess([x])
    assert tuple(t.shape) == (2, 12, 32, 32)
    norm = (x.astype(np.float64) - lo[None, :, None, None]) / (hi - lo)[None, :, None, None]
    padded = np.pad(norm, ((0, 0), (0, 0), (2, 2), (0, 0)), mode="reflect")  # 16 x 16
    r = _bilinear_matrix(16, 32)
    want = np.einsum("oh,tchw,pw->tcop", r, padded, r)
    np.testing.assert_allclose(t.cpu().numpy(), want, rtol=0, atol=2e-5)
    assert win == pytest.approx((2 / 16, 14 / 16, 0.0, 1.0))
    crop = OlmoEarth(weights="random", model_config={**NANO, "shape_adjust": "crop"})
    (tc,), _ = crop.preprocess([x])
    r12 = _bilinear_matrix(12, 32)  # centre crop 12 x 16 -> columns 2..13, then 12 -> 32
    want_c = np.einsum("oh,tchw,pw->tcop", r12, norm[..., 2:14], r12)
    np.testing.assert_allclose(tc.cpu().numpy(), want_c, rtol=0, atol=2e-5)


def test_frame_starts_and_timestamps():
    from datetime import date

    starts, src = frame_starts(3, WINDOW, {})
    assert [d.isoformat() for d in starts] == ["2022-01-01", "2022-01-31", "2022-03-02"]
    assert src == "window_bins"
    meta = _frames_meta(["2021-05-03", "2021-06-02"])
    starts, src = frame_starts(2, WINDOW, meta)
    assert src == "fetch_meta_frames" and starts == [date(2021, 5, 3), date(2021, 6, 2)]
    year = TemporalSpec.range("2022-01-01", "2023-01-01")  # 13 x 30 d -> 12 equal bins
    starts, src = frame_starts(12, year, {})
    assert src == "window_bins" and starts[0] == date(2022, 1, 1)
    assert starts[-1] == date(2022, 12, 1) and starts[6] == date(2022, 7, 2)
    starts, src = frame_starts(1, WINDOW, {})
    assert src == "window_split" and starts == [date(2022, 1, 1)]
    assert timestamp(date(2022, 3, 2)) == [2, 2, 2022]  # (day, month0, year)


def test_nan_frames_are_dropped(nano):
    x = _series(3)
    x[1] = np.nan
    meta = _frames_meta(["2022-01-01", "2022-01-31", "2022-03-02"], empty=(1,))
    (e,) = _embed(nano, [x], metas=[meta])
    assert e.meta["n_frames_used"] == 2 and e.meta["n_empty_frames_dropped"] == 1
    assert e.meta["timestamps"] == [[1, 0, 2022], [2, 2, 2022]]
    assert e.meta["dropped_frame_dates"] == ["2022-01-31"]
    kept = _frames_meta(["2022-01-01", "2022-03-02"])
    (ref,) = _embed(nano, [x[[0, 2]]], metas=[kept])
    np.testing.assert_allclose(e.data, ref.data, rtol=0, atol=1e-6)
    # the dates matter: the same pixels a month later embed differently
    (later,) = _embed(nano, [x[[0, 2]]], metas=[_frames_meta(["2022-02-01", "2022-04-01"])])
    assert np.abs(later.data - ref.data).max() > 1e-4
    empty = np.full_like(x, np.nan)
    with pytest.raises(ModelError, match="all 3 frames are empty"):
        _embed(nano, [empty], metas=[meta])


def test_forward_matches_the_package_encoder(nano):
    """Our forward equals a direct call of the package encoder on the expected sample."""
    from olmoearth_pretrain_minimal.olmoearth_pretrain_v1.utils.datatypes import (
        MaskedOlmoEarthSample,
    )

    x = _series(2)
    (t,), _ = nano.preprocess([x])
    data = t.permute(2, 3, 0, 1)[None]  # (1, H, W, T, C)
    sample = MaskedOlmoEarthSample(
        timestamps=torch.tensor([[[1, 0, 2022], [31, 0, 2022]]]),
        sentinel2_l2a=data,
        sentinel2_l2a_mask=torch.zeros(1, 32, 32, 2, 1),
    )
    with torch.inference_mode():
        tok = nano.encoder(sample, patch_size=4, fast_pass=True)["tokens_and_masks"].sentinel2_l2a
    meta = _frames_meta(["2022-01-01", "2022-01-31"])
    (p,) = _embed(nano, [x], metas=[meta])
    (g,) = _embed(nano, [x], output=OutputSpec.grid(), metas=[meta])
    np.testing.assert_allclose(p.data, tok.mean(dim=(1, 2, 3, 4))[0].numpy(), atol=1e-5)
    grid = tok.mean(dim=(3, 4))[0].permute(2, 0, 1).numpy()
    np.testing.assert_allclose(g.data, grid, atol=1e-5)


def test_batched_equals_single_and_roi(nano):
    xs = [_series(3, seed=1), _series(2, seed=2), _series(1, h=24, w=32, seed=3)]
    xs[0][2] = np.nan
    metas = [
        _frames_meta(["2022-01-01", "2022-01-31", "2022-03-02"], empty=(2,)),
        {},
        {"roi_window_geo": [0.25, 0.75, 0.0, 1.0]},
    ]
    for out in (OutputSpec.pooled(), OutputSpec.pooled("max"), OutputSpec.grid()):
        batch = _embed(nano, xs, output=out, metas=metas)
        for i, x in enumerate(xs):
            (one,) = _embed(nano, [x], output=out, metas=[metas[i]])
            np.testing.assert_allclose(batch[i].data, one.data, rtol=0, atol=1e-5)
    grid = _embed(nano, xs, output=OutputSpec.grid(), metas=metas)
    assert grid[0].data.shape == (128, 8, 8) and grid[1].data.shape == (128, 8, 8)
    # 24 x 32 padded to 32 x 32 (rows 4..28); the ROI's middle half of those is rows 10..22
    # of 32, i.e. token rows 2.5..5.5 of 8, rounded outward: 2..6
    assert grid[2].meta["roi_cropped"] is True and grid[2].data.shape == (128, 4, 8)
    assert grid[2].meta["roi_window_in_model_input"] == [0.3125, 0.6875, 0.0, 1.0]
    pooled = _embed(nano, xs, metas=metas)
    np.testing.assert_allclose(pooled[2].data, grid[2].data.mean(axis=(1, 2)), atol=1e-5)
    assert pooled[2].meta["pooling"] == "roi_grid_mean"


def test_pooled_and_grid_shapes(nano):
    x = _series(2)
    (p,) = _embed(nano, [x])
    (g,) = _embed(nano, [x], output=OutputSpec.grid())
    (mx,) = _embed(nano, [x], output=OutputSpec.pooled("max"))
    assert p.data.shape == (128,) and g.data.shape == (128, 8, 8)
    assert g.meta["grid_hw"] == [8, 8] and p.meta["pooling"] == "unmasked_token_mean"
    np.testing.assert_allclose(p.data, g.data.mean(axis=(1, 2)), atol=1e-5)
    assert np.all(mx.data >= p.data - 1e-6) and np.isfinite(p.data).all()
    coarse = OlmoEarth(weights=str(nano.weights_record["weights"]),
                       model_config={**NANO, "patch_size": 8})  # fmt: skip
    (g8,) = _embed(coarse, [x], output=OutputSpec.grid())
    assert g8.data.shape == (128, 4, 4)
    assert nano.resolve_input_image_size() == 32


def test_tiles_through_embed_with_prep(nano):
    from rs_embed_ray.models.tiling import embed_with_prep
    from rs_embed_ray.specs import InputPrepSpec

    x = _series(3, h=64, w=64, seed=5)
    x[0] = np.nan
    meta = _frames_meta(["2022-01-01", "2022-01-31", "2022-03-02"], empty=(0,))
    (e,) = embed_with_prep(
        nano, [x], prep=InputPrepSpec.tile(), output=OutputSpec.grid(),
        spatials=[BBox(10.0, 45.0, 10.01, 45.01)], temporal=WINDOW, fetch_metas=[meta],
        batch_size=4,
    )  # fmt: skip
    assert e.meta["input_prep"]["tile_count"] == 4 and e.data.shape == (128, 16, 16)
    assert e.meta["n_frames_used"] == 2


def test_rejects_bad_inputs(nano):
    with pytest.raises(ModelError, match="C=12"):
        _embed(nano, [np.zeros((2, 6, 8, 8), np.float32)])
    with pytest.raises(ModelError, match="at most 12 frames"):
        _embed(nano, [np.zeros((13, 12, 8, 8), np.float32)])


# ---------------------------------------------------------------------------- Base (default)


def test_base_default_loads_and_runs(tmp_path):
    """The default Base v1.2: published layout, strict load, one small forward (CPU)."""
    from rs_embed_ray.testing.checkpoints import write_olmoearth_checkpoint

    path = write_olmoearth_checkpoint(tmp_path / "OlmoEarth-v1_2-Base", seed=2)
    sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    assert len(sd) == 595 and _encoder_inventory(sd) == RELEASE_INVENTORY["base_v1_2"]
    assert tuple(sd[f"{CHANNEL_EMB}.sentinel2_l2a"].shape) == (1, 192)  # as in the release
    cfg = json.loads((path.parent / "config.json").read_text())["model"]["encoder_config"]
    assert cfg["rope_temporal_coordinate_scale"] == 0.0333
    norm_w = sd["encoder.norm.weight"].clone()
    del sd
    m = OlmoEarth(weights=str(path), model_config={"image_size": 32}, precision="float32")
    assert m.variant == "base_v1_2" and m.weights_record["model_id"] == "OlmoEarth-v1_2-Base"
    torch.testing.assert_close(m.encoder.state_dict()["norm.weight"], norm_w, rtol=0, atol=0)
    x = _series(2)
    x[0] = np.nan
    (p,) = _embed(m, [x], metas=[_frames_meta(["2022-01-01", "2022-01-31"], empty=(0,))])
    assert p.data.shape == (768,) and np.isfinite(p.data).all()
    assert p.meta["weights"]["sha256"] == m.weights_record["sha256"]
    assert p.meta["timestamps"] == [[31, 0, 2022]]
