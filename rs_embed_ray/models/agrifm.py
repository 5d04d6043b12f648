"""AgriFM on 10 Sentinel-2 bands, 8 equal frames: pooled 1024-D, grid 1024 x 14 x 14 at 224.

Why this model: AgriFM (Li et al., 2025) is a Video-Swin encoder pretrained on Sentinel-2,
Landsat/HLS and MODIS time series for agricultural mapping; its shifted 3-D windows mix the
frames of a season with the neighbourhood of each pixel.

Architecture: no official package installs from the package index (``flyakon/AgriFM`` is a
training repository without a ``setup.py``/``pyproject``; ``pip download agrifm`` finds
nothing, checked 2026-12-03), so ``PretrainingSwinTransformer3DEncoder`` with the published
``configs/cropland_mapping.py`` backbone is ported here from
``AgriFM/models/video_swin_transformer.py`` (written from its description; no code copied):

* ``patch_emd``: ``SwinPatchEmbed3D``, a ``Conv3d(10, 128, (4, 2, 2))`` over (T, H, W) after
  zero-padding T, H, W up to multiples of the patch (no norm);
* ``backbone``: ``SwinTransformer3D`` with depths 2, 2, 18, 2, heads 4, 8, 16, 32, window
  (8, 7, 7) (shrunk to the feature size on an axis no larger than the window, where the
  shift becomes 0), shift = window // 2 on odd blocks with the usual -100 mask, relative
  position bias over the (2Wd-1)(2Wh-1)(2Ww-1) table (the index sliced to the window actually
  used), pre-norm blocks (the LayerNorm *before* the zero padding to whole windows), MLP
  ratio 4, qkv bias; ``PatchMerging`` with steps (2, 2, 2) and ``mean_frame_down``: the
  frames of each step are averaged (T zero-padded to even first) while H and W are merged
  2 x 2 (4C -> LayerNorm -> Linear 2C, no bias); a final LayerNorm (1024);
* ``feature_fusion="cat"``: the last stage's (B, C, D, h, w) reshaped to (B, C*D, h, w). With
  T <= 32 frames D is 1 at the last stage, so the grid is 1024-D; more frames are refused.

Strict loading of the published ``AgriFM.pth`` (``{"state_dict": ...}``, the S2 stem stored
as ``S2_patch_emd.*``; the reference renames ``^module.`` -> '' and ``S2_patch_emd`` ->
``patch_emd``): every key of the model (the ``relative_position_index`` buffers included)
must be there with its shape; the other sensors' stems (``HLSL30_patch_emd.*``,
``Modis_patch_emd.*``), which an S2 input never runs, are set aside and logged; any other
key is an error (the reference loads ``strict=False``, where a misnamed key stays random).

The oracle is the official source as rs-embed 0.3.1 vendors it
(``_vendor/agrifm_video_swin_transformer.py`` with its in-process mmseg/mmengine shims):
``scripts/agrifm_golden.py`` fills it with a seeded checkpoint, runs it and rs-embed's
adapter on fixed inputs and stores the results in ``tests/oracle/data/agrifm_golden.npz``;
``tests/oracle/test_oracle_agrifm.py`` compares.

Preprocessing (spec §3): frames = the catalog's T=8 equal bins of the window (the providers'
equal-bin series); a single (C, H, W) composite is repeated to 8 frames (recorded in the meta
as ``input_repeated_to_t``). NaN -> 0, then ``(x - mean) / std`` with AgriFM's configured S2
statistics (``configs/cropland_mapping.py``: means 2490..5207, far above typical L2A DN), a
centre pad to a square (reflect; edge when the pad is not smaller than the side) and a
bilinear resize to ``image_size`` (224).

Where this departs from rs-embed 0.3.1 (``model_config["recipe"]``): upstream's
``MapNormalize`` + ``MapResize`` (torchvision ``F.resize`` on tensors, bilinear with
antialiasing) neither clip nor skip the antialias filter; ``recipe="upstream"`` (default) does
as upstream (no clip; the resize antialiased, so a downsampled patch is low-passed as in
training); ``recipe="rs_embed"`` clips the DN to 0..10000 first and resizes without
antialiasing (``F.interpolate(..., align_corners=False)``), as rs-embed's adapter does. On an
upsampled patch (the usual 224 px fetch at 10 m is resized 224 -> 224, untouched) the two
differ only where a DN lies outside 0..10000. Upstream's downstream config uses 256 px and 32
frames; the catalog's 224 px / 8 frames (rs-embed's) are kept, ``image_size`` changes the side.

Outputs from one forward: grid = the fused encoder features (1024 x side/16 x side/16),
cropped back to the real area of a square-padded input and to the fetch ROI; pooled = the
mean (or max) of that grid, as rs-embed does.
"""

