"""AnySat against the official model (no package installs: rs-embed 0.3.1's vendored copy of
gastruc/AnySat's ``hubconf.py`` and encoder sources), through a golden file.

``scripts/anysat_golden.py`` (run in the rs-embed venv) filled the official ``AnyModule``
(base, every modality) with ``anysat_values(seed=0)``, ran ``AnySat.forward`` on seeded
inputs and rs-embed's adapter on a raw DN series, and saved the outputs in
``tests/oracle/data/anysat_golden.npz``. Here the same values are written as a published
``AnySat.pth`` by our writer, loaded strictly, and compared (max abs <= 1e-4):

* the key layout of the official state dict equals our writer's;
* encoder cases: 24 px, 8 frames, patch 10 m (B=2); 12 px, 3 frames, patch 30 m (iRPE
  buckets over a 3x3 patch and a 4x4 grid): tile, patch and dense outputs;
* rs-embed's adapter end to end (z-score, resize to 24, day-of-year of equal-bin midpoints):
  pooled, tile-pooled, dense and patch grids.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.oracle

GOLDEN = Path(__file__).parent / "data" / "anysat_golden.npz"
TOL = 1e-4
CASES = {
    "a": dict(seed=11, b=2, t=8, side=24, patch=10, ps=5, ds=6),
    "b": dict(seed=12, b=1, t=3, side=12, patch=30, ps=1, ds=2),
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
    from rs_embed_ray.testing.checkpoints_anysat import write_anysat_checkpoint

    return write_anysat_checkpoint(module_scratch("anysat") / "AnySat.pth", seed=0)


@pytest.fixture(scope="module")
def embedder(ckpt: Path):
    from rs_embed_ray.models.anysat import AnySat

    return AnySat(device="cpu", weights=str(ckpt))


def _case_input(seed: int, b: int, t: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    rs = np.random.RandomState(seed)
    x = rs.standard_normal((b, t, 10, side, side)).astype(np.float32)
    d = np.sort(rs.randint(0, 365, size=(b, t)), axis=1).astype(np.int64)
    return x, d


def test_published_layout(golden: dict) -> None:
    from rs_embed_ray.testing.checkpoints_anysat import anysat_shapes

    ours = {k: ",".join(map(str, s)) for k, s in anysat_shapes().items()}
    theirs = dict(zip(golden["keys"].tolist(), golden["shapes"].tolist(), strict=True))
    assert ours == theirs


@pytest.mark.parametrize("case", sorted(CASES))
def test_encoder_matches_official(case: str, golden: dict, embedder) -> None:
    import torch

    from rs_embed_ray.models.anysat import dense_grid

    c = CASES[case]
    x, d = _case_input(c["seed"], c["b"], c["t"], c["side"])
    with torch.inference_mode():
        tokens, subs = embedder.model(torch.from_numpy(x), torch.from_numpy(d), c["patch"] // 10)
        dense = dense_grid(tokens, subs).permute(0, 2, 3, 1).numpy()
    b, n1, dim = tokens.shape
    n = round((n1 - 1) ** 0.5)
    patch = tokens[:, 1:].reshape(b, n, n, dim).numpy()
    ps, ds = c["ps"], c["ds"]
    np.testing.assert_allclose(tokens[:, 0].numpy(), golden[f"enc_{case}_tile"], atol=TOL, rtol=0)
    np.testing.assert_allclose(patch[:, ::ps, ::ps], golden[f"enc_{case}_patch"], atol=TOL, rtol=0)
    np.testing.assert_allclose(
        patch.mean(axis=(1, 2)), golden[f"enc_{case}_patch_mean"], atol=TOL, rtol=0
    )
    np.testing.assert_allclose(dense[:, ::ds, ::ds], golden[f"enc_{case}_dense"], atol=TOL, rtol=0)


def _adapter_raw() -> np.ndarray:
    rs = np.random.RandomState(3)
    base = rs.randint(200, 4000, size=(1, 10, 1, 1))
    return (base + rs.randint(0, 2000, size=(8, 10, 32, 32))).astype(np.float32)


def test_rs_embed_adapter_end_to_end(golden: dict, ckpt: Path) -> None:
    from rs_embed_ray.models.anysat import AnySat, parse_config
    from rs_embed_ray.specs import OutputSpec, PointBuffer, TemporalSpec

    raw = _adapter_raw()
    assert raw.astype(np.float64).sum() == float(golden["adapter_raw_sum"])
    start, end = (str(v) for v in golden["adapter_window"])
    kw = dict(
        spatials=[PointBuffer(lon=10.0, lat=45.0, buffer_m=160)],
        temporal=TemporalSpec.range(start, end),
        fetch_metas=[{}],
    )

    base = AnySat(device="cpu", weights=str(ckpt))

    def run(output, **cfg):
        emb = copy.copy(base)  # the same loaded network with other options (saves 3 loads)
        emb.opts = parse_config(cfg)
        return emb.embed_batch([raw], output=output, **kw)[0]

    pooled = run(OutputSpec.pooled())
    assert pooled.meta["doy0_values"] == golden["adapter_doy"].tolist()
    np.testing.assert_allclose(pooled.data, golden["adapter_vec"], atol=TOL, rtol=0)
    tile = run(OutputSpec.pooled(), pooled_source="tile")
    np.testing.assert_allclose(tile.data, golden["adapter_tile"], atol=TOL, rtol=0)
    dense = run(OutputSpec.grid())
    assert dense.data.shape == (1536, 24, 24)
    np.testing.assert_allclose(dense.data[:, ::4, ::4], golden["adapter_dense"], atol=TOL, rtol=0)
    patch = run(OutputSpec.grid(), grid_feature_mode="patch")
    assert patch.data.shape == (768, 24, 24)
    np.testing.assert_allclose(patch.data[:, ::3, ::3], golden["adapter_patch"], atol=TOL, rtol=0)
