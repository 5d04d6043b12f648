"""SatVision-TOA: published file format and strict loading, the MODIS proxy assembly and the
14-channel normalisation on fixed inputs (numbers worked out here from the published
formulas), batching, outputs and ROI crops, config and input errors, the registry.

The checkpoint is random-valued in the published format (rs_embed_ray.testing.
checkpoints_satvision) for the TEST-ONLY reduced variant ``test_tiny``: the giant has 2.6e9
parameters (10 GB float32), never built in tests except on the meta device. The network
itself is checked against the official code in tests/oracle/test_oracle_satvision.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rs_embed_ray.errors import ModelError, WeightsError
from rs_embed_ray.specs import OutputSpec

torch = pytest.importorskip("torch")

CFG = {"variant": "test_tiny"}


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """One intra-op thread: on a loaded 2-CPU machine spinning threads are much slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ckpt(module_scratch) -> Path:
    from rs_embed_ray.testing.checkpoints_satvision import write_satvision_checkpoint

    return write_satvision_checkpoint(module_scratch("satvision"), seed=1, mim=True)


@pytest.fixture(scope="module")
def model(ckpt: Path):
    from rs_embed_ray.models.satvision import SatVision

    return SatVision(device="cpu", weights=str(ckpt), model_config=CFG, precision="float32")


def _embed(m, xs, output, metas=None):
    return m.embed_batch(
        xs,
        output=output,
        spatials=[None] * len(xs),
        temporal=None,
        fetch_metas=metas or [{}] * len(xs),
    )


def _proxy(seed: int, side: int = 20) -> np.ndarray:
    rs = np.random.RandomState(seed)
    ref = rs.randint(0, 9000, size=(6, side, side))
    lst = rs.randint(13000, 16000, size=(1, side, side))
    return np.concatenate([ref, lst]).astype(np.float32)


# ---- file format and strict loading ---------------------------------------------------------


def test_mim_layout_loads_and_the_decoder_is_set_aside(ckpt: Path, model) -> None:
    """``{"module": {"encoder.*", "decoder.*"}}`` loads; the encoder holds the file's values."""
    sd = torch.load(ckpt, weights_only=True)["module"]
    assert "decoder.0.weight" in sd
    own = model.model.state_dict()
    for k in ("patch_embed.proj.weight", "layers.2.blocks.5.norm3.weight", "mask_token"):
        assert torch.equal(own[k], sd[f"encoder.{k}"])
    assert model.weights_record["sha256"]


def test_flat_and_timm_merge_layouts_load(tmp_path: Path, ckpt: Path) -> None:
    """The encoder's own keys (rs-embed / make_ckpt.py layout) and merges numbered at the start
    of the next stage (``layers.{1,2,3}.downsample``) both load to the same network."""
    from rs_embed_ray.models.runtime import load_prepared
    from rs_embed_ray.models.satvision import build_satvision, prepare_state_dict

    sd = torch.load(ckpt, weights_only=True)["module"]
    enc = {k[len("encoder.") :]: v for k, v in sd.items() if k.startswith("encoder.")}
    timm = {}
    for k, v in enc.items():
        if ".downsample." in k:
            i = int(k.split(".")[1])
            k = k.replace(f"layers.{i}.", f"layers.{i + 1}.", 1)
        timm[k] = v
    x = torch.rand(1, 14, 128, 128)
    outs = []
    for i, layout in enumerate((enc, timm)):
        path = tmp_path / f"{i}.pt"
        torch.save({"module": layout}, path)
        net = load_prepared(build_satvision("test_tiny"), path, prepare_state_dict).eval()
        with torch.inference_mode():
            outs.append(net(x)[0])
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("change", ["missing", "shape", "stray"])
def test_a_mismatched_file_is_refused(tmp_path: Path, ckpt: Path, change: str) -> None:
    from rs_embed_ray.models.satvision import SatVision

    sd = dict(torch.load(ckpt, weights_only=True)["module"])
    if change == "missing":
        sd.pop("encoder.layers.2.blocks.5.norm3.weight")  # the periodic extra norm
    elif change == "shape":
        sd["encoder.patch_embed.proj.weight"] = torch.zeros(16, 13, 4, 4)  # 13 channels
    else:
        sd["encoder.head.weight"] = torch.zeros(3, 3)
    path = tmp_path / "mp_rank_00_model_states.pt"
    torch.save({"module": sd}, path)
    with pytest.raises(WeightsError, match="does not match the architecture"):
        SatVision(weights=str(path), model_config=CFG)


