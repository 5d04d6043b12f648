"""Oracle: Scale-MAE against rshf's own ``ScaleMAE`` (rshf 0.2.2, ``rshf.scalemae``).

The checkpoint is rshf's ``ScaleMAE_baseline`` (its timm ViT-L under ``.model``, default
``global_pool=False``), built under a fixed seed, perturbed, and written by its own
``save_pretrained`` (``model.safetensors`` + ``config.json``, the layout of
``MVRL/scalemae-vitlarge-800``); ours loads it strictly through the normal weights path.
The ground-resolution position table is where the two differ in code: rshf computes it in
``get_2d_sincos_pos_embed_with_resolution`` inside ``forward_features(x, input_res)``, ours
in ``gsd_pos_embed``. The input is 160 px at 10 m, so ``input_res = 10 * 160 / 224`` m per
model pixel (not the 10.0 rshf's ``forward`` hard-codes), computed here from the formula.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.oracle._helpers_b import (
    assert_close,
    embed_both,
    perturb_,
    seeded_build,
    tokens_to_grid_np,
)

pytestmark = pytest.mark.oracle

torch = pytest.importorskip("torch")
rshf_scalemae = pytest.importorskip("rshf.scalemae")


@pytest.fixture(scope="module")
def pair(module_scratch):
    """(rshf model, our ScaleMAE) sharing one checkpoint written by rshf."""
    from rs_embed_ray.models.scalemae import ScaleMAE

    theirs = seeded_build(
        lambda: rshf_scalemae.ScaleMAE(global_pool=False, cls_token_flag=True), seed=31
    )
    perturb_(theirs, seed=32)
    theirs.eval()
    folder = module_scratch("scalemae_rshf")
    theirs.save_pretrained(str(folder))
    ours = ScaleMAE(device="cpu", weights=str(folder), precision="float32")
    return theirs, ours, folder


def test_embeddings_match_rshf(pair):
    theirs, ours, folder = pair
    assert (folder / "model.safetensors").is_file()
    rng = np.random.default_rng(9)
    raw = rng.uniform(0, 4000, size=(3, 160, 160)).astype(np.float32)
    metas = [{"grid": {"scale_m": 10.0}}]
    pooled, grid = embed_both(ours, [raw], metas=metas)
    res = torch.tensor([10.0 * 160 / 224], dtype=torch.float32)
    with torch.no_grad():
        out = theirs.model.forward_features(ours.preprocess([raw]), input_res=res)
    assert out.shape == (1, 197, 1024)
    want_grid = tokens_to_grid_np(out[0, 1:], 14, 14)
    assert_close(grid[0], want_grid, "scalemae grid")
    assert_close(pooled[0], want_grid.mean(axis=(1, 2)), "scalemae pooled")


def test_position_table_matches_rshf(pair):
    """Our GSD-scaled table equals rshf's for several resolutions (the part that differs)."""
    from rshf.scalemae.model import get_2d_sincos_pos_embed_with_resolution

    from rs_embed_ray.models.scalemae import gsd_pos_embed

    res = torch.tensor([2.5, 10.0, 7.142857, 30.0])
    want = get_2d_sincos_pos_embed_with_resolution(1024, 14, res, cls_token=True)
    got = gsd_pos_embed(res)
    assert_close(got.numpy(), want.float().numpy(), "scalemae position table", atol=1e-4)


def test_preprocessing_matches_torchgeo_transforms(pair):
    """torchgeo ships Scale-MAE's input transform (``_scale_mae_transforms``: /255, then
    ImageNet mean/std, on a uint8-valued tensor, no resize): on a 224 px patch (no resize
    on our side either) it equals our preprocessing of the same DN patch."""
    scale_mae = pytest.importorskip("torchgeo.models.scale_mae")

    _, ours, _ = pair
    rng = np.random.default_rng(16)
    raw = rng.uniform(-100, 12000, size=(3, 224, 224)).astype(np.float32)
    u8 = (np.clip(raw / 10000.0, 0, 1) * 255.0).astype(np.uint8)
    want = scale_mae._scale_mae_transforms(torch.from_numpy(u8).float()[None])
    got = ours.preprocess([raw])
    assert_close(got.numpy(), want.numpy(), "scalemae preprocessing", atol=1e-5)
