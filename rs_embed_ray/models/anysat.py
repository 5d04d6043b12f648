"""AnySat base on 10 Sentinel-2 bands, 8 frames: pooled 768-D, grid 24x24 (patch 768 / dense 1536).

Why this model: AnySat (Astruc et al., CVPR 2025) is a resolution- and scale-agnostic
multi-modal encoder (JEPA-trained on the GeoPlex collection); on S2 time series it turns each
pixel's series into one token with a lightweight temporal attention encoder, so the grid it
returns has the input's own resolution.

Architecture: no official package installs from the package index (``gastruc/AnySat``'s
``setup.py`` names its training code ``anysat`` 0.0.1, which ``pip download anysat`` does
not find, checked 2026-12-03; the model is published as a ``torch.hub`` entry point), so the
S2 path of the base model is ported here from the published source (``hubconf.py``,
``Any_multi.py``, ``Transformer.py``, ``utils/ltae.py``, ``utils/utils_ViT.py``,
``utils/irpe.py``, ``utils/pos_embed.py``; written from their description, no code copied).
Module names follow the published ``models/AnySat.pth`` (``{"state_dict": AnyModule
state}``), loaded strictly: every key of the S2 path must be in the file with its shape, and
the other modalities' projectors (``projector_aerial`` ... ``projector_modis``, which an S2
input never runs) must be there too with the published shapes
(:func:`other_projector_shapes`); they are checked, then set aside. The S2 path, as in
``AnyModule.forward_release``:

* ``projector_s2``: an L-TAE per pixel: a 5-layer Linear/GroupNorm(4)/ReLU input MLP
  (10 -> 96 -> 384 -> 768 -> 1536 -> 768), GroupNorm(16) over (channels, time), plus a
  sin-cos code of the day of year (period 367, 48 dims repeated over the 16 heads), one
  learned query per head (d_k 8) attending over the frames, a Linear/GroupNorm(4)/ReLU and a
  GroupNorm(16); the per-pixel features are cut into patches of ``patch_size_m / 10``
  pixels a side (the model assumes 10 m S2 pixels);
* ``spatial_encoder``: each patch's pixels, with a class token and the 2-D sin-cos code of
  their offsets in metres, through 6 pre-norm blocks whose attention adds contextual iRPE on
  the keys (Euclidean buckets, alpha 1.9, beta 3.8, gamma 15.2, one shared table, an extra
  bucket for the class token; as the official code runs without its ``rpe_ops`` CUDA
  extension, the first head's queries give the bias of every head) and a final LayerNorm;
  the class token is the patch token;
* patch tokens + the 2-D sin-cos code of the patch grid (positions times the patch scale),
  a class token, 6 ViT blocks (LayerNorm eps 1e-6) and a last cross block whose queries
  are a learned vector plus the position code (keys/values projected, iRPE on the keys, no
  residual around the attention). Outputs: ``tile`` = the class token, ``patch`` = the
  patch tokens (n x n x 768), ``dense`` = each patch token concatenated with its pixels'
  spatial-encoder features, reassembled at the input's pixel grid (1536-D).

The oracle is the official source as rs-embed 0.3.1 vendors it: ``scripts/anysat_golden.py``
runs it (and rs-embed's adapter) on fixed inputs with a seeded checkpoint and stores the
results in ``tests/oracle/data/anysat_golden.npz``; ``tests/oracle/test_oracle_anysat.py``
compares.

Preprocessing (rs-embed's adapter, which the spec and catalog adopt): NaN kept as missing,
clip 0..10000, centre pad to a square (reflect; edge when too wide), bilinear resize of the
raw DN to ``image_size`` (24; ``align_corners=False``), then a per-tile z-score per channel
over (T, H, W) (NaN-aware mean and population std, std floored at 1e-6, NaN -> 0). Frames:
the catalog's T=8 equal bins of the window (the providers' equal-bin series, an empty bin
back-filled with the window composite); ``s2_dates`` = day of year (0 = 1 Jan, clamped to
364) of each bin's midpoint (``fetch_meta["frames"]``, else the same split of the window).
``patch_size_m`` = the fetch grid's ``scale_m`` (default 10; a positive multiple of 10 whose
``/10`` divides ``image_size``).

Where this departs from upstream (the anchor's list of rs-embed's departures): upstream
normalises each GeoPlex dataset with its own statistics (there is no one S2 statistic for
an arbitrary patch), so the per-tile z-score is kept; upstream feeds the native pixels,
whereas the 24 px resize makes the model read each pixel as ``scale_m`` wide (a 2240 m
patch seen as 240 m). ``model_config["image_size"] = 0`` keeps the fetched size (the
upstream geometry: the model is told the true pixel size; the token count grows with the
square of the side). Pooled = the mean of the ``patch`` grid (rs-embed's default; the
model's own ``tile`` token with ``pooled_source="tile"``); grid = ``dense`` by default as in
rs-embed (``grid_feature_mode="patch"`` for the 768-D patch tokens). A square-padded or
ROI-windowed input has its grid cropped back to the ROI and pooled is the mean (or max) of
the cropped grid; the tile token is never cropped.
"""

