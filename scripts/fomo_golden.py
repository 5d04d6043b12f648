"""Golden outputs of the official FoMo-Net_1 model for tests/oracle/test_oracle_fomo.py.

Run with the rs-embed 0.3.1 venv (its ``_vendor/fomo_multimodal_mae.py`` is FoMo-Bench's
``model_zoo/multimodal_mae.py``, trimmed to inference) and this repo on ``PYTHONPATH`` only
for the numpy-only value rule of ``testing/checkpoints_fomo.py``:

    PYTHONPATH=. /tmp/anchor-venv312/bin/python scripts/fomo_golden.py \\
        tests/oracle/data/fomo_golden.npz

The official ``MultiSpectralViT`` (built as FoMo-Bench's ``examples/pretrained_fomo_example.py``
builds it: 64 px, patch 16, dim 768, depth 12, 12 heads, mlp 2048, 1000 classes, the 37
pretraining modality channels, one embedding layer) is filled with ``fomo_values(seed=0)``,
saved as a plain state dict (the published format) and loaded back strictly, as the official
example does. What it stores (float32 unless said):

* ``enc_*``: the official ``forward((x, keys), pool=False)`` on a fixed normalised input
  ``enc_x`` (batch 2, 12 bands, 64 px, the S2 keys): every 4th token (``enc_tokens_sub``)
  and the mean of all tokens (``enc_mean``); ``enc_logits``: the ``pool=True`` classifier
  output (shows what the set-aside ``mlp_head`` computes from that same mean);
* ``ad_<case>_*``: rs-embed's own ``FoMoEmbedder.get_embedding`` on raw inputs rebuilt by the
  test from their seeds (``input_chw``), pooled and grid: ``s40`` (40 px, bilinear to 64,
  with NaN and over-range pixels), ``s64`` (64 px, no resize), ``roi`` (48 px with a
  fetch-square ROI window: grid cropped, pooled over the crop), ``max`` (max pooling).
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from rs_embed_ray.testing.checkpoints_fomo import fomo_values

warnings.simplefilter("ignore")
SEED = 0
S2_KEYS = [6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 17, 18]
ROI = (0.25, 0.75, 0.0, 0.5)


def raw_input(case: str) -> np.ndarray:
    """The raw adapter inputs (the test rebuilds them from the same seeds)."""
    side = {"s40": 40, "s64": 64, "roi": 48, "max": 40}[case]
    seed = {"s40": 2, "s64": 3, "roi": 4, "max": 5}[case]
    raw = np.random.RandomState(seed).randint(0, 6000, size=(12, side, side)).astype(np.float32)
    if case == "s40":
        raw[0, 0, :5] = np.nan
        raw[3, 10, 10:20] = 15000.0
    return raw


def official_model():
    from rs_embed.embedders._vendor.fomo_multimodal_mae import MultiSpectralViT
    from rs_embed.embedders.onthefly_fomo import _build_fomo_model_config

    cfg = _build_fomo_model_config(
        image_size=64, patch_size=16, dim=768, depth=12, heads=12, mlp_dim=2048, num_classes=1000
    )
    return MultiSpectralViT(
        image_size=64,
        patch_size=16,
        channels=1,
        num_classes=1000,
        dim=768,
        depth=12,
        heads=12,
        mlp_dim=2048,
        configs=cfg,
    )


def write_ckpt(path: Path) -> None:
    sd = official_model().state_dict()
    vals = fomo_values({k: tuple(v.shape) for k, v in sd.items()}, SEED)
    assert set(vals) == set(sd)
    torch.save({k: torch.from_numpy(v) for k, v in vals.items()}, path)


def encoder_case(ckpt: Path, out: dict) -> None:
    model = official_model()
    model.load_state_dict(torch.load(ckpt, map_location="cpu"), strict=True)
    model.eval()
    x = np.random.RandomState(1).uniform(0.0, 0.6, size=(2, 12, 64, 64)).astype(np.float32)
    with torch.no_grad():
        tok = model((torch.from_numpy(x), S2_KEYS), pool=False).numpy()
        logits = model((torch.from_numpy(x), S2_KEYS), pool=True).numpy()
    out["enc_x_seed"] = np.array(1)
    out["enc_x_sum"] = np.array(x.astype(np.float64).sum())
    out["enc_tokens_sub"] = tok[:, ::4]
    out["enc_mean"] = tok.mean(axis=1)
    out["enc_logits"] = logits
    print("encoder", tok.shape, logits.shape)


def adapter_case(case: str, out: dict) -> None:
    from rs_embed.core.specs import OutputSpec, PointBuffer, TemporalSpec
    from rs_embed.embedders.onthefly_fomo import FoMoEmbedder

    raw = raw_input(case)
    emb = FoMoEmbedder()
    pooling = "max" if case == "max" else "mean"
    kw = dict(
        spatial=PointBuffer(lon=10.0, lat=45.0, buffer_m=200),
        temporal=TemporalSpec.range("2022-06-01", "2022-09-01"),
        sensor=None,
        backend="auto",
        device="cpu",
        input_chw=raw,
        fetch_meta={"roi_window_geo": ROI} if case == "roi" else None,
    )
    pooled = emb.get_embedding(output=OutputSpec.pooled(pooling=pooling), **kw)
    grid = emb.get_embedding(output=OutputSpec.grid(), **kw)
    g = np.asarray(getattr(grid.data, "values", grid.data), np.float32)
    out[f"ad_{case}_raw_sum"] = np.array(np.nansum(raw.astype(np.float64)))
    out[f"ad_{case}_vec"] = np.asarray(pooled.data, np.float32)
    out[f"ad_{case}_grid"] = g
    print(case, pooled.meta["pooling"], g.shape)


def main(dest: str) -> None:
    torch.manual_seed(0)
    out: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "fomo_single_embedding_layer_weights.pt"
        write_ckpt(ckpt)
        encoder_case(ckpt, out)
        os.environ["RS_EMBED_FOMO_CKPT"] = str(ckpt)
        os.environ["RS_EMBED_FOMO_AUTO_DOWNLOAD"] = "0"
        for case in ("s40", "s64", "roi", "max"):
            adapter_case(case, out)
    tmp_dest = dest + ".tmp.npz"
    np.savez_compressed(tmp_dest, **out)
    os.replace(tmp_dest, dest)
    print(f"wrote {dest}: {sorted(out)}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/oracle/data/fomo_golden.npz")
