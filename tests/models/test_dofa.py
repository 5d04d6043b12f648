"""DOFA: checkpoint layout, strict loading, preprocessing, shapes, wavelength conditioning.

The checkpoint is random-valued with the published key names and shapes (see
rs_embed_ray.testing.checkpoints.write_dofa_checkpoint).
"""

from __future__ import annotations

import numpy as np
import pytest

from rs_embed_ray.errors import ModelError, WeightsError
from rs_embed_ray.specs import OutputSpec

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

BANDS = ("B4", "B3", "B2", "B5", "B6", "B7", "B8", "B11", "B12")


def _inputs(n, hw=(32, 32), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.uniform(0, 5000, size=(9, *hw)).astype(np.float32) for _ in range(n)]


def _embed(m, xs, output, metas=None):
    return m.embed_batch(
        xs,
        output=output,
        spatials=[None] * len(xs),
        temporal=None,
        fetch_metas=metas or [{}] * len(xs),
    )


def test_checkpoint_layout(dofa_ckpt):
    sd = torch.load(dofa_ckpt, map_location="cpu", weights_only=True)
    assert dofa_ckpt.name == "DOFA_ViT_base_e100.pth"
    assert "norm.weight" in sd and "fc_norm.weight" not in sd
    assert tuple(sd["patch_embed.weight_generator.fc_weight.weight"].shape) == (196608, 128)
    assert tuple(sd["pos_embed"].shape) == (1, 197, 768)
    assert tuple(sd["blocks.11.attn.qkv.weight"].shape) == (2304, 768)
    assert not any(k.startswith("blocks.12.") for k in sd)
    assert len(sd) == 170


def test_loads_and_records(dofa, dofa_ckpt):
    assert dofa.weights_record["weights"] == str(dofa_ckpt.absolute())
    assert dofa.weights_record["source"] == "explicit"
    torch.testing.assert_close(
        dofa.model.fc_norm.weight.detach(),
        torch.load(dofa_ckpt, weights_only=True)["norm.weight"],
    )


def test_strict_keys(dofa_ckpt, tmp_path):
    from rs_embed_ray.models.dofa import DOFA

    sd = torch.load(dofa_ckpt, map_location="cpu", weights_only=True)
    sd["decoder_embed.weight"] = torch.zeros(2, 2)  # MAE extras are ignored by name
    sd["mask_token"] = torch.zeros(1, 1, 768)
    del sd["blocks.3.mlp.fc1.bias"]
    p = tmp_path / "bad.pth"
    torch.save({"model": sd}, p)
    with pytest.raises(WeightsError, match=r"1 missing .*blocks\.3\.mlp\.fc1\.bias"):
        DOFA(weights=str(p), device="cpu")


def test_preprocess_golden(dofa):
    from rs_embed_ray.models.dofa import S2_STATS

    x = np.zeros((9, 224, 224), np.float32)
    for c in range(9):
        x[c] = 1000.0 * (c + 1)
    x[8] = 12000.0  # clipped to 10000
    t, wins = dofa.preprocess([x])
    got = t[0].numpy()[:, 100, 100]
    want = [
        (min(1000.0 * (c + 1), 10000.0) / 10000 * 255 - S2_STATS[b][0]) / S2_STATS[b][1]
        for c, b in enumerate(BANDS)
    ]
    want[8] = (255.0 - S2_STATS["B12"][0]) / S2_STATS["B12"][1]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert wins == [(0.0, 1.0, 0.0, 1.0)]


def test_pad_to_square_window(dofa):
    x = np.ones((9, 32, 64), np.float32) * 100
    t, wins = dofa.preprocess([x])
    assert tuple(t.shape) == (1, 9, 224, 224)
    assert wins[0] == (16 / 64, 48 / 64, 0.0, 1.0)


def test_shapes_pooled_is_fc_norm_of_mean(dofa):
    xs = _inputs(2)
    grid = _embed(dofa, xs, OutputSpec.grid())
    pooled = _embed(dofa, xs[:1], OutputSpec.pooled())
    assert [g.data.shape for g in grid] == [(768, 14, 14)] * 2
    assert pooled[0].data.shape == (768,) and pooled[0].data.dtype == np.float32
    ln = torch.nn.functional.layer_norm(
        torch.from_numpy(grid[0].data.mean(axis=(1, 2))),
        (768,),
        dofa.model.fc_norm.weight.detach(),
        dofa.model.fc_norm.bias.detach(),
        eps=1e-6,
    )
    np.testing.assert_allclose(pooled[0].data, ln.numpy(), atol=1e-4)
    assert pooled[0].meta["pooling"] == "fc_norm_mean"
    assert grid[0].meta["wavelengths_um"][:3] == [0.665, 0.56, 0.49]


def test_batched_equals_single_and_roi_crop(dofa):
    xs = _inputs(1, seed=1) + _inputs(1, hw=(20, 40), seed=2)
    metas = [{}, {}, {"roi_window_geo": (0.0, 0.5, 0.5, 1.0)}]
    batched = _embed(dofa, [*xs, xs[0]], OutputSpec.grid(), metas)
    for x, b in zip(xs, batched, strict=False):
        (s,) = _embed(dofa, [x], OutputSpec.grid())
        np.testing.assert_allclose(b.data, s.data, atol=1e-4, rtol=0)
    # the 20x40 input is padded to 40x40: rows [0.25, 0.75) -> tokens 3..11 (outward)
    assert batched[1].data.shape == (768, 8, 14) and batched[1].meta["roi_cropped"] is True
    np.testing.assert_allclose(batched[2].data, batched[0].data[:, :7, 7:], atol=1e-5)