from __future__ import annotations

import itertools
import logging
import math
from datetime import date
from typing import Any, ClassVar

import numpy as np

from rs_embed_ray.errors import ModelError, WeightsError
from rs_embed_ray.models.base import Embedding, ModelInfo
from rs_embed_ray.models.catalog import CATALOG
from rs_embed_ray.models.grids import crop_padded, grid_embedding, hw_list, pooled_embedding
from rs_embed_ray.models.preprocess import RoiWindow, as_tchw, square_pad
from rs_embed_ray.models.prithvi import midpoint, split_days
from rs_embed_ray.models.runtime import (
    Batch,
    TorchEmbedder,
    build_seeded,
    check_state_dict,
    load_prepared,
    strip_prefix,
    to_numpy,
)
from rs_embed_ray.specs import TemporalSpec, window_of

log = logging.getLogger(__name__)

HF_REPO = "g-astruc/AnySat"
WEIGHTS_FILE = "models/AnySat.pth"
DIM = 768
DEPTH = 6
HEADS = 12
MLP_RATIO = 4.0
IMAGE_SIZE = 24
MAX_FRAMES = 366
S2_BANDS = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")
S2_RES_M = 10
# L-TAE of the time-series projectors (hubconf.get_default_config, base)
LTAE_HEADS = 16
LTAE_DK = 8
LTAE_PERIOD = 367.0
# contextual iRPE on keys (get_rpe_config(ratio=1.9, method="euc", skip=1, rpe_on="k"))
RPE_ALPHA, RPE_BETA, RPE_GAMMA = 1.9, 3.8, 15.2
RPE_BUCKETS = 2 * int(RPE_BETA) + 1 + 1  # [-beta, beta] plus the class-token bucket

GRID_MODES = ("dense", "patch")
POOLED_SOURCES = ("patch", "tile")
CONFIG_KEYS = (
    "variant",
    "grid_feature_mode",
    "pooled_source",
    "image_size",
    "patch_size_m",
    "hf_repo",
    "hf_revision",
    "filename",
)

# the other modalities of the published checkpoint: time series (in channels, in_norm) ...
OTHER_SERIES = {"s1-asc": 2, "s1": 3, "alos": 3, "l7": 6, "l8": 11, "modis": 7}
# ... and single images (in channels, patch size); their conv has no bias
OTHER_IMAGES = {"aerial": (4, 10), "aerial-flair": (5, 10), "spot": (3, 10), "naip": (4, 8)}


def parse_config(model_config: dict[str, Any] | None) -> dict[str, Any]:
    """The checked options of a model_config (unknown keys or bad values raise ModelError
    naming what to change)."""
    cfg = dict(model_config or {})
    unknown = sorted(set(cfg) - set(CONFIG_KEYS))
    if unknown:
        raise ModelError(f"anysat: unknown model_config key(s) {unknown}; known: {CONFIG_KEYS}.")
    variant = str(cfg.get("variant") or "base").strip().lower()
    if variant not in ("base", "b"):
        raise ModelError(f"anysat: variant {variant!r} is not published; only 'base' exists.")
    aliases = {"subpatch": "dense", "subpatches": "dense", "patches": "patch"}
    mode = str(cfg.get("grid_feature_mode") or "dense").strip().lower()
    mode = aliases.get(mode, mode)
    if mode not in GRID_MODES:
        raise ModelError(f"anysat: grid_feature_mode {mode!r}; choose one of {GRID_MODES}.")
    src = str(cfg.get("pooled_source") or "patch").strip().lower()
    src = {"grid": "patch", "native": "tile", "model": "tile"}.get(src, src)
    if src not in POOLED_SOURCES:
        raise ModelError(f"anysat: pooled_source {src!r}; choose one of {POOLED_SOURCES}.")
    try:
        size = int(cfg["image_size"]) if cfg.get("image_size") is not None else IMAGE_SIZE
        patch = int(cfg["patch_size_m"]) if cfg.get("patch_size_m") is not None else None
    except (TypeError, ValueError):
        raise ModelError("anysat: image_size and patch_size_m must be integers.") from None
    if size < 0:
        raise ModelError(f"anysat: image_size must be >= 0 (0 = keep the input size), got {size}.")
    if patch is not None:
        check_patch(patch, size or None)
    return {"grid_feature_mode": mode, "pooled_source": src, "image_size": size, "patch": patch}