def test_the_giant_is_the_published_size_on_the_meta_device() -> None:
    from rs_embed_ray.models.satvision import build_satvision

    with torch.device("meta"):
        net = build_satvision("giant")
    sd = net.state_dict()
    assert sd["patch_embed.proj.weight"].shape == (512, 14, 4, 4)
    assert sd["norm.weight"].shape == (4096,)
    assert len([k for k in sd if k.endswith("norm3.weight")]) == 7  # blocks 6..42 of stage 2
    assert sd["layers.3.blocks.0.attn.relative_position_index"].shape == (16, 16)  # window 4
    assert "layers.3.blocks.1.attn_mask" not in sd and "layers.0.blocks.1.attn_mask" in sd


def test_random_weights_only_when_asked() -> None:
    from rs_embed_ray.models.satvision import SatVision

    m = SatVision(weights="random", model_config=CFG)
    assert m.weights_record["weights"] == "random-init"


# ---- preprocessing on fixed inputs ----------------------------------------------------------


def test_proxy_assembly_by_hand() -> None:
    from rs_embed_ray.models.satvision import EMISSIVE_MAXS, EMISSIVE_MINS, assemble_proxy

    x = np.zeros((7, 1, 3), np.float32)
    x[:6] = np.array([[-50.0, 5000.0, 12000.0]])  # SR DN: below 0, half, above 1
    x[6] = np.array([[14500.0, 15000.0, 0.0]])  # LST DN (x 0.02 -> 290 K, 300 K), fill 0
    got = assemble_proxy(x)
    assert got.shape == (14, 1, 3)
    for slot in (0, 1, 2, 3, 4, 6):
        np.testing.assert_allclose(got[slot, 0], [0.0, 0.5, 1.0])
    for j, slot in enumerate((5, 7, 8, 9, 10, 11, 12, 13)):
        lo, hi = EMISSIVE_MINS[j], EMISSIVE_MAXS[j]
        want = np.clip((np.array([290.0, 300.0, 0.0]) - lo) / (hi - lo), 0, 1)
        np.testing.assert_allclose(got[slot, 0], want, atol=1e-6)
    # slot 26 (index 3) takes band 4; band 6 fills slot 4 and band 7 slot 6
    y = np.zeros((7, 1, 1), np.float32)
    y[:6, 0, 0] = [1000, 2000, 3000, 4000, 6000, 7000]
    y[6] = 300.0  # already kelvin (nothing above 1000): not scaled
    g = assemble_proxy(y)[:, 0, 0]
    np.testing.assert_allclose(g[[0, 1, 2, 3, 4, 6]], [0.1, 0.2, 0.3, 0.4, 0.6, 0.7], atol=1e-6)
    np.testing.assert_allclose(
        g[5], (300 - EMISSIVE_MINS[0]) / (EMISSIVE_MAXS[0] - EMISSIVE_MINS[0]), rtol=1e-6
    )


def test_fourteen_channel_norm_modes_by_hand() -> None:
    from rs_embed_ray.models.satvision import EMISSIVE_MAXS, EMISSIVE_MINS, normalize

    unit = np.full((14, 2, 2), 0.4, np.float32)
    unit[0, 0, 0] = 1.3  # within 1.5: auto keeps it unit, clipped
    got, mode = normalize(unit, "auto")
    assert mode == "unit" and got[0, 0, 0] == 1.0 and got[1, 0, 0] == np.float32(0.4)
    raw = np.full((14, 2, 2), 50.0, np.float32)  # percent reflectance
    raw[5] = 250.0  # kelvin in emissive slot 20
    got, mode = normalize(raw, "auto")
    assert mode == "raw"
    assert got[0, 0, 0] == np.float32(0.5)
    lo, hi = EMISSIVE_MINS[0], EMISSIVE_MAXS[0]
    np.testing.assert_allclose(got[5, 0, 0], (250 - lo) / (hi - lo), rtol=1e-6)
    assert got[7, 0, 0] == 0.0  # 50 K is below slot 27's minimum
    got, mode = normalize(unit * 2, "unit")  # forced unit: clipped, nothing scaled
    assert mode == "unit" and got.max() == 1.0


