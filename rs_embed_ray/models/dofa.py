"""DOFA (Dynamic One-For-All) ViT on 9 Sentinel-2 bands: pooled 768-D, grid 768x14x14.

Why this model: DOFA conditions its patch embedding on the band wavelengths, so one network
serves any band set; it is the catalog's wavelength-aware multispectral MAE.

Architecture, written here from the published description (module names follow the
published state dict, so ``earthflow/DOFA`` ``DOFA_ViT_base_e100.pth`` loads by name):

* ``patch_embed``: wavelengths (um) -> 1-D sin-cos code of ``wavelength * 1000`` (128-D) ->
  ``fclayer`` (residual 2-layer ReLU MLP) -> ``weight_generator``: a 1-layer torch
  ``TransformerEncoder`` (d=128, 4 heads, GELU, post-norm) over
  ``[128 weight tokens, C wavelength codes, 1 bias token]``; ``fc_weight`` maps each band's
  output (+ its code) to a 16x16x768 kernel slice, ``fc_bias`` maps the bias token's output to
  768 biases. The (C, 196608) output is viewed as ``(C, 16, 16, 768)`` and permuted to the
  conv kernel ``(768, C, 16, 16)``, as the official DOFA code (and torchgeo's ``DOFAEmbedding``)
  does; both are scaled by 0.01 and applied as a conv with stride 16 and padding 1 (the
  published layer's padding; 224 px -> 14 x 14 patches). Before code version 2 this was a
  raw reshape to ``(768, C, 16, 16)``, which scrambles the published weights (every dofa
  embedding exported before is wrong; the pair fingerprint carries the code version, so a
  resumed run re-embeds them). ``tests/oracle/test_oracle_dofa.py`` checks the whole network
  against torchgeo's ``DOFA`` on the same checkpoint.
* ``cls_token``, fixed 2-D sin-cos ``pos_embed``, 12 (base) / 24 (large) ViT blocks
  (``models/vit_block``: timm's ``Block`` with its names and arithmetic, qkv bias, LayerNorm
  eps 1e-6, without importing timm), ``fc_norm``.

Outputs: pooled = ``fc_norm(mean of patch tokens)``; grid = patch tokens of the last block,
no final norm. Pretraining checkpoints store ``norm`` (no ``fc_norm``): it is loaded into
``fc_norm``, as rs-embed and torchgeo do. Decoder / mask-token / head keys, if present, are
ignored by name; every other key must match exactly (names and shapes).

Preprocessing (spec §3a): clip DN to [0, 10000] -> /10000*255 -> per-band ``(x - mu) / sigma``
(DOFA S2 stats) -> centre pad to square (reflect; edge when the pad is too wide) -> bilinear
resize to 224 (``align_corners=False``, no antialias). Input already scaled to [0, 2] (and not
all zero) is rejected. A padded or ROI-windowed input has its token grid cropped back to the
real area; pooled then is ``fc_norm(mean of the cropped tokens)`` (rs-embed skips fc_norm
there; applying it keeps ROI and full-frame vectors in the same space).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np

from rs_embed_ray.errors import ModelError
from rs_embed_ray.models.base import Embedding, ModelInfo
from rs_embed_ray.models.catalog import CATALOG
from rs_embed_ray.models.grids import crop_padded, grid_embedding, hw_list, pooled_embedding
from rs_embed_ray.models.preprocess import (
    RoiWindow,
    as_chw,
    first_scaled_range,
    square_pad,
    stack_by_shape,
)
from rs_embed_ray.models.runtime import (
    Batch,
    TorchEmbedder,
    build_loaded,
    check_state_dict,
    strip_prefix,
    to_numpy,
    tokens_to_grid,
)
from rs_embed_ray.models.vit_block import vit_block

log = logging.getLogger(__name__)

HF_REPO = "earthflow/DOFA"
VARIANTS: dict[str, dict[str, Any]] = {
    "base": {"embed_dim": 768, "depth": 12, "num_heads": 12, "file": "DOFA_ViT_base_e100.pth"},
    "large": {"embed_dim": 1024, "depth": 24, "num_heads": 16, "file": "DOFA_ViT_large_e100.pth"},
}
IMAGE_SIZE = 224
PATCH = 16
WAVE_DIM = 128
N_WEIGHT_TOKENS = 128
KERNEL_SCALE = 0.01

S2_WAVELENGTH_UM = {
    "B1": 0.443,
    "B2": 0.490,
    "B3": 0.560,
    "B4": 0.665,
    "B5": 0.705,
    "B6": 0.740,
    "B7": 0.783,
    "B8": 0.842,
    "B8A": 0.865,
    "B9": 0.945,
    "B11": 1.610,
    "B12": 2.190,
}
# DOFA's per-band statistics on the 0..255 scale (spec §3a), keyed by S2 band.
S2_STATS = {
    "B4": (114.1099739, 77.84352553),
    "B3": (114.81779093, 69.96844919),
    "B2": (126.63977424, 67.42465279),
    "B5": (84.33539309, 64.57022983),
    "B6": (97.84789168, 61.72545487),
    "B7": (103.94461911, 61.34187099),
    "B8": (101.435633, 60.29744676),
    "B11": (72.32804172, 47.88519516),
    "B12": (56.66528851, 42.55886798),
}
_IGNORED_PREFIXES = ("decoder", "mask_token", "head.")


def sincos_1d(dim: int, pos: Any) -> Any:
    """(M,) positions -> (M, dim) codes: [sin(p * w_k), cos(p * w_k)], w_k = 1e4^(-2k/dim)."""
    import torch

    half = dim // 2
    omega = 1.0 / (10000.0 ** (torch.arange(half, dtype=torch.float32, device=pos.device) / half))
    ang = pos.reshape(-1, 1).float() * omega.reshape(1, -1)
    return torch.cat([torch.sin(ang), torch.cos(ang)], dim=1)


def sincos_2d(dim: int, side: int) -> Any:
    """MAE-style fixed (1 + side*side, dim) position table; row 0 (CLS) is zero."""
    import torch

    coords = torch.arange(side, dtype=torch.float32)
    gy, gx = torch.meshgrid(coords, coords, indexing="ij")
    emb = torch.cat([sincos_1d(dim // 2, gx), sincos_1d(dim // 2, gy)], dim=1)
    return torch.cat([torch.zeros(1, dim), emb], dim=0)


def build_dofa(variant: str = "base") -> Any:
    """The DOFA encoder as an ``nn.Module`` (random init; no download)."""
    import torch
    from torch import nn

    if variant not in VARIANTS:
        raise ModelError(f"Unknown DOFA variant {variant!r}; choose one of {sorted(VARIANTS)}.")
    cfg = VARIANTS[variant]
    dim = int(cfg["embed_dim"])

    class FCResLayer(nn.Module):
        def __init__(self, n: int) -> None:
            super().__init__()
            self.w1 = nn.Linear(n, n)
            self.w2 = nn.Linear(n, n)

        def forward(self, x: Any) -> Any:
            return x + torch.relu(self.w2(torch.relu(self.w1(x))))

    class WeightGenerator(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layer = nn.TransformerEncoderLayer(
                d_model=WAVE_DIM, nhead=4, activation="gelu", norm_first=False, dropout=0.0
            )
            self.transformer_encoder = nn.TransformerEncoder(
                layer, num_layers=1, enable_nested_tensor=False
            )
            self.fc_weight = nn.Linear(WAVE_DIM, PATCH * PATCH * dim)
            self.fc_bias = nn.Linear(WAVE_DIM, dim)
            self.weight_tokens = nn.Parameter(torch.randn(N_WEIGHT_TOKENS, WAVE_DIM) * 0.02)
            self.bias_token = nn.Parameter(torch.randn(1, WAVE_DIM) * 0.02)

        def forward(self, codes: Any) -> tuple[Any, Any]:
            seq = torch.cat([self.weight_tokens, codes, self.bias_token], dim=0)
            out = self.transformer_encoder(seq.unsqueeze(1)).squeeze(1)
            weights = self.fc_weight(out[N_WEIGHT_TOKENS:-1] + codes)
            return weights, self.fc_bias(out[-1])

    class DynamicPatchEmbed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight_generator = WeightGenerator()
            self.fclayer = FCResLayer(WAVE_DIM)
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    nn.init.xavier_uniform_(m.weight)
                    nn.init.constant_(m.bias, 0.01)

        def forward(self, x: Any, wavelengths_um: Any) -> Any:
            n_bands = int(wavelengths_um.shape[0])
            codes = self.fclayer(sincos_1d(WAVE_DIM, wavelengths_um * 1000.0))
            w, b = self.weight_generator(codes)
            # the official layout: per band a (k, k, D) slice, permuted to (D, C, k, k)
            kernel = w.view(n_bands, PATCH, PATCH, dim).permute(3, 0, 1, 2) * KERNEL_SCALE
            y = torch.nn.functional.conv2d(
                x, kernel.to(x.dtype), (b * KERNEL_SCALE).to(x.dtype), stride=PATCH, padding=1
            )
            return y.flatten(2).transpose(1, 2)

    class DOFAEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            side = IMAGE_SIZE // PATCH
            self.embed_dim = dim
            self.grid_side = side
            self.patch_embed = DynamicPatchEmbed()
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
            self.pos_embed = nn.Parameter(sincos_2d(dim, side).unsqueeze(0), requires_grad=False)
            heads = int(cfg["num_heads"])
            self.blocks = nn.ModuleList(
                [vit_block(dim, heads, 4.0, eps=1e-6) for _ in range(int(cfg["depth"]))]
            )
            self.fc_norm = nn.LayerNorm(dim, eps=1e-6)
            nn.init.normal_(self.cls_token, std=0.02)

        def forward_tokens(self, x: Any, wavelengths_um: Any) -> Any:
            """(B, C, 224, 224) -> (B, 196, D) patch tokens of the last block."""
            tok = self.patch_embed(x, wavelengths_um) + self.pos_embed[:, 1:, :]
            cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(tok.shape[0], -1, -1)
            seq = torch.cat([cls, tok], dim=1)
            for blk in self.blocks:
                seq = blk(seq)
            return seq[:, 1:, :]

    return DOFAEncoder()


def prepare_state_dict(model: Any, sd: dict[str, Any], *, path: str) -> dict[str, Any]:
    """Published DOFA keys -> this encoder's keys; strict on everything but known extras."""
    sd = strip_prefix(dict(sd), ("module.", "model.", "encoder.", "backbone."), nested=True)
    for suffix in ("weight", "bias"):
        if f"fc_norm.{suffix}" not in sd and f"norm.{suffix}" in sd:
            sd[f"fc_norm.{suffix}"] = sd[f"norm.{suffix}"]
        sd.pop(f"norm.{suffix}", None)
    ignored = sorted(k for k in sd if k.startswith(_IGNORED_PREFIXES))
    for k in ignored:
        sd.pop(k)
    check_state_dict(model, sd, path=path, what="DOFA")
    if ignored:
        log.info("DOFA: ignored %d non-encoder keys (e.g. %s)", len(ignored), ignored[:3])
    return sd