def check_patch(patch_m: int, side: int | None) -> int:
    """The patch scale (pixels a side) of ``patch_m`` metres; ModelError unless it is a
    positive multiple of 10 whose scale divides the input ``side``."""
    if patch_m <= 0 or patch_m % S2_RES_M:
        raise ModelError(
            f"anysat: the patch size in metres must be a positive multiple of 10, got "
            f"{patch_m}; set model_config patch_size_m or fetch at a scale_m that is."
        )
    scale = patch_m // S2_RES_M
    if side is not None and side % scale:
        raise ModelError(
            f"anysat: a {patch_m} m patch is {scale} px, which does not divide the {side} px "
            "input; change image_size or patch_size_m."
        )
    return scale


# ---------------------------------------------------------------------------------------
# fixed tables
# ---------------------------------------------------------------------------------------


def sincos_1d(dim: int, pos: Any) -> Any:
    """(M,) positions -> (M, dim) ``[sin(p w_k) | cos(p w_k)]``, ``w_k = 1e4^(-2k/dim)``."""
    import torch

    omega = torch.arange(dim // 2, dtype=torch.float32, device=pos.device) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    ang = pos.reshape(-1, 1).float() * omega.reshape(1, -1)
    return torch.cat([torch.sin(ang), torch.cos(ang)], dim=1)


def grid_code(dim: int, side: int, step: float, device: Any = None) -> Any:
    """(side*side, dim) row-major ``[code(column * step) | code(row * step)]``."""
    import torch

    idx = torch.arange(side, dtype=torch.float32, device=device) * float(step)
    rows, cols = torch.meshgrid(idx, idx, indexing="ij")
    return torch.cat([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], dim=1)


def doy_code(dates: Any, d: int, repeat: int) -> Any:
    """(B, T) day-of-year -> (B, T, d * repeat): L-TAE's sin (even) / cos (odd) code with
    ``denominator_i = 367^(2 (i // 2) / d)``, repeated once per head."""
    import torch

    i = torch.arange(d, dtype=torch.float32, device=dates.device)
    denom = torch.pow(torch.tensor(LTAE_PERIOD, device=dates.device), 2 * (i // 2) / d)
    ang = dates[..., None].float() / denom
    even = (torch.arange(d, device=dates.device) % 2) == 0
    code = torch.where(even, torch.sin(ang), torch.cos(ang))
    return code.repeat(1, 1, repeat)


def rpe_buckets(side: int, device: Any = None) -> Any:
    """(1 + side^2, 1 + side^2) iRPE bucket ids: the rounded Euclidean distance of two
    positions through iRPE's piecewise index (exact up to alpha, log-compressed beyond,
    capped at beta), shifted by beta; the class token row/column gets its own bucket."""
    import torch

    r, c = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    pos = torch.stack([r.reshape(-1), c.reshape(-1)], dim=1)
    diff = pos[:, None, :] - pos[None, :, :]
    dis = diff.square().sum(2).float().sqrt().round()
    far = dis.abs() > RPE_ALPHA
    comp = RPE_ALPHA + torch.log(dis.clamp_min(1e-6) / RPE_ALPHA) / math.log(
        RPE_GAMMA / RPE_ALPHA
    ) * (RPE_BETA - RPE_ALPHA)
    comp = torch.sign(dis) * comp.round().clip(max=RPE_BETA)
    idx = torch.where(far, comp.to(torch.long), dis.round().to(torch.long)) + int(RPE_BETA)
    n = side * side
    out = torch.full((n + 1, n + 1), RPE_BUCKETS - 1, dtype=torch.long)
    out[1:, 1:] = idx
    return out.to(device) if device is not None else out


def other_projector_shapes(dim: int = DIM) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the published checkpoint's projectors for the modalities other than
    S2 (hubconf's base config): they are checked on load, then set aside."""
    out: dict[str, tuple[int, ...]] = {}
    for m, cin in OTHER_SERIES.items():
        p = f"projector_{m}."
        out[p + "pad_parameter"] = ()
        out.update({p + k: s for k, s in ltae_shapes(cin, dim, in_norm=False).items()})
    for m, (cin, patch) in OTHER_IMAGES.items():
        p = f"projector_{m}."
        out[p + "patch_embed.weight"] = (dim, cin, patch, patch)
        for i, (a, b) in enumerate(((dim, 2 * dim), (2 * dim, dim))):
            out[p + f"mlp.{3 * i}.weight"] = (b, a)
            out[p + f"mlp.{3 * i}.bias"] = (b,)
            out[p + f"mlp.{3 * i + 1}.weight"] = (b,)
            out[p + f"mlp.{3 * i + 1}.bias"] = (b,)
    return out


def ltae_shapes(cin: int, dim: int, *, in_norm: bool) -> dict[str, tuple[int, ...]]:
    """Key -> shape of one L-TAE projector's ``patch_embed`` (published naming)."""
    widths = [cin, dim // 8, dim // 2, dim, dim * 2, dim]
    out: dict[str, tuple[int, ...]] = {}
    for i in range(5):
        a, b = widths[i], widths[i + 1]
        out[f"patch_embed.inconv.{4 * i}.weight"] = (b, a)
        out[f"patch_embed.inconv.{4 * i}.bias"] = (b,)
        out[f"patch_embed.inconv.{4 * i + 1}.weight"] = (b,)
        out[f"patch_embed.inconv.{4 * i + 1}.bias"] = (b,)
    out["patch_embed.attention_heads.Q"] = (LTAE_HEADS, LTAE_DK)
    out["patch_embed.attention_heads.fc1_k.weight"] = (LTAE_HEADS * LTAE_DK, dim)
    out["patch_embed.attention_heads.fc1_k.bias"] = (LTAE_HEADS * LTAE_DK,)
    if in_norm:
        out["patch_embed.in_norm.weight"] = (dim,)
        out["patch_embed.in_norm.bias"] = (dim,)
    out["patch_embed.out_norm.weight"] = (dim,)
    out["patch_embed.out_norm.bias"] = (dim,)
    out["patch_embed.mlp.0.weight"] = (dim, dim)
    out["patch_embed.mlp.0.bias"] = (dim,)
    out["patch_embed.mlp.1.weight"] = (dim,)
    out["patch_embed.mlp.1.bias"] = (dim,)
    return out


# ---------------------------------------------------------------------------------------
# the network (S2 path)
# ---------------------------------------------------------------------------------------


def build_anysat_encoder() -> Any:
    """The S2 path of AnySat base as an ``nn.Module`` (random init; no download)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    dim, hidden = DIM, int(DIM * MLP_RATIO)

    class Ltae(nn.Module):
        def __init__(self, cin: int) -> None:
            super().__init__()
            widths = [cin, dim // 8, dim // 2, dim, dim * 2, dim]
            layers: list[nn.Module] = []
            for a, b in itertools.pairwise(widths):
                layers += [nn.Linear(a, b), nn.GroupNorm(4, b), nn.ReLU(), nn.Dropout(0.0)]
            self.inconv = nn.Sequential(*layers)
            self.attention_heads = nn.Module()
            self.attention_heads.Q = nn.Parameter(torch.zeros(LTAE_HEADS, LTAE_DK))
            self.attention_heads.fc1_k = nn.Linear(dim, LTAE_HEADS * LTAE_DK)
            self.in_norm = nn.GroupNorm(LTAE_HEADS, dim)
            self.out_norm = nn.GroupNorm(LTAE_HEADS, dim)
            self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.GroupNorm(4, dim), nn.ReLU())

        def forward(self, x: Any, dates: Any) -> Any:
            """(B, T, C, H, W) + (B, T) day of year -> (B, D, H, W)."""
            b, t, c, h, w = x.shape
            n = b * h * w
            out = self.inconv(x.permute(0, 3, 4, 1, 2).reshape(n * t, c)).reshape(n, t, dim)
            out = self.in_norm(out.transpose(1, 2)).transpose(1, 2)
            code = doy_code(dates, dim // LTAE_HEADS, LTAE_HEADS)  # (B, T, D)
            out = out + code[:, None].expand(b, h * w, t, dim).reshape(n, t, dim)
            k = self.attention_heads.fc1_k(out).reshape(n, t, LTAE_HEADS, LTAE_DK)
            score = torch.einsum("nthd,hd->nht", k, self.attention_heads.Q) / math.sqrt(LTAE_DK)
            att = score.softmax(dim=-1)
            v = out.reshape(n, t, LTAE_HEADS, dim // LTAE_HEADS)
            o = torch.einsum("nht,nthe->nhe", att, v).reshape(n, dim)
            o = self.out_norm(self.mlp(o))
            return o.reshape(b, h, w, dim).permute(0, 3, 1, 2)

    class Projector(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.patch_embed = Ltae(len(S2_BANDS))
            self.pad_parameter = nn.Parameter(torch.tensor(0.0), requires_grad=False)

        def forward(self, x: Any, dates: Any, scale: int) -> Any:
            """-> (B * n * n, scale^2, D): each patch's pixel features, row-major."""
            y = self.patch_embed(x, dates)
            b, d, h, _ = y.shape
            n = h // scale
            y = y[:, :, : n * scale, : n * scale].reshape(b, d, n, scale, n, scale)
            return y.permute(0, 2, 4, 3, 5, 1).reshape(b * n * n, scale * scale, d)

    class Rpe(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lookup_table_weight = nn.Parameter(torch.zeros(1, dim // HEADS, RPE_BUCKETS))

        def forward(self, q: Any, buckets: Any) -> Any:
            """(B, H, L, d) queries -> (B, 1, L, L) the contextual bias on the keys. As the
            official gather (without the rpe_ops extension) does, only the first head's
            queries index the table and that bias is added to every head."""
            table = torch.einsum("bld,dn->bln", q[:, 0], self.lookup_table_weight[0])
            idx = buckets[None].expand(q.shape[0], -1, -1)
            return table.gather(2, idx)[:, None]

    class Mlp(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(dim, hidden)
            self.fc2 = nn.Linear(hidden, dim)

        def forward(self, x: Any) -> Any:
            return self.fc2(F.gelu(self.fc1(x)))

    def split_heads(t: Any) -> Any:
        b, n, _ = t.shape
        return t.reshape(b, n, HEADS, dim // HEADS).transpose(1, 2)

    def merge_heads(t: Any) -> Any:
        b, _, n, _ = t.shape
        return t.transpose(1, 2).reshape(b, n, dim)

    class RpeAttention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv = nn.Linear(dim, 3 * dim)
            self.proj = nn.Linear(dim, dim)
            self.rpe_k = Rpe()

        def forward(self, x: Any, buckets: Any) -> Any:
            q, k, v = (split_heads(t) for t in self.qkv(x).chunk(3, dim=-1))
            bias = self.rpe_k(q * (dim // HEADS) ** -0.5, buckets)
            return self.proj(merge_heads(F.scaled_dot_product_attention(q, k, v, bias)))

    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv = nn.Linear(dim, 3 * dim)
            self.proj = nn.Linear(dim, dim)

        def forward(self, x: Any) -> Any:
            q, k, v = (split_heads(t) for t in self.qkv(x).chunk(3, dim=-1))
            return self.proj(merge_heads(F.scaled_dot_product_attention(q, k, v)))

    class CrossAttention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q_learned = nn.Parameter(torch.zeros(1, 1, dim))
            self.wk = nn.Linear(dim, dim)
            self.wv = nn.Linear(dim, dim)
            self.rpe_k = Rpe()
            self.proj = nn.Linear(dim, dim)

        def forward(self, x: Any, pos: Any, buckets: Any) -> Any:
            q = split_heads(self.q_learned + pos.expand(x.shape[0], -1, -1))
            k, v = split_heads(self.wk(x)), split_heads(self.wv(x))
            bias = self.rpe_k(q, buckets)
            return self.proj(merge_heads(F.scaled_dot_product_attention(q, k, v, bias)))

    class Block(nn.Module):
        def __init__(self, attn: nn.Module, eps: float) -> None:
            super().__init__()
            self.norm1 = nn.LayerNorm(dim, eps=eps)
            self.attn = attn
            self.norm2 = nn.LayerNorm(dim, eps=eps)
            self.mlp = Mlp()

    class SpatialEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
            self.predictor_blocks = nn.ModuleList(
                [Block(RpeAttention(), 1e-5) for _ in range(DEPTH)]
            )
            self.predictor_norm = nn.LayerNorm(dim)

        def forward(self, x: Any, scale: int) -> Any:
            """(P, s^2, D) pixels of each patch -> (P, 1 + s^2, D) after the final norm."""
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
            pos = grid_code(dim, scale, float(S2_RES_M), x.device)
            x = x + torch.cat([torch.zeros_like(pos[:1]), pos])[None]
            buckets = rpe_buckets(scale, x.device)
            for blk in self.predictor_blocks:
                x = x + blk.attn(blk.norm1(x), buckets)
                x = x + blk.mlp(blk.norm2(x))
            return self.predictor_norm(x)

    class AnySatS2(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
            self.projector_s2 = Projector()
            self.spatial_encoder = SpatialEncoder()
            blocks = [Block(Attention(), 1e-6) for _ in range(DEPTH)]
            self.blocks = nn.ModuleList([*blocks, Block(CrossAttention(), 1e-6)])

        def forward(self, s2: Any, dates: Any, scale: int) -> tuple[Any, Any]:
            """(B, T, 10, S, S) + (B, T) -> (tokens (B, 1 + n^2, D) of the last block,
            sub-patch features (B, n^2, s^2, D))."""
            b = s2.shape[0]
            pix = self.projector_s2(s2, dates, scale)
            enc = self.spatial_encoder(pix, scale)
            n2 = pix.shape[0] // b
            n = math.isqrt(n2)
            pos = grid_code(dim, n, float(scale), s2.device)
            tok = enc[:, 0].reshape(b, n2, dim) + pos[None]
            x = torch.cat([self.cls_token.expand(b, -1, -1), tok], dim=1)
            for blk in self.blocks[:-1]:
                x = x + blk.attn(blk.norm1(x))
                x = x + blk.mlp(blk.norm2(x))
            last = self.blocks[-1]
            qpos = torch.cat([torch.zeros_like(pos[:1]), pos])[None]
            x = last.attn(last.norm1(x), qpos, rpe_buckets(n, s2.device))
            x = x + last.mlp(last.norm2(x))
            return x, enc[:, 1:].reshape(b, n2, scale * scale, dim)

    return AnySatS2()


def dense_grid(tokens: Any, subs: Any) -> Any:
    """(B, 1 + n^2, D) tokens + (B, n^2, s^2, D) pixel features -> (B, 2D, n s, n s):
    each pixel gets ``[its patch token | its own feature]`` (the official ``dense``)."""
    import torch

    b, n2, s2, d = subs.shape
    n, s = math.isqrt(n2), math.isqrt(s2)
    pt = tokens[:, 1:, None, :].expand(b, n2, s2, d)
    x = torch.cat([pt, subs], dim=-1).reshape(b, n, n, s, s, 2 * d)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(b, 2 * d, n * s, n * s)


def prepare_state_dict(model: Any, sd: dict[str, Any], *, path: str) -> dict[str, Any]:
    """Published ``AnySat.pth`` keys -> this S2 encoder's keys (strict): the other
    modalities' projectors must all be there with the published shapes, then are dropped."""
    sd = strip_prefix(sd, ("model.", "module."))
    others = other_projector_shapes()
    prefixes = tuple(f"projector_{m}." for m in (*OTHER_SERIES, *OTHER_IMAGES))
    side = {k: v for k, v in sd.items() if k.startswith(prefixes)}
    missing = sorted(set(others) - set(side))
    extra = sorted(set(side) - set(others))
    bad = [
        f"{k}: file {tuple(v.shape)} vs published {others[k]}"
        for k, v in side.items()
        if k in others and tuple(v.shape) != others[k]
    ]
    if missing or extra or bad:
        raise WeightsError(
            f"AnySat checkpoint {path} is not the published base format in its other "
            f"projectors: {len(missing)} missing (e.g. {missing[:3]}), {len(extra)} "
            f"unexpected (e.g. {extra[:3]}), {len(bad)} shape mismatches (e.g. {bad[:2]})."
        )
    out = {k: v for k, v in sd.items() if k not in side}
    check_state_dict(model, out, path=path, what="AnySat")
    return out


# ---------------------------------------------------------------------------------------
# frames and dates
# ---------------------------------------------------------------------------------------


def doy0(d: date) -> int:
    """Day of year from 0 (1 Jan) clamped to 364, as AnySat's docs count."""
    return max(0, min(364, d.timetuple().tm_yday - 1))


def frame_doys(
    n: int, temporal: TemporalSpec | None, fetch_meta: dict[str, Any] | None
) -> tuple[list[int], str]:
    """Day of year of each of ``n`` frames' bin midpoint, and where the bins came from:
    ``fetch_meta["frames"]``, else ``n`` equal whole-day bins of the window."""
    frames = (fetch_meta or {}).get("frames")
    if isinstance(frames, list) and len(frames) == n and n > 0:
        try:
            bins = [
                (date.fromisoformat(str(f["start"])), date.fromisoformat(str(f["end"])))
                for f in frames
            ]
            return [doy0(midpoint(a, b)) for a, b in bins], "fetch_meta_frames"
        except (KeyError, TypeError, ValueError):
            pass
    start, end = window_of(temporal)
    return [doy0(midpoint(a, b)) for a, b in split_days(start, end, n)], "window_split"


def pixel_metres(fetch_meta: dict[str, Any] | None, default: float) -> float:
    """Ground size of an input pixel: the fetch grid's ``scale_m``, else ``default``."""
    grid = (fetch_meta or {}).get("grid") or {}
    scale = grid.get("scale_m") if isinstance(grid, dict) else None
    return float(scale) if scale else default


def zscore_tchw(x: Any) -> Any:
    """Per channel over (T, H, W): ``(x - nanmean) / max(nanstd, 1e-6)``, NaN -> 0."""
    import torch

    ok = ~torch.isnan(x)
    cnt = ok.sum(dim=(0, 2, 3), keepdim=True).clamp_min(1)
    z = torch.where(ok, x, 0.0)
    mu = z.double().sum(dim=(0, 2, 3), keepdim=True) / cnt
    var = (torch.where(ok, x.double() - mu, 0.0) ** 2).sum(dim=(0, 2, 3), keepdim=True) / cnt
    sigma = var.sqrt().clamp_min(1e-6)
    out = ((x.double() - mu) / sigma).float()
    return torch.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


class AnySat(TorchEmbedder):
    """AnySat base on S2 B2..B12 (10 bands), 8 equal frames with day-of-year dates.

    ``model_config``: ``grid_feature_mode`` (``dense`` | ``patch``), ``pooled_source``
    (``patch`` | ``tile``), ``image_size`` (24; 0 keeps the input size), ``patch_size_m``
    (default: the fetch scale), ``variant`` (``base``), ``hf_repo``, ``hf_revision``,
    ``filename``. See the module docstring for the recipe and its departures from upstream.
    """

    info: ClassVar[ModelInfo] = CATALOG["anysat"]
    CONFIG_KEYS: ClassVar[frozenset[str] | None] = frozenset(CONFIG_KEYS)
    batch_size_cpu = 4
    batch_size_cuda = 32

    config_parser = staticmethod(parse_config)

    def _load(self, weights: str | None) -> None:
        self.opts = parse_config(self.model_config)
        self._init_runtime()
        resolved = self._resolve_weights(weights, filename=WEIGHTS_FILE, hf_repo=HF_REPO)
        model = build_seeded(build_anysat_encoder)
        model = load_prepared(model, resolved.path, prepare_state_dict)
        self.model = model.to(self.device).eval()
        log.info(
            "anysat base loaded on %s (amp=%s, weights=%s)",
            self.device,
            self._amp_dtype,
            self.weights_record.get("weights"),
        )

    def preprocess(self, x: np.ndarray) -> tuple[Any, RoiWindow]:
        """Raw (T, 10, H, W) DN -> the z-scored (T, 10, S, S) tensor and the content window."""
        import torch
        import torch.nn.functional as F

        a = np.clip(x.astype(np.float32), 0.0, 10000.0)  # NaN stays NaN
        t = torch.from_numpy(a).to(self.device)
        t, win = square_pad(t)
        size = self.opts["image_size"] or t.shape[-1]
        if t.shape[-1] != size:
            t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
        return zscore_tchw(t), win

    def forward(
        self, s2: Any, dates: Any, scale: int, *, dense: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """One forward -> (grid (B, D, h, w): ``dense`` or ``patch``, tile (B, D)) numpy."""
        with self.inference():
            tokens, subs = self.model(s2, dates, scale)
            if dense:
                grid = dense_grid(tokens, subs)
            else:
                b, n1, d = tokens.shape
                n = math.isqrt(n1 - 1)
                grid = tokens[:, 1:].reshape(b, n, n, d).permute(0, 3, 1, 2)
            return to_numpy(grid), to_numpy(tokens[:, 0])

    def _embed(self, batch: Batch) -> list[Embedding]:
        """Embed raw (T, 10, H, W) series; one forward per distinct (T, side, patch)."""
        import torch

        n, output, metas = len(batch), batch.output, batch.metas
        prepped: list[tuple[Any, RoiWindow]] = []
        doys: list[list[int]] = []
        sources: list[str] = []
        patches: list[int] = []
        for i in range(n):
            a = as_tchw(batch.inputs[i], "anysat", S2_BANDS, MAX_FRAMES, "the catalog fetches 8")
            d, src = frame_doys(a.shape[0], batch.temporal, metas[i])
            p = self.preprocess(a)
            default_m = pixel_metres(metas[i], float(S2_RES_M))
            patch_m = self.opts["patch"] or round(default_m)
            check_patch(patch_m, int(p[0].shape[-1]))
            prepped.append(p)
            doys.append(d)
            sources.append(src)
            patches.append(patch_m)

        dense = output.mode == "grid" and self.opts["grid_feature_mode"] == "dense"
        grids: list[np.ndarray | None] = [None] * n
        tiles: list[np.ndarray | None] = [None] * n
        groups: dict[tuple[int, int, int], list[int]] = {}
        for i, (t, _) in enumerate(prepped):
            groups.setdefault((t.shape[0], t.shape[-1], patches[i]), []).append(i)
        for (_, _, patch_m), idx in groups.items():
            s2 = torch.stack([prepped[i][0] for i in idx])
            dates = torch.tensor([doys[i] for i in idx], dtype=torch.long, device=self.device)
            g, tile = self.forward(s2, dates, patch_m // S2_RES_M, dense=dense)
            for j, i in enumerate(idx):
                grids[i], tiles[i] = g[j], tile[j]
        return [
            self._result(batch, i, grids[i], tiles[i], doys[i], sources[i], patches[i], prepped)
            for i in range(n)
        ]

    def _result(
        self,
        batch: Batch,
        i: int,
        grid: np.ndarray | None,
        tile: np.ndarray | None,
        doys: list[int],
        source: str,
        patch_m: int,
        prepped: list[tuple[Any, RoiWindow]],
    ) -> Embedding:
        assert grid is not None and tile is not None
        output = batch.output
        g, win = crop_padded(grid, prepped[i][1], batch.metas[i])
        mode = self.opts["grid_feature_mode"] if output.mode == "grid" else "patch"
        meta: dict[str, Any] = {
            "model": "anysat",
            "model_size": "base",
            "weights": dict(self.weights_record),
            "input_hw": hw_list(batch.inputs[i]),
            "image_size": int(prepped[i][0].shape[-1]),
            "patch_size_m": patch_m,
            "normalization": "per_tile_zscore",
            "bands": list(S2_BANDS),
            "n_frames": len(doys),
            "doy0_values": doys,
            "dates_source": source,
            "grid_feature_mode": self.opts["grid_feature_mode"],
            "pooled_source": self.opts["pooled_source"],
            "output_mode": output.mode,
            **self.run_meta(),
        }
        if win is not None:
            meta["roi_cropped"] = True
            meta["roi_window_in_model_input"] = [round(v, 6) for v in win]
        if output.mode == "pooled":
            if self.opts["pooled_source"] == "tile":
                vec, pooling = tile, "tile_native"
            elif output.pooling == "max":
                vec, pooling = g.max(axis=(1, 2)), "patch_max"
            else:
                vec, pooling = g.mean(axis=(1, 2)), "patch_mean"
            meta["pooling"] = pooling
            return pooled_embedding(vec, meta)
        kind = "anysat_dense_subpatch" if mode == "dense" else "anysat_patch_tokens"
        return grid_embedding(g, meta, kind)


__all__ = [
    "HF_REPO",
    "IMAGE_SIZE",
    "WEIGHTS_FILE",
    "AnySat",
    "build_anysat_encoder",
    "check_patch",
    "dense_grid",
    "frame_doys",
    "other_projector_shapes",
    "parse_config",
    "prepare_state_dict",
    "rpe_buckets",
    "zscore_tchw",
]