from __future__ import annotations

import logging
from functools import reduce
from operator import mul
from typing import Any, ClassVar

import numpy as np

from rs_embed_ray.errors import ModelError
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

log = logging.getLogger(__name__)

WEIGHTS_FILE = "AgriFM.pth"
WEIGHTS_URL = "https://glass.hku.hk/casual/AgriFM/AgriFM.pth"
S2_BANDS = ("B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12")
IN_CHANS = len(S2_BANDS)
EMBED_DIM = 128
DEPTHS = (2, 2, 18, 2)
HEADS = (4, 8, 16, 32)
WINDOW = (8, 7, 7)
PATCH = (4, 2, 2)
MLP_RATIO = 4.0
STEP = (2, 2, 2)
OUT_DIM = EMBED_DIM * 2 ** (len(DEPTHS) - 1)
IMAGE_SIZE = 224
N_FRAMES = 8
MAX_FRAMES = 32  # the last stage has one frame up to 32 input frames (1024-D grid)
RECIPES = ("upstream", "rs_embed")
CONFIG_KEYS = ("recipe", "image_size", "filename")
# configs/cropland_mapping.py, S2 (order B2, B3, B4, B5, B6, B7, B8, B8A, B11, B12)
MEAN = np.array(
    [
        4179.192015478227,
        4065.9106675194444,
        3957.274910960156,
        5207.452475253116,
        4327.12234687,
        4873.16102239,
        5049.1637925,
        5111.07806856,
        3056.86349163,
        2490.9675032,
    ],
    dtype=np.float64,
)
STD = np.array(
    [
        4041.5212325268735,
        3691.003119315892,
        3629.331318356375,
        2973.5178530908756,
        3569.73343885,
        3085.9151435,
        2937.56005119,
        2806.04462314,
        1808.30013156,
        1694.20220774,
    ],
    dtype=np.float64,
)
# stems of the other sensors in the published file (renamed by the reference only when the
# model's stem has their channel count: 6 HLS, 7 MODIS)
OTHER_STEMS = ("HLSL30_patch_emd.", "Modis_patch_emd.")
S2_STEM = "S2_patch_emd."


# ---------------------------------------------------------------------------------------
# the network
# ---------------------------------------------------------------------------------------