class DOFA(TorchEmbedder):
    """DOFA ViT (base by default) on S2 B4,B3,B2,B5,B6,B7,B8,B11,B12 with wavelengths.

    ``model_config``: ``variant`` (``base``|``large``), ``bands`` (a subset/reordering of the
    9 DOFA bands, in the order the input has them), ``hf_repo``, ``hf_revision``,
    ``filename``.
    """

    info: ClassVar[ModelInfo] = CATALOG["dofa"]
    CONFIG_KEYS: ClassVar[frozenset[str] | None] = frozenset(
        {"variant", "bands", "hf_repo", "hf_revision", "filename"}
    )
    batch_size_cpu = 8
    batch_size_cuda = 64

    def _load(self, weights: str | None) -> None:
        import torch

        cfg = self.model_config
        self.variant = str(cfg.get("variant") or "base").strip().lower()
        if self.variant not in VARIANTS:
            raise ModelError(
                f"dofa variant must be one of {sorted(VARIANTS)}, got {self.variant!r}"
            )
        bands = tuple(cfg.get("bands") or self.info.sensor.bands)  # type: ignore[union-attr]
        unknown = [b for b in bands if b not in S2_STATS]
        if unknown:
            raise ModelError(
                f"dofa: no DOFA statistics for bands {unknown}; use a subset of {list(S2_STATS)}."
            )
        self.bands = bands
        self._init_runtime()
        resolved = self._resolve_weights(
            weights, filename=VARIANTS[self.variant]["file"], hf_repo=HF_REPO
        )
        model = build_loaded(
            build_dofa, self.variant, path=resolved.path, prepare=prepare_state_dict
        )
        self.model = model.to(self.device).eval()
        self._waves = torch.tensor(
            [S2_WAVELENGTH_UM[b] for b in bands], dtype=torch.float32, device=self.device
        )
        stats = np.array([S2_STATS[b] for b in bands], dtype=np.float32)
        self._mean = torch.from_numpy(stats[:, 0]).to(self.device).view(1, -1, 1, 1)
        self._std = torch.from_numpy(stats[:, 1]).to(self.device).view(1, -1, 1, 1)

    def preprocess(self, inputs: list[np.ndarray]) -> tuple[Any, list[RoiWindow]]:
        """Raw DN patches -> (B, C, 224, 224) normalised; plus each input's content window.

        The host only checks shapes and stacks: NaN/inf zeroing, the already-scaled check and
        the normalisation run batched on the model's device, so on a GPU the host's per-image
        work (which capped the forward at about 200 images/s on an H200) is one copy."""
        import torch
        import torch.nn.functional as F

        c = len(self.bands)
        arrays = [as_chw(x, channels=c, model_id="dofa", zero_nonfinite=False) for x in inputs]
        wins: dict[tuple[int, ...], RoiWindow] = {}  # content window per input shape

        def transform(t: Any, shape: tuple[int, ...]) -> Any:
            t = torch.nan_to_num_(t, nan=0.0, posinf=0.0, neginf=0.0)
            scaled = first_scaled_range(t, nodata_ok=True)
            if scaled is not None:
                raise ModelError(
                    f"dofa input looks already scaled (values in [0, {scaled[1]:.3f}]); pass "
                    "raw Sentinel-2 SR DN (0..10000)."
                )
            # the reference's order of operations, in place: clamp, /1e4, *255, -mean, /std
            t = t.clamp_(0.0, 10000.0).div_(10000.0).mul_(255.0).sub_(self._mean).div_(self._std)
            t, wins[shape] = square_pad(t)
            if t.shape[-1] != IMAGE_SIZE:
                t = F.interpolate(
                    t, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False
                )
            return t

        x = stack_by_shape(arrays, transform, device=self.device)
        return x, [wins[a.shape] for a in arrays]

    def forward(self, x: Any) -> np.ndarray:
        """One forward: (B, D, 14, 14) last-block patch tokens as float32 numpy."""
        with self.inference():
            tok = self.model.forward_tokens(x, self._waves)
        return tokens_to_grid(tok)

    def _fc_norm(self, vecs: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(vecs)).to(self.device)
            return to_numpy(self.model.fc_norm(t))

    def _embed(self, batch: Batch) -> list[Embedding]:
        """Embed raw DN patches with one forward; grids (and pools) cropped to the real area."""
        output = batch.output
        x, pad_wins = self.preprocess(batch.inputs)
        grids = self.forward(x)
        cut = [crop_padded(grids[i], pad_wins[i], batch.metas[i]) for i in range(len(batch))]
        crops = [g if win is None else np.ascontiguousarray(g) for g, win in cut]
        windows = [win for _, win in cut]
        pooled = None
        if output.mode == "pooled":
            pooled = self._fc_norm(np.stack([g.mean(axis=(1, 2)) for g in crops]))
        out: list[Embedding] = []
        for i in range(len(batch)):
            meta: dict[str, Any] = {
                "model": "dofa",
                "variant": self.variant,
                "weights": dict(self.weights_record),
                "input_hw": hw_list(batch.inputs[i]),
                "image_size": IMAGE_SIZE,
                "preprocess": "dofa_s2_stats_pad_square_bilinear",
                "bands": list(self.bands),
                "wavelengths_um": [S2_WAVELENGTH_UM[b] for b in self.bands],
                "output_mode": output.mode,
                **self.run_meta(),
            }
            if windows[i] is not None:
                meta["roi_cropped"] = True
                meta["roi_window_in_model_input"] = [round(v, 6) for v in windows[i]]
            if output.mode == "pooled":
                assert pooled is not None
                meta["pooling"] = "fc_norm_mean" if windows[i] is None else "roi_grid_mean_fc_norm"
                if output.pooling != "mean":
                    meta["pooling_note"] = f"dofa pools by mean; pooling={output.pooling!r} ignored"
                out.append(pooled_embedding(pooled[i], meta))
            else:
                out.append(grid_embedding(crops[i], meta, "vit_patch_tokens"))
        return out


__all__ = ["DOFA", "HF_REPO", "S2_STATS", "S2_WAVELENGTH_UM", "VARIANTS", "build_dofa"]
