"""SatMAE++ grouped-channel ViT-L (fMoW-Sentinel pretraining): satmaepp ``modality="s2_10b"``.

Why this shape: the published checkpoint ``checkpoint_ViT-L_pretrain_fmow_sentinel.pth``
(HF ``mubashir04/checkpoint_ViT-L_pretrain_fmow_sentinel``) is SatMAE++'s training
checkpoint (techmn/satmae_pp ``main_pretrain.py``): ``torch.save`` of ``{"model":
state_dict, "optimizer": ..., "epoch": ..., "args": argparse.Namespace}``, so it is read
with ``torch.load(weights_only=False)`` (pickled objects) and ``["model"]`` is taken. The
model is ``models_mae_group_channels.mae_vit_large_patch16(img_size=96, patch_size=8,
in_chans=10, channel_groups=((0,1,2,6),(3,4,5,7),(8,9)))``: one timm ``PatchEmbed`` per
channel group (``patch_embed.{0,1,2}.proj``), ``cls_token``, a fixed 2-D sin-cos
``pos_embed`` (1, 145, 768) and a fixed 1-D sin-cos ``channel_embed`` (1, 3, 256) that are
concatenated to 1024-D per token, 24 timm blocks (16 heads, LayerNorm eps 1e-6) and
``norm``. Everything else in the file belongs to reconstruction and is set aside by name:
the MAE decoder (``decoder_*``, ``mask_token``, ``decoder_pred.{0,1,2}``) and the
multi-scale upsampling head (``proj_up_conv``, ``proj_up_norm``, ``up_block1``,
``up_block2``). The encoder keys are loaded strictly (names and shapes); a key that is
neither encoder nor a known reconstruction key is an error.

Forward: group patch tokens + [pos | channel] codes, group-major order (group 0's 144
tokens, then group 1's, ...), CLS first, 24 blocks, ``norm``: SatMAE++'s
``forward_encoder(x, mask_ratio=0)`` without its random token shuffle (with ratio 0 the
upstream still permutes the tokens at random, so rs-embed 0.3.1's grid of that output is
scrambled; the pooled mean is not affected). Pooled = mean (or max) over all 3 x 144 group
tokens (CLS dropped); grid = the groups averaged, 1024 x 12 x 12; with a squared fetch
(ROI window) the grid is cropped to the ROI and pooled from the crop, as rs-embed does.

Preprocessing (spec §3a; upstream ``SentinelNormalize``): per band
``(x - (mu - 2 sigma)) / (4 sigma) * 255`` clipped to 0..255 and truncated to uint8 (the
SatMAE++ Sentinel mean/std table with B1, B9, B10 dropped), ``ToTensor`` (/255), bicubic
resize straight to 96 x 96 (torchvision's tensor ``Resize``: antialiased, no clamp). The
upstream eval transform resized to 96/0.875 and centre-cropped; the spec (and rs-embed)
resize directly, so the token grid covers the whole fetched square.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import numpy as np

from rs_embed_ray.errors import ModelError, WeightsError

log = logging.getLogger(__name__)

HF_REPO_S2 = "mubashir04/checkpoint_ViT-L_pretrain_fmow_sentinel"
HF_FILE_S2 = "checkpoint_ViT-L_pretrain_fmow_sentinel.pth"
S2_10_BANDS = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")
CHANNEL_GROUPS: tuple[tuple[int, ...], ...] = ((0, 1, 2, 6), (3, 4, 5, 7), (8, 9))
IMAGE_SIZE_S2 = 96
PATCH_S2 = 8
GRID_SIDE_S2 = IMAGE_SIZE_S2 // PATCH_S2
EMBED_DIM = 1024
CHANNEL_EMBED = 256
DEPTH = 24
NUM_HEADS = 16
LN_EPS = 1e-6
VARIANTS_S2 = ("large",)
# techmn/satmae_pp util/datasets.py SentinelIndividualImageDataset mean/std, 13 bands with
# B1, B9, B10 (indices 0, 9, 10) dropped
SENTINEL_MEAN_10 = (
    1184.3824625,
    1120.77120066,
    1136.26026392,
    1263.73947144,
    1645.40315151,
    1846.87040806,
    1762.59530783,
    1972.62420416,
    1732.16362238,
    1247.91870117,
)
SENTINEL_STD_10 = (
    650.2842772,
    712.12507725,
    965.23119807,
    948.9819932,
    1108.06650639,
    1258.36394548,
    1233.1492281,
    1364.38688993,
    1310.36996126,
    1087.6020813,
)
# reconstruction-only keys of the published file (set aside by name)
RECON_PREFIXES = (
    "decoder_embed.",
    "decoder_blocks.",
    "decoder_norm.",
    "decoder_pred.",
    "proj_up_conv.",
    "proj_up_norm.",
    "up_block1.",
    "up_block2.",
)
RECON_KEYS = ("mask_token", "decoder_pos_embed", "decoder_channel_embed")


def sincos_1d(dim: int, pos: np.ndarray) -> np.ndarray:
    """MAE's 1-D code (float64): [sin(p w_k), cos(p w_k)], w_k = 1e4^(-k/(dim/2))."""
    omega = 1.0 / 10000.0 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    ang = np.asarray(pos, dtype=np.float64).reshape(-1, 1) * omega.reshape(1, -1)
    return np.concatenate([np.sin(ang), np.cos(ang)], axis=1)


