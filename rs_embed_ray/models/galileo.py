"""Galileo nano on 10 Sentinel-2 bands, up to 12 monthly frames: pooled 128-D, grid 128x8x8.

Why this model: Galileo (nasaharvest) is a small multi-modal, multi-temporal encoder trained
on monthly composites; its nano size makes it the catalog's cheapest multi-frame model.

Architecture: no official package installs from the package index (nasaharvest/galileo's
``pyproject.toml`` names it ``galileo``, but that name on PyPI is an unrelated client library,
checked 2026-12-03), so the encoder is ported here from the published
``single_file_galileo.py`` of ``nasaharvest/galileo`` (written from its description, no code
copied). Module names follow the published
``models/nano/encoder.pt`` state dict (strict load, ``.backbone`` infixes dropped as the
official ``Encoder.load_from_folder`` does), and ``config.json`` beside it must describe
the nano encoder. Tokens, as in the official encoder:

* one token per (patch, frame, channel group); the S2 groups are ``S2_RGB`` (B2,B3,B4),
  ``S2_Red_Edge`` (B5,B6,B7), ``S2_NIR_10m`` (B8), ``S2_NIR_20m`` (B8A), ``S2_SWIR``
  (B11,B12) and ``NDVI``, each with its own FlexiPatchEmbed ``Conv2d`` (patch 8; another
  patch size resizes the kernel through the pseudo-inverse of a bicubic antialiased resize);
  S1 and every space / time / static group is masked (no such inputs here);
* each token gets ``[channel-group embedding | sin-cos frame position | month table |
  2-D sin-cos of the patch position scaled by (pixel metres * patch / 10)]``, a quarter of
  the width each (the official 1-D code ``omega_k = 1e4^(-k / d / 2)``);
* masked tokens are removed before the blocks (a key mask pads a batch whose items see
  different token counts), pre-norm blocks with separate q/k/v projections, final
  ``norm``; pooled = mean of the visible tokens (``Encoder.average_tokens``), grid = the
  mean of each patch's visible tokens (``apply_mask_and_average_tokens_per_patch``).

The oracle is the official source as rs-embed 0.3.1 vendors it:
``scripts/galileo_golden.py`` runs it on fixed inputs and a seeded checkpoint and stores the
result in ``tests/oracle/data/galileo_golden.npz``; ``tests/oracle/test_oracle_galileo.py``
compares.

Recipes (``model_config["recipe"]``):

* ``"upstream"`` (default, the published recipe): per band ``(x - (mean - 2 std)) /
  (4 std)`` with Galileo's pretraining statistics (``Normalizer(std_multiplier=2)`` on
  ``config/normalization.json``); NDVI ``(B8 - B4) / (B8 + B4)`` (0 where the sum is not
  positive) computed from the DN and left unscaled, as the upstream dataset does; the
  model is told the real pixel size after the resize, ``input_resolution_m = scale_m *
  side / image_size`` (``scale_m`` from the fetch grid, else the sensor's 10 m).
* ``"rs_embed"`` (rs-embed 0.3.1's adapter, which departs from upstream): raw DN 0..10000
  with no normalisation, the NDVI group masked, and ``input_resolution_m = 10`` whatever
  the resize did.

Both: NaN -> 0, clip 0..10000, centre pad to a square (reflect; edge when too wide) and
bilinear resize to ``image_size`` (64; ``align_corners=False``), patch 8. Frames are the
catalog's 30-day bins from the window start (at most 12; a longer window in 12 equal bins),
fetched through the providers' explicit-bin series; an empty bin (all-NaN frame) keeps its
place in the sequence and its tokens are masked, as Galileo masks missing timesteps
(rs-embed instead fetches ``n`` equal divisions, back-filled). Months are the month (0..11)
of each bin's midpoint (``fetch_meta["frames"]``, else the same bins from the window). A CHW
input is one frame. A square-padded or ROI-windowed input has its grid cropped back to the
ROI; pooled is then the mean of the cropped grid (``roi_grid_mean``), and ``pooling="max"``
is the max over the (cropped) grid, as rs-embed does.
"""

