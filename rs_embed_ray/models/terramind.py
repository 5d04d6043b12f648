"""TerraMind 1.0 (IBM/ESA) encoder on raw Sentinel-2 L2A: pooled 384-D, grid 384x14x14 (small).

Why this model: TerraMind is the any-to-any multimodal model of the catalog; its encoder on the
untokenised S2L2A modality is what rs-embed 0.3.1 exposes (through terratorch's
``terramind_v1_small`` backbone, ``modalities=["S2L2A"]``).

Architecture, written here from the published description (TerraMind / 4M papers and
terratorch's ``TerraMindViT``, which is the oracle in ``tests/oracle/test_oracle_terramind.py``;
no code copied). Module names follow the published state dict, so ``TerraMind_v1_<size>.pt``
loads by name and shape:

* ``encoder_embeddings.untok_sen2l2a@224``: ``proj`` (Linear, no bias) on 16x16 patches
  flattened in (row-in-patch, column-in-patch, channel) order, plus ``mod_emb`` (1, 1, D) and
  the fixed MoCo-v3 2-D sin-cos ``pos_emb`` (1, 196, D; a buffer, regenerated when the file
  lacks it);
* ``encoder.0..N-1``: pre-norm blocks (``norm1``, ``attn.qkv`` (bias), ``attn.proj``,
  ``norm2``, ``mlp.fc1``/``fc2``, GELU) whose LayerNorms have eps 1e-6 and a fixed zero bias
  (a buffer), then ``encoder_norm``;
* sizes: tiny 192/12/3, small 384/12/6, base 768/12/12, large 1024/24/16 (dim/depth/heads).

The published file holds the whole encoder-decoder; decoder, tokenizer and the other
modalities' embeddings are ignored by name, every other key must match.

Preprocessing (spec §3a). Upstream (default, ``preprocess="upstream"``): TerraMind's v1
pretraining z-score of the raw L2A DN (v0.1 statistics for ``terramind_v01_*``), bilinear
resize to 224 (``align_corners=False``), NaN -> 0 (the band mean) before the resize. rs-embed
0.3.1 sets NaN to DN 0 and clips the DN to 0..10000 first, a departure from the upstream
recipe (which standardises the values as they are);
``model_config["preprocess"]="rs_embed"`` reproduces it (``"none"`` skips the z-score, as
``RS_EMBED_TERRAMIND_NORMALIZE=none`` does). rs-embed also defaults to the small model where
the upstream flagship is base: the catalog keeps small (``variant`` picks another).

Verified against (2026-12-03, seeded random file in the published layout): terratorch 1.2.11's
``TerraMindViT`` (the ``oracle`` extra; tests/oracle/test_oracle_terramind.py) -- tokens
identical (max abs 0.0), pooled within 1e-6; rs-embed 0.3.1's own adapter
(scripts/compare_terramind_rs_embed.py, anchor venv) -- max abs 4.9e-6 on the grid with
``preprocess="rs_embed"``, 0.32 with ``upstream`` on input holding DN outside 0..10000 and
a NaN (the clip and the NaN fill are the only differences). terratorch stays a test-only
extra: the product builds this small encoder itself instead of pulling terratorch's large
dependency tree.

Outputs from one forward: the tokens of layer ``layer_index`` (-1: after ``encoder_norm``,
other layers un-normed, as terratorch returns them); pooled = mean (max) of the 196 tokens (no
CLS), or of the ROI-cropped grid when the input carries a fetch-square window; grid = the
14 x 14 tokens, cropped to the ROI.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np

from rs_embed_ray.errors import ModelError
from rs_embed_ray.models.base import Embedding, ModelInfo
from rs_embed_ray.models.catalog import CATALOG
from rs_embed_ray.models.grids import crop_to_roi, grid_embedding, hw_list, pool, pooled_embedding
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

IMAGE_SIZE = 224
PATCH = 16
CHANNELS = 12
MODALITY_KEY = "untok_sen2l2a@224"
EMBED_PREFIX = f"encoder_embeddings.{MODALITY_KEY}."
# (dim, depth, heads) per size, from terratorch's terramind_register
VARIANTS: dict[str, tuple[int, int, int]] = {
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
}
# model_key -> (hf repo, file name); v01 base uses the v0.1 statistics
MODEL_KEYS: dict[str, tuple[str, str]] = {
    "terramind_v1_tiny": ("ibm-esa-geospatial/TerraMind-1.0-tiny", "TerraMind_v1_tiny.pt"),
    "terramind_v1_small": ("ibm-esa-geospatial/TerraMind-1.0-small", "TerraMind_v1_small.pt"),
    "terramind_v1_base": ("ibm-esa-geospatial/TerraMind-1.0-base", "TerraMind_v1_base.pt"),
    "terramind_v1_large": ("ibm-esa-geospatial/TerraMind-1.0-large", "TerraMind_v1_large.pt"),
    "terramind_v01_base": ("FAST-EO/TerraMind-0.1-base", "TerraMind_v01_base.pt"),
}
DEFAULT_MODEL_KEY = "terramind_v1_small"
PREPROCESS_MODES = ("upstream", "rs_embed", "none")

# S2L2A pretraining statistics (B1..B12 without B10), terratorch's terramind_register
V1_MEAN = (1390.458, 1503.317, 1718.197, 1853.91, 2199.1, 2779.975, 2987.011, 3083.234)
V1_MEAN += (3132.22, 3162.988, 2424.884, 1857.648)
V1_STD = (2106.761, 2141.107, 2038.973, 2134.138, 2085.321, 1889.926, 1820.257, 1871.918)
V1_STD += (1753.829, 1797.379, 1434.261, 1334.311)
V01_MEAN = (794.311, 925.161, 1183.128, 1338.041, 1667.254, 2233.633, 2460.96, 2555.569)
V01_MEAN += (2619.542, 2703.298, 2406.497, 1841.645)
V01_STD = (1164.883, 1205.586, 1223.713, 1399.638, 1403.298, 1378.513, 1434.924, 1491.141)
V01_STD += (1454.089, 1660.395, 1473.248, 1365.08)

# whole-model keys of the published encoder-decoder file that the S2L2A encoder does not use
_IGNORED_PREFIXES = ("decoder", "tokenizer.", "mask_token", "encoder_embeddings.")


def variant_of(model_key: str) -> str:
    """``terramind_v1_small`` -> ``small`` (a known key, or a ModelError naming them)."""
    if model_key not in MODEL_KEYS:
        raise ModelError(
            f"terramind model_key must be one of {sorted(MODEL_KEYS)}, got {model_key!r}."
        )
    return model_key.rsplit("_", 1)[1]


def sincos_pos_emb(side: int, dim: int) -> Any:
    """MoCo-v3 2-D sin-cos table (1, side*side, dim), in TerraMind's (column-major) order."""
    import torch

    q = dim // 4
    omega = 1.0 / (10000.0 ** (torch.arange(q, dtype=torch.float32) / q))
    gw, gh = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    ow = gw.reshape(-1, 1).float() * omega[None]
    oh = gh.reshape(-1, 1).float() * omega[None]
    return torch.cat([ow.sin(), ow.cos(), oh.sin(), oh.cos()], dim=1)[None]


