"""Oracle: SatMAE++ (fMoW RGB) against rshf's own ``SatMAEPP`` (rshf 0.2.2, ``rshf.satmaepp``).

The checkpoint is rshf's ``MaskedAutoencoderViT`` (encoder, MAE decoder and the multi-scale
upsampling head), built under a fixed seed, perturbed, and written by its own
``save_pretrained`` (``model.safetensors`` + ``config.json``, the layout of
``MVRL/satmaepp_ViT-L_pretrain_fmow_rgb``); ours loads it strictly through the normal
weights path, dropping the decoder and the head by name. Both embed the same preprocessed
input: rshf's ``forward_encoder(x, mask_ratio=0)`` (shuffle undone with its own
``ids_restore``), ours the whole ``embed_batch`` path. The preprocessing oracle builds
rs-embed's recipe (ToTensor, Normalize, bicubic antialiased Resize of the float tensor) from
torchvision's own transform classes with the fMoW constants rshf configures for SatMAE.
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
rshf_satmaepp = pytest.importorskip("rshf.satmaepp")


def rshf_config() -> dict:
    """rshf's ``SatMAEPPConfig`` defaults (3-band fMoW RGB, ViT-L/16, proj_ratio 4)."""
    return rshf_satmaepp.SatMAEPPConfig().to_dict()


@pytest.fixture(scope="module")
def pair(module_scratch):
    """(rshf model, our SatMAEPP) sharing one checkpoint written by rshf."""
    from rs_embed_ray.models.satmaepp import SatMAEPP

    keys = inspect.signature(rshf_satmaepp.SatMAEPPConfig.__init__).parameters
    cfg = {k: v for k, v in rshf_config().items() if k in keys}
    assert cfg["in_chans"] == 3 and cfg["embed_dim"] == 1024 and cfg["depth"] == 24
    theirs = seeded_build(lambda: rshf_satmaepp.SatMAEPP(dict(cfg)), seed=21)
    perturb_(theirs, seed=22)
    theirs.eval()
    folder = module_scratch("satmaepp_rshf")
    theirs.save_pretrained(str(folder))
    ours = SatMAEPP(
        device="cpu",
        weights=str(folder),
        model_config={"channel_order": "rgb"},
        precision="float32",
    )
    return theirs, ours, folder


def test_embeddings_match_rshf(pair):
    theirs, ours, folder = pair
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), framework="pt") as fh:
        keys = set(fh.keys())
    assert "up_block.proj_out.weight" in keys and "decoder_pred.weight" in keys
    rng = np.random.default_rng(7)
    raw = rng.uniform(0, 4000, size=(3, 64, 64)).astype(np.float32)
    pooled, grid = embed_both(ours, [raw])
    x = ours.preprocess([raw])
    with torch.no_grad():
        lat, _, ids_restore = theirs.forward_encoder(x, mask_ratio=0.0)
        tok = lat[:, 1:, :]
        tok = torch.gather(tok, 1, ids_restore.unsqueeze(-1).expand(-1, -1, tok.shape[-1]))
    want_grid = tokens_to_grid_np(tok[0], 14, 14)
    assert_close(grid[0], want_grid, "satmaepp grid")
    assert_close(pooled[0], want_grid.mean(axis=(1, 2)), "satmaepp pooled")


def test_preprocessing_matches_torchvision_recipe(pair):
    from rshf.satmae import SatMAEConfig
    from torchvision import transforms

    _, ours, _ = pair
    sig = inspect.signature(SatMAEConfig.__init__).parameters
    mean, std = sig["img_mean"].default, sig["img_std"].default
    assert ours.mean == tuple(mean) and ours.std == tuple(std)
    rng = np.random.default_rng(8)
    raw = rng.uniform(-100, 12000, size=(3, 50, 70)).astype(np.float32)
    u8 = (np.clip(raw / 10000.0, 0, 1) * 255.0).astype(np.uint8).transpose(1, 2, 0)
    recipe = transforms.Compose(
        [
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
            transforms.Resize(
                (224, 224), interpolation=transforms.InterpolationMode.BICUBIC, antialias=True
            ),
        ]
    )
    want = recipe(u8)
    got = ours.preprocess([raw])[0]
    assert_close(got.numpy(), want.numpy(), "satmaepp preprocessing", atol=1e-5)