def test_resize_to_128_is_bilinear_without_corner_alignment() -> None:
    from rs_embed_ray.models.satvision import prepare

    x = np.zeros((7, 2, 2), np.float32)
    x[0] = [[0.0, 10000.0], [0.0, 10000.0]]
    out, meta = prepare(x)
    assert out.shape == (14, 128, 128) and meta["input_kind"] == "modis_proxy_7"
    # align_corners=False: the outer quarter of each 64 px half keeps the edge value
    assert out[0, 0, 0] == 0.0 and out[0, 0, 127] == 1.0 and out[0, 0, 31] == 0.0
    np.testing.assert_allclose(out[0, 0, 63:65], [0.4921875, 0.5078125])


def test_bad_inputs_and_config_are_refused() -> None:
    from rs_embed_ray.models.satvision import parse_config, prepare

    with pytest.raises(ModelError, match=r"\(7, H, W\) MODIS proxy"):
        prepare(np.zeros((6, 8, 8), np.float32))
    with pytest.raises(ModelError, match="norm must be one of"):
        parse_config({"norm": "zscore"})
    with pytest.raises(ModelError, match="variant must be one of"):
        parse_config({"variant": "huge"})


# ---- outputs, batching, ROI -----------------------------------------------------------------


def test_pooled_and_grid_shapes_and_batched_equals_single(model) -> None:
    xs = [_proxy(1), _proxy(2, side=24)]
    pooled = _embed(model, xs, OutputSpec.pooled())
    grids = _embed(model, xs, OutputSpec.grid())
    assert [e.data.shape for e in pooled] == [(128,), (128,)]
    assert [e.data.shape for e in grids] == [(128, 4, 4), (128, 4, 4)]
    assert grids[0].meta["grid_type"] == "last_stage_feature_map"
    assert pooled[0].meta["pooling"] == "model_pooled"
    assert not np.allclose(pooled[0].data, pooled[1].data)
    for i, x in enumerate(xs):
        (one,) = _embed(model, [x], OutputSpec.pooled())
        np.testing.assert_allclose(one.data, pooled[i].data, rtol=0, atol=1e-5)


def test_pooled_is_the_normed_mean_and_grid_the_unnormed_last_stage(model) -> None:
    """pooled = final LayerNorm then the token mean (forward_features); grid = before it."""
    (g,) = _embed(model, [_proxy(3)], OutputSpec.grid())
    (p,) = _embed(model, [_proxy(3)], OutputSpec.pooled())
    tok = torch.from_numpy(g.data.reshape(128, 16).T.copy())
    want = model.model.norm(tok).mean(0).detach().numpy()
    np.testing.assert_allclose(p.data, want, rtol=0, atol=1e-5)


def test_roi_window_crops_the_grid_not_the_pooled_vector(model) -> None:
    x = _proxy(4)
    meta = {"roi_window_geo": [0.0, 1.0, 0.25, 0.75]}
    (full,) = _embed(model, [x], OutputSpec.grid())
    (crop,) = _embed(model, [x], OutputSpec.grid(), [meta])
    assert crop.data.shape == (128, 4, 2) and crop.meta["roi_cropped"] is True
    np.testing.assert_array_equal(crop.data, full.data[:, :, 1:3])
    (p0,) = _embed(model, [x], OutputSpec.pooled())
    (p1,) = _embed(model, [x], OutputSpec.pooled(), [meta])
    np.testing.assert_array_equal(p0.data, p1.data)


def test_registry_lists_satvision_available() -> None:
    from rs_embed_ray.models.registry import get_info, implementation_target

    info = get_info("satvision_toa")
    assert info.model_id == "satvision" and info.status == "available"
    assert info.sensor.bands[-1] == "LST_1KM" and info.sensor.scale_m == 1000
    assert implementation_target("satvision").endswith("satvision:SatVision")


def test_companion_collection_of_the_modis_proxy() -> None:
    from rs_embed_ray.sensors import MODIS_LST, MODIS_SR, companion_collection

    assert companion_collection(MODIS_SR, "LST_1KM") == MODIS_LST
    assert companion_collection(MODIS_SR, "sur_refl_b01") is None
    assert companion_collection("COPERNICUS/S2_SR_HARMONIZED", "LST_1KM") is None