def sincos_2d(dim: int, side: int) -> np.ndarray:
    """MAE's fixed (1 + side*side, dim) table: [code(column) | code(row)], CLS row zero."""
    rows, cols = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    table = np.concatenate([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], axis=1)
    return np.concatenate([np.zeros((1, dim)), table], axis=0)


def build_group_encoder(*, meta: bool = False) -> Any:
    """The grouped-channel ViT-L encoder (img 96, patch 8, 10 bands in 3 groups); random
    init with the fixed sin-cos tables, or on the meta device (weights attached later)."""
    import torch
    from timm.models.vision_transformer import Block, PatchEmbed
    from torch import nn

    class GroupChannelEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.channel_groups = CHANNEL_GROUPS
            self.patch_embed = nn.ModuleList(
                [PatchEmbed(IMAGE_SIZE_S2, PATCH_S2, len(g), EMBED_DIM) for g in CHANNEL_GROUPS]
            )
            n = GRID_SIDE_S2 * GRID_SIDE_S2
            self.cls_token = nn.Parameter(torch.zeros(1, 1, EMBED_DIM))
            pos = torch.zeros(1, n + 1, EMBED_DIM - CHANNEL_EMBED)
            self.pos_embed = nn.Parameter(pos, requires_grad=False)
            chan = torch.zeros(1, len(CHANNEL_GROUPS), CHANNEL_EMBED)
            self.channel_embed = nn.Parameter(chan, requires_grad=False)
            norm = partial(nn.LayerNorm, eps=LN_EPS)
            self.blocks = nn.ModuleList(
                [
                    Block(EMBED_DIM, NUM_HEADS, 4.0, qkv_bias=True, norm_layer=norm)
                    for _ in range(DEPTH)
                ]
            )
            self.norm = norm(EMBED_DIM)

        def forward(self, x: Any) -> Any:
            """(B, 10, 96, 96) -> (B, 1 + G*L, 1024) tokens after ``norm``, group-major."""
            b = x.shape[0]
            toks = torch.stack(
                [
                    pe(x[:, list(g)])
                    for pe, g in zip(self.patch_embed, self.channel_groups, strict=True)
                ],
                dim=1,
            )  # (B, G, L, D)
            _, g, n, d = toks.shape
            pos = self.pos_embed[:, 1:, :].unsqueeze(1).expand(-1, g, -1, -1)
            chan = self.channel_embed.unsqueeze(2).expand(-1, -1, n, -1)
            toks = (toks + torch.cat((pos, chan), dim=-1)).reshape(b, g * n, d)
            x = torch.cat((self.cls_token.expand(b, -1, -1), toks), dim=1)
            for blk in self.blocks:
                x = blk(x)
            return self.norm(x)

    if meta:
        with torch.device("meta"):
            return GroupChannelEncoder()
    model = GroupChannelEncoder()
    with torch.no_grad():
        table = sincos_2d(EMBED_DIM - CHANNEL_EMBED, GRID_SIDE_S2)
        model.pos_embed.copy_(torch.from_numpy(table).float().unsqueeze(0))
        chan = sincos_1d(CHANNEL_EMBED, np.arange(len(CHANNEL_GROUPS)))
        model.channel_embed.copy_(torch.from_numpy(chan).float().unsqueeze(0))
    return model


def read_training_checkpoint(path: str) -> dict[str, Any]:
    """The published training checkpoint -> its ``model`` state dict (``module.`` stripped).

    ``weights_only=False``: the file pickles ``argparse.Namespace`` (SatMAE++'s own format;
    only load files you trust)."""
    import torch

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:
        raise WeightsError(f"Cannot read SatMAE++ Sentinel checkpoint {path}: {exc}") from exc
    sd = obj.get("model", obj) if isinstance(obj, dict) else obj
    if not isinstance(sd, dict) or not sd:
        raise WeightsError(
            f"SatMAE++ Sentinel checkpoint {path} holds no state dict under 'model' "
            f"({type(obj).__name__})."
        )
    if all(str(k).startswith("module.") for k in sd):
        sd = {str(k)[len("module.") :]: v for k, v in sd.items()}
    return dict(sd)


