"""Golden outputs of the official SatMAE++ Sentinel model for tests/oracle/test_oracle_s2o.py.

Run with the rs-embed 0.3.1 venv (its ``_vendor/satmaepp_s2/models_mae_group_channels.py``
is techmn/satmae_pp's grouped-channel MAE) and this repo on ``PYTHONPATH`` only for the
value rule and key table of ``testing/checkpoints_s2o.py``:

    PYTHONPATH=. /tmp/anchor-venv312/bin/python scripts/satmaepp_s2_golden.py \\
        tests/oracle/data/satmaepp_s2_golden.npz

The official ``mae_vit_large_patch16(img_size=96, patch_size=8, in_chans=10,
channel_groups=((0,1,2,6),(3,4,5,7),(8,9)))`` is filled with ``s2o_values(seed=0)`` (its
fixed sin-cos tables as built), saved in the published format (``{"model": ..., "args":
Namespace}``) and read back the way rs-embed does (``torch.load(weights_only=False)``,
``["model"]``, strict). What it stores (float32 unless said):

* ``shapes_digest`` / ``n_keys``: the official state dict's ``key:shape`` table;
* ``u8``: rs-embed's ``_sentinel_to_uint8_hwc`` (SentinelNormalize) of ``raw_u8`` (seed 7,
  values from -500 to 9000 so both clips are hit);
* ``prep_a0``: rs-embed's preprocessing (uint8, ToTensor, bicubic 96) of item 0 of the
  raw batch ``a`` (seed 1, 2 x 10 x 20 x 20: upsampling); ``prep_b``: of one raw 10 x 130 x
  130 patch (seed 2: antialiased downsampling), every 2nd row and column;
* ``x``: the preprocessed batch ``a`` fed to the official ``forward_encoder(x, 0.0)``;
  ``tokens``: its output put back in spatial order with the returned ``ids_restore`` (every
  7th token), ``pooled_mean`` / ``pooled_max``: rs-embed's ``_satmaepp_s2_pool`` of the
  (shuffled) output, ``grid``: rs-embed's ``_satmaepp_s2_grid`` (group mean) of the
  restored tokens, every 3rd row and column.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from rs_embed_ray.testing.checkpoints_s2o import FROZEN_KEYS, s2o_values, shapes_digest

warnings.simplefilter("ignore")
GROUPS = ((0, 1, 2, 6), (3, 4, 5, 7), (8, 9))


def raw_inputs() -> dict[str, np.ndarray]:
    """The raw inputs (the test rebuilds them from the same seeds)."""
    return {
        "raw_u8": np.random.RandomState(7).uniform(-500, 9000, (10, 6, 5)).astype(np.float32),
        "a": np.random.RandomState(1).randint(0, 5000, (2, 10, 20, 20)).astype(np.float32),
        "b": np.random.RandomState(2).randint(0, 5000, (10, 130, 130)).astype(np.float32),
    }


def official_model():
    from rs_embed.embedders._vendor.satmaepp_s2 import models_mae_group_channels as m

    return m.mae_vit_large_patch16(
        img_size=96,
        patch_size=8,
        in_chans=10,
        channel_groups=GROUPS,
        spatial_mask=False,
        norm_pix_loss=False,
    )


def main(out_path: str) -> None:
    from rs_embed.embedders import onthefly_satmaepp_s2 as ad

    torch.manual_seed(0)
    model = official_model()
    sd = model.state_dict()
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    vals = s2o_values(shapes, seed=0)
    state = {k: (vals[k] if k not in FROZEN_KEYS else v.clone()) for k, v in sd.items()}
    with tempfile.TemporaryDirectory() as d:
        ckpt = Path(d) / "checkpoint_ViT-L_pretrain_fmow_sentinel.pth"
        args = argparse.Namespace(model="mae_vit_large_patch16", input_size=96)
        torch.save({"model": state, "epoch": 0, "args": args}, ckpt)
        del state, vals
        loaded = torch.load(ckpt, map_location="cpu", weights_only=False)["model"]
        model = official_model()
        model.load_state_dict(loaded, strict=True)
        del loaded
    model.eval()
    raw = raw_inputs()
    out: dict[str, np.ndarray] = {
        "shapes_digest": np.array(shapes_digest(shapes)),
        "n_keys": np.array(len(shapes)),
        "u8": ad._sentinel_to_uint8_hwc(raw["raw_u8"]).transpose(2, 0, 1),
    }
    x = ad._satmaepp_s2_preprocess_tensor_batch(list(raw["a"]), image_size=96)
    xb = ad._satmaepp_s2_preprocess_tensor_batch([raw["b"]], image_size=96)
    out["prep_a0"] = x[0].numpy()
    out["prep_b"] = xb[0].numpy()[:, ::2, ::2]
    with torch.no_grad():
        tok, _mask, ids_restore = model.forward_encoder(x, mask_ratio=0.0)
    body = torch.gather(tok[:, 1:, :], 1, ids_restore.unsqueeze(-1).expand(-1, -1, tok.shape[-1]))
    restored = torch.cat([tok[:, :1, :], body], dim=1).numpy()
    shuffled = tok.numpy()
    out["x"] = x.numpy()[:, :, ::4, ::4]  # the test recomputes x; this is a spot check
    out["tokens"] = restored[:, ::7, :]
    out["pooled_mean"] = np.stack([ad._satmaepp_s2_pool(t, "mean")[0] for t in shuffled])
    out["pooled_max"] = np.stack([ad._satmaepp_s2_pool(t, "max")[0] for t in shuffled])
    out["grid"] = np.stack([ad._satmaepp_s2_grid(t)[0][:, ::3, ::3] for t in restored])
    np.savez_compressed(out_path, **out)
    print({k: v.shape for k, v in out.items()})


if __name__ == "__main__":
    main(sys.argv[1])
