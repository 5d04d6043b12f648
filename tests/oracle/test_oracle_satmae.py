"""Oracle: SatMAE against rshf's own ``MaskedAutoencoderViT`` (rshf 0.2.2, ``rshf.satmae``).

The checkpoint is rshf's class, built under a fixed seed, perturbed, and written by its own
``save_pretrained`` (``model.safetensors`` + ``config.json``: how
``MVRL/satmae-vitlarge-fmow-pretrain-800`` is published); ours loads that folder strictly
through the normal weights path. Both embed the same preprocessed input: rshf's
``forward_encoder(x, mask_ratio=0)`` (its token shuffle undone with its own ``ids_restore``),
ours the whole ``embed_batch`` path. The preprocessing oracle compares our DN -> uint8 ->
normalise steps with torchvision's ToTensor + Normalize built from rshf's config constants.
"""

from __future__ import annotations

import inspect

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
rshf_satmae = pytest.importorskip("rshf.satmae")


def rshf_default_config() -> dict:
    """rshf's ``SatMAEConfig`` defaults (its ``__init__`` forgets to store ``img_std``, so
    the values are read from the signature): the published repo's config.json keys."""
    sig = inspect.signature(rshf_satmae.SatMAEConfig.__init__)
    return {k: p.default for k, p in sig.parameters.items() if k != "self"}


@pytest.fixture(scope="module")
def pair(module_scratch):
    """(rshf model, our SatMAE) sharing one checkpoint written by rshf."""
    from rs_embed_ray.models.satmae import SatMAE

    cfg = rshf_default_config()
    theirs = seeded_build(lambda: rshf_satmae.SatMAE(dict(cfg)), seed=11)
    perturb_(theirs, seed=12)
    theirs.eval()
    folder = module_scratch("satmae_rshf")
    theirs.save_pretrained(str(folder))
    ours = SatMAE(device="cpu", weights=str(folder), precision="float32")
    return theirs, ours, folder


def rshf_tokens(model, x):
    """rshf's encoder output in spatial order: (B, N, D) patch tokens, CLS dropped."""
    with torch.no_grad():
        lat, _, ids_restore = model.forward_encoder(x, mask_ratio=0.0)
        tok = lat[:, 1:, :]
        idx = ids_restore.unsqueeze(-1).expand(-1, -1, tok.shape[-1])
        return torch.gather(tok, 1, idx)


def test_embeddings_match_rshf(pair):
    theirs, ours, folder = pair
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    rng = np.random.default_rng(5)
    raw = rng.uniform(0, 4000, size=(3, 64, 64)).astype(np.float32)
    pooled, grid = embed_both(ours, [raw])
    tok = rshf_tokens(theirs, ours.preprocess([raw]))[0]
    want_grid = tokens_to_grid_np(tok, 14, 14)
    assert_close(grid[0], want_grid, "satmae grid")
    assert_close(pooled[0], want_grid.mean(axis=(1, 2)), "satmae pooled")


def test_preprocessing_matches_rshf_constants(pair):
    """Our preprocessing of a 224 px patch (no resize then) equals ToTensor + Normalize with
    rshf's configured img_mean / img_std on the same uint8 image; the constants we load
    come from the checkpoint's config.json, which rshf wrote."""
    from torchvision import transforms

    _, ours, _ = pair
    cfg = rshf_default_config()
    assert ours.mean == tuple(cfg["img_mean"]) and ours.std == tuple(cfg["img_std"])
    rng = np.random.default_rng(6)
    raw = rng.uniform(-100, 12000, size=(3, 224, 224)).astype(np.float32)
    u8 = (np.clip(raw / 10000.0, 0, 1) * 255.0).astype(np.uint8).transpose(1, 2, 0)
    want = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize(cfg["img_mean"], cfg["img_std"])]
    )(u8)
    got = ours.preprocess([raw])[0]
    assert_close(got.numpy(), want.numpy(), "satmae preprocessing", atol=1e-6)
