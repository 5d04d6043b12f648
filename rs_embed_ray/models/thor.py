"""THOR v1 (FM4CS): a channel-grouped ViT with ALiBi distances in metres, on Sentinel-2 (10
bands, GSD groups 10 m / 20 m) or Sentinel-1 VV/VH. Pooled 768-D, grid 768 x 36 x 36 at 288.

Why this model: one network for optical and SAR whose tokens know their ground size, so the
20 m bands are patched at their own resolution instead of being upsampled to 10 m.

No package ships THOR (the official code is github.com/FM4CS/THOR, with the TerraTorch
wrapper github.com/FM4CS/thor_terratorch_ext); the architecture is ported here from that
source (rs-embed 0.3.1 vendors it; no code copied). Module names follow the published
``thor_v1_vit_<variant>.pt`` (``{"state_dict": {"encoder.<key>": ...}}``), so the file loads
by name and shape:

* ``ind_patch_embed.patch_embed.<channel>``: one ``Conv2d(1, D, 16, 16)`` per channel of
  every product THOR knows (12 S2 bands, S1 VV/VH/HV/HH, 30 S3 bands), each band patched on
  its own; at inference the 16 x 16 kernel is resized to the patch size (8) by FlexiViT's
  pseudo-inverse resize (bicubic, antialiased resize matrix);
* channels are averaged within their group (``S2:Red,Green,Blue,NIR`` at 10 m;
  ``S2:RE1..RE4,SWIR1,SWIR2`` at 20 m; ``S1:IW-VH,IW-VV,...`` at 10 m ...), then each group's
  tokens get an auxiliary embedding: a 1-D sin-cos of the patch's ground size
  (``patch * GSD / (4 * 10 m)``) in the first ``D - band_dim`` dims and the group's
  ``band_embed`` (a fixed sin-cos over the group index, stored in the file) in the rest;
* the groups' tokens are concatenated (no CLS) and run through timm ``Block`` s
  (``models/vit_block``, LayerNorm eps 1e-6) with an additive 2-D ALiBi bias:
  ``-slope_h * |p_i - p_j|`` between patch centres in metres, divided by the largest patch
  ground size; ``encoder_slopes`` are the ALiBi head slopes;
* features are the last block's tokens without the final ``norm`` (the TerraTorch wrapper's
  ``forward_intermediates(..., intermediates_only=True)``; ``norm.*`` is loaded, unused).

Strict loading: the ``encoder.`` model of the file; ``pos_embed.*``, ``ref_pos_embed.*``,
``decoder_*`` / ``decode_*`` keys (the MAE decoder, absolute position tables the ALiBi
encoder does not use) are set aside, every other key must match by name and shape. Variants
``tiny|small|base|large`` (``model_config["variant"]``, default base).

Preprocessing (spec §3): S2 ``B2,B3,B4,B5,B6,B7,B8,B8A,B11,B12`` (THOR Blue, Green, Red,
RE1, RE2, RE3, NIR, RE4, SWIR1, SWIR2; B8 is the 10 m NIR, B8A the 20 m RE4): NaN -> 0,
clip to 0..10000, ``/10000``, then the THOR z-score (``MEAN``/``STD``); S1 linear VV/VH:
``clip(log1p(max(x, 0)) / p99, 0, 1)`` (p99 over the whole 2-band patch; dB input refused).
Then the ground cover is fixed: ``resize_mode="fixed"`` (default, upstream: the published
ground cover 2880 m, i.e. 288 px at 10 m; any input bilinear-resized to ``image_size``) or
``"native_snap"`` (rs-embed 0.3.1's default: a square-ish patch kept at its own size, centre
cropped to a square, then snapped to the nearest multiple of the patch/GSD unit (16 px for
S2, 8 px for S1) by centre crop or zero pad; sides above 384 px, above 3000 tokens, or
non-square beyond 8 px fall back to fixed). Each band is then bilinear-resized
(``align_corners=False``) to ``ground_cover / GSD`` pixels (20 m bands to half the side).

Where rs-embed 0.3.1 departs from the upstream recipe (anchor README): it keeps a 224 px
patch native (ground cover 2240 m) instead of resizing to 288; here the default is the
upstream 288 fixed and ``resize_mode="native_snap"`` gives rs-embed's behaviour. As in
rs-embed (and spec §3), the S2 fetch has 10 bands: THOR's 60 m group (B1 coastal aerosol, B9
water vapour) is absent, which the network allows (absent groups contribute no tokens).

Outputs from one forward: pooled = the mean (max) over all groups' patch tokens (rs-embed's
pooling), or over the ROI-cropped grid when the input carries a fetch-square window; grid =
each group's token grid bilinear-upsampled to the finest group's grid and averaged
(``group_merge=mean``): side / 8, e.g. 36 x 36 at 288, cropped to the ROI. S1 and S2 items
(by channel count) and items of different snapped sides run as separate forwards.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any, ClassVar

import numpy as np

from rs_embed_ray.errors import ModelError
from rs_embed_ray.models.base import Embedding, ModelInfo
from rs_embed_ray.models.catalog import CATALOG, S1_FLOAT
from rs_embed_ray.models.grids import crop_to_roi, grid_embedding, hw_list, pool, pooled_embedding
from rs_embed_ray.models.preprocess import roi_window_from_meta
from rs_embed_ray.models.runtime import (
    Batch,
    TorchEmbedder,
    build_seeded,
    check_state_dict,
    load_prepared,
    to_numpy,
)
from rs_embed_ray.models.terrafm import normalize_s1
from rs_embed_ray.models.vit_block import vit_block
from rs_embed_ray.specs import SensorSpec

log = logging.getLogger(__name__)

HF_REPO = "FM4CS/THOR-1.0-base"
HF_FILENAME = "thor_v1_vit_base.pt"
# embed_dim, depth, heads, band_embed_dim (thor_vit_<v>_encoder_alibi_patch_size_embed_v1)
VARIANTS: dict[str, dict[str, Any]] = {
    "tiny": {"dim": 192, "depth": 12, "heads": 3, "band_dim": 32},
    "small": {"dim": 384, "depth": 12, "heads": 6, "band_dim": 64},
    "base": {"dim": 768, "depth": 12, "heads": 12, "band_dim": 128},
    "large": {"dim": 1024, "depth": 24, "heads": 16, "band_dim": 256},
}
for _v, _spec in VARIANTS.items():
    _spec["file"] = f"thor_v1_vit_{_v}.pt"
    _spec["repo"] = f"FM4CS/THOR-1.0-{_v}"

KERNEL = 16  # the stored patch-embedding kernel
PATCH = 8  # the FlexiViT patch size used at inference (flexivit_patch_size_seqs=[8])
REF_PATCH = 4  # flexivit_ref_patch_size: the unit of the patch-size embedding
MIN_GSD = 10  # the finest GSD of any channel THOR knows
SCALE_M = 10  # metres per input pixel (S2 10 m grid, S1 10 m)
IMAGE_SIZE = 288  # the published ground cover 2880 m at 10 m
LN_EPS = 1e-6
MAX_NATIVE_SIDE = 384
MAX_NATIVE_TOKENS = 3000
SHAPE_TOL_PX = 8
RESIZE_MODES = ("fixed", "native_snap")

# channel -> (GSD m, patch-embedding name); the order of the published channel table
_S2 = {
    "S2:Red": 10,
    "S2:Green": 10,
    "S2:Blue": 10,
    "S2:NIR": 10,
    "S2:RE1": 20,
    "S2:RE2": 20,
    "S2:RE3": 20,
    "S2:RE4": 20,
    "S2:SWIR1": 20,
    "S2:SWIR2": 20,
    "S2:CoastAerosal": 60,
    "S2:WaterVapor": 60,
}
_S1 = {f"S1:{m}-{p}": 10 for m in ("IW", "EW") for p in ("VV", "VH", "HV", "HH")}
_S3 = {f"S3:Oa{i:02d}_reflectance": 240 for i in range(1, 22)}
_S3.update({f"S3:S{i}_reflectance_an": 480 for i in range(1, 7)})
_S3.update({f"S3:S{i}_BT_in": 960 for i in range(7, 10)})
CHANNEL_GSD: dict[str, int] = {**_S2, **_S1, **_S3}
# S1 modes share one embedding per polarisation
EMBED_NAME: dict[str, str] = {
    c: (f"S1:{c[-2:]}" if c.startswith("S1:") else c) for c in CHANNEL_GSD
}
_OA = [f"S3:Oa{i:02d}_reflectance" for i in range(1, 22)]
GROUPS: tuple[tuple[str, ...], ...] = (
    ("S2:Red", "S2:Green", "S2:Blue", "S2:NIR"),
    ("S2:RE1", "S2:RE2", "S2:RE3", "S2:RE4", "S2:SWIR1", "S2:SWIR2"),
    ("S2:CoastAerosal", "S2:WaterVapor"),
    ("S1:IW-VH", "S1:IW-VV", "S1:EW-VH", "S1:EW-VV"),
    ("S1:IW-HV", "S1:IW-HH", "S1:EW-HV", "S1:EW-HH"),
    tuple(_OA[0:7]),
    tuple(_OA[7:14]),
    tuple(_OA[14:21]),
    tuple(f"S3:S{i}_reflectance_an" for i in range(1, 7)),
    ("S3:S7_BT_in", "S3:S8_BT_in", "S3:S9_BT_in"),
)

# sensor band order -> THOR channel
S2_BANDS = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")
S2_CHANNELS = (
    "S2:Blue",
    "S2:Green",
    "S2:Red",
    "S2:RE1",
    "S2:RE2",
    "S2:RE3",
    "S2:NIR",
    "S2:RE4",
    "S2:SWIR1",
    "S2:SWIR2",
)
S1_CHANNELS = ("S1:IW-VV", "S1:IW-VH")
S1_SENSOR = SensorSpec(
    collection=S1_FLOAT, bands=("VV", "VH"), scale_m=10, cloudy_pct=None, modality="s1"
)
# the THOR S2 statistics of reflectance (DN / 10000), in S2_BANDS order
MEAN = np.array(
    [
        0.176620,
        0.195923,
        0.213948,
        0.263378,
        0.300818,
        0.313144,
        0.308133,
        0.320993,
        0.221550,
        0.175772,
    ],
    dtype=np.float32,
)
STD = np.array(
    [
        0.264520,
        0.252949,
        0.259180,
        0.272771,
        0.248175,
        0.235432,
        0.226434,
        0.223274,
        0.171606,
        0.156223,
    ],
    dtype=np.float32,
)
# ckpt_ignore of the reference loader: the MAE decoder and absolute position tables
_IGNORED = tuple(re.compile(p) for p in ("decoder_", "decode_", "ref_pos_embed", "pos_embed"))
CONFIG_KEYS = ("variant", "resize_mode", "image_size", "hf_repo", "hf_revision", "filename")


# ---------------------------------------------------------------------------------------
# fixed tables
# ---------------------------------------------------------------------------------------


def alibi_slopes(n: int) -> list[float]:
    """ALiBi head slopes (Press et al.): a geometric series, interleaved for n not 2^k."""

    def pow2(k: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(k) - 3)))
        return [start * start**i for i in range(k)]

    if math.log2(n).is_integer():
        return pow2(n)
    p = 2 ** math.floor(math.log2(n))
    return pow2(p) + alibi_slopes(2 * p)[0::2][: n - p]


def band_table(dim: int, n: int) -> np.ndarray:
    """(n, dim) 1-D sin-cos over group indices 0..n-1 (the MAE numpy recipe, float64)."""
    omega = np.arange(dim // 2, dtype=np.float32)
    omega /= dim / 2.0
    omega = 1.0 / 10000**omega
    out = np.einsum("m,d->md", np.arange(n), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_torch(dim: int, pos: Any) -> Any:
    """(M,) positions -> (M, dim) 1-D sin-cos, computed in float32 as the reference does."""
    import torch

    omega = torch.arange(dim // 2, dtype=torch.float32, device=pos.device)
    omega /= dim / 2.0
    omega = 1.0 / 10000**omega
    out = torch.einsum("m,d->md", pos.reshape(-1), omega)
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1).double()


@lru_cache(maxsize=8)
def _pinv(old: int, new: int) -> Any:
    """Pseudo-inverse of the (old^2, new^2) bicubic antialiased resize matrix (FlexiViT)."""
    import torch
    import torch.nn.functional as F

    basis = torch.eye(old * old).reshape(old * old, 1, old, old)
    mat = F.interpolate(basis, (new, new), mode="bicubic", antialias=True)
    return torch.linalg.pinv(mat.reshape(old * old, new * new))


def resize_kernel(w: Any, new: int) -> Any:
    """(O, I, k, k) conv kernel -> (O, I, new, new) by the pseudo-inverse resize."""
    o, i, k, _ = w.shape
    if k == new:
        return w
    pinv = _pinv(int(k), int(new)).to(device=w.device, dtype=w.dtype)
    return (w.reshape(o * i, k * k) @ pinv.T).reshape(o, i, new, new)


# ---------------------------------------------------------------------------------------
# the network
# ---------------------------------------------------------------------------------------


def build_thor(variant: str = "base") -> Any:
    """The THOR v1 encoder of ``variant`` as an ``nn.Module`` (random init; no download)."""
    import torch
    from torch import nn

    if variant not in VARIANTS:
        raise ModelError(f"Unknown THOR variant {variant!r}; choose one of {sorted(VARIANTS)}.")
    spec = VARIANTS[variant]
    dim, depth, heads, band_dim = spec["dim"], spec["depth"], spec["heads"], spec["band_dim"]
    pos_dim = dim - band_dim

    class ThorEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed_dim = dim
            self.register_buffer("encoder_slopes", torch.tensor(alibi_slopes(heads)))
            self.ind_patch_embed = nn.Module()
            names = dict.fromkeys(EMBED_NAME[c] for c in CHANNEL_GSD)
            self.ind_patch_embed.patch_embed = nn.ModuleDict(
                {n: nn.Conv2d(1, dim, KERNEL, stride=KERNEL) for n in names}
            )
            table = band_table(band_dim, len(GROUPS))
            self.band_embed = nn.ParameterDict(
                {
                    f"group{i}": nn.Parameter(torch.from_numpy(table[i]).float(), False)
                    for i in range(len(GROUPS))
                }
            )
            norm = partial(nn.LayerNorm, eps=LN_EPS)
            self.blocks = nn.ModuleList(
                [vit_block(dim, heads, 4.0, eps=LN_EPS) for _ in range(depth)]
            )
            self.norm = norm(dim)
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    nn.init.xavier_uniform_(m.weight)
                    nn.init.zeros_(m.bias)

        def embed(self, bands: dict[str, Any], patch: int) -> dict[str, Any]:
            """channel -> (B, n*n, D) patch tokens, the kernel resized to ``patch``."""
            out = {}
            for c, data in bands.items():
                conv = self.ind_patch_embed.patch_embed[EMBED_NAME[c]]
                w = resize_kernel(conv.weight, patch)
                y = torch.nn.functional.conv2d(data, w, bias=conv.bias, stride=patch)
                out[c] = y.flatten(2).transpose(1, 2)
            return out

        def forward_tokens(
            self, bands: dict[str, Any], *, ground_cover: int, patch: int = PATCH
        ) -> tuple[Any, list[tuple[int, int]]]:
            """channel -> (B, 1, side_c, side_c) with side_c = ground_cover / GSD_c.

            Returns the last block's tokens (B, N, D) (no final norm) and, per present
            group in group order, (group index, n) of its n x n token grid."""
            emb = self.embed(bands, patch)
            present = [
                (gi, [c for c in members if c in emb])
                for gi, members in enumerate(GROUPS)
                if any(c in emb for c in members)
            ]
            toks, layout, centres, sizes = [], [], [], []
            x0 = next(iter(bands.values()))
            for gi, members in present:
                first = members[0]
                gsd = CHANNEL_GSD[first]
                n = int(emb[first].shape[1] ** 0.5)
                ps = ground_cover // n // gsd
                if ps * gsd * n != ground_cover or bands[first].shape[-1] * gsd != ground_cover:
                    raise ModelError(
                        f"thor: {first} input of side {bands[first].shape[-1]} does not tile "
                        f"a {ground_cover} m ground cover with patch {patch} at {gsd} m."
                    )
                g = torch.stack([emb[c] for c in members], -1).mean(-1)
                rel = torch.ones(n * n, device=x0.device, dtype=x0.dtype) * ps * gsd
                pe = sincos_torch(pos_dim, rel / (REF_PATCH * MIN_GSD)).to(x0.dtype)
                be = self.band_embed[f"group{gi}"].expand(n * n, -1)
                toks.append(g + torch.cat((pe, be), dim=-1))
                layout.append((gi, n))
                line = torch.arange(0, n, dtype=x0.dtype, device=x0.device)
                line = (line * ps + ps / 2) * gsd
                centres.append(torch.cartesian_prod(line, line))
                sizes.append(ps * gsd)
            x = torch.cat(toks, dim=1)
            pts = torch.cat(centres, dim=0) / max(sizes)
            dist = torch.cdist(pts, pts) + 0.0
            slopes = self.encoder_slopes.unsqueeze(1).unsqueeze(2)
            bias = (dist.unsqueeze(0) * slopes * -1).unsqueeze(0)
            bias = bias.expand(x.shape[0], -1, -1, -1)
            for blk in self.blocks:
                x = blk(x, attn_mask=bias)
            return x, layout

    return ThorEncoder()


def merge_groups(tok: Any, layout: list[tuple[int, int]]) -> Any:
    """(B, N, D) tokens -> (B, D, n_max, n_max): each group's grid bilinear-upsampled to the
    finest one and averaged (the reference's ``group_merge=mean``)."""
    import torch
    import torch.nn.functional as F

    b, _, d = tok.shape
    n_max = max(n for _, n in layout)
    maps, i = [], 0
    for _, n in layout:
        t = tok[:, i : i + n * n, :].reshape(b, n, n, d).permute(0, 3, 1, 2)
        i += n * n
        if n != n_max:
            t = F.interpolate(t, size=(n_max, n_max), mode="bilinear", align_corners=False)
        maps.append(t)
    return torch.stack(maps, dim=0).mean(dim=0)


def encoder_state_dict(sd: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The ``encoder.`` model of a THOR checkpoint (``state_dict`` already unwrapped) and the
    keys set aside (other models, and the encoder's unused position/decoder tables)."""
    if sd and not any(k.startswith("encoder.") for k in sd):
        enc, other = dict(sd), []
    else:
        enc = {k[len("encoder.") :]: v for k, v in sd.items() if k.startswith("encoder.")}
        other = [k for k in sd if not k.startswith("encoder.")]
    ignored = [k for k in enc if any(p.match(k) for p in _IGNORED)]
    for k in ignored:
        enc.pop(k)
    return enc, other + ignored


def prepare_state_dict(model: Any, sd: dict[str, Any], *, path: str) -> dict[str, Any]:
    """Published THOR keys -> this encoder's keys; strict apart from the keys set aside."""
    enc, aside = encoder_state_dict(sd)
    check_state_dict(model, enc, path=path, what="THOR")
    if aside:
        log.info("thor: set aside %d keys (e.g. %s)", len(aside), aside[:3])
    return enc


# ---------------------------------------------------------------------------------------
# preprocessing
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ThorConfig:
    variant: str = "base"
    resize_mode: str = "fixed"
    image_size: int = IMAGE_SIZE


def parse_config(model_config: dict[str, Any] | None) -> ThorConfig:
    """``model_config`` -> :class:`ThorConfig`; a bad value raises ModelError naming it."""
    cfg = model_config or {}
    variant = str(cfg.get("variant") or "base").strip().lower()
    if variant not in VARIANTS:
        raise ModelError(f"thor: unknown variant {variant!r}; choose one of {sorted(VARIANTS)}.")
    mode = str(cfg.get("resize_mode") or "fixed").strip().lower()
    if mode not in RESIZE_MODES:
        raise ModelError(
            f"thor model_config resize_mode must be one of {list(RESIZE_MODES)}, got {mode!r}."
        )
    try:
        size = int(cfg.get("image_size") or IMAGE_SIZE)
    except (TypeError, ValueError):
        raise ModelError(f"thor model_config image_size must be an integer, got {cfg}.") from None
    if size <= 0 or size % (2 * PATCH):
        raise ModelError(
            f"thor model_config image_size must be a positive multiple of {2 * PATCH} "
            f"(patch {PATCH} at 10 m and 20 m), got {size}."
        )
    return ThorConfig(variant, mode, size)


def side_unit(gsds: tuple[int, ...]) -> int:
    """The pixel step (at SCALE_M) whose ground cover every group tiles with patch PATCH."""
    units = [PATCH * g // math.gcd(SCALE_M, PATCH * g) for g in sorted(set(gsds))]
    return math.lcm(*units)


def n_tokens(side: int, gsds: tuple[int, ...]) -> int | None:
    cover = side * SCALE_M
    total = 0
    for g in sorted(set(gsds)):
        if cover % (PATCH * g):
            return None
        total += (cover // (PATCH * g)) ** 2
    return total


def snap_native(
    a: np.ndarray, gsds: tuple[int, ...], *, fallback: int
) -> tuple[np.ndarray, int, str]:
    """rs-embed's ``native_snap``: (C, H, W) -> (square input, side, strategy). Falls back to
    ``fallback`` (fixed) when not near-square, too large or too many tokens."""
    h, w = a.shape[-2:]
    if abs(h - w) > SHAPE_TOL_PX:
        return a, fallback, "fixed_resize:rectangular_above_tolerance"
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    sq = a[:, y0 : y0 + s, x0 : x0 + s]
    unit = side_unit(gsds)
    lower = max(unit, (s // unit) * unit)
    upper = max(unit, ((s + unit - 1) // unit) * unit)
    side = lower if abs(s - lower) <= abs(upper - s) else upper
    if side > MAX_NATIVE_SIDE:
        return a, fallback, "fixed_resize:native_side_limit"
    tok = n_tokens(side, gsds)
    if tok is None or tok > MAX_NATIVE_TOKENS:
        return a, fallback, "fixed_resize:native_token_limit"
    if side < s:
        off = (s - side) // 2
        sq = sq[:, off : off + side, off : off + side]
    elif side > s:
        out = np.zeros((a.shape[0], side, side), dtype=np.float32)
        off = (side - s) // 2
        out[:, off : off + s, off : off + s] = sq
        sq = out
    return np.ascontiguousarray(sq, dtype=np.float32), side, "native_snap"


def normalize_s2(a: np.ndarray) -> np.ndarray:
    """DN (10, H, W) -> THOR z-score of reflectance."""
    x = np.clip(np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0), 0.0, 10000.0) / 10000.0
    x = (x - MEAN[:, None, None]) / np.maximum(STD, 1e-6)[:, None, None]
    return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


@dataclass
class Prepared:
    """One item ready for the network: channel -> (1, side_c, side_c) tensors."""

    bands: dict[str, Any]
    modality: str
    side: int
    strategy: str

    @property
    def key(self) -> tuple[str, int]:
        return (self.modality, self.side)


def to_bands(t: Any, channels: tuple[str, ...], side: int) -> dict[str, Any]:
    """Normalised (B, C, side, side) -> channel -> (B, 1, n_c, n_c), each band bilinear-resized
    (``align_corners=False``) to ``ground_cover / GSD`` pixels, as the reference wrapper does."""
    import torch.nn.functional as F

    cover = side * SCALE_M
    out: dict[str, Any] = {}
    for i, c in enumerate(channels):
        n = cover // CHANNEL_GSD[c]
        bc = t[:, i : i + 1]
        if bc.shape[-1] != n:
            bc = F.interpolate(bc, size=(n, n), mode="bilinear", align_corners=False)
        out[c] = bc
    return out


def prepare(x: np.ndarray, cfg: ThorConfig, device: Any = "cpu") -> Prepared:
    """A raw (10, H, W) S2 or (2, H, W) S1 patch -> the per-channel network inputs."""
    import torch
    import torch.nn.functional as F

    a = np.asarray(x, dtype=np.float32)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 3 or a.shape[0] not in (len(S2_CHANNELS), len(S1_CHANNELS)) or 0 in a.shape:
        raise ModelError(
            "thor expects (10, H, W) Sentinel-2 (B2,B3,B4,B5,B6,B7,B8,B8A,B11,B12) or (2, H, W) "
            f"Sentinel-1 VV/VH input, got {tuple(a.shape)}."
        )
    s1 = a.shape[0] == len(S1_CHANNELS)
    channels = S1_CHANNELS if s1 else S2_CHANNELS
    a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    if not s1:
        a = np.clip(a, 0.0, 10000.0)
    gsds = tuple(CHANNEL_GSD[c] for c in channels)
    side, strategy = cfg.image_size, "fixed_resize"
    if cfg.resize_mode == "native_snap":
        a, side, strategy = snap_native(a, gsds, fallback=cfg.image_size)
    a = normalize_s1(a) if s1 else normalize_s2(a)
    t = torch.from_numpy(np.ascontiguousarray(a)).to(device)[None]
    if t.shape[-2:] != (side, side):
        t = F.interpolate(t, size=(side, side), mode="bilinear", align_corners=False)
    bands = {c: v[0] for c, v in to_bands(t, channels, side).items()}
    return Prepared(bands, "s1" if s1 else "s2", side, strategy)


# ---------------------------------------------------------------------------------------
# the embedder
# ---------------------------------------------------------------------------------------


class Thor(TorchEmbedder):
    """THOR v1 on S2 (10 bands) or S1 VV/VH (by channel count); see the module docstring.

    ``model_config``: ``variant`` (``tiny|small|base|large``, default base), ``resize_mode``
    (``fixed`` default | ``native_snap``), ``image_size`` (default 288), ``hf_repo``,
    ``hf_revision``, ``filename``.
    """

    info: ClassVar[ModelInfo] = CATALOG["thor"]
    CONFIG_KEYS: ClassVar[frozenset[str] | None] = frozenset(CONFIG_KEYS)
    batch_size_cpu = 4
    batch_size_cuda = 32

    config_parser = staticmethod(parse_config)

    def _load(self, weights: str | None) -> None:
        self.cfg = parse_config(self.model_config)
        self._init_runtime()
        spec = VARIANTS[self.cfg.variant]
        resolved = self._resolve_weights(weights, filename=spec["file"], hf_repo=spec["repo"])
        model = build_seeded(build_thor, self.cfg.variant)
        model = load_prepared(model, resolved.path, prepare_state_dict)
        self.model = model.to(self.device).eval()

    def forward(self, items: list[Prepared]) -> tuple[np.ndarray, np.ndarray]:
        """One forward of same-shaped items: ((B, N, D) tokens, (B, D, n, n) merged grid)."""
        import torch

        bands = {c: torch.stack([p.bands[c] for p in items]) for c in items[0].bands}
        with self.inference():
            tok, layout = self.model.forward_tokens(bands, ground_cover=items[0].side * SCALE_M)
            grid = merge_groups(tok, layout)
        return to_numpy(tok), to_numpy(grid)

    def _embed(self, batch: Batch) -> list[Embedding]:
        n = len(batch)
        prepped = [prepare(x, self.cfg, self.device) for x in batch.inputs]
        tokens: list[Any] = [None] * n
        grids: list[Any] = [None] * n
        groups: dict[tuple[str, int], list[int]] = {}
        for i, p in enumerate(prepped):
            groups.setdefault(p.key, []).append(i)
        for idx in groups.values():
            tok, grid = self.forward([prepped[i] for i in idx])
            for j, i in enumerate(idx):
                tokens[i], grids[i] = tok[j], grid[j]
        return [self._result(batch, i, prepped[i], tokens[i], grids[i]) for i in range(n)]

    def _result(
        self, batch: Batch, i: int, p: Prepared, tok: np.ndarray, grid: np.ndarray
    ) -> Embedding:
        output = batch.output
        meta: dict[str, Any] = {
            "model": "thor",
            "weights": dict(self.weights_record),
            "variant": self.cfg.variant,
            "modality": p.modality,
            "input_hw": hw_list(batch.inputs[i]),
            "image_size": p.side,
            "ground_cover_m": p.side * SCALE_M,
            "patch_size": PATCH,
            "resize_mode": self.cfg.resize_mode,
            "preprocess_strategy": p.strategy,
            "preprocess": "s1_log1p_p99" if p.modality == "s1" else "s2_div_10000_thor_zscore",
            "group_merge": "mean",
            "output_mode": output.mode,
            **self.run_meta(),
        }
        win = roi_window_from_meta(batch.metas[i])
        grid = crop_to_roi(grid, win, meta)
        if output.mode == "pooled":
            if win is None:
                vec = tok.max(axis=0) if output.pooling == "max" else tok.mean(axis=0)
                meta["pooling"] = f"token_{'max' if output.pooling == 'max' else 'mean'}"
            else:
                vec = pool(grid, output.pooling)
                meta["pooling"] = f"roi_grid_{output.pooling}"
            return pooled_embedding(vec, meta)
        return grid_embedding(grid, meta, "thor_group_grid_mean")


__all__ = [
    "GROUPS",
    "HF_FILENAME",
    "HF_REPO",
    "MEAN",
    "S1_SENSOR",
    "STD",
    "VARIANTS",
    "Thor",
    "ThorConfig",
    "build_thor",
    "encoder_state_dict",
    "merge_groups",
    "parse_config",
    "prepare",
    "prepare_state_dict",
    "resize_kernel",
    "to_bands",
]