from __future__ import annotations

import json
import logging
import math
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rs_embed_ray.errors import ModelError, WeightsError
from rs_embed_ray.models.base import Embedding, ModelInfo
from rs_embed_ray.models.catalog import CATALOG
from rs_embed_ray.models.grids import crop_padded, grid_embedding, hw_list, pooled_embedding
from rs_embed_ray.models.preprocess import RoiWindow, as_tchw, square_pad
from rs_embed_ray.models.runtime import (
    Batch,
    TorchEmbedder,
    build_seeded,
    check_state_dict,
    load_prepared,
    to_numpy,
)
from rs_embed_ray.specs import TemporalSpec, fixed_day_bins, window_of

log = logging.getLogger(__name__)

HF_REPO = "nasaharvest/galileo"
WEIGHTS_FILE = "models/nano/encoder.pt"
ENCODER_FILENAME = "encoder.pt"
CONFIG_FILENAME = "config.json"
# the encoder section of the published models/nano/config.json
NANO_ENCODER = {
    "embedding_size": 128,
    "depth": 4,
    "num_heads": 8,
    "mlp_ratio": 4,
    "max_sequence_length": 24,
    "max_patch_size": 8,
}
IMAGE_SIZE = 64
PATCH_SIZE = 8
BASE_GSD = 10.0
MAX_FRAMES = 12
FRAME_DAYS = 30
RECIPES = ("upstream", "rs_embed")
IN_CHANS = 10

