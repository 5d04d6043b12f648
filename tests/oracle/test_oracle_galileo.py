"""Galileo against the official encoder (no package installs: rs-embed 0.3.1's vendored copy
of nasaharvest/galileo's ``single_file_galileo.py``), through a golden file.

``scripts/galileo_golden.py`` (run in the rs-embed venv) filled the official ``Encoder`` with
``galileo_values(seed=0)``, ran it on fixed inputs and saved the outputs in
``tests/oracle/data/galileo_golden.npz``. Here the same values are written as a published
``models/nano`` folder by our writer, loaded strictly, and compared (max abs <= 1e-4):

* encoder cases: S2 groups at 10 m; S2 + NDVI at 35 m with one item's frame masked (a
  batch with a key mask); patch 4 (FlexiPatchEmbed kernel resize);
* rs-embed's own adapter end to end on a raw DN series (our ``recipe="rs_embed"``);
* the upstream recipe (2-sigma pretraining normalisation + NDVI) written independently in
  the script, against our default ``recipe="upstream"``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.oracle

GOLDEN = Path(__file__).parent / "data" / "galileo_golden.npz"
TOL = 1e-4


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """One intra-op thread: on a loaded 2-CPU machine two spinning threads are ~20x slower
    for a network this small."""
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
def ckpt_dir(module_scratch) -> Path:
    from rs_embed_ray.testing.checkpoints_galileo import write_galileo_checkpoint

    return write_galileo_checkpoint(module_scratch("galileo_nano"), seed=0).parent


def _adapter_raw() -> np.ndarray:
    return np.random.RandomState(2).randint(0, 6000, size=(3, 10, 64, 64)).astype(np.float32)


@pytest.mark.parametrize("case", ["s2", "ndvi", "p4"])
def test_encoder_matches_official(case: str, golden: dict, ckpt_dir: Path) -> None:
    import torch

    from rs_embed_ray.models.galileo import (
        S2_BANDS,
        S_T_GROUPS,
        build_galileo_encoder,
        prepare_state_dict,
    )
    from rs_embed_ray.models.runtime import load_prepared

    model = load_prepared(build_galileo_encoder(), ckpt_dir / "encoder.pt", prepare_state_dict)
    model.eval()
    x = torch.from_numpy(golden[f"enc_{case}_groups"])  # (B, T, 11, S, S)
    patch, res, with_ndvi = golden[f"enc_{case}_params"]
    groups = {}
    for g, bands in S_T_GROUPS.items():
        if g == "S1" or (g == "NDVI" and not with_ndvi):
            continue
        idx = [10] if g == "NDVI" else [S2_BANDS.index(b) for b in bands]
        groups[g] = x[:, :, idx]
    b = x.shape[0]
    with torch.inference_mode():
        tok, vis = model.forward_tokens(
            groups,
            torch.from_numpy(golden[f"enc_{case}_frame_ok"]),
            torch.from_numpy(golden[f"enc_{case}_months"]),
            patch=int(patch),
            input_res_m=torch.full((b,), float(res)),
        )
        w = vis.float()[..., None]
        vec = (tok * w).sum((1, 2, 3, 4)) / w.sum((1, 2, 3, 4))
        grid = ((tok * w).sum((3, 4)) / w.sum((3, 4))).permute(0, 3, 1, 2)
    assert np.abs(vec.numpy() - golden[f"enc_{case}_vec"]).max() <= TOL
    assert np.abs(grid.numpy() - golden[f"enc_{case}_grid"]).max() <= TOL


def _embed(ckpt_dir: Path, recipe: str, mode: str) -> tuple[np.ndarray, dict]:
    from rs_embed_ray.models.galileo import Galileo
    from rs_embed_ray.specs import OutputSpec, PointBuffer, TemporalSpec

    model = _models.get(recipe)
    if model is None:
        model = _models[recipe] = Galileo(
            device="cpu", weights=str(ckpt_dir), model_config={"recipe": recipe}
        )
    out = OutputSpec.pooled() if mode == "pooled" else OutputSpec.grid()
    (emb,) = model.embed_batch(
        [_adapter_raw()],
        output=out,
        spatials=[PointBuffer(lon=10.0, lat=45.0, buffer_m=320)],
        temporal=TemporalSpec.range("2022-05-01", "2022-08-01"),
        fetch_metas=[{}],
    )
    return emb.data, emb.meta


_models: dict[str, object] = {}


def test_rs_embed_recipe_matches_rs_embed_adapter(golden: dict, ckpt_dir: Path) -> None:
    assert float(_adapter_raw().astype(np.float64).sum()) == float(golden["adapter_raw_sum"])
    vec, meta = _embed(ckpt_dir, "rs_embed", "pooled")
    assert meta["month_indices"] == golden["adapter_months"].tolist()
    assert meta["pooling"] == "token_mean" and not meta["include_ndvi"]
    assert np.abs(vec - golden["adapter_vec"]).max() <= TOL
    grid, _ = _embed(ckpt_dir, "rs_embed", "grid")
    assert np.abs(grid - golden["adapter_grid"]).max() <= TOL


def test_upstream_recipe_matches_independent_upstream(golden: dict, ckpt_dir: Path) -> None:
    vec, meta = _embed(ckpt_dir, "upstream", "pooled")
    assert meta["include_ndvi"] and meta["input_resolution_m"] == 10.0
    assert np.abs(vec - golden["up_vec"]).max() <= TOL
    grid, _ = _embed(ckpt_dir, "upstream", "grid")
    assert np.abs(grid - golden["up_grid"]).max() <= TOL
    # the two recipes differ (normalisation, NDVI): the comparison above is not vacuous
    assert np.abs(vec - golden["adapter_vec"]).max() > 1e-2
