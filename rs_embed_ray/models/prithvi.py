"""Prithvi-EO-2.0 (TL) on 6 Sentinel-2 bands, T frames: pooled 768-D, grid 768x14x14.

Why this model: Prithvi is the catalog's multi-temporal MAE. It sees a short time series
(pretrained on 4 frames) and takes the acquisition dates and the place as side inputs.

Architecture, written here from the published description of ``prithvi_mae.py`` (which ships
inside the HF repo and is not a maintained package): module names follow the published
state dict, so ``ibm-nasa-geospatial/Prithvi-EO-2.0-100M-TL`` ``Prithvi_EO_V2_100M_TL.pt``
(keys ``encoder.*`` and ``decoder.*``) loads by name and shape, strictly, into the encoder:

* ``patch_embed.proj``: ``Conv3d(6, D, kernel=(1, p, p), stride=(1, p, p))``; tokens are
  flattened in ``(t, h, w)`` order (time slowest);
* ``pos_embed`` (fixed, not learned): 3-D sin-cos table, ``[w | h | t]`` codes of
  ``D//16*6``, ``D//16*6`` and ``D//16*4`` dims (each ``[sin, cos]`` with
  ``omega_k = 1e4^(-2k/d)``), row 0 (CLS) zero. The file holds the table for the 4
  pretraining frames; it is regenerated for the frame count actually fed (the published
  inference script does the same);
* ``temporal_embed_enc``: ``scale * [sincos(year; D/2) | sincos(day_of_year; D/2)]`` per
  frame, added to that frame's tokens; ``location_embed_enc``: ``scale * [sincos(lat; D/2) |
  sincos(lon; D/2)]`` added to every patch token; ``scale`` is a learned scalar (``TL`` =
  ``coords_scale_learn``). The CLS token gets neither;
* ``cls_token``; ``depth`` ViT blocks (``models/vit_block``: timm's ``Block``, qkv bias,
  ``nn.LayerNorm`` eps 1e-5); ``norm``.

Variants (``model_config["variant"]``): ``prithvi_eo_v2_100_tl`` (768-D, 12 blocks, patch 16,
default), ``prithvi_eo_v2_300_tl`` (1024-D, 24 blocks, patch 16), ``prithvi_eo_v2_600_tl``
(1280-D, 32 blocks, patch 14 -> 16x16 grid); short spellings ``100_tl``/``100m_tl`` etc.
Decoder keys (``decoder.*``) are ignored explicitly; every encoder key must match.

Frames (a documented simplification of rs-embed's ``temporal_mode="auto"``): the catalog
asks the provider for a fixed 4-frame equal-bin series (``n_frames=4``) over the window.
Bit-identical frames (empty bins back-filled with the whole-window composite) are dropped,
keeping the first, as rs-embed does, so T is 1..4. A CHW input is one frame. Frame dates
are the midpoints of the provider's bins (``fetch_meta["frames"]``), else of the same
equal split of the request window; ``temporal_coords`` = (year, day of year) of each. The
window-length rule ``T = clamp(days // 28, 1, 4)`` of rs-embed is not applied: a window
shorter than 8 weeks still gets up to 4 (shorter) bins. ``location_coords`` = (lat, lon) of
the place centre: Prithvi needs georeferenced input.

Preprocessing (``model_config["normalization"]``):

* ``"upstream"`` (default): the published recipe (the HF repo's ``inference.py``; the
  ``mean``/``std`` that terratorch registers for every Prithvi-EO-2.0 model):
  ``(DN - mean) / std`` per band with the ``pretrained_cfg`` mean/std of the repo's
  ``config.json`` next to the weights (else the published v2 values, ``V2_MEAN``/``V2_STD``,
  in HLS reflectance x 10000, the scale of S2 SR DN); a missing (NaN) pixel becomes 0.0001
  after normalising, as upstream does with its nodata value. This departs from rs-embed
  0.3.1, whose adapter feeds ``DN / 10000`` clipped to [0, 1] and never applies the
  config's mean/std (spec §3a): a model trained on z-scores then sees inputs around
  0.1-0.3 instead of around 0, far outside its training distribution. Found by the
  preprocessing oracle (tests/oracle/test_oracle_prithvi.py, terratorch's constants);
* ``"rs_embed"``: rs-embed 0.3.1's ``DN / 10000`` clipped to [0, 1], NaN -> 0 (what every
  prithvi export of this project did before; matches the reference exports).

Then per frame a centre pad to a square (reflect; edge when too wide) and a bilinear
resize to 224 (``align_corners=False``), in either mode. Outputs: last block + ``norm``, CLS
dropped; grid = mean over frames of the (t, h, w) token grid; pooled = mean (or max) over
all patch tokens of all frames. A padded or ROI-windowed input has its grid cropped back
to the real area before pooling. One forward per distinct T in a batch (usually one).
"""