# Galileo's space-time bands and channel groups (single_file_galileo.py)
SPACE_TIME_BANDS = (
    *("VV", "VH", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12"),
    "NDVI",
)
S_T_GROUPS: dict[str, tuple[str, ...]] = {
    "S1": ("VV", "VH"),
    "S2_RGB": ("B2", "B3", "B4"),
    "S2_Red_Edge": ("B5", "B6", "B7"),
    "S2_NIR_10m": ("B8",),
    "S2_NIR_20m": ("B8A",),
    "S2_SWIR": ("B11", "B12"),
    "NDVI": ("NDVI",),
}
SPACE_GROUPS: dict[str, int] = {"SRTM": 2, "DW": 9, "WC": 5}
TIME_GROUPS: dict[str, int] = {"ERA5": 2, "TC": 3, "VIIRS": 1}
STATIC_GROUPS: dict[str, int] = {"LS": 1, "location": 3, "DW_static": 9, "WC_static": 5}
S2_BANDS = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")

# Galileo's pretraining statistics of the 13 space-time bands (config/normalization.json,
# key "13"; the same values rs-embed 0.3.1 carries as _GALILEO_PRETRAIN_STATS["13"])
PRETRAIN_MEAN_13 = (
    -11.728724389184965,
    -18.85558188024017,
    1395.3408730676722,
    1338.4026921784578,
    1343.09883810357,
    1543.8607982512297,
    2186.2022069512263,
    2525.0932853316694,
    2410.3377187373408,
    2750.2854646886753,
    2234.911100061487,
    1474.5311266077113,
    0.2892116502999044,
)
PRETRAIN_STD_13 = (
    4.887145774840316,
    5.730270320384293,
    917.7041440370853,
    913.2988423581528,
    1092.678723527555,
    1047.2206083460424,
    1048.0101611156767,
    1143.6903026819996,
    1098.979177731649,
    1204.472755085893,
    1145.9774063078878,
    980.2429840007796,
    0.2720939024500081,
)
STD_MULTIPLIER = 2.0


def upstream_shift_div() -> tuple[np.ndarray, np.ndarray]:
    """Per S2 band (``S2_BANDS`` order) shift and divisor of the upstream Normalizer."""
    idx = [SPACE_TIME_BANDS.index(b) for b in S2_BANDS]
    mean = np.asarray(PRETRAIN_MEAN_13, dtype=np.float64)[idx]
    std = np.asarray(PRETRAIN_STD_13, dtype=np.float64)[idx]
    return mean - STD_MULTIPLIER * std, 2.0 * STD_MULTIPLIER * std


CONFIG_KEYS = ("recipe", "image_size", "patch_size", "hf_repo", "hf_revision", "filename")


def parse_config(model_config: dict[str, Any] | None) -> tuple[str, int, int]:
    """``(recipe, image_size, patch_size)`` of a model_config; unknown keys, a bad recipe or
    sizes that do not divide raise ModelError naming what to change."""
    cfg = dict(model_config or {})
    unknown = sorted(set(cfg) - set(CONFIG_KEYS))
    if unknown:
        raise ModelError(
            f"galileo: unknown model_config key(s) {unknown}; known: {list(CONFIG_KEYS)}."
        )
    recipe = normalize_recipe(cfg.get("recipe"))
    try:
        image_size = int(cfg.get("image_size") or IMAGE_SIZE)
        patch_size = int(cfg.get("patch_size") or PATCH_SIZE)
    except (TypeError, ValueError):
        raise ModelError(
            "galileo: model_config image_size and patch_size must be integers."
        ) from None
    if image_size <= 0 or patch_size <= 0 or image_size % patch_size:
        raise ModelError(
            f"galileo needs image_size divisible by patch_size, got image_size={image_size}, "
            f"patch_size={patch_size}."
        )
    return recipe, image_size, patch_size


def normalize_recipe(name: Any) -> str:
    key = str(name or "upstream").strip().lower().replace("-", "_")
    if key in ("rs_embed", "rsembed", "rs_embed_0.3.1"):
        return "rs_embed"
    if key not in RECIPES:
        raise ModelError(f"Unknown galileo recipe {name!r}; choose one of {list(RECIPES)}.")
    return key


# ---------------------------------------------------------------------------------------
# fixed tables
# ---------------------------------------------------------------------------------------


def sincos_1d(dim: int, pos: Any) -> Any:
    """(M,) positions -> (M, dim) ``[sin(p w_k) | cos(p w_k)]``, ``w_k = 1e4^(-k/dim/2)``
    (Galileo's own frequency spacing)."""
    import torch

    omega = torch.arange(dim // 2, dtype=torch.float32, device=pos.device) / dim / 2.0
    omega = 1.0 / 10000**omega
    ang = pos.reshape(-1, 1).float() * omega.reshape(1, -1)
    return torch.cat([torch.sin(ang), torch.cos(ang)], dim=1)


def month_table(dim: int) -> Any:
    """(12, dim): every column of the first half sin(2 pi m / 12), of the second cos."""
    import torch

    ang = torch.arange(12, dtype=torch.float32) * (2 * math.pi / 12)
    half = dim // 2
    return torch.cat(
        [torch.sin(ang)[:, None].expand(12, half), torch.cos(ang)[:, None].expand(12, half)],
        dim=1,
    ).contiguous()


def spatial_table(dim: int, side: int, gsd_ratio: float, device: Any) -> Any:
    """(side, side, dim): ``[code(column * r) | code(row * r)]`` of each patch."""
    import torch

    idx = torch.arange(side, device=device, dtype=torch.float32)
    rows, cols = torch.meshgrid(idx, idx, indexing="ij")
    a = sincos_1d(dim // 2, cols.reshape(-1) * gsd_ratio)
    b = sincos_1d(dim // 2, rows.reshape(-1) * gsd_ratio)
    return torch.cat([a, b], dim=1).reshape(side, side, dim)


@lru_cache(maxsize=16)
def flexi_pinv(base: int, new: int) -> Any:
    """Pseudo-inverse of the bicubic (antialiased) ``base x base -> new x new`` resize, the
    FlexiViT way to resample a patch kernel."""
    import torch
    import torch.nn.functional as F

    eye = torch.eye(base * base).reshape(base * base, 1, base, base)
    rows = F.interpolate(eye, size=(new, new), mode="bicubic", antialias=True)
    return torch.linalg.pinv(rows.reshape(base * base, new * new))


# ---------------------------------------------------------------------------------------
# the encoder
# ---------------------------------------------------------------------------------------


def build_galileo_encoder(config: dict[str, Any] | None = None) -> Any:
    """The Galileo encoder as an ``nn.Module`` (random init; no download)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    cfg = {**NANO_ENCODER, **(config or {})}
    dim, depth, heads = int(cfg["embedding_size"]), int(cfg["depth"]), int(cfg["num_heads"])
    hidden = int(dim * float(cfg["mlp_ratio"]))
    quarter = dim // 4
    base_patch = int(cfg["max_patch_size"])
    max_len = int(cfg["max_sequence_length"])

    class PatchProj(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.proj = nn.Conv2d(c, dim, kernel_size=base_patch, stride=base_patch)

        def forward(self, x: Any, patch: int) -> Any:
            w = self.proj.weight
            if patch != base_patch:
                pinv = flexi_pinv(base_patch, patch).to(w.device, w.dtype)
                o, c = w.shape[:2]
                w = (w.reshape(o * c, -1) @ pinv.T).reshape(o, c, patch, patch)
            return F.conv2d(x, w, self.proj.bias, stride=patch)

    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q = nn.Linear(dim, dim)
            self.k = nn.Linear(dim, dim)
            self.v = nn.Linear(dim, dim)
            self.proj = nn.Linear(dim, dim)

        def forward(self, x: Any, keep: Any) -> Any:
            b, n, _ = x.shape

            def heads_of(t: Any) -> Any:
                return t.reshape(b, n, heads, dim // heads).transpose(1, 2)

            out = F.scaled_dot_product_attention(
                heads_of(self.q(x)), heads_of(self.k(x)), heads_of(self.v(x)), attn_mask=keep
            )
            return self.proj(out.transpose(1, 2).reshape(b, n, dim))

    class Mlp(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(dim, hidden)
            self.fc2 = nn.Linear(hidden, dim)

        def forward(self, x: Any) -> Any:
            return self.fc2(F.gelu(self.fc1(x)))

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm1 = nn.LayerNorm(dim)
            self.attn = Attention()
            self.norm2 = nn.LayerNorm(dim)
            self.mlp = Mlp()

        def forward(self, x: Any, keep: Any) -> Any:
            x = x + self.attn(self.norm1(x), keep)
            return x + self.mlp(self.norm2(x))

    class GalileoEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed_dim = dim
            self.blocks = nn.ModuleList([Block() for _ in range(depth)])
            pos = sincos_1d(quarter, torch.arange(max_len))
            self.pos_embed = nn.Parameter(pos, requires_grad=False)
            self.month_embed = nn.Embedding.from_pretrained(month_table(quarter), freeze=True)
            self.s_t_channel_embed = nn.Parameter(torch.zeros(len(S_T_GROUPS), quarter))
            self.sp_channel_embed = nn.Parameter(torch.zeros(len(SPACE_GROUPS), quarter))
            self.t_channel_embed = nn.Parameter(torch.zeros(len(TIME_GROUPS), quarter))
            self.st_channel_embed = nn.Parameter(torch.zeros(len(STATIC_GROUPS), quarter))
            self.space_time_embed = nn.ModuleDict(
                {g: PatchProj(len(b)) for g, b in S_T_GROUPS.items()}
            )
            self.space_embed = nn.ModuleDict({g: PatchProj(c) for g, c in SPACE_GROUPS.items()})
            self.time_embed = nn.ModuleDict({g: nn.Linear(c, dim) for g, c in TIME_GROUPS.items()})
            self.static_embed = nn.ModuleDict(
                {g: nn.Linear(c, dim) for g, c in STATIC_GROUPS.items()}
            )
            self.norm = nn.LayerNorm(dim)
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    nn.init.xavier_uniform_(m.weight)
                    nn.init.zeros_(m.bias)

        def forward_tokens(
            self,
            groups: dict[str, Any],
            frame_ok: Any,
            months: Any,
            *,
            patch: int,
            input_res_m: Any,
        ) -> tuple[Any, Any]:
            """Visible space-time tokens through the encoder.

            ``groups``: name -> (B, T, c, S, S) inputs of the visible groups; ``frame_ok``:
            (B, T) bool (False = a masked frame); ``months``: (B, T) 0..11;
            ``input_res_m``: (B,) metres per input pixel. Returns (tokens (B, h, w, T, G,
            D) after the final norm, visible (B, h, w, T, G) bool).
            """
            names = list(groups)
            first = groups[names[0]]
            b, t, _, s, _ = first.shape
            if t > max_len:
                raise ModelError(f"galileo takes at most {max_len} frames, got {t}.")
            toks = []
            for g in names:
                x = groups[g].reshape(b * t, -1, s, s)
                y = self.space_time_embed[g](x, patch)  # (B*T, D, h, w)
                h = y.shape[-1]
                toks.append(y.reshape(b, t, dim, h, h).permute(0, 3, 4, 1, 2))
            x = torch.stack(toks, dim=4)  # (B, h, w, T, G, D)
            gidx = torch.tensor([list(S_T_GROUPS).index(g) for g in names], device=x.device)
            chan = self.s_t_channel_embed[gidx]  # (G, q)
            tpos = self.pos_embed[:t]  # (T, q)
            mon = self.month_embed(months)  # (B, T, q)
            res = input_res_m.float() * patch / BASE_GSD  # (B,)
            spat = torch.stack([spatial_table(quarter, h, float(r), x.device) for r in res])
            g_n = len(names)
            enc = torch.cat(
                [
                    chan[None, None, None, None].expand(b, h, h, t, g_n, quarter),
                    tpos[None, None, None, :, None].expand(b, h, h, t, g_n, quarter),
                    mon[:, None, None, :, None].expand(b, h, h, t, g_n, quarter),
                    spat[:, :, :, None, None].expand(b, h, h, t, g_n, quarter),
                ],
                dim=-1,
            )
            x = x + enc.to(x.dtype)
            visible = frame_ok[:, None, None, :, None].expand(b, h, h, t, g_n)
            seq = x.reshape(b, -1, dim)
            vis = visible.reshape(b, -1)
            if bool(vis.all()):
                keep = None
                order = None
                run = seq
            else:
                # visible tokens first (stable), cut to the longest row; keys masked
                order = torch.sort(vis.int(), dim=1, descending=True, stable=True).indices
                n_keep = int(vis.sum(1).max())
                order = order[:, :n_keep]
                run = seq.gather(1, order[..., None].expand(-1, -1, dim))
                keep = vis.gather(1, order)[:, None, None, :]
            for blk in self.blocks:
                run = blk(run, keep)
            if order is not None:
                out = torch.zeros_like(seq)
                out.scatter_(1, order[..., None].expand(-1, -1, dim), run)
                seq = out
            else:
                seq = run
            seq = self.norm(seq)
            return seq.reshape(b, h, h, t, g_n, dim), visible

    return GalileoEncoder()


def prepare_state_dict(model: Any, sd: dict[str, Any], *, path: str) -> dict[str, Any]:
    """Published ``encoder.pt`` keys -> this encoder's keys (strict).

    ``.backbone`` infixes are dropped (the official loader does the same); the frozen
    ``pos_embed`` / ``month_embed`` tables are taken from the file as the official loader
    does.
    """
    out = {k.replace(".backbone", ""): v for k, v in sd.items()}
    check_state_dict(model, out, path=path, what="Galileo")
    return out


def check_sidecar_config(weights_path: Path) -> dict[str, Any] | None:
    """If ``config.json`` sits next to ``encoder.pt``, check it describes this encoder."""
    cfg_path = weights_path.parent / CONFIG_FILENAME
    if not cfg_path.is_file():
        return None
    try:
        enc = json.loads(cfg_path.read_text())["model"]["encoder"]
    except (OSError, ValueError, KeyError, TypeError):
        raise WeightsError(
            f"{cfg_path} is not a Galileo model config (no model.encoder section)."
        ) from None
    bad = [
        f"{k}={enc[k]!r} (expected {v})"
        for k, v in NANO_ENCODER.items()
        if k in enc and float(enc[k]) != float(v)
    ]
    if bad:
        raise WeightsError(
            f"{cfg_path} describes a different Galileo encoder than nano: {', '.join(bad)}. "
            "Only the nano encoder is supported; pass the models/nano folder."
        )
    return enc


# ---------------------------------------------------------------------------------------
# frames and months
# ---------------------------------------------------------------------------------------


def frame_months(
    n: int, temporal: TemporalSpec | None, fetch_meta: dict[str, Any] | None
) -> tuple[list[int], str]:
    """Month index (0..11) of each of ``n`` frames' bin midpoint, and where the bins came
    from: ``fetch_meta["frames"]``, else the catalog's 30-day bins of the window, else ``n``
    equal whole-day bins of the window."""

    def mid(a: date, b: date) -> date:
        return a + timedelta(days=max(0, (b - a).days) // 2)

    frames = (fetch_meta or {}).get("frames")
    if isinstance(frames, list) and len(frames) == n and n > 0:
        try:
            bins = [
                (date.fromisoformat(str(f["start"])), date.fromisoformat(str(f["end"])))
                for f in frames
            ]
            return [mid(a, b).month - 1 for a, b in bins], "fetch_meta_frames"
        except (KeyError, TypeError, ValueError):
            pass
    start, end = window_of(temporal)
    bins_s, _ = fixed_day_bins(start, end, FRAME_DAYS, MAX_FRAMES)
    if len(bins_s) == n:
        return [
            mid(date.fromisoformat(a), date.fromisoformat(b)).month - 1 for a, b in bins_s
        ], "window_bins"
    d0, d1 = date.fromisoformat(start), date.fromisoformat(end)
    total = (d1 - d0).days
    edges = [d0.toordinal() + (total * i) // n for i in range(n)] + [d1.toordinal()]
    return [
        mid(date.fromordinal(edges[i]), date.fromordinal(edges[i + 1])).month - 1 for i in range(n)
    ], "window_split"


def pixel_metres(fetch_meta: dict[str, Any] | None, default: float) -> float:
    """Ground size of an input pixel: the fetch grid's ``scale_m``, else ``default``."""
    grid = (fetch_meta or {}).get("grid") or {}
    scale = grid.get("scale_m") if isinstance(grid, dict) else None
    return float(scale) if scale else default


class Galileo(TorchEmbedder):
    """Galileo nano on S2 B2..B12 (10 bands), up to 12 monthly frames, patch 8 at 64 px.

    ``model_config``: ``recipe`` (``upstream`` | ``rs_embed``, see the module docstring),
    ``image_size`` (default 64), ``patch_size`` (default 8), ``hf_repo``, ``hf_revision``,
    ``filename``.
    """

    info: ClassVar[ModelInfo] = CATALOG["galileo"]
    CONFIG_KEYS: ClassVar[frozenset[str] | None] = frozenset(CONFIG_KEYS)
    batch_size_cpu = 8
    batch_size_cuda = 64

    config_parser = staticmethod(parse_config)

    def _load(self, weights: str | None) -> None:
        self.recipe, self.image_size, self.patch_size = parse_config(self.model_config)
        self._init_runtime()
        if weights and Path(str(weights)).expanduser().is_dir():
            folder = Path(str(weights)).expanduser()
            if (folder / ENCODER_FILENAME).is_file():
                weights = str(folder / ENCODER_FILENAME)  # the published models/nano folder
        resolved = self._resolve_weights(weights, filename=WEIGHTS_FILE, hf_repo=HF_REPO)
        if resolved.path is not None and check_sidecar_config(Path(resolved.path)) is not None:
            cfg_file = Path(resolved.path).parent / CONFIG_FILENAME
            self.weights_record["config"] = str(cfg_file.resolve())
        model = build_seeded(build_galileo_encoder)
        model = load_prepared(model, resolved.path, prepare_state_dict)
        self.model = model.to(self.device).eval()
        shift, div = upstream_shift_div()
        self._shift = shift.astype(np.float32)
        self._div = div.astype(np.float32)
        log.info(
            "galileo nano loaded on %s (recipe=%s, amp=%s, weights=%s)",
            self.device,
            self.recipe,
            self._amp_dtype,
            self.weights_record.get("weights"),
        )

    # ---- inputs ----------------------------------------------------------------------

    def _as_tchw(self, x: Any) -> np.ndarray:
        return as_tchw(
            x, "galileo", S2_BANDS, MAX_FRAMES, "the catalog fetches 30-day bins, at most 12"
        )

    def preprocess(self, x: np.ndarray) -> tuple[dict[str, Any], Any, RoiWindow, float]:
        """Raw (T, 10, H, W) -> the visible groups' (T, c, S, S) tensors, the frame mask,
        the content window of the square input, and the side before the resize."""
        import torch
        import torch.nn.functional as F

        ok = ~np.isnan(x).reshape(x.shape[0], -1).all(axis=1)
        if not ok.any():
            raise ModelError(
                "galileo: every frame is empty (no imagery in any 30-day bin); widen the "
                "window or relax cloudy_pct."
            )
        a = np.clip(np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0), 0.0, 10000.0)
        t = torch.from_numpy(a).to(self.device)
        t, win = square_pad(t)
        side = float(t.shape[-1])
        if t.shape[-1] != self.image_size:
            size = (self.image_size, self.image_size)
            t = F.interpolate(t, size=size, mode="bilinear", align_corners=False)
        groups: dict[str, Any] = {}
        if self.recipe == "upstream":
            b4, b8 = t[:, S2_BANDS.index("B4")], t[:, S2_BANDS.index("B8")]
            s = b8 + b4
            ndvi = torch.where(s > 0, (b8 - b4) / torch.where(s > 0, s, 1.0), 0.0)
            shift = torch.from_numpy(self._shift).to(t.device)[None, :, None, None]
            div = torch.from_numpy(self._div).to(t.device)[None, :, None, None]
            t = (t - shift) / div
        for g, bands in S_T_GROUPS.items():
            if g == "S1":
                continue
            if g == "NDVI":
                if self.recipe == "upstream":
                    groups[g] = ndvi[:, None]
                continue
            groups[g] = t[:, [S2_BANDS.index(b) for b in bands]]
        frame_ok = torch.from_numpy(ok).to(self.device)
        return groups, frame_ok, win, side

    # ---- forward ---------------------------------------------------------------------

    def forward(
        self, groups: dict[str, Any], frame_ok: Any, months: Any, input_res_m: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """One forward -> (grid (B, D, h, w), token mean (B, D)) float32 numpy."""
        with self.inference():
            tok, vis = self.model.forward_tokens(
                groups, frame_ok, months, patch=self.patch_size, input_res_m=input_res_m
            )
            w = vis.to(tok.dtype)[..., None]
            tok = tok.float() * w.float()
            per_patch = tok.sum(dim=(3, 4)) / w.float().sum(dim=(3, 4)).clamp_min(1.0)
            mean = tok.sum(dim=(1, 2, 3, 4)) / w.float().sum(dim=(1, 2, 3, 4)).clamp_min(1.0)
            grid = per_patch.permute(0, 3, 1, 2)
        return to_numpy(grid), to_numpy(mean)

    def _embed(self, batch: Batch) -> list[Embedding]:
        """Embed raw (T, 10, H, W) series; one forward per distinct frame count."""
        import torch

        n, output, metas = len(batch), batch.output, batch.metas
        prepped: list[tuple[dict[str, Any], Any, RoiWindow, float]] = []
        months: list[list[int]] = []
        sources: list[str] = []
        res_m: list[float] = []
        n_frames: list[int] = []
        for i in range(n):
            a = self._as_tchw(batch.inputs[i])
            mo, src = frame_months(a.shape[0], batch.temporal, metas[i])
            p = self.preprocess(a)
            scale = pixel_metres(metas[i], float(self.info.sensor.scale_m))  # type: ignore[union-attr]
            if self.recipe == "upstream":
                res_m.append(scale * p[3] / self.image_size)
            else:
                res_m.append(BASE_GSD)
            prepped.append(p)
            months.append(mo)
            sources.append(src)
            n_frames.append(int(a.shape[0]))

        grids: list[np.ndarray | None] = [None] * n
        means: list[np.ndarray | None] = [None] * n
        by_t: dict[int, list[int]] = {}
        for i, t in enumerate(n_frames):
            by_t.setdefault(t, []).append(i)
        for idx in by_t.values():
            groups = {g: torch.stack([prepped[i][0][g] for i in idx]) for g in prepped[idx[0]][0]}
            ok = torch.stack([prepped[i][1] for i in idx])
            mo = torch.tensor([months[i] for i in idx], dtype=torch.long, device=self.device)
            rr = torch.tensor([res_m[i] for i in idx], dtype=torch.float32, device=self.device)
            g, m = self.forward(groups, ok, mo, rr)
            for j, i in enumerate(idx):
                grids[i], means[i] = g[j], m[j]

        results: list[Embedding] = []
        for i in range(n):
            g0, mvec = grids[i], means[i]
            assert g0 is not None and mvec is not None
            g, win = crop_padded(g0, prepped[i][2], metas[i])
            ok = prepped[i][1].cpu().numpy()
            meta: dict[str, Any] = {
                "model": "galileo",
                "model_size": "nano",
                "recipe": self.recipe,
                "weights": dict(self.weights_record),
                "input_hw": hw_list(batch.inputs[i]),
                "image_size": self.image_size,
                "patch_size": self.patch_size,
                "input_resolution_m": round(res_m[i], 6),
                "normalization": (
                    "galileo_pretrain_2std" if self.recipe == "upstream" else "none_raw_dn"
                ),
                "include_ndvi": self.recipe == "upstream",
                "bands": list(S2_BANDS),
                "n_frames": n_frames[i],
                "n_frames_masked": int((~ok).sum()),
                "month_indices": months[i],
                "months_source": sources[i],
                "output_mode": output.mode,
                **self.run_meta(),
            }
            if win is not None:
                meta["roi_cropped"] = True
                meta["roi_window_in_model_input"] = [round(v, 6) for v in win]
            if output.mode == "pooled":
                if output.pooling == "max":
                    vec, pooling = g.max(axis=(1, 2)), "grid_max"
                elif win is not None:
                    vec, pooling = g.mean(axis=(1, 2)), "roi_grid_mean"
                else:
                    vec, pooling = mvec, "token_mean"
                meta["pooling"] = pooling
                results.append(pooled_embedding(vec, meta))
            else:
                results.append(grid_embedding(g, meta, "galileo_patch_token_mean"))
        return results


__all__ = [
    "HF_REPO",
    "IMAGE_SIZE",
    "NANO_ENCODER",
    "PRETRAIN_MEAN_13",
    "PRETRAIN_STD_13",
    "RECIPES",
    "WEIGHTS_FILE",
    "Galileo",
    "build_galileo_encoder",
    "frame_months",
    "prepare_state_dict",
    "upstream_shift_div",
]
