"""Oracle: Prithvi-EO-2.0-100M-TL against terratorch's own ``PrithviMAE`` (terratorch 1.2.11,
``terratorch.models.backbones.prithvi_mae``), the code IBM ships with the weights.

The checkpoint is terratorch's ``PrithviMAE`` built from its registered
``prithvi_eo_v2_100_tl`` config (4 frames, time + location coordinates with learned
scales), under a fixed seed, perturbed, and saved as the published
``Prithvi_EO_V2_100M_TL.pt`` (a bare ``torch.save`` of the whole MAE state dict, encoder and
decoder) with the repo's ``config.json``; ours loads it strictly through the normal weights
path. Both embed the same preprocessed frames with the same coordinates: terratorch's
``encoder.forward_features`` (last block after ``norm``), ours the whole ``embed_batch``
path (frame dates from the fetch meta, place from the PointBuffer). For 2 frames terratorch
is rebuilt with ``num_frames=2`` and loaded with its regenerated position table, as its own
checkpoint filter and the published inference script do.
"""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pytest

from tests.oracle._helpers_b import assert_close, embed_both, perturb_, seeded_build

pytestmark = pytest.mark.oracle

torch = pytest.importorskip("torch")
pmae = pytest.importorskip("terratorch.models.backbones.prithvi_mae")
pvit = pytest.importorskip("terratorch.models.backbones.prithvi_vit")

VARIANT = "prithvi_eo_v2_100_tl"
LON, LAT = 8.25, 46.75
FRAMES = [  # 4 equal bins of the window: (start, end), midpoints below
    ("2022-03-01", "2022-04-01"),
    ("2022-04-01", "2022-05-01"),
    ("2022-05-01", "2022-06-01"),
    ("2022-06-01", "2022-07-01"),
]


def terratorch_cfg(num_frames: int = 4) -> dict:
    """terratorch's registered config of the variant, as ``PrithviMAE`` keyword arguments."""
    cfg = dict(pvit.prithvi_cfgs[VARIANT])
    cfg["num_frames"] = num_frames
    for k in ("mean", "std", "bands"):
        cfg.pop(k)
    return cfg


@pytest.fixture(scope="module")
def pair(module_scratch):
    """(terratorch PrithviMAE, its state dict, our Prithvi) sharing one published-format file."""
    from rs_embed_ray.models.prithvi import Prithvi

    theirs = seeded_build(lambda: pmae.PrithviMAE(**terratorch_cfg()), seed=41)
    # the fixed sin-cos tables stay as built: the published code regenerates them on load
    perturb_(theirs, seed=42, skip=("pos_embed",))
    theirs.eval()
    sd = {k: v.detach().clone() for k, v in theirs.state_dict().items()}
    folder = module_scratch("prithvi_terratorch")
    path = folder / "Prithvi_EO_V2_100M_TL.pt"
    torch.save(sd, path)
    pre = dict(pvit.prithvi_cfgs[VARIANT])
    pre["bands"] = [str(getattr(b, "value", b)) for b in pre["bands"]]
    (folder / "config.json").write_text(
        json.dumps({"architecture": VARIANT, "num_features": 768, "pretrained_cfg": pre})
    )
    ours = Prithvi(device="cpu", weights=str(path), precision="float32")
    return theirs, sd, ours


def coords(frames: list[tuple[str, str]]) -> tuple[object, object]:
    """(1, T, 2) (year, day of year) of each bin's midpoint, (1, 2) (lat, lon)."""
    tc = []
    for s, e in frames:
        d0, d1 = date.fromisoformat(s), date.fromisoformat(e)
        mid = date.fromordinal(d0.toordinal() + (d1 - d0).days // 2)
        tc.append([float(mid.year), float(mid.timetuple().tm_yday)])
    return torch.tensor([tc], dtype=torch.float32), torch.tensor([[LAT, LON]])


def run_both(theirs, ours, n_frames: int):
    from rs_embed_ray.specs import PointBuffer, TemporalSpec

    frames = FRAMES[:n_frames]
    rng = np.random.default_rng(10 + n_frames)
    raw = rng.uniform(0, 5000, size=(n_frames, 6, 40, 40)).astype(np.float32)
    metas = [{"frames": [{"start": s, "end": e} for s, e in frames]}]
    spatial = PointBuffer(lon=LON, lat=LAT, buffer_m=600.0)
    temporal = TemporalSpec.range(frames[0][0], frames[-1][1])
    pooled, grid = embed_both(ours, [raw], spatials=[spatial], temporal=temporal, metas=metas)
    xs, _ = ours.preprocess([raw])
    x = xs[0].permute(1, 0, 2, 3).unsqueeze(0)  # (1, C, T, H, W), terratorch's layout
    tc, lc = coords(frames)
    with torch.no_grad():
        out = theirs.encoder.forward_features(x, tc, lc)[-1]
    tok = out[0, 1:].reshape(n_frames, 14, 14, 768).numpy()
    want_grid = tok.mean(axis=0).transpose(2, 0, 1)
    want_pooled = tok.reshape(-1, 768).mean(axis=0)
    return pooled[0], grid[0], want_pooled, want_grid


def test_four_frames_match_terratorch(pair):
    theirs, _, ours = pair
    pooled, grid, want_pooled, want_grid = run_both(theirs, ours, 4)
    assert_close(grid, want_grid, "prithvi T=4 grid")
    assert_close(pooled, want_pooled, "prithvi T=4 pooled")
    # the comparison sees the side inputs: one day later in the oracle is a clear difference
    xs, _ = ours.preprocess([np.zeros((4, 6, 40, 40), np.float32)])
    tc, lc = coords(FRAMES)
    with torch.no_grad():
        a = theirs.encoder.forward_features(xs[0].permute(1, 0, 2, 3)[None], tc, lc)[-1]
        b = theirs.encoder.forward_features(xs[0].permute(1, 0, 2, 3)[None], tc + 1, lc)[-1]
    assert float((a - b).abs().max()) > 1e-3


def test_two_frames_match_terratorch_rebuilt(pair):
    _, sd, ours = pair
    two = pmae.PrithviMAE(**terratorch_cfg(num_frames=2)).eval()
    own = two.state_dict()
    sd2 = {k: (own[k] if "pos_embed" in k else v) for k, v in sd.items()}
    two.load_state_dict(sd2, strict=True)
    pooled, grid, want_pooled, want_grid = run_both(two, ours, 2)
    assert_close(grid, want_grid, "prithvi T=2 grid")
    assert_close(pooled, want_pooled, "prithvi T=2 pooled")


def test_preprocessing_matches_terratorch_stats(pair):
    """Our default preprocessing of a 224 px frame (no pad or resize then) is the published
    z-score with terratorch's registered Prithvi-EO-2.0 mean/std, read from the file's
    config.json; rs-embed's DN/10000 (``normalization="rs_embed"``) is not."""
    _, _, ours = pair
    mean = np.asarray(pvit.PRITHVI_V2_MEAN, np.float32)[:, None, None]
    std = np.asarray(pvit.PRITHVI_V2_STD, np.float32)[:, None, None]
    rng = np.random.default_rng(15)
    raw = rng.uniform(0, 9000, size=(1, 6, 224, 224)).astype(np.float32)
    xs, _ = ours.preprocess([raw])
    assert_close(xs[0].numpy(), (raw - mean) / std, "prithvi preprocessing", atol=1e-5)
    assert np.abs(xs[0].numpy() - raw / 10000.0).max() > 0.1