from __future__ import annotations

import json
import logging
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rs_embed_ray.errors import ModelError, WeightsError
from rs_embed_ray.models.base import Embedding, ModelInfo
from rs_embed_ray.models.catalog import CATALOG
from rs_embed_ray.models.grids import crop_padded, grid_embedding, hw_list, pool, pooled_embedding
from rs_embed_ray.models.preprocess import RoiWindow, as_tchw, square_pad
from rs_embed_ray.models.runtime import (
    Batch,
    TorchEmbedder,
    build_seeded,
    check_state_dict,
    load_prepared,
    strip_prefix,
    to_numpy,
)
from rs_embed_ray.models.vit_block import vit_block
from rs_embed_ray.specs import BBox, PointBuffer, SpatialSpec, TemporalSpec, window_of

log = logging.getLogger(__name__)

DEFAULT_VARIANT = "prithvi_eo_v2_100_tl"
VARIANTS: dict[str, dict[str, Any]] = {
    "prithvi_eo_v2_100_tl": {
        "embed_dim": 768,
        "depth": 12,
        "num_heads": 12,
        "patch": 16,
        "repo": "ibm-nasa-geospatial/Prithvi-EO-2.0-100M-TL",
        "file": "Prithvi_EO_V2_100M_TL.pt",
    },
    "prithvi_eo_v2_300_tl": {
        "embed_dim": 1024,
        "depth": 24,
        "num_heads": 16,
        "patch": 16,
        "repo": "ibm-nasa-geospatial/Prithvi-EO-2.0-300M-TL",
        "file": "Prithvi_EO_V2_300M_TL.pt",
    },
    "prithvi_eo_v2_600_tl": {
        "embed_dim": 1280,
        "depth": 32,
        "num_heads": 16,
        "patch": 14,
        "repo": "ibm-nasa-geospatial/Prithvi-EO-2.0-600M-TL",
        "file": "Prithvi_EO_V2_600M_TL.pt",
    },
}
_ALIASES = {
    f"{size}{suffix}": f"prithvi_eo_v2_{size}_tl"
    for size in ("100", "300", "600")
    for suffix in ("_tl", "m_tl")
}
# The published MAE decoder (ignored on load; the test checkpoint writer uses it).
DECODER = {"decoder_embed_dim": 512, "decoder_depth": 8, "decoder_num_heads": 16}
IN_CHANS = 6
IMAGE_SIZE = 224
PRETRAIN_FRAMES = 4
MAX_FRAMES = 4
MAX_GAP_DAYS = 184  # the ~6 month upper end of the pretraining frame spacing
BAND_NAMES = ("BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2")
# the published Prithvi-EO-2.0 input statistics (config.json pretrained_cfg; terratorch's
# PRITHVI_V2_MEAN / PRITHVI_V2_STD), HLS reflectance x 10000
V2_MEAN = (1087.0, 1342.0, 1433.0, 2734.0, 1958.0, 1363.0)
V2_STD = (2248.0, 2179.0, 2178.0, 1850.0, 1242.0, 1049.0)
NODATA_FLOAT = 0.0001  # upstream's value for a missing pixel after normalising
NORMALIZATIONS = ("upstream", "rs_embed")


def normalize_variant(name: Any) -> str:
    key = str(name or DEFAULT_VARIANT).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in VARIANTS:
        raise ModelError(
            f"Unknown prithvi variant {name!r}; choose one of {sorted(VARIANTS)} "
            f"(or {sorted(_ALIASES)})."
        )
    return key


# ---------------------------------------------------------------------------------------
# fixed sin-cos codes
# ---------------------------------------------------------------------------------------


