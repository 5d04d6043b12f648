"""A random-valued SatMAE++ Sentinel (satmaepp ``s2_10b``) checkpoint in the published format.

``checkpoint_ViT-L_pretrain_fmow_sentinel.pth`` is SatMAE++'s training checkpoint:
``torch.save({"model": state_dict, "optimizer": ..., "epoch": ..., "args":
argparse.Namespace(...)})`` of ``MaskedAutoencoderGroupChannelViT`` (encoder, MAE decoder
and the two upsampling blocks). The writer reproduces the whole key set (names and shapes
of the reconstruction side from :func:`recon_shapes`), the pickled ``args`` and the wrapper
keys. Values come from :func:`s2o_values` (torch's seeded generator over the sorted keys;
the fixed sin-cos tables as built), a rule ``scripts/satmaepp_s2_golden.py`` applies to the
official model class so both hold the very same numbers. About 1.3 GB (330 M float32).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

# the fixed sin-cos tables the file carries as built
FROZEN_KEYS = ("pos_embed", "channel_embed", "decoder_pos_embed", "decoder_channel_embed")


def s2o_values(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, Any]:
    """Seeded float32 tensors for every non-frozen key, drawn in sorted key order from one
    ``torch.Generator``: norm weights ``1 + 0.02 N``, everything else ``0.02 N``."""
    import torch

    gen = torch.Generator().manual_seed(int(seed))
    out: dict[str, Any] = {}
    for k in sorted(shapes):
        if k in FROZEN_KEYS:
            continue
        t = torch.randn(shapes[k], generator=gen, dtype=torch.float32) * 0.02
        parts = k.split(".")
        if len(parts) > 1 and "norm" in parts[-2] and parts[-1] == "weight":
            t += 1.0
        out[k] = t
    return out


def recon_shapes() -> dict[str, tuple[int, ...]]:
    """Key -> shape of the reconstruction side: the MAE decoder (512-D, 8 blocks, one
    ``decoder_pred`` per channel group) and ``proj_up_*`` / ``up_block1`` / ``up_block2``
    (10 bands x proj_ratio 4 = 40 channels)."""
    import torch
    from timm.models.vision_transformer import Block
    from torch import nn

    from rs_embed_ray.models.satmaepp_s2 import CHANNEL_GROUPS, EMBED_DIM, GRID_SIDE_S2, PATCH_S2

    n = GRID_SIDE_S2 * GRID_SIDE_S2 + 1
    shapes: dict[str, tuple[int, ...]] = {
        "decoder_embed.weight": (512, EMBED_DIM),
        "decoder_embed.bias": (512,),
        "mask_token": (1, 1, 512),
        "decoder_pos_embed": (1, n, 512 - 128),
        "decoder_channel_embed": (1, len(CHANNEL_GROUPS) + 1, 128),
        "decoder_norm.weight": (512,),
        "decoder_norm.bias": (512,),
    }
    ms, c = 40, 10
    with torch.device("meta"):
        block = Block(512, 16, 4.0, qkv_bias=True)
        layers = {
            "proj_up_conv": nn.Conv2d(c, ms, kernel_size=1),
            "up_conv": nn.ConvTranspose2d(ms, ms, kernel_size=4, stride=2, padding=1),
            "res_block.conv1": nn.Conv2d(ms, ms, kernel_size=3, padding=1),
            "res_block.conv2": nn.Conv2d(ms, ms, kernel_size=3, padding=1),
            "proj_out": nn.Conv2d(ms, c, kernel_size=3, padding=1),
        }
    for i in range(8):
        for k, v in block.state_dict().items():
            shapes[f"decoder_blocks.{i}.{k}"] = tuple(v.shape)
    for i, g in enumerate(CHANNEL_GROUPS):
        shapes[f"decoder_pred.{i}.weight"] = (len(g) * PATCH_S2 * PATCH_S2, 512)
        shapes[f"decoder_pred.{i}.bias"] = (len(g) * PATCH_S2 * PATCH_S2,)
    for k, v in layers["proj_up_conv"].state_dict().items():
        shapes[f"proj_up_conv.{k}"] = tuple(v.shape)
    shapes["proj_up_norm.weight"] = shapes["proj_up_norm.bias"] = (ms,)
    for blk in ("up_block1", "up_block2"):
        for name in ("up_conv", "res_block.conv1", "res_block.conv2", "proj_out"):
            for k, v in layers[name].state_dict().items():
                shapes[f"{blk}.{name}.{k}"] = tuple(v.shape)
        for norm in ("up_norm", "res_norm"):
            shapes[f"{blk}.{norm}.weight"] = shapes[f"{blk}.{norm}.bias"] = (ms,)
    return shapes


def published_shapes() -> dict[str, tuple[int, ...]]:
    """Key -> shape of the whole published ``["model"]`` dict (encoder + reconstruction)."""
    from rs_embed_ray.models.satmaepp_s2 import build_group_encoder

    enc = build_group_encoder(meta=True)
    shapes = {k: tuple(v.shape) for k, v in enc.state_dict().items()}
    shapes.update(recon_shapes())
    return shapes


def shapes_digest(shapes: dict[str, tuple[int, ...]]) -> str:
    """sha256 of the sorted ``key:shape`` lines (compared with the official model's)."""
    import hashlib

    lines = "\n".join(f"{k}:{list(shapes[k])}" for k in sorted(shapes))
    return hashlib.sha256(lines.encode()).hexdigest()


def write_s2_10b_checkpoint(directory: str | Path, *, seed: int = 0) -> Path:
    """Write ``checkpoint_ViT-L_pretrain_fmow_sentinel.pth`` (the published format) into
    ``directory``; values from :func:`s2o_values`, the fixed tables from our sin-cos code
    (the MAE recipe), which the oracle test checks against the official ones."""
    import numpy as np
    import torch

    from rs_embed_ray.models.satmaepp_s2 import (
        CHANNEL_EMBED,
        CHANNEL_GROUPS,
        EMBED_DIM,
        GRID_SIDE_S2,
        HF_FILE_S2,
        sincos_1d,
        sincos_2d,
    )

    shapes = published_shapes()
    sd = s2o_values(shapes, seed)
    pos = sincos_2d(EMBED_DIM - CHANNEL_EMBED, GRID_SIDE_S2)
    chan = sincos_1d(CHANNEL_EMBED, np.arange(len(CHANNEL_GROUPS)))
    sd["pos_embed"] = torch.from_numpy(pos).float().unsqueeze(0)
    sd["channel_embed"] = torch.from_numpy(chan).float().unsqueeze(0)
    dec_pos = sincos_2d(384, GRID_SIDE_S2)
    dec_chan = sincos_1d(128, np.arange(len(CHANNEL_GROUPS) + 1))
    sd["decoder_pos_embed"] = torch.from_numpy(dec_pos).float().unsqueeze(0)
    sd["decoder_channel_embed"] = torch.from_numpy(dec_chan).float().unsqueeze(0)
    args = argparse.Namespace(
        model="mae_vit_large_patch16",
        input_size=96,
        patch_size=8,
        grouped_bands=[list(g) for g in CHANNEL_GROUPS],
        dataset_type="sentinel",
        dropped_bands=[0, 9, 10],
    )
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    path = out / HF_FILE_S2
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"model": sd, "optimizer": {}, "epoch": 0, "args": args}, tmp)
    tmp.replace(path)
    return path


__all__ = [
    "FROZEN_KEYS",
    "published_shapes",
    "recon_shapes",
    "s2o_values",
    "shapes_digest",
    "write_s2_10b_checkpoint",
]
