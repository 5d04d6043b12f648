"""SatVision-TOA (NASA, giant): a SwinV2 pretrained with SimMIM on 14-channel MODIS
top-of-atmosphere imagery, 128 px at 1 km. Pooled 4096-D, grid 4096 x 4 x 4.

Why this model: the one catalog model trained on a coarse, daily, thermal-plus-reflective
sensor (MODIS), so it sees 128 km of ground per patch and the land-surface temperature.

The official code is NASA's pytorch-caney (github.com/nasa-nccs-hpda/pytorch-caney:
``pytorch_caney/models/encoders/swinv2.py`` and ``models/mim.py``; the SatVision-TOA config
``configs/mim_pretrain_swinv2_satvision_giant_128_onecycle_100ep.yaml``). The network is
written here from that source (rs-embed 0.3.1 vendors it; no code copied). The PyPI package
pytorch-caney 0.1.0 is an OLDER SwinV2 without the periodic extra norms (``NORM_PERIOD``)
the giant was trained with, so it can only check the reduced test configs without them.

Architecture (``SwinTransformerV2ForSimMIM``, module names of the published file):
``patch_embed`` (Conv2d 14 -> 512, kernel/stride 4, LayerNorm), 4 stages of depths
(2, 2, 42, 2), heads (16, 32, 64, 128), window 8 (stages whose side is <= 8 use the whole
side, unshifted), SwinV2 blocks (cosine attention with a clamped learnt ``logit_scale``, the
continuous log-spaced relative position bias ``cpb_mlp`` -> ``16 * sigmoid``, res-post-norm
``x + norm1(attn(x))``, ``x + norm2(mlp(x))``) and an extra LayerNorm ``norm3`` after every
6th block of a stage (``NORM_PERIOD: 6``), ``PatchMerging`` (2 x 2 concat, Linear 4C -> 2C,
LayerNorm 2C) at the end of stages 0-2, a final ``norm`` (4096) and the SimMIM
``mask_token`` (loaded, unused at inference).

Strict loading of ``mp_rank_00_model_states.pt`` (DeepSpeed's model states,
``{"module": state_dict}``): the keys are either the encoder's own (the layout rs-embed and
the anchor's ``make_ckpt.py`` write) or the training ``MiMModel``'s ``encoder.*`` (its
``decoder.*``, the SimMIM pixel head, is set aside, as pytorch-caney's own
``load_pretrained`` does); every encoder key must match by name and shape. A timm-style
layout with the merges at the start of stages 1-3 (``layers.{1,2,3}.downsample``) is
renumbered, as rs-embed does.

Inputs (spec §1.8, §3): the providers fetch the MODIS proxy as 7 bands (MOD09GA
``sur_refl_b01,b02,b03,b04,b06,b07`` surface reflectance DN and MOD21A1D ``LST_1KM``, from
two collections; see ``SENSOR``), assembled here into the 14 SatVision slots (MODIS bands
``1,2,3,26,6,20,7,27,28,29,31,32,33,34``): reflectance ``clip(DN / 10000, 0, 1)`` (slot 26,
the 1.38 um cirrus band, takes band 4); LST ``x 0.02`` when its largest finite magnitude is
above 1000 (DN -> kelvin), then each of the 8 emissive slots ``clip((K - min) / (max - min),
0, 1)`` with that slot's published min/max. A 14-channel input (the real L1B TOA stack) is
normalised by ``model_config["norm"]``: ``auto`` (default; an input within [-0.1, 1.5] is
taken as unit-scaled and clipped, else ``raw``), ``raw`` (reflective slots ``/100``,
emissive min-max, clipped to [0, 1]) or ``unit`` (clip). Then bilinear to 128 x 128
(``align_corners=False``). This is rs-embed 0.3.1's recipe; the anchor README lists the
proxy itself (surface reflectance and one LST for all thermal slots, instead of L1B TOA
radiances) as its departure from the upstream data, which no Earth Engine collection offers.

Outputs from one forward: pooled = ``forward_features`` (final ``norm``, mean over the 16
last-stage tokens: 4096-D; a model-pooled vector, so not cropped to an ROI, as in
rs-embed); grid = the last stage's feature map WITHOUT the final norm (``extra_features
[-1]``, the encoder's ``forward`` in pytorch-caney, as rs-embed takes it): 4096 x 4 x 4,
cropped to the ROI of a fetch square.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from rs_embed_ray.errors import ModelError
from rs_embed_ray.models.base import Embedding, ModelInfo
from rs_embed_ray.models.catalog import CATALOG
from rs_embed_ray.models.grids import crop_to_roi, grid_embedding, hw_list, pooled_embedding
from rs_embed_ray.models.preprocess import roi_window_from_meta
from rs_embed_ray.models.runtime import (
    Batch,
    TorchEmbedder,
    build_seeded,
    check_state_dict,
    load_prepared,
    strip_prefix,
    to_numpy,
)

log = logging.getLogger(__name__)

HF_REPO = "nasa-cisto-data-science-group/satvision-toa-giant-patch8-window8-128"
HF_FILENAME = "mp_rank_00_model_states.pt"
IMAGE_SIZE = 128
IN_CHANS = 14
PATCH = 4
LN_EPS = 1e-5  # nn.LayerNorm's default, as upstream

# name -> SwinV2 hyper-parameters. "giant" is the published SatVision-TOA; the others are
# TEST-ONLY reduced configs (same code paths, a few MB) for the oracle/golden tests and the
# emulator export, never for real embeddings: the giant has 2.6e9 parameters (10 GB float32).
VARIANTS: dict[str, dict[str, Any]] = {
    "giant": {
        "embed_dim": 512,
        "depths": (2, 2, 42, 2),
        "heads": (16, 32, 64, 128),
        "window": 8,
        "norm_period": 6,
    },
    # depth 6 in stage 2 so that the periodic extra norm (every 6th block) is exercised
    "test_tiny": {
        "embed_dim": 16,
        "depths": (2, 2, 6, 2),
        "heads": (2, 4, 8, 16),
        "window": 8,
        "norm_period": 6,
    },
    # no extra norms: the older SwinV2 of the pytorch-caney 0.1.0 package can build it
    "test_tiny_plain": {
        "embed_dim": 16,
        "depths": (2, 2, 2, 2),
        "heads": (2, 4, 8, 16),
        "window": 8,
        "norm_period": 0,
    },
}

# SatVision slots (MODIS band numbers) and their calibration (rs-embed 0.3.1 / pytorch-caney)
MODIS_BANDS = ("1", "2", "3", "26", "6", "20", "7", "27", "28", "29", "31", "32", "33", "34")
REFLECTANCE_SLOTS = (0, 1, 2, 3, 4, 6)
EMISSIVE_SLOTS = (5, 7, 8, 9, 10, 11, 12, 13)
EMISSIVE_MINS = np.array(
    [223.1222, 178.9174, 204.3739, 204.7677, 194.8686, 202.1759, 201.3823, 203.3537],
    dtype=np.float64,
)
EMISSIVE_MAXS = np.array(
    [352.7182, 261.2920, 282.5529, 319.0373, 295.0209, 324.0677, 321.5254, 285.9848],
    dtype=np.float64,
)
REFLECTANCE_DIVISOR = 100.0  # percent reflectance of a real 14-channel L1B stack
SR_SCALE = 10000.0  # MOD09GA surface reflectance DN
LST_SCALE = 0.02  # MOD21A1D LST_1KM DN -> kelvin
# the 7 fetched proxy bands: MOD09GA reflectance, then MOD21A1D LST
PROXY_BANDS = (
    "sur_refl_b01",
    "sur_refl_b02",
    "sur_refl_b03",
    "sur_refl_b04",
    "sur_refl_b06",
    "sur_refl_b07",
    "LST_1KM",
)
# slot -> index of its proxy band among the 6 reflectance bands (slot 26 takes band 4)
_REF_SOURCE = {0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 6: 5}
NORM_MODES = ("auto", "raw", "unit")
CONFIG_KEYS = ("norm", "variant", "hf_repo", "hf_revision", "filename")
_DOWNSAMPLE = re.compile(r"^layers\.(\d+)\.downsample\.(.*)$")


# ---------------------------------------------------------------------------------------
# the network
# ---------------------------------------------------------------------------------------


def relative_coords_table(window: int) -> Any:
    """(1, 2w-1, 2w-1, 2) log-spaced relative offsets, the input of ``cpb_mlp`` (SwinV2)."""
    import torch

    r = torch.arange(-(window - 1), window, dtype=torch.float32)
    table = torch.stack(torch.meshgrid(r, r, indexing="ij")).permute(1, 2, 0)[None].contiguous()
    if window > 1:
        table = table / (window - 1)
    table = table * 8
    return torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)


def relative_position_index(window: int) -> Any:
    """(w*w, w*w) index of each token pair's offset in the flattened coordinate table."""
    import torch

    c = torch.arange(window)
    coords = torch.stack(torch.meshgrid(c, c, indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
    rel[:, :, 0] += window - 1
    rel[:, :, 1] += window - 1
    rel[:, :, 0] *= 2 * window - 1
    return rel.sum(-1)


def shift_mask(side: int, window: int, shift: int) -> Any:
    """(nW, w*w, w*w) attention mask of a cyclically shifted window partition (-100 between
    tokens that came from different regions)."""
    import torch

    img = torch.zeros(side, side)
    cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    label = 0
    for hs in cuts:
        for ws in cuts:
            img[hs, ws] = label
            label += 1
    win = to_windows(img[None, :, :, None], window).reshape(-1, window * window)
    diff = win[:, None, :] - win[:, :, None]
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


def to_windows(x: Any, w: int) -> Any:
    """(B, H, W, C) -> (B * nW, w, w, C)."""
    b, h, wd, c = x.shape
    x = x.reshape(b, h // w, w, wd // w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, w, w, c)


def from_windows(x: Any, w: int, h: int, wd: int) -> Any:
    """(B * nW, w, w, C) -> (B, H, W, C)."""
    c = x.shape[-1]
    b = x.shape[0] // ((h // w) * (wd // w))
    x = x.reshape(b, h // w, wd // w, w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, wd, c)


def build_satvision(variant: str = "giant", in_chans: int = IN_CHANS) -> Any:
    """The SatVision-TOA SwinV2 encoder of ``variant`` (random init; nothing downloaded).

    Build the giant on ``torch.device("meta")`` to inspect its keys and shapes without
    allocating its 10 GB."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    spec = VARIANTS[normalize_variant(variant)]
    dim0, depths, heads = spec["embed_dim"], spec["depths"], spec["heads"]
    window, period = spec["window"], spec["norm_period"]
    max_logit = math.log(1.0 / 0.01)

    class WindowAttention(nn.Module):
        def __init__(self, dim: int, w: int, n_heads: int) -> None:
            super().__init__()
            self.w, self.n_heads = w, n_heads
            self.logit_scale = nn.Parameter(torch.log(10 * torch.ones(n_heads, 1, 1)))
            self.cpb_mlp = nn.Sequential(
                nn.Linear(2, 512), nn.ReLU(inplace=True), nn.Linear(512, n_heads, bias=False)
            )
            self.register_buffer("relative_coords_table", relative_coords_table(w))
            self.register_buffer("relative_position_index", relative_position_index(w))
            self.qkv = nn.Linear(dim, 3 * dim, bias=False)
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
            self.proj = nn.Linear(dim, dim)

        def forward(self, x: Any, mask: Any) -> Any:
            bw, n, c = x.shape
            bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
            qkv = F.linear(x, self.qkv.weight, bias).reshape(bw, n, 3, self.n_heads, -1)
            q, k, v = qkv.permute(2, 0, 3, 1, 4)
            attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
            attn = attn * torch.clamp(self.logit_scale, max=max_logit).exp()
            table = self.cpb_mlp(self.relative_coords_table).reshape(-1, self.n_heads)
            rpb = table[self.relative_position_index.reshape(-1)].reshape(n, n, -1)
            attn = attn + 16 * torch.sigmoid(rpb.permute(2, 0, 1))[None]
            if mask is not None:
                nw = mask.shape[0]
                attn = attn.reshape(bw // nw, nw, self.n_heads, n, n) + mask[None, :, None]
                attn = attn.reshape(bw, self.n_heads, n, n)
            x = (attn.softmax(-1) @ v).transpose(1, 2).reshape(bw, n, c)
            return self.proj(x)

    class Mlp(nn.Module):
        def __init__(self, dim: int) -> None:
            super().__init__()
            self.fc1 = nn.Linear(dim, 4 * dim)
            self.act = nn.GELU()
            self.fc2 = nn.Linear(4 * dim, dim)

        def forward(self, x: Any) -> Any:
            return self.fc2(self.act(self.fc1(x)))

    class Block(nn.Module):
        def __init__(self, dim: int, side: int, n_heads: int, shifted: bool, extra: bool):
            super().__init__()
            self.side = side
            self.w = min(window, side)
            self.shift = window // 2 if shifted and side > window else 0
            self.norm1 = nn.LayerNorm(dim)
            self.attn = WindowAttention(dim, self.w, n_heads)
            self.norm2 = nn.LayerNorm(dim)
            self.norm3 = nn.LayerNorm(dim) if extra else nn.Identity()
            self.mlp = Mlp(dim)
            mask = shift_mask(side, self.w, self.shift) if self.shift else None
            self.register_buffer("attn_mask", mask)

        def forward(self, x: Any) -> Any:
            b, n, c = x.shape
            s, w, sh = self.side, self.w, self.shift
            y = x.reshape(b, s, s, c)
            if sh:
                y = torch.roll(y, shifts=(-sh, -sh), dims=(1, 2))
            y = self.attn(to_windows(y, w).reshape(-1, w * w, c), self.attn_mask)
            y = from_windows(y.reshape(-1, w, w, c), w, s, s)
            if sh:
                y = torch.roll(y, shifts=(sh, sh), dims=(1, 2))
            x = x + self.norm1(y.reshape(b, n, c))
            x = x + self.norm2(self.mlp(x))
            return self.norm3(x)

    class PatchMerging(nn.Module):
        def __init__(self, dim: int, side: int) -> None:
            super().__init__()
            self.side = side
            self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
            self.norm = nn.LayerNorm(2 * dim)

        def forward(self, x: Any) -> Any:
            b, _, c = x.shape
            x = x.reshape(b, self.side, self.side, c)
            parts = (x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2])
            return self.norm(self.reduction(torch.cat(parts, -1).reshape(b, -1, 4 * c)))

    class Stage(nn.Module):
        def __init__(self, i: int) -> None:
            super().__init__()
            dim, side = dim0 * 2**i, IMAGE_SIZE // PATCH // 2**i
            self.blocks = nn.ModuleList(
                [
                    Block(dim, side, heads[i], j % 2 == 1, bool(period) and (j + 1) % period == 0)
                    for j in range(depths[i])
                ]
            )
            self.downsample = PatchMerging(dim, side) if i < len(depths) - 1 else None

        def forward(self, x: Any) -> Any:
            for blk in self.blocks:
                x = blk(x)
            return x if self.downsample is None else self.downsample(x)

    class PatchEmbed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Conv2d(in_chans, dim0, PATCH, stride=PATCH)
            self.norm = nn.LayerNorm(dim0)

        def forward(self, x: Any) -> Any:
            if tuple(x.shape[-2:]) != (IMAGE_SIZE, IMAGE_SIZE):
                raise ModelError(f"satvision takes {IMAGE_SIZE} px inputs, got {x.shape}.")
            return self.norm(self.proj(x).flatten(2).transpose(1, 2))

    class SatVisionEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.num_features = dim0 * 2 ** (len(depths) - 1)
            self.patch_embed = PatchEmbed()
            self.layers = nn.ModuleList([Stage(i) for i in range(len(depths))])
            self.norm = nn.LayerNorm(self.num_features)
            self.mask_token = nn.Parameter(torch.zeros(1, 1, dim0))
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    nn.init.trunc_normal_(m.weight, std=0.02)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)

        def forward(self, x: Any) -> tuple[Any, Any]:
            """(B, 14, 128, 128) -> (pooled (B, D) = forward_features, grid (B, D, h, w) =
            the last stage without the final norm)."""
            t = self.patch_embed(x)
            for layer in self.layers:
                t = layer(t)
            b, n, d = t.shape
            side = math.isqrt(n)
            grid = t.transpose(1, 2).reshape(b, d, side, side)
            return self.norm(t).mean(1), grid

    return SatVisionEncoder()


def encoder_state_dict(sd: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A published state dict -> (the encoder's keys, the keys set aside).

    ``module.`` / ``model.`` wrappers are peeled; a ``MiMModel`` file (``encoder.*`` +
    ``decoder.*``) keeps its ``encoder.*`` keys; merges numbered timm-style
    (``layers.{1,2,3}.downsample``) move to the end of the previous stage."""
    sd = strip_prefix(sd, ("module.", "model."), nested=True)
    aside: list[str] = []
    if any(k.startswith("encoder.") for k in sd):
        aside = [k for k in sd if not k.startswith("encoder.")]
        sd = {k[len("encoder.") :]: v for k, v in sd.items() if k.startswith("encoder.")}
    idx = sorted({int(m.group(1)) for k in sd if (m := _DOWNSAMPLE.match(k))})
    if idx and idx[0] == 1:
        out: dict[str, Any] = {}
        for k, v in sd.items():
            m = _DOWNSAMPLE.match(k)
            out[f"layers.{int(m.group(1)) - 1}.downsample.{m.group(2)}" if m else k] = v
        sd = out
    return sd, aside


def prepare_state_dict(model: Any, sd: dict[str, Any], *, path: str) -> dict[str, Any]:
    """Published SatVision-TOA keys -> this encoder's; strict apart from the keys set aside."""
    enc, aside = encoder_state_dict(sd)
    check_state_dict(model, enc, path=path, what="SatVision-TOA")
    if aside:
        log.info("satvision: set aside %d keys (e.g. %s)", len(aside), aside[:3])
    return enc


# ---------------------------------------------------------------------------------------
# preprocessing
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SatVisionConfig:
    norm: str = "auto"
    variant: str = "giant"


def parse_config(model_config: dict[str, Any] | None) -> SatVisionConfig:
    """``model_config`` -> :class:`SatVisionConfig`; a bad value raises ModelError naming it."""
    cfg = model_config or {}
    norm = str(cfg.get("norm") or "auto").strip().lower()
    if norm not in NORM_MODES:
        raise ModelError(
            f"satvision model_config norm must be one of {list(NORM_MODES)}, got {norm!r}."
        )
    return SatVisionConfig(norm, normalize_variant(cfg.get("variant")))


def normalize_variant(value: Any) -> str:
    """``model_config["variant"]`` -> a key of :data:`VARIANTS` (default giant)."""
    key = str(value or "giant").strip().lower()
    if key not in VARIANTS:
        raise ModelError(
            f"satvision model_config variant must be one of {sorted(VARIANTS)}, got {value!r}."
        )
    return key


def lst_kelvin(lst: np.ndarray) -> np.ndarray:
    """MOD21A1D LST: DN x 0.02 when the largest finite magnitude is above 1000, else as is
    (already kelvin)."""
    a = np.asarray(lst, dtype=np.float32)
    finite = a[np.isfinite(a)]
    if finite.size and float(np.abs(finite).max()) > 1000.0:
        a = a * np.float32(LST_SCALE)
    return a.astype(np.float32, copy=False)


def assemble_proxy(x: np.ndarray) -> np.ndarray:
    """(7, H, W) proxy bands (``PROXY_BANDS``: MOD09GA DN, MOD21A1D LST) -> the 14 SatVision
    slots, unit-scaled: reflectance ``clip(DN / 10000, 0, 1)`` (slot 26 from band 4), each
    emissive slot ``clip((K - min) / (max - min), 0, 1)`` of the one LST."""
    a = np.asarray(x, dtype=np.float32)
    ref = [np.clip(a[i] / np.float32(SR_SCALE), 0.0, 1.0) for i in range(6)]
    k = lst_kelvin(a[6])
    out = np.empty((IN_CHANS, *a.shape[1:]), dtype=np.float32)
    for slot, src in _REF_SOURCE.items():
        out[slot] = ref[src]
    for j, slot in enumerate(EMISSIVE_SLOTS):
        lo, hi = float(EMISSIVE_MINS[j]), float(EMISSIVE_MAXS[j])
        out[slot] = np.clip((k - lo) / (hi - lo), 0.0, 1.0)
    return out


def normalize(x: np.ndarray, mode: str) -> tuple[np.ndarray, str]:
    """A 14-channel stack -> [0, 1] (see the module docstring); returns the mode applied."""
    a = np.nan_to_num(np.asarray(x, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if mode == "auto":
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        mode = "unit" if lo >= -0.1 and hi <= 1.5 else "raw"
    if mode == "unit":
        return np.clip(a, 0.0, 1.0).astype(np.float32), "unit"
    y = a / np.float32(REFLECTANCE_DIVISOR)
    for j, slot in enumerate(EMISSIVE_SLOTS):
        lo_k, hi_k = float(EMISSIVE_MINS[j]), float(EMISSIVE_MAXS[j])
        y[slot] = (a[slot] - lo_k) / (hi_k - lo_k)
    return np.clip(y, 0.0, 1.0).astype(np.float32), "raw"


def resize(x: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """(C, H, W) -> (C, size, size), bilinear, ``align_corners=False`` (as is when it fits)."""
    import torch
    import torch.nn.functional as F

    if x.shape[-2:] == (size, size):
        return x.astype(np.float32, copy=False)
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None]
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)[0].numpy()


def prepare(x: np.ndarray, mode: str = "auto") -> tuple[np.ndarray, dict[str, Any]]:
    """A raw (7, H, W) proxy or (14, H, W) TOA patch -> ((14, 128, 128) in [0, 1], meta)."""
    a = np.asarray(x, dtype=np.float32)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 3 or a.shape[0] not in (len(PROXY_BANDS), IN_CHANS) or 0 in a.shape:
        raise ModelError(
            f"satvision expects (7, H, W) MODIS proxy bands {list(PROXY_BANDS)} or (14, H, W) "
            f"TOA channels (MODIS bands {','.join(MODIS_BANDS)}), got {tuple(a.shape)}."
        )
    if a.shape[0] == len(PROXY_BANDS):
        unit, applied = normalize(assemble_proxy(a), "unit")
        meta = {"input_kind": "modis_proxy_7", "norm_mode_effective": applied}
        meta["preprocess"] = "proxy_sr_div_10000_lst_minmax"
    else:
        unit, applied = normalize(a, mode)
        meta = {"input_kind": "toa_14", "norm_mode_effective": applied}
        meta["preprocess"] = f"toa_norm_{applied}"
    return resize(unit), meta


# ---------------------------------------------------------------------------------------
# the embedder
# ---------------------------------------------------------------------------------------


class SatVision(TorchEmbedder):
    """SatVision-TOA giant on the MODIS proxy (or a 14-channel TOA stack); see the module
    docstring. ``model_config``: ``norm`` (``auto|raw|unit``, for 14-channel inputs),
    ``variant`` (``giant``; the ``test_*`` variants are for tests only), ``hf_repo``,
    ``hf_revision``, ``filename``."""

    info: ClassVar[ModelInfo] = CATALOG["satvision"]
    CONFIG_KEYS: ClassVar[frozenset[str] | None] = frozenset(CONFIG_KEYS)
    batch_size_cpu = 2
    batch_size_cuda = 8

    config_parser = staticmethod(parse_config)

    def _load(self, weights: str | None) -> None:
        self.cfg = parse_config(self.model_config)
        self._init_runtime()
        if self.cfg.variant != "giant":
            log.warning("satvision: TEST-ONLY reduced variant %r", self.cfg.variant)
        resolved = self._resolve_weights(weights, filename=HF_FILENAME, hf_repo=HF_REPO)
        model = build_seeded(build_satvision, self.cfg.variant)
        model = load_prepared(model, resolved.path, prepare_state_dict)
        self.model = model.to(self.device).eval()

    def forward(self, xs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """One forward of prepared (14, 128, 128) inputs: ((B, D) pooled, (B, D, 4, 4))."""
        import torch

        t = torch.from_numpy(np.stack(xs)).to(self.device)
        with self.inference():
            pooled, grid = self.model(t)
        return to_numpy(pooled), to_numpy(grid)

    def _embed(self, batch: Batch) -> list[Embedding]:
        prepped = [prepare(x, self.cfg.norm) for x in batch.inputs]
        pooled, grids = self.forward([p[0] for p in prepped])
        out = []
        for i, (_, pmeta) in enumerate(prepped):
            meta: dict[str, Any] = {
                "model": "satvision",
                "weights": dict(self.weights_record),
                "variant": self.cfg.variant,
                "input_hw": hw_list(batch.inputs[i]),
                "image_size": IMAGE_SIZE,
                "in_chans": IN_CHANS,
                "modis_bands": list(MODIS_BANDS),
                "norm_mode": self.cfg.norm,
                **pmeta,
                "output_mode": batch.output.mode,
                **self.run_meta(),
            }
            if batch.output.mode == "pooled":
                meta["pooling"] = "model_pooled"
                out.append(pooled_embedding(pooled[i], meta))
                continue
            grid = crop_to_roi(grids[i], roi_window_from_meta(batch.metas[i]), meta)
            out.append(grid_embedding(grid, meta, "last_stage_feature_map"))
        return out


__all__ = [
    "VARIANTS",
    "EMISSIVE_MAXS",
    "EMISSIVE_MINS",
    "EMISSIVE_SLOTS",
    "HF_FILENAME",
    "HF_REPO",
    "MODIS_BANDS",
    "PROXY_BANDS",
    "SatVision",
    "SatVisionConfig",
    "assemble_proxy",
    "build_satvision",
    "encoder_state_dict",
    "normalize",
    "parse_config",
    "prepare",
    "normalize_variant",
    "prepare_state_dict",
]