def sincos_1d_np(dim: int, pos: Any) -> np.ndarray:
    """(M,) positions -> (M, dim) float64 ``[sin(p w_k), cos(p w_k)]``, w_k = 1e4^(-2k/dim)."""
    omega = np.arange(dim // 2, dtype=np.float64) / (dim / 2.0)
    omega = 1.0 / 10000.0**omega
    ang = np.asarray(pos, dtype=np.float64).reshape(-1, 1) * omega.reshape(1, -1)
    return np.concatenate([np.sin(ang), np.cos(ang)], axis=1)


@lru_cache(maxsize=32)
def pos_embed_3d(dim: int, t: int, h: int, w: int) -> np.ndarray:
    """(1 + t*h*w, dim) float32 table, tokens in (t, h, w) order; row 0 (CLS) is zero."""
    if dim % 16:
        raise ModelError(f"prithvi embed_dim must be a multiple of 16, got {dim}.")
    wd = hd = dim // 16 * 6
    td = dim // 16 * 4
    w_emb = np.tile(sincos_1d_np(wd, np.arange(w)), (t * h, 1))
    h_emb = np.tile(np.repeat(sincos_1d_np(hd, np.arange(h)), w, axis=0), (t, 1))
    t_emb = np.repeat(sincos_1d_np(td, np.arange(t)), h * w, axis=0)
    table = np.concatenate([w_emb, h_emb, t_emb], axis=1)
    return np.concatenate([np.zeros((1, dim)), table], axis=0).astype(np.float32)


def sincos_1d_torch(dim: int, pos: Any) -> Any:
    """float32 torch version for the coordinate encoders (plain outer product)."""
    import torch

    omega = torch.arange(dim // 2, dtype=torch.float32, device=pos.device) / (dim / 2.0)
    omega = 1.0 / 10000.0**omega
    ang = pos.reshape(-1, 1).float() * omega.reshape(1, -1)
    return torch.cat([torch.sin(ang), torch.cos(ang)], dim=1)


# ---------------------------------------------------------------------------------------
# the encoder
# ---------------------------------------------------------------------------------------


def build_prithvi_encoder(variant: str = DEFAULT_VARIANT) -> Any:
    """The Prithvi-EO-2.0 TL encoder as an ``nn.Module`` (random init; no download)."""
    import torch
    from torch import nn

    cfg = VARIANTS[normalize_variant(variant)]
    dim, patch = int(cfg["embed_dim"]), int(cfg["patch"])
    side = IMAGE_SIZE // patch

    class PatchEmbed3D(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Conv3d(
                IN_CHANS, dim, kernel_size=(1, patch, patch), stride=(1, patch, patch)
            )

    class CoordsEncoder(nn.Module):
        """``scale * [sincos(a; D/2) | sincos(b; D - D/2)]`` of a coordinate pair."""

        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.full((1,), 0.1))

        def forward(self, pair: Any) -> Any:
            lead = pair.shape[:-1]
            a = sincos_1d_torch(dim // 2, pair[..., 0].reshape(-1))
            b = sincos_1d_torch(dim - dim // 2, pair[..., 1].reshape(-1))
            return self.scale * torch.cat([a, b], dim=-1).reshape(*lead, dim)

    class PrithviEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed_dim = dim
            self.patch_size = patch
            self.grid_side = side
            self.patch_embed = PatchEmbed3D()
            self.temporal_embed_enc = CoordsEncoder()
            self.location_embed_enc = CoordsEncoder()
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
            table = torch.from_numpy(pos_embed_3d(dim, PRETRAIN_FRAMES, side, side))
            self.register_buffer("pos_embed", table.unsqueeze(0))
            heads = int(cfg["num_heads"])
            self.blocks = nn.ModuleList(
                [vit_block(dim, heads, 4.0, eps=1e-5) for _ in range(int(cfg["depth"]))]
            )
            self.norm = nn.LayerNorm(dim)
            self._pos_cache: dict[tuple[int, int, int, str], Any] = {}
            w = self.patch_embed.proj.weight.data
            nn.init.xavier_uniform_(w.view(w.shape[0], -1))
            nn.init.normal_(self.cls_token, std=0.02)
            for m in self.blocks.modules():
                if isinstance(m, nn.Linear):
                    nn.init.xavier_uniform_(m.weight)
                    nn.init.zeros_(m.bias)

        def pos_for(self, t: int, h: int, w: int, device: Any) -> Any:
            key = (t, h, w, str(device))
            hit = self._pos_cache.get(key)
            if hit is None:
                hit = torch.from_numpy(pos_embed_3d(dim, t, h, w)).unsqueeze(0).to(device)
                self._pos_cache[key] = hit
            return hit

        def forward_tokens(self, x: Any, temporal_coords: Any, location_coords: Any) -> Any:
            """(B, C, T, H, W) + (B, T, 2) (year, doy) + (B, 2) (lat, lon) -> (B, T, h, w, D).

            Patch tokens of the last block after ``norm``; the CLS token is dropped.
            """
            tok = self.patch_embed.proj(x)
            b, _, t, h, w = tok.shape
            tok = tok.flatten(2).transpose(1, 2)
            pos = self.pos_for(t, h, w, tok.device)
            tok = tok + pos[:, 1:, :]
            with torch.autocast(device_type=tok.device.type, enabled=False):
                tenc = self.temporal_embed_enc(temporal_coords.float())  # (B, T, D)
                lenc = self.location_embed_enc(location_coords.float()).unsqueeze(1)  # (B,1,D)
            tok = tok + torch.repeat_interleave(tenc, h * w, dim=1)
            tok = tok + lenc
            cls = (self.cls_token + pos[:, :1, :]).expand(b, -1, -1)
            seq = torch.cat([cls.to(tok.dtype), tok], dim=1)
            for blk in self.blocks:
                seq = blk(seq)
            seq = self.norm(seq)
            return seq[:, 1:, :].reshape(b, t, h, w, dim)

    return PrithviEncoder()


def prepare_state_dict(model: Any, sd: dict[str, Any], *, path: str) -> dict[str, Any]:
    """Published PrithviMAE keys -> this encoder's keys (strict; decoder ignored by name).

    ``encoder.*`` keys are the encoder; ``decoder.*`` keys are dropped. A checkpoint with no
    ``encoder.`` prefix (an encoder-only export) is accepted as is. ``pos_embed`` is kept as
    a key (it must be present) but its values are replaced by the regenerated table, as the
    published inference code does, since its length depends on the frame count.
    """
    sd = strip_prefix(dict(sd), ("module.", "model."), nested=True)
    ignored = sorted(k for k in sd if k.startswith("decoder."))
    for k in ignored:
        sd.pop(k)
    if any(k.startswith("encoder.") for k in sd):
        enc = {k[len("encoder.") :]: v for k, v in sd.items() if k.startswith("encoder.")}
        stray = sorted(k for k in sd if not k.startswith("encoder."))
    else:
        enc, stray = dict(sd), []
    own = model.state_dict()
    if "pos_embed" in enc:
        file_shape = tuple(enc["pos_embed"].shape)
        if file_shape != tuple(own["pos_embed"].shape):
            log.info("prithvi: file pos_embed %s replaced by the regenerated table", file_shape)
        enc["pos_embed"] = own["pos_embed"].clone()
    check_state_dict(model, enc, path=path, what="Prithvi", stray=stray)
    if ignored:
        log.info("prithvi: ignored %d decoder keys (e.g. %s)", len(ignored), ignored[:2])
    return enc


def _check_sidecar_config(weights_path: Path, variant: str) -> dict[str, Any] | None:
    """If the repo's ``config.json`` sits next to the weights, check it names this variant."""
    cfg_path = weights_path.parent / "config.json"
    if not cfg_path.is_file():
        return None
    try:
        pre = json.loads(cfg_path.read_text()).get("pretrained_cfg") or {}
    except (OSError, ValueError):
        return None
    want = VARIANTS[variant]
    checks = {
        "embed_dim": want["embed_dim"],
        "depth": want["depth"],
        "num_heads": want["num_heads"],
        "in_chans": IN_CHANS,
    }
    bad = [f"{k}={pre[k]!r} (expected {v})" for k, v in checks.items() if k in pre and pre[k] != v]
    if "patch_size" in pre and list(pre["patch_size"])[-1] != want["patch"]:
        bad.append(f"patch_size={pre['patch_size']!r} (expected patch {want['patch']})")
    if bad:
        raise WeightsError(
            f"{cfg_path} describes a different Prithvi model than variant {variant!r}: "
            + ", ".join(bad)
            + ". Pass the matching model_config variant."
        )
    return pre


# ---------------------------------------------------------------------------------------
# frames, dates, places
# ---------------------------------------------------------------------------------------


def _norm_stats(pre: dict[str, Any] | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The per-band mean/std of the repo's ``pretrained_cfg`` (6 values each), else V2's."""
    pre = pre or {}
    mean, std = pre.get("mean"), pre.get("std")
    try:
        if mean is not None and std is not None and len(mean) == len(std) == IN_CHANS:
            m, s = tuple(float(v) for v in mean), tuple(float(v) for v in std)
            if all(v > 0 for v in s):
                return m, s
    except (TypeError, ValueError):
        pass
    return V2_MEAN, V2_STD


def split_days(start: str, end: str, n: int) -> list[tuple[date, date]]:
    """``n`` equal whole-day bins over [start, end); the last ends at ``end`` (provider rule)."""
    d0, d1 = date.fromisoformat(str(start)), date.fromisoformat(str(end))
    total = (d1 - d0).days
    bounds = [d0.toordinal() + (total * i) // n for i in range(n)] + [d1.toordinal()]
    return [(date.fromordinal(bounds[i]), date.fromordinal(bounds[i + 1])) for i in range(n)]


def midpoint(start: date, end: date) -> date:
    """``start + (end - start) / 2`` truncated to a day (rs-embed's ``midpoint_date``)."""
    return start + timedelta(days=max(0, (end - start).days) // 2)


def frame_dates(
    n: int, temporal: TemporalSpec | None, fetch_meta: dict[str, Any] | None
) -> tuple[list[date], str]:
    """Midpoint date of each of ``n`` frames and where the bins came from."""
    frames = (fetch_meta or {}).get("frames")
    if isinstance(frames, list) and len(frames) == n and n > 0:
        try:
            bins = [
                (date.fromisoformat(str(f["start"])), date.fromisoformat(str(f["end"])))
                for f in frames
            ]
            return [midpoint(a, b) for a, b in bins], "fetch_meta_frames"
        except (KeyError, TypeError, ValueError):
            pass
    start, end = window_of(temporal)
    return [midpoint(a, b) for a, b in split_days(start, end, n)], "window_split"


def place_lat_lon(spatial: SpatialSpec | None) -> tuple[float, float]:
    if isinstance(spatial, (BBox, PointBuffer)):
        lon, lat = spatial.center()
        return float(lat), float(lon)
    raise ModelError(
        "prithvi needs georeferenced input: pass a BBox or PointBuffer for every place "
        f"(location_coords come from its centre); got {type(spatial).__name__}."
    )


def dedupe_frames(x: np.ndarray) -> list[int]:
    """Indices of the frames kept when bit-identical repeats are dropped (first kept)."""
    kept: list[int] = []
    for i in range(x.shape[0]):
        if not any(np.array_equal(x[i], x[j], equal_nan=True) for j in kept):
            kept.append(i)
    return kept


class Prithvi(TorchEmbedder):
    """Prithvi-EO-2.0 TL on S2 B2,B3,B4,B8A,B11,B12 (30 m), up to 4 frames, dates + place.

    ``model_config``: ``variant`` (see module docstring), ``normalization`` (``upstream``,
    default, or ``rs_embed``), ``dedupe_frames`` (default True), ``hf_repo``,
    ``hf_revision``, ``filename``.
    """

    info: ClassVar[ModelInfo] = CATALOG["prithvi"]
    CONFIG_KEYS: ClassVar[frozenset[str] | None] = frozenset(
        {"variant", "dedupe_frames", "hf_repo", "hf_revision", "filename"}
    )
    batch_size_cpu = 4
    batch_size_cuda = 16

    def _load(self, weights: str | None) -> None:
        cfg = self.model_config
        self.variant = normalize_variant(cfg.get("variant"))
        spec = VARIANTS[self.variant]
        self.dedupe = bool(cfg.get("dedupe_frames", True))
        norm = str(cfg.get("normalization") or "upstream").strip().lower()
        if norm not in NORMALIZATIONS:
            raise ModelError(
                f"prithvi normalization must be one of {list(NORMALIZATIONS)}, got "
                f"{cfg.get('normalization')!r}."
            )
        self.normalization = norm
        self._init_runtime()
        resolved = self._resolve_weights(weights, filename=spec["file"], hf_repo=spec["repo"])
        model = build_seeded(build_prithvi_encoder, self.variant)
        pre = None
        if resolved.path is not None:
            pre = _check_sidecar_config(resolved.path, self.variant)
        self.mean, self.std = _norm_stats(pre)
        model = load_prepared(model, resolved.path, prepare_state_dict)
        self.model = model.to(self.device).eval()
        self.embed_dim = int(spec["embed_dim"])
        log.info(
            "prithvi %s loaded on %s (amp=%s, weights=%s)",
            self.variant,
            self.device,
            self._amp_dtype,
            self.weights_record.get("weights"),
        )

    # ---- inputs ----------------------------------------------------------------------

    def _as_tchw(self, x: Any) -> np.ndarray:
        bands = self.info.sensor.bands  # type: ignore[union-attr]
        a = as_tchw(x, "prithvi", bands, MAX_FRAMES, "the catalog fetches 4 equal bins")
        return np.where(np.isfinite(a), a, np.float32(np.nan))  # +-inf: missing, like NaN

    def select_frames(
        self, x: Any, temporal: TemporalSpec | None, fetch_meta: dict[str, Any] | None
    ) -> tuple[np.ndarray, list[date], dict[str, Any]]:
        """Raw (T, 6, H, W) frames kept for the forward, their dates, and frame meta."""
        a = self._as_tchw(x)
        dates, source = frame_dates(a.shape[0], temporal, fetch_meta)
        keep = dedupe_frames(a) if self.dedupe else list(range(a.shape[0]))
        kept_dates = [dates[i] for i in keep]
        gap = max(
            ((kept_dates[i + 1] - kept_dates[i]).days for i in range(len(keep) - 1)), default=0
        )
        meta: dict[str, Any] = {
            "n_frames_input": int(a.shape[0]),
            "n_frames_used": len(keep),
            "n_duplicate_frames_dropped": int(a.shape[0] - len(keep)),
            "frame_dates": [d.isoformat() for d in kept_dates],
            "frame_dates_source": source,
            "max_frame_gap_days": int(gap),
        }
        if gap > MAX_GAP_DAYS:
            meta["temporal_spacing_out_of_range"] = True
            log.warning(
                "prithvi frame spacing %d d exceeds the ~%d d maximum seen in pretraining; "
                "shorten the window to stay in distribution",
                gap,
                MAX_GAP_DAYS,
            )
        return a[keep], kept_dates, meta

    def preprocess(self, frames: list[np.ndarray]) -> tuple[list[Any], list[RoiWindow]]:
        """Raw (T, 6, H, W) frame stacks -> (T, 6, 224, 224) tensors; content windows."""
        import torch
        import torch.nn.functional as F

        out: list[Any] = [None] * len(frames)
        wins: list[RoiWindow] = [(0.0, 1.0, 0.0, 1.0)] * len(frames)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, f in enumerate(frames):
            groups.setdefault((int(f.shape[-2]), int(f.shape[-1])), []).append(i)
        for idx in groups.values():
            t = torch.from_numpy(np.concatenate([frames[i] for i in idx])).to(self.device)
            missing = torch.isnan(t)
            if self.normalization == "upstream":
                m = torch.tensor(self.mean, dtype=t.dtype, device=t.device).view(1, -1, 1, 1)
                s = torch.tensor(self.std, dtype=t.dtype, device=t.device).view(1, -1, 1, 1)
                t = torch.where(missing, NODATA_FLOAT, (t - m) / s)
            else:
                t = torch.clamp(torch.where(missing, 0.0, t) / 10000.0, 0.0, 1.0)
            t, win = square_pad(t)
            if t.shape[-1] != IMAGE_SIZE:
                t = F.interpolate(
                    t, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False
                )
            pos = 0
            for i in idx:
                n = int(frames[i].shape[0])
                out[i] = t[pos : pos + n]
                wins[i] = win
                pos += n
        return out, wins

    # ---- forward ---------------------------------------------------------------------

    def forward(self, x: Any, temporal_coords: Any, location_coords: Any) -> np.ndarray:
        """One forward: (B, T, 6, 224, 224) -> (B, T, D, h, w) float32 numpy."""
        with self.inference():
            tok = self.model.forward_tokens(
                x.permute(0, 2, 1, 3, 4).contiguous(), temporal_coords, location_coords
            )
        return to_numpy(tok.float().permute(0, 1, 4, 2, 3))

    def _embed(self, batch: Batch) -> list[Embedding]:
        """Embed raw (T, 6, H, W) series; one forward per distinct frame count."""
        import torch

        n, output, metas = len(batch), batch.output, batch.metas
        if len(batch.spatials) != n:
            raise ModelError(
                f"prithvi got {n} inputs, {len(batch.spatials)} spatials and {len(metas)} "
                "fetch_metas."
            )
        frames: list[np.ndarray] = []
        tcoords: list[list[list[float]]] = []
        lcoords: list[list[float]] = []
        fmetas: list[dict[str, Any]] = []
        for i in range(n):
            lat, lon = place_lat_lon(batch.spatials[i])
            f, dates, fm = self.select_frames(batch.inputs[i], batch.temporal, metas[i])
            frames.append(f)
            tcoords.append([[float(d.year), float(d.timetuple().tm_yday)] for d in dates])
            lcoords.append([lat, lon])
            fmetas.append(fm)
        xs, pad_wins = self.preprocess(frames)

        grids: list[np.ndarray | None] = [None] * n  # (T, D, h, w) per item
        by_t: dict[int, list[int]] = {}
        for i, f in enumerate(frames):
            by_t.setdefault(int(f.shape[0]), []).append(i)
        for idx in by_t.values():
            x = torch.stack([xs[i] for i in idx])
            tc = torch.tensor([tcoords[i] for i in idx], dtype=torch.float32, device=self.device)
            lc = torch.tensor([lcoords[i] for i in idx], dtype=torch.float32, device=self.device)
            out = self.forward(x, tc, lc)
            for j, i in enumerate(idx):
                grids[i] = out[j]

        results: list[Embedding] = []
        for i in range(n):
            g = grids[i]
            assert g is not None
            g, win = crop_padded(g, pad_wins[i], metas[i])
            meta: dict[str, Any] = {
                "model": "prithvi",
                "variant": self.variant,
                "weights": dict(self.weights_record),
                "input_hw": hw_list(batch.inputs[i]),
                "image_size": IMAGE_SIZE,
                "preprocess": (
                    "upstream_zscore_pad_square_bilinear"
                    if self.normalization == "upstream"
                    else "dn_div_10000_clip01_pad_square_bilinear"
                ),
                "normalization": self.normalization,
                "bands": list(self.info.sensor.bands),  # type: ignore[union-attr]
                "band_names": list(BAND_NAMES),
                "temporal_coords": tcoords[i],
                "location_coords": lcoords[i],
                **fmetas[i],
                "output_mode": output.mode,
                **self.run_meta(),
            }
            if win is not None:
                meta["roi_cropped"] = True
                meta["roi_window_in_model_input"] = [round(v, 6) for v in win]
            if output.mode == "pooled":
                prefix = "roi_grid" if win is not None else "patch"
                meta["pooling"] = f"{prefix}_{output.pooling}"
                meta["pooled_over"] = "frames_and_patch_tokens"
                results.append(pooled_embedding(pool(g, output.pooling, (0, 2, 3)), meta))
            else:
                grid_type = "vit_patch_tokens_mean_over_frames"
                results.append(grid_embedding(g.mean(axis=0), meta, grid_type))
        return results


def grid_side(variant: str) -> int:
    return IMAGE_SIZE // int(VARIANTS[normalize_variant(variant)]["patch"])


__all__ = [
    "DECODER",
    "DEFAULT_VARIANT",
    "IMAGE_SIZE",
    "NORMALIZATIONS",
    "PRETRAIN_FRAMES",
    "V2_MEAN",
    "V2_STD",
    "VARIANTS",
    "Prithvi",
    "build_prithvi_encoder",
    "frame_dates",
    "grid_side",
    "normalize_variant",
    "pos_embed_3d",
    "prepare_state_dict",
    "split_days",
]