def used_window(
    size: tuple[int, int, int], window: tuple[int, ...], shift: tuple[int, ...]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The window and shift actually used: an axis no longer than the window takes the
    whole axis and no shift."""
    w, s = list(window), list(shift)
    for i, n in enumerate(size):
        if n <= window[i]:
            w[i], s[i] = n, 0
    return tuple(w), tuple(s)


def partition(x: Any, ws: tuple[int, ...]) -> Any:
    """(B, D, H, W, C) -> (B * windows, Wd*Wh*Ww, C)."""
    b, d, h, w, c = x.shape
    x = x.view(b, d // ws[0], ws[0], h // ws[1], ws[1], w // ws[2], ws[2], c)
    return x.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(-1, reduce(mul, ws), c)


def unpartition(win: Any, ws: tuple[int, ...], b: int, d: int, h: int, w: int) -> Any:
    """Inverse of :func:`partition`."""
    x = win.view(b, d // ws[0], h // ws[1], w // ws[2], ws[0], ws[1], ws[2], -1)
    return x.permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(b, d, h, w, -1)


def shift_mask(dp: int, hp: int, wp: int, ws: tuple[int, ...], ss: tuple[int, ...], device: Any):
    """The (windows, N, N) additive mask of shifted windows: -100 between tokens that come
    from different regions of the rolled map, 0 within one."""
    import torch

    lab = torch.zeros((1, dp, hp, wp, 1), device=device)
    n = 0
    cuts = [(slice(-w), slice(-w, -s), slice(-s, None)) for w, s in zip(ws, ss, strict=True)]
    for a in cuts[0]:
        for b in cuts[1]:
            for c in cuts[2]:
                lab[:, a, b, c, :] = n
                n += 1
    m = partition(lab, ws).squeeze(-1)
    diff = m.unsqueeze(1) - m.unsqueeze(2)
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


def relative_index(ws: tuple[int, int, int]) -> Any:
    """(N, N) index into the relative-position table for a full window ``ws``."""
    import torch

    grids = torch.meshgrid(*[torch.arange(n) for n in ws], indexing="ij")
    flat = torch.stack(grids).flatten(1)
    rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0).contiguous()
    for i, n in enumerate(ws):
        rel[:, :, i] += n - 1
    rel[:, :, 0] *= (2 * ws[1] - 1) * (2 * ws[2] - 1)
    rel[:, :, 1] *= 2 * ws[2] - 1
    return rel.sum(-1)


def build_agrifm() -> Any:
    """The AgriFM S2 encoder (``patch_emd`` + ``backbone``) as an ``nn.Module`` (random init)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Attention(nn.Module):
        def __init__(self, dim: int, heads: int) -> None:
            super().__init__()
            self.heads = heads
            self.scale = (dim // heads) ** -0.5
            size = reduce(mul, [2 * w - 1 for w in WINDOW])
            self.relative_position_bias_table = nn.Parameter(torch.zeros(size, heads))
            nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
            self.register_buffer("relative_position_index", relative_index(WINDOW))
            self.qkv = nn.Linear(dim, 3 * dim, bias=True)
            self.proj = nn.Linear(dim, dim)

        def forward(self, x: Any, mask: Any) -> Any:
            bw, n, c = x.shape
            qkv = self.qkv(x).reshape(bw, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
            attn = q @ k.transpose(-2, -1)
            idx = self.relative_position_index[:n, :n].reshape(-1)
            bias = self.relative_position_bias_table[idx].reshape(n, n, -1).permute(2, 0, 1)
            attn = attn + bias.unsqueeze(0)
            if mask is not None:
                nw = mask.shape[0]
                attn = attn.view(bw // nw, nw, self.heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
                attn = attn.view(-1, self.heads, n, n)
            attn = attn.softmax(dim=-1)
            return self.proj((attn @ v).transpose(1, 2).reshape(bw, n, c))

    class Mlp(nn.Module):
        def __init__(self, dim: int) -> None:
            super().__init__()
            self.fc1 = nn.Linear(dim, int(dim * MLP_RATIO))
            self.act = nn.GELU()
            self.fc2 = nn.Linear(int(dim * MLP_RATIO), dim)

        def forward(self, x: Any) -> Any:
            return self.fc2(self.act(self.fc1(x)))

    class Block(nn.Module):
        def __init__(self, dim: int, heads: int, shifted: bool) -> None:
            super().__init__()
            self.shift = tuple(w // 2 for w in WINDOW) if shifted else (0, 0, 0)
            self.norm1 = nn.LayerNorm(dim)
            self.attn = Attention(dim, heads)
            self.norm2 = nn.LayerNorm(dim)
            self.mlp = Mlp(dim)

        def attend(self, x: Any, mask: Any) -> Any:
            b, d, h, w, c = x.shape
            ws, ss = used_window((d, h, w), WINDOW, self.shift)
            x = self.norm1(x)
            pd, ph, pw = ((ws[i] - n % ws[i]) % ws[i] for i, n in enumerate((d, h, w)))
            x = F.pad(x, (0, 0, 0, pw, 0, ph, 0, pd))
            _, dp, hp, wp, _ = x.shape
            rolled = any(s > 0 for s in ss)
            if rolled:
                x = torch.roll(x, shifts=tuple(-s for s in ss), dims=(1, 2, 3))
            out = self.attn(partition(x, ws), mask if rolled else None)
            x = unpartition(out.view(-1, *ws, c), ws, b, dp, hp, wp)
            if rolled:
                x = torch.roll(x, shifts=ss, dims=(1, 2, 3))
            return x[:, :d, :h, :w, :].contiguous()

        def forward(self, x: Any, mask: Any) -> Any:
            x = x + self.attend(x, mask)
            return x + self.mlp(self.norm2(x))

    class Merge(nn.Module):
        def __init__(self, dim: int) -> None:
            super().__init__()
            self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
            self.norm = nn.LayerNorm(4 * dim)

        def forward(self, x: Any) -> Any:
            _, d, h, w, _ = x.shape
            if h % 2 or w % 2:
                x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
            sd, sh, sw = STEP
            if d % sd:
                x = F.pad(x, (0, 0, 0, 0, 0, 0, 0, sd - d % sd))
            oh, ow = int(sh != 1), int(sw != 1)
            parts = []
            for y0, x0 in ((0, 0), (oh, 0), (0, ow), (oh, ow)):
                acc = x[:, ::sd, y0::sh, x0::sw, :]
                for t in range(1, sd):
                    acc = acc + x[:, t::sd, y0::sh, x0::sw, :]
                parts.append(acc / sd)
            return self.reduction(self.norm(torch.cat(parts, -1)))

    class Stage(nn.Module):
        def __init__(self, dim: int, depth: int, heads: int, last: bool) -> None:
            super().__init__()
            self.blocks = nn.ModuleList([Block(dim, heads, i % 2 == 1) for i in range(depth)])
            self.downsample = None if last else Merge(dim)

        def forward(self, x: Any) -> Any:
            _, _, d, h, w = x.shape
            ws, ss = used_window((d, h, w), WINDOW, tuple(n // 2 for n in WINDOW))
            dims = [-(-n // ws[i]) * ws[i] for i, n in enumerate((d, h, w))]
            mask = shift_mask(*dims, ws, ss, x.device)
            x = x.permute(0, 2, 3, 4, 1)
            for blk in self.blocks:
                x = blk(x, mask)
            if self.downsample is not None:
                x = self.downsample(x)
            return x.permute(0, 4, 1, 2, 3)

    class Backbone(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.ModuleList(
                [
                    Stage(EMBED_DIM * 2**i, DEPTHS[i], HEADS[i], i == len(DEPTHS) - 1)
                    for i in range(len(DEPTHS))
                ]
            )
            self.norm = nn.LayerNorm(OUT_DIM)

        def forward(self, x: Any) -> Any:
            for layer in self.layers:
                x = layer(x.contiguous())
            x = self.norm(x.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)
            b, c, d, h, w = x.shape
            return x.reshape(b, c * d, h, w)  # feature_fusion="cat"

    class PatchEmbed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Conv3d(IN_CHANS, EMBED_DIM, kernel_size=PATCH, stride=PATCH)

        def forward(self, x: Any) -> Any:
            x = x.permute(0, 2, 1, 3, 4)  # (B, T, C, H, W) -> (B, C, T, H, W)
            _, _, d, h, w = x.shape
            pads = [(PATCH[i] - n % PATCH[i]) % PATCH[i] for i, n in enumerate((d, h, w))]
            if any(pads):
                x = F.pad(x, (0, pads[2], 0, pads[1], 0, pads[0]))
            return self.proj(x)

    class AgriFMEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.patch_emd = PatchEmbed()
            self.backbone = Backbone()
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    nn.init.trunc_normal_(m.weight, std=0.02)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)

        def forward(self, x: Any) -> Any:
            """(B, T, 10, H, W) normalised -> (B, 1024 * D_last, H/16, W/16)."""
            return self.backbone(self.patch_emd(x))

    return AgriFMEncoder()


def prepare_state_dict(model: Any, sd: dict[str, Any], *, path: str) -> dict[str, Any]:
    """Published AgriFM keys -> this encoder's keys, checked strictly; the other sensors'
    stems are set aside (logged)."""
    sd = strip_prefix(sd, ("module.",))
    out: dict[str, Any] = {}
    aside: list[str] = []
    for k, v in sd.items():
        if k.startswith(OTHER_STEMS):
            aside.append(k)
        elif k.startswith(S2_STEM):
            out["patch_emd." + k[len(S2_STEM) :]] = v
        else:
            out[k] = v
    check_state_dict(model, out, path=path, what="AgriFM")
    if aside:
        log.info("agrifm: set aside %d keys of other sensors' stems (%s)", len(aside), aside[:2])
    return out


# ---------------------------------------------------------------------------------------
# preprocessing
# ---------------------------------------------------------------------------------------


def parse_config(model_config: dict[str, Any] | None) -> dict[str, Any]:
    """The checked options (unknown keys or bad values raise ModelError naming the fix)."""
    cfg = dict(model_config or {})
    unknown = sorted(set(cfg) - set(CONFIG_KEYS))
    if unknown:
        raise ModelError(f"agrifm: unknown model_config key(s) {unknown}; known: {CONFIG_KEYS}.")
    recipe = str(cfg.get("recipe") or "upstream").strip().lower().replace("-", "_")
    if recipe not in RECIPES:
        raise ModelError(f"agrifm: recipe {recipe!r}; choose one of {RECIPES}.")
    try:
        size = int(cfg["image_size"]) if cfg.get("image_size") is not None else IMAGE_SIZE
    except (TypeError, ValueError):
        raise ModelError("agrifm: image_size must be an integer.") from None
    if size < 16:
        raise ModelError(f"agrifm: image_size must be >= 16 (four 2x merges), got {size}.")
    return {"recipe": recipe, "image_size": size}


def normalize(x: Any, *, clip: bool) -> Any:
    """(T, 10, H, W) DN tensor -> AgriFM z-score (float32); NaN -> 0 first, optional clip."""
    import torch

    x = torch.nan_to_num(x.double(), nan=0.0, posinf=0.0, neginf=0.0)
    if clip:
        x = x.clamp(0.0, 10000.0)
    mean = torch.as_tensor(MEAN, device=x.device)[None, :, None, None]
    std = torch.as_tensor(STD, device=x.device)[None, :, None, None]
    return ((x - mean) / std).float()


def preprocess(x: np.ndarray, recipe: str, size: int, device: Any = "cpu") -> tuple[Any, RoiWindow]:
    """Raw (T, 10, H, W) DN -> the normalised (T, 10, size, size) tensor and the real content's
    window in it (see the module docstring for the two recipes)."""
    import torch
    import torch.nn.functional as F

    t = normalize(torch.from_numpy(np.ascontiguousarray(x)).to(device), clip=recipe == "rs_embed")
    t, win = square_pad(t)
    if t.shape[-1] != size:
        t = F.interpolate(
            t,
            size=(size, size),
            mode="bilinear",
            align_corners=False,
            antialias=recipe == "upstream",
        )
    return t, win


def as_frames(x: Any) -> tuple[np.ndarray, bool]:
    """The input as (T, 10, H, W); one (10, H, W) composite repeated to the catalog's 8."""
    a = np.asarray(x, dtype=np.float32)
    single = a.ndim == 3
    a = as_tchw(a, "agrifm", S2_BANDS, MAX_FRAMES, "the catalog fetches 8 equal bins")
    if single:
        a = np.repeat(a, N_FRAMES, axis=0)
    return a, single


# ---------------------------------------------------------------------------------------
# the embedder
# ---------------------------------------------------------------------------------------


class AgriFM(TorchEmbedder):
    """AgriFM (Video-Swin) on S2 B2..B12, 8 equal frames; see the module docstring.

    ``model_config``: ``recipe`` (``upstream`` default | ``rs_embed``), ``image_size``
    (default 224), ``filename`` (default ``AgriFM.pth``).
    """

    info: ClassVar[ModelInfo] = CATALOG["agrifm"]
    CONFIG_KEYS: ClassVar[frozenset[str] | None] = frozenset(CONFIG_KEYS)
    batch_size_cpu = 2
    batch_size_cuda = 16

    config_parser = staticmethod(parse_config)

    def _load(self, weights: str | None) -> None:
        self.opts = parse_config(self.model_config)
        self._init_runtime()
        # no Hugging Face repo: an explicit file or $RS_EMBED_RAY_WEIGHTS_DIR/agrifm/AgriFM.pth
        resolved = self._resolve_weights(weights, filename=WEIGHTS_FILE, hf_repo="")
        model = build_seeded(build_agrifm)
        model = load_prepared(model, resolved.path, prepare_state_dict)
        self.model = model.to(self.device).eval()
        log.info("agrifm loaded on %s (weights=%s)", self.device, self.weights_record["weights"])

    def forward(self, x: Any) -> np.ndarray:
        """(B, T, 10, S, S) normalised -> (B, 1024, S/16, S/16) numpy."""
        with self.inference():
            return to_numpy(self.model(x))

    def _embed(self, batch: Batch) -> list[Embedding]:
        """One forward per distinct (T, side) of the preprocessed inputs."""
        import torch

        n = len(batch)
        frames = [as_frames(x) for x in batch.inputs]
        prepped = [
            preprocess(a, self.opts["recipe"], self.opts["image_size"], self.device)
            for a, _ in frames
        ]
        grids: list[Any] = [None] * n
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (t, _) in enumerate(prepped):
            groups.setdefault(tuple(t.shape), []).append(i)
        for idx in groups.values():
            g = self.forward(torch.stack([prepped[i][0] for i in idx]))
            for j, i in enumerate(idx):
                grids[i] = g[j]
        return [self._result(batch, i, grids[i], prepped[i][1], frames[i]) for i in range(n)]

    def _result(
        self,
        batch: Batch,
        i: int,
        grid: np.ndarray,
        pad_win: RoiWindow,
        frames: tuple[np.ndarray, bool],
    ) -> Embedding:
        output = batch.output
        g, win = crop_padded(grid, pad_win, batch.metas[i])
        meta: dict[str, Any] = {
            "model": "agrifm",
            "weights": dict(self.weights_record),
            "input_hw": hw_list(batch.inputs[i]),
            "image_size": self.opts["image_size"],
            "recipe": self.opts["recipe"],
            "normalization": "agrifm_s2_zscore",
            "clip_0_10000": self.opts["recipe"] == "rs_embed",
            "resize_antialias": self.opts["recipe"] == "upstream",
            "bands": list(S2_BANDS),
            "n_frames": int(frames[0].shape[0]),
            "input_repeated_to_t": bool(frames[1]),
            "feature_fusion": "cat",
            "output_mode": output.mode,
            **self.run_meta(),
        }
        if win is not None:
            meta["roi_cropped"] = True
            meta["roi_window_in_model_input"] = [round(v, 6) for v in win]
        if output.mode == "pooled":
            meta["pooling"] = f"grid_{'max' if output.pooling == 'max' else 'mean'}"
            return pooled_embedding(pool(g, output.pooling), meta)
        return grid_embedding(g, meta, "agrifm_encoder_features")


__all__ = [
    "MEAN",
    "STD",
    "WEIGHTS_FILE",
    "AgriFM",
    "as_frames",
    "build_agrifm",
    "normalize",
    "parse_config",
    "prepare_state_dict",
    "preprocess",
    "relative_index",
    "shift_mask",
]