def test_dynamic_patch_embed_against_numpy(dofa):
    """Wavelength code, residual MLP, kernel layout/scale and the stride-16 pad-1 conv,
    recomputed with numpy from the loaded weights (torch's own TransformerEncoder is
    trusted for the 1-layer weight generator)."""
    pe = dofa.model.patch_embed
    sd = {k: v.detach().double().numpy() for k, v in pe.state_dict().items()}
    waves = np.array([0.665, 0.56, 0.49, 0.705, 0.74, 0.783, 0.842, 1.61, 2.19])
    omega = 1.0 / 10000.0 ** (np.arange(64) / 64.0)
    ang = (waves * 1000.0)[:, None] * omega[None, :]
    codes = np.concatenate([np.sin(ang), np.cos(ang)], axis=1)
    relu = lambda v: np.maximum(v, 0.0)  # noqa: E731
    h = relu(codes @ sd["fclayer.w1.weight"].T + sd["fclayer.w1.bias"])
    codes = codes + relu(h @ sd["fclayer.w2.weight"].T + sd["fclayer.w2.bias"])
    wg = pe.weight_generator
    seq = torch.cat(
        [wg.weight_tokens.detach(), torch.from_numpy(codes).float(), wg.bias_token.detach()]
    )
    with torch.no_grad():
        enc = wg.transformer_encoder(seq.unsqueeze(1)).squeeze(1).double().numpy()
    w = (enc[128:-1] + codes) @ sd["weight_generator.fc_weight.weight"].T
    w = w + sd["weight_generator.fc_weight.bias"]
    # the official layout: (C, k, k, D) permuted to (D, C, k, k); a raw reshape to
    # (D, C, k, k) was the bug of code version 1 (this test then encoded it)
    kernel = w.reshape(9, 16, 16, 768).transpose(3, 0, 1, 2) * 0.01
    bias = enc[-1] @ sd["weight_generator.fc_bias.weight"].T + sd["weight_generator.fc_bias.bias"]
    x = np.random.default_rng(0).normal(size=(1, 9, 224, 224))
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    patches = np.stack(
        [xp[0, :, 16 * i : 16 * i + 16, 16 * j : 16 * j + 16] for i in range(14) for j in range(14)]
    )
    want = patches.reshape(196, -1) @ kernel.reshape(768, -1).T + bias * 0.01
    with torch.no_grad():
        got = pe(torch.from_numpy(x).float(), torch.tensor(waves).float())[0].double().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)


def test_rejects_scaled_or_wrong_input(dofa):
    with pytest.raises(ModelError, match="already scaled"):
        _embed(dofa, [np.full((9, 8, 8), 0.3, np.float32)], OutputSpec.pooled())
    with pytest.raises(ModelError, match="9 bands"):
        _embed(dofa, [np.zeros((3, 8, 8), np.float32)], OutputSpec.pooled())
    with pytest.raises(ModelError, match="empty input"):
        _embed(dofa, [np.zeros((9, 0, 8), np.float32)], OutputSpec.pooled())
    (z,) = _embed(dofa, [np.zeros((9, 8, 8), np.float32)], OutputSpec.pooled())  # nodata ok
    assert np.isfinite(z.data).all()


def test_scaled_image_is_refused_inside_a_raw_batch(dofa):
    """The check runs batched on the device: one scaled image among raw ones is still found,
    and NaN/inf count as nodata (zero) before the check, as in the reference."""
    raw = np.random.default_rng(0).uniform(0, 3000, (9, 8, 8)).astype(np.float32)
    scaled = np.full((9, 8, 8), 1.5, np.float32)
    scaled[0, 0, 0] = np.nan  # zeroed first: the image is still in [0, 2]
    with pytest.raises(ModelError, match=r"already scaled \(values in \[0, 1\.500\]\)"):
        _embed(dofa, [raw, scaled, raw], OutputSpec.pooled())
    bad = raw.copy()
    bad[1, 2, 3], bad[4, 5, 6] = np.inf, np.nan
    got = _embed(dofa, [bad, raw], OutputSpec.pooled())
    assert all(np.isfinite(e.data).all() for e in got)


def test_built_on_meta_and_loaded_equals_random_init_then_load(dofa_ckpt):
    """build_loaded skips the random init; every tensor must still come from the file."""
    from rs_embed_ray.models.dofa import build_dofa, prepare_state_dict
    from rs_embed_ray.models.runtime import build_loaded, build_seeded, load_prepared

    fast = build_loaded(build_dofa, "base", path=dofa_ckpt, prepare=prepare_state_dict)
    slow = load_prepared(build_seeded(build_dofa, "base"), dofa_ckpt, prepare_state_dict)
    a, b = fast.state_dict(), slow.state_dict()
    assert list(a) == list(b)
    for k in a:
        assert a[k].device.type == "cpu" and a[k].dtype == b[k].dtype, k
        assert torch.equal(a[k], b[k]), k


def test_build_loaded_keeps_init_of_non_persistent_buffers(tmp_path):
    """A buffer no checkpoint holds would be left uninitialised on the fast path: such a
    module is built with its random init and then loaded."""
    from torch import nn

    from rs_embed_ray.models.runtime import build_loaded, build_seeded

    class WithTable(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 3)
            self.register_buffer("table", torch.arange(5.0), persistent=False)

    path = tmp_path / "w.pt"
    torch.save(WithTable().state_dict(), path)
    m = build_loaded(WithTable, path=path, prepare=lambda model, sd, path: sd)
    assert torch.equal(m.table, torch.arange(5.0))
    assert torch.equal(m.lin.weight, torch.load(path)["lin.weight"])
    no_path = build_loaded(WithTable, path=None, prepare=lambda model, sd, path: sd)
    assert torch.equal(no_path.lin.weight, build_seeded(WithTable).lin.weight)
