"""AgriFM against the official model (no package installs: rs-embed 0.3.1's vendored copy of
flyakon/AgriFM's ``video_swin_transformer.py``), through a golden file.

``scripts/agrifm_golden.py`` (run in the rs-embed venv) wrote ``agrifm_values(seed=0)`` as a
published-layout ``AgriFM.pth``, loaded it through the official ``init_cfg`` path (checking
every tensor came from the file), ran the official forward on seeded inputs and rs-embed's
adapter on a raw DN series, and saved the outputs in ``tests/oracle/data/agrifm_golden.npz``.
Here our writer produces the same file, our loader reads it strictly, and we compare (max abs
<= 1e-4):

* the key layout of the official state dict equals our model's (``S2_patch_emd`` renamed);
* encoder cases: B=2 / T=8 / 32 px; B=1 / T=5 / 46 px (padding of T, H, W, odd merges,
  partial windows); B=1 / T=16 / 16 px;
* rs-embed's adapter end to end with ``recipe="rs_embed"`` (NaN -> 0, clip, AgriFM z-score,
  bilinear resize to 48 px): pooled, grid, and a single composite repeated to 8 frames.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.oracle

GOLDEN = Path(__file__).parent / "data" / "agrifm_golden.npz"
TOL = 1e-4
CASES = {
    "a": dict(seed=21, b=2, t=8, side=32),
    "b": dict(seed=22, b=1, t=5, side=46),
    "c": dict(seed=23, b=1, t=16, side=16),
}


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """One intra-op thread: the machine's other core belongs to the other test runs."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(GOLDEN) as d:
        return {k: d[k] for k in d.files}


@pytest.fixture(scope="module")
def ckpt(module_scratch) -> Path:
    from rs_embed_ray.testing.checkpoints_agrifm import write_agrifm_checkpoint

    return write_agrifm_checkpoint(module_scratch("agrifm") / "AgriFM.pth", seed=0)


@pytest.fixture(scope="module")
def embedder(ckpt: Path):
    from rs_embed_ray.models.agrifm import AgriFM

    return AgriFM(device="cpu", weights=str(ckpt), precision="float32")


def _case_input(seed: int, b: int, t: int, side: int) -> np.ndarray:
    return np.random.RandomState(seed).standard_normal((b, t, 10, side, side)).astype(np.float32)


def _adapter_raw() -> np.ndarray:
    rs = np.random.RandomState(5)
    x = rs.randint(0, 12000, size=(8, 10, 32, 32)).astype(np.float32)
    x[0, 2, 3, 4] = np.nan
    x[5, 7, 10:12, 20] = np.nan
    return x


def test_published_layout(golden: dict, embedder) -> None:
    ours = {k: ",".join(map(str, v.shape)) for k, v in embedder.model.state_dict().items()}
    theirs = dict(zip(golden["keys"].tolist(), golden["shapes"].tolist(), strict=True))
    assert ours == theirs


@pytest.mark.parametrize("case", sorted(CASES))
def test_encoder_matches_official(case: str, golden: dict, embedder) -> None:
    import torch

    c = CASES[case]
    x = torch.from_numpy(_case_input(c["seed"], c["b"], c["t"], c["side"]))
    with torch.inference_mode():
        feats = embedder.model(x).numpy()
    want = golden[f"enc_{case}"]
    assert feats.shape == want.shape
    np.testing.assert_allclose(feats, want, atol=TOL, rtol=0)


def test_rs_embed_adapter_end_to_end(golden: dict, embedder) -> None:
    from rs_embed_ray.models.agrifm import parse_config
    from rs_embed_ray.specs import OutputSpec, PointBuffer, TemporalSpec

    raw = _adapter_raw()
    assert np.nansum(raw.astype(np.float64)) == float(golden["adapter_raw_nansum"])
    emb = copy.copy(embedder)  # the same loaded network with rs-embed's recipe
    emb.opts = parse_config({"recipe": "rs_embed", "image_size": int(golden["adapter_img"])})
    kw = dict(
        spatials=[PointBuffer(lon=10.0, lat=45.0, buffer_m=160)],
        temporal=TemporalSpec.range("2022-03-01", "2022-11-01"),
        fetch_metas=[{}],
    )
    pooled = emb.embed_batch([raw], output=OutputSpec.pooled(), **kw)[0]
    np.testing.assert_allclose(pooled.data, golden["adapter_vec"], atol=TOL, rtol=0)
    grid = emb.embed_batch([raw], output=OutputSpec.grid(), **kw)[0]
    assert grid.data.shape == golden["adapter_grid"].shape == (1024, 3, 3)
    np.testing.assert_allclose(grid.data, golden["adapter_grid"], atol=TOL, rtol=0)
    single = emb.embed_batch([raw[0]], output=OutputSpec.pooled(), **kw)[0]
    assert single.meta["input_repeated_to_t"] is True and single.meta["n_frames"] == 8
    np.testing.assert_allclose(single.data, golden["adapter_single_vec"], atol=TOL, rtol=0)