def build_terramind(variant: str = "small") -> Any:
    """The TerraMind v1 encoder for S2L2A as an ``nn.Module`` (random init; no download)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    dim, depth, heads = VARIANTS[variant]

    class LayerNorm(nn.Module):
        """LayerNorm with a learned scale and a fixed zero bias (a buffer), eps 1e-6."""

        def __init__(self, d: int) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(d))
            self.register_buffer("bias", torch.zeros(d))

        def forward(self, x: Any) -> Any:
            return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, eps=1e-6)

    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv = nn.Linear(dim, 3 * dim)
            self.proj = nn.Linear(dim, dim)

        def forward(self, x: Any) -> Any:
            b, n, c = x.shape
            q, k, v = self.qkv(x).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
            y = F.scaled_dot_product_attention(q, k, v)
            return self.proj(y.transpose(1, 2).reshape(b, n, c))

    class Mlp(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(dim, 4 * dim)
            self.fc2 = nn.Linear(4 * dim, dim)

        def forward(self, x: Any) -> Any:
            return self.fc2(F.gelu(self.fc1(x)))

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm1 = LayerNorm(dim)
            self.attn = Attention()
            self.norm2 = LayerNorm(dim)
            self.mlp = Mlp()

        def forward(self, x: Any) -> Any:
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))

    class PatchEmbedding(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(CHANNELS * PATCH * PATCH, dim, bias=False)
            self.mod_emb = nn.Parameter(torch.zeros(1, 1, dim))
            self.register_buffer("pos_emb", sincos_pos_emb(IMAGE_SIZE // PATCH, dim))
            nn.init.normal_(self.mod_emb, std=0.02)

        def forward(self, x: Any) -> Any:
            b, c, h, w = x.shape
            nh, nw = h // PATCH, w // PATCH
            p = x.reshape(b, c, nh, PATCH, nw, PATCH).permute(0, 2, 4, 3, 5, 1)
            tok = self.proj(p.reshape(b, nh * nw, PATCH * PATCH * c))
            return tok + (self.pos_emb + self.mod_emb)

    class TerraMindEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder_embeddings = nn.ModuleDict({MODALITY_KEY: PatchEmbedding()})
            self.encoder = nn.ModuleList([Block() for _ in range(depth)])
            self.encoder_norm = LayerNorm(dim)

        def forward_tokens(self, x: Any, layer_index: int = -1) -> Any:
            """(B, 12, 224, 224) z-scored -> (B, 196, D) tokens of ``layer_index``."""
            h = self.encoder_embeddings[MODALITY_KEY](x)
            last = len(self.encoder) - 1
            want = layer_index % len(self.encoder)
            for i, blk in enumerate(self.encoder):
                h = blk(h)
                if i == want and i != last:
                    return h
            return self.encoder_norm(h)

    return TerraMindEncoder()


def prepare_state_dict(model: Any, sd: dict[str, Any], *, path: str) -> dict[str, Any]:
    """Published TerraMind keys -> this encoder's keys (strict on every parameter).

    Decoder, tokenizer and other modalities' keys are dropped by name; the fixed buffers
    (sin-cos ``pos_emb``, the zero LayerNorm biases) are taken from the file when it has
    them (shape-checked), else regenerated.
    """
    sd = strip_prefix(dict(sd), ("module.", "model."), nested=True)
    own = model.state_dict()
    params = {n for n, _ in model.named_parameters()}
    kept: dict[str, Any] = {}
    dropped = 0
    for k, v in sd.items():
        if k in own or not k.startswith(_IGNORED_PREFIXES):
            kept[k] = v
        else:
            dropped += 1
    for k, v in own.items():
        if k not in params and k not in kept:
            kept[k] = v
    check_state_dict(model, kept, path=path, what="TerraMind")
    if dropped:
        log.info("terramind: ignored %d keys of other modalities / the decoder", dropped)
    return kept


CONFIG_KEYS = ("model_key", "variant", "preprocess", "layer_index", "hf_repo", "hf_revision")
CONFIG_KEYS += ("filename",)


def parse_config(model_config: dict[str, Any] | None) -> tuple[str, str, int]:
    """``model_config`` -> (model_key, preprocess mode, layer_index); a ModelError names the
    key to change. Cheap (no torch), so the planner runs it before any cluster work."""
    cfg = dict(model_config or {})
    unknown = sorted(set(cfg) - set(CONFIG_KEYS))
    if unknown:
        raise ModelError(
            f"terramind: unknown model_config key(s) {unknown}; known: {list(CONFIG_KEYS)}."
        )
    key = cfg.get("model_key")
    if key is None and cfg.get("variant") is not None:
        key = f"terramind_v1_{str(cfg['variant']).strip().lower()}"
    model_key = str(key or DEFAULT_MODEL_KEY).strip().lower()
    depth = VARIANTS[variant_of(model_key)][1]
    mode = str(cfg.get("preprocess") or "upstream").strip().lower()
    if mode not in PREPROCESS_MODES:
        raise ModelError(f"terramind preprocess must be one of {PREPROCESS_MODES}, got {mode!r}.")
    try:
        layer = int(cfg.get("layer_index", -1))
    except (TypeError, ValueError):
        layer = depth  # reported below
    if not -depth <= layer < depth:
        raise ModelError(
            f"terramind layer_index must be an integer in [-{depth}, {depth - 1}], "
            f"got {cfg.get('layer_index')!r}."
        )
    return model_key, mode, layer


def normalize(x: np.ndarray, *, mode: str, model_key: str) -> np.ndarray:
    """(12, H, W) raw L2A DN -> model input (before the resize): z-score per band.

    ``upstream``: NaN/inf -> 0 after the z-score (the band mean; upstream defines no fill).
    ``rs_embed``: NaN/inf -> DN 0 first, then clip to 0..10000 and z-score, as rs-embed
    0.3.1 does. ``none`` keeps the DN (NaN -> 0).
    """
    a = np.asarray(x, dtype=np.float32)
    if mode == "rs_embed":
        a = np.clip(np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0), 0.0, 10000.0)
    if mode != "none":
        v01 = model_key.startswith("terramind_v01")
        mean = np.asarray(V01_MEAN if v01 else V1_MEAN, np.float32)[:, None, None]
        std = np.asarray(V01_STD if v01 else V1_STD, np.float32)[:, None, None]
        a = (a - mean) / std
    return np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


class TerraMind(TorchEmbedder):
    """TerraMind v1 encoder on S2 L2A (12 bands B1..B12 without B10).

    ``model_config``: ``model_key`` (``terramind_v1_small`` default; tiny/base/large,
    ``terramind_v01_base``) or ``variant`` (``tiny|small|base|large``), ``preprocess``
    (``upstream`` default | ``rs_embed`` | ``none``), ``layer_index`` (-1), ``hf_repo``,
    ``hf_revision``, ``filename``.
    """

    info: ClassVar[ModelInfo] = CATALOG["terramind"]
    CONFIG_KEYS: ClassVar[frozenset[str] | None] = frozenset(CONFIG_KEYS)
    batch_size_cpu = 8
    batch_size_cuda = 64

    config_parser = staticmethod(parse_config)

    def _load(self, weights: str | None) -> None:
        self.model_key, self.preprocess_mode, self.layer_index = parse_config(self.model_config)
        self.variant = variant_of(self.model_key)
        self._init_runtime()
        repo, filename = MODEL_KEYS[self.model_key]
        resolved = self._resolve_weights(weights, filename=filename, hf_repo=repo)
        model = build_seeded(build_terramind, self.variant)
        model = load_prepared(model, resolved.path, prepare_state_dict)
        self.model = model.to(self.device).eval()
        self.dim = VARIANTS[self.variant][0]

    def preprocess(self, inputs: list[np.ndarray]) -> Any:
        """Raw patches -> (B, 12, 224, 224) normalised tensor on the model's device."""
        import torch
        import torch.nn.functional as F

        out = []
        for x in inputs:
            a = np.asarray(x, dtype=np.float32)
            if a.ndim == 4 and a.shape[0] == 1:
                a = a[0]
            if a.ndim != 3 or a.shape[0] != CHANNELS or 0 in a.shape:
                raise ModelError(
                    "terramind expects (12, H, W) Sentinel-2 L2A input (B1..B12 without B10), "
                    f"got {tuple(a.shape)}."
                )
            a = normalize(a, mode=self.preprocess_mode, model_key=self.model_key)
            t = torch.from_numpy(np.ascontiguousarray(a)).to(self.device)[None]
            if t.shape[-2:] != (IMAGE_SIZE, IMAGE_SIZE):
                t = F.interpolate(
                    t, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False
                )
            out.append(t[0])
        return torch.stack(out)

    def forward(self, x: Any) -> np.ndarray:
        """One forward: (B, 196, D) tokens of ``layer_index`` as float32 numpy."""
        with self.inference():
            tok = self.model.forward_tokens(x, self.layer_index)
        return to_numpy(tok)

    def _embed(self, batch: Batch) -> list[Embedding]:
        output = batch.output
        tokens = self.forward(self.preprocess(batch.inputs))
        side = IMAGE_SIZE // PATCH
        results: list[Embedding] = []
        for i, tok in enumerate(tokens):
            meta: dict[str, Any] = {
                "model": "terramind",
                "weights": dict(self.weights_record),
                "model_key": self.model_key,
                "modality": "S2L2A",
                "input_hw": hw_list(batch.inputs[i]),
                "image_size": IMAGE_SIZE,
                "preprocess": f"{self.preprocess_mode}_zscore_bilinear"
                if self.preprocess_mode != "none"
                else "raw_bilinear",
                "layer_index": self.layer_index,
                "output_mode": output.mode,
                **self.run_meta(),
            }
            win = roi_window_from_meta(batch.metas[i])
            grid = tok.reshape(side, side, -1).transpose(2, 0, 1)
            grid = crop_to_roi(grid, win, meta)
            if output.mode == "pooled":
                vec = pool(grid, output.pooling)
                meta["pooling"] = output.pooling if win is None else f"roi_grid_{output.pooling}"
                results.append(pooled_embedding(vec, meta))
            else:
                results.append(grid_embedding(grid, meta, "vit_patch_tokens"))
        return results


__all__ = [
    "DEFAULT_MODEL_KEY",
    "MODEL_KEYS",
    "TerraMind",
    "VARIANTS",
    "build_terramind",
    "parse_config",
    "normalize",
    "prepare_state_dict",
    "sincos_pos_emb",
]