def split_encoder(sd: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(encoder keys, reconstruction keys set aside by name)."""
    recon = sorted(k for k in sd if k.startswith(RECON_PREFIXES) or k in RECON_KEYS)
    drop = set(recon)
    return {k: v for k, v in sd.items() if k not in drop}, recon


def load_group_encoder(path: str | None) -> Any:
    """The encoder with the file's weights (strict), or seeded random (``path`` None)."""
    from rs_embed_ray.models.runtime import build_seeded
    from rs_embed_ray.models.satmae import check_and_load

    if path is None:
        return build_seeded(build_group_encoder)
    model = build_group_encoder(meta=True)
    sd, recon = split_encoder(read_training_checkpoint(path))
    check_and_load(model, sd, path=str(path), what="SatMAE++ Sentinel (s2_10b)")
    log.info("satmaepp s2_10b: set aside %d reconstruction keys", len(recon))
    return model


def sentinel_uint8_levels(t: Any) -> Any:
    """Raw DN (B, 10, H, W) -> SentinelNormalize's uint8 levels 0..255 (as float32).

    ``(x - min) / max(max - min, 1e-6) * 255`` in float32 with numpy's float32 bounds
    (``mu -/+ 2 sigma``), clipped, truncated (``astype(np.uint8)`` of non-negatives)."""
    import torch

    mean = np.asarray(SENTINEL_MEAN_10, dtype=np.float32)
    std = np.asarray(SENTINEL_STD_10, dtype=np.float32)
    lo = mean - np.float32(2.0) * std
    den = np.maximum((mean + np.float32(2.0) * std) - lo, np.float32(1e-6))
    lo_t = torch.from_numpy(lo).to(t.device).view(1, -1, 1, 1)
    den_t = torch.from_numpy(den).to(t.device).view(1, -1, 1, 1)
    y = (t.to(torch.float32) - lo_t) / den_t
    return torch.floor(torch.clamp(y * 255.0, 0.0, 255.0))


def s2_10b_batch(images: list[np.ndarray], *, device: Any) -> Any:
    """Raw DN (10, H, W) list -> (B, 10, 96, 96) float32: uint8 levels, /255, bicubic 96
    (antialiased, torchvision's tensor ``Resize``). Equal shapes are processed together."""
    import torch.nn.functional as F

    from rs_embed_ray.models.preprocess import stack_by_shape

    size = IMAGE_SIZE_S2

    def transform(t: Any, shape: tuple[int, ...]) -> Any:
        t = sentinel_uint8_levels(t) / 255.0
        if tuple(shape[-2:]) != (size, size):
            t = F.interpolate(
                t, size=(size, size), mode="bicubic", align_corners=False, antialias=True
            )
        return t

    return stack_by_shape(images, transform, device=device)


def group_grid(tokens: np.ndarray) -> np.ndarray:
    """(B, 1 + G*L, D) tokens -> (B, D, s, s) grid: the groups averaged per position."""
    b, n, d = tokens.shape
    g = len(CHANNEL_GROUPS)
    side = round(((n - 1) // g) ** 0.5)
    if g * side * side != n - 1:
        raise ModelError(f"satmaepp s2_10b: {n} tokens do not form {g} square group grids.")
    per = tokens[:, 1:, :].reshape(b, g, side, side, d).mean(axis=1)
    return np.ascontiguousarray(per.transpose(0, 3, 1, 2))


def parse_variant(cfg: dict[str, Any]) -> str:
    """``model_config["variant"]`` for s2_10b: only the published ViT-L (``large``/``l``)."""
    raw = cfg.get("variant")
    v = "large" if raw is None else str(raw).strip().lower()
    v = {"l": "large", "vit_l": "large", "vit-l": "large"}.get(v, v)
    if v not in VARIANTS_S2:
        raise ModelError(
            f"satmaepp s2_10b: model_config['variant']={raw!r} is not one of "
            f"{list(VARIANTS_S2)} (only the published ViT-L Sentinel checkpoint exists)."
        )
    return v


__all__ = [
    "CHANNEL_GROUPS",
    "HF_FILE_S2",
    "HF_REPO_S2",
    "IMAGE_SIZE_S2",
    "S2_10_BANDS",
    "SENTINEL_MEAN_10",
    "SENTINEL_STD_10",
    "build_group_encoder",
    "group_grid",
    "load_group_encoder",
    "parse_variant",
    "read_training_checkpoint",
    "s2_10b_batch",
    "sentinel_uint8_levels",
    "sincos_1d",
    "sincos_2d",
    "split_encoder",
]
