"""FoMo-Net_1 (RolnickLab FoMo-Bench): a ViT that embeds every spectral band on its own and
tells the bands apart by a learned per-band "spectral key". Pooled 768-D, grid 768 x 4 x 4.

Why this model: one network for any mix of sensors (Planet, S1, S2, Landsat, aerial, DEM,
Gaofen-2): a band is a set of tokens plus the embedding of its key, so the 12 S2 bands run
without a sensor-specific stem.

No package ships FoMo-Net (the official code is ``model_zoo/multimodal_mae.py`` of
github.com/RolnickLab/FoMo-Bench, MIT; rs-embed 0.3.1 vendors it). The architecture is
written here from that source (no code copied), with the published module names, so the
published ``fomo_single_embedding_layer_weights.pt`` (a plain ``state_dict`` of
``MultiSpectralViT(image_size=64, patch_size=16, channels=1, dim=768, depth=12, heads=12,
mlp_dim=2048, num_classes=1000)`` with ``single_embedding_layer=True`` and the 37 modality
channels of ``configs/datasets/fomo_pretraining_datasets.json``) loads by name and shape:

* ``to_patch_embedding``: one band (B, 1, 64, 64) cut into 16 x 16 patches, flattened
  ``(p1 p2)``; ``.1`` LayerNorm(256) -> ``.2`` Linear(256, 768) -> ``.3`` LayerNorm(768)
  (index 0 is the parameter-free rearrange); the same layer for every band;
* ``spectral_embedding`` (1, 38, 768): row ``key`` added to every token of the band with
  that key; ``pos_embedding`` (1, 17, 768): rows 1..16 added to the 16 patches (row 0 and
  ``cls_token`` belong to a CLS token the forward never uses; they are loaded, unused);
* the bands' tokens concatenated band after band (12 x 16 = 192 tokens), then
  ``transformer``: 12 pre-norm layers ``layers.<i>.0`` attention (``norm``, ``to_qkv``
  without bias, 12 heads of 64, ``to_out.0``) and ``layers.<i>.1.net`` feed-forward
  (LayerNorm, Linear 768 -> 2048, GELU, Linear 2048 -> 768), then ``transformer.norm``;
  all LayerNorms with torch's default eps 1e-5.

Strict loading: a ``state_dict``/``model``/``module`` wrapper and ``module.``/``model.``
prefixes are removed (as rs-embed's loader does); ``mlp_head.*`` (the 1000-class
classifier of the ``pool=True`` forward, unused for embeddings) is set aside by name; every
other key must match by name and shape (rs-embed 0.3.1 loads with ``strict=False``).

Spectral keys of the S2 bands ``B1,B2,B3,B4,B5,B6,B7,B8,B8A,B9,B11,B12`` (spec §3a): ``6, 7,
8, 9, 10, 11, 12, 13, 14, 15, 17, 18`` (``sentinel-2-b1`` .. ``sentinel-2-b12`` in the
published modality table; 16 is B10, not fetched).

Preprocessing (spec §3a, rs-embed 0.3.1): NaN/inf -> 0, clip to 0..10000, ``/ 10000``; a
non-square input is centre-padded to a square (reflect; edge when the pad is not smaller
than the short side), then bilinear-resized to 64 x 64 (``align_corners=False``, no
antialias). FoMo-Bench publishes no dataset-independent inference recipe (its pretraining
z-scores each dataset with that dataset's statistics, ``configs/stats/stats.json``), so the
reference's ``/10000`` is kept: there is no upstream recipe to depart from.

Outputs from one forward: tokens (B, 192, 768) after ``transformer.norm``. Pooled = the mean
(max) of all 192 tokens (rs-embed's token pooling; the official ``pool=True`` forward takes
the same mean before its classifier), or the mean (max) of the ROI-cropped grid when the
input carries a fetch-square window; grid = the tokens averaged over the 12 bands, 768 x 4 x
4, cropped to the ROI. A padded (non-square) input's grid and pool are cut back to its real
area, as every padded model of this package does (rs-embed keeps the padded border; the
pipeline fetches squares of ground, at most a pixel off square, whose 4 x 4 grid the cut
leaves whole).
"""

from __future__ import annotations

import logging
import math
from typing import Any, ClassVar

import numpy as np

from rs_embed_ray.errors import ModelError
from rs_embed_ray.models.base import Embedding, ModelInfo
from rs_embed_ray.models.catalog import CATALOG
from rs_embed_ray.models.grids import crop_padded, grid_embedding, hw_list, pool, pooled_embedding
from rs_embed_ray.models.preprocess import RoiWindow, square_pad, stack_by_shape
from rs_embed_ray.models.runtime import (
    Batch,
    TorchEmbedder,
    build_seeded,
    check_state_dict,
    load_prepared,
    strip_prefix,
    to_numpy,
)
from rs_embed_ray.models.weights import resolve_weights

log = logging.getLogger(__name__)

WEIGHTS_FILENAME = "fomo_single_embedding_layer_weights.pt"
WEIGHTS_URL = (
    "https://www.dropbox.com/scl/fi/4ckmxlcbc0tcod8hknp7c/"
    "fomo_single_embedding_layer_weights.pt?rlkey=26tlf3yaz93vvcosr0qrvklub&dl=1"
)
IMAGE_SIZE = 64
PATCH = 16
EMBED_DIM = 768
DEPTH = 12
NUM_HEADS = 12
DIM_HEAD = 64
MLP_DIM = 2048
N_MODALITIES = 37  # the published modality table (planet, S1, S2, landsat, aerial, dem, gaofen2)
S2_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12")
S2_KEYS = (6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 17, 18)
SIDE = IMAGE_SIZE // PATCH
_IGNORED_PREFIXES = ("mlp_head.",)
CONFIG_KEYS = ("filename",)


def build_fomo() -> Any:
    """FoMo-Net_1's ``MultiSpectralViT`` encoder as an ``nn.Module`` (random init)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            inner = NUM_HEADS * DIM_HEAD
            self.norm = nn.LayerNorm(EMBED_DIM)
            self.to_qkv = nn.Linear(EMBED_DIM, 3 * inner, bias=False)
            self.to_out = nn.Sequential(nn.Linear(inner, EMBED_DIM), nn.Dropout(0.0))

        def forward(self, x: Any) -> Any:
            b, n, _ = x.shape
            qkv = self.to_qkv(self.norm(x)).reshape(b, n, 3, NUM_HEADS, DIM_HEAD)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, heads, N, 64) each
            out = F.scaled_dot_product_attention(q, k, v)  # scale 64 ** -0.5
            return self.to_out(out.transpose(1, 2).reshape(b, n, NUM_HEADS * DIM_HEAD))

    def feed_forward() -> Any:
        return nn.Sequential(
            nn.LayerNorm(EMBED_DIM),
            nn.Linear(EMBED_DIM, MLP_DIM),
            nn.GELU(),
            nn.Dropout(0.0),
            nn.Linear(MLP_DIM, EMBED_DIM),
            nn.Dropout(0.0),
        )

    class FeedForward(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = feed_forward()

        def forward(self, x: Any) -> Any:
            return self.net(x)

    class Transformer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = nn.LayerNorm(EMBED_DIM)
            self.layers = nn.ModuleList(
                [nn.ModuleList([Attention(), FeedForward()]) for _ in range(DEPTH)]
            )

        def forward(self, x: Any) -> Any:
            for attn, ff in self.layers:
                x = attn(x) + x
                x = ff(x) + x
            return self.norm(x)

    class MultiSpectralViT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            patch_dim = PATCH * PATCH
            self.to_patch_embedding = nn.Sequential(
                nn.Identity(),  # the official rearrange (no parameters)
                nn.LayerNorm(patch_dim),
                nn.Linear(patch_dim, EMBED_DIM),
                nn.LayerNorm(EMBED_DIM),
            )
            self.pos_embedding = nn.Parameter(torch.randn(1, SIDE * SIDE + 1, EMBED_DIM))
            self.spectral_embedding = nn.Parameter(torch.randn(1, N_MODALITIES + 1, EMBED_DIM))
            self.cls_token = nn.Parameter(torch.randn(1, 1, EMBED_DIM))
            self.transformer = Transformer()

        def patches(self, x: Any) -> Any:
            """(B, C, H, W) -> (B, C, n, p*p): each band's patches, rows then columns."""
            b, c, h, w = x.shape
            t = x.reshape(b, c, h // PATCH, PATCH, w // PATCH, PATCH)
            return t.permute(0, 1, 2, 4, 3, 5).reshape(b, c, -1, PATCH * PATCH)

        def forward_tokens(self, x: Any, keys: Any) -> Any:
            """(B, C, 64, 64) bands with spectral ``keys`` (C,) -> (B, C*16, 768) tokens
            after the final norm, band after band."""
            b, c = x.shape[:2]
            if len(keys) != c:
                raise ModelError(f"fomo: {c} bands but {len(keys)} spectral keys.")
            tok = self.to_patch_embedding(self.patches(x))  # (B, C, n, D)
            n = tok.shape[2]
            idx = torch.as_tensor(list(keys), device=x.device, dtype=torch.long)
            tok = tok + self.spectral_embedding[0, idx][None, :, None, :]
            tok = tok + self.pos_embedding[0, 1 : n + 1][None, None]
            return self.transformer(tok.reshape(b, c * n, EMBED_DIM))

    return MultiSpectralViT()


def prepare_state_dict(model: Any, sd: dict[str, Any], *, path: str) -> dict[str, Any]:
    """The published FoMo state dict -> this encoder's keys (strict except ``mlp_head.*``)."""
    sd = strip_prefix(dict(sd), ("module.", "model."), nested=True)
    aside = sorted(k for k in sd if k.startswith(_IGNORED_PREFIXES))
    for k in aside:
        sd.pop(k)
    check_state_dict(model, sd, path=path, what="FoMo")
    if aside:
        log.info("fomo: set aside %d classifier keys (%s)", len(aside), aside)
    return sd


def grid_of(tokens: np.ndarray, n_bands: int) -> np.ndarray:
    """(B, C*n, D) tokens -> (B, D, side, side): the band-averaged patch grid."""
    b, total, d = tokens.shape
    side = math.isqrt(total // n_bands)
    g = tokens.reshape(b, n_bands, side, side, d).mean(axis=1)
    return np.ascontiguousarray(g.transpose(0, 3, 1, 2))


def parse_config(model_config: dict[str, Any] | None) -> None:
    """FoMo reads only ``filename`` (a checkpoint file name other than the published one)."""
    fn = (model_config or {}).get("filename")
    if fn is not None and not str(fn).strip():
        raise ModelError("fomo model_config filename must be a non-empty file name.")


class FoMo(TorchEmbedder):
    """FoMo-Net_1 on S2 (12 bands, B1..B12 without B10); see the module docstring.

    ``model_config``: ``filename`` (the weights file name searched in a folder / the
    weights dir; default the published ``fomo_single_embedding_layer_weights.pt``).
    """

    info: ClassVar[ModelInfo] = CATALOG["fomo"]
    CONFIG_KEYS: ClassVar[frozenset[str] | None] = frozenset(CONFIG_KEYS)
    batch_size_cpu = 16
    batch_size_cuda = 128

    config_parser = staticmethod(parse_config)

    def _load(self, weights: str | None) -> None:
        parse_config(self.model_config)
        self._init_runtime()
        resolved = resolve_weights(
            "fomo",
            weights,
            filename=str(self.model_config.get("filename") or WEIGHTS_FILENAME),
            hf_repo=None,
        )
        self.weights_record = resolved.record()
        model = load_prepared(build_seeded(build_fomo), resolved.path, prepare_state_dict)
        self.model = model.to(self.device).eval()

    def preprocess(self, inputs: list[np.ndarray]) -> tuple[Any, list[RoiWindow]]:
        """Raw DN (12, H, W) patches -> (B, 12, 64, 64) and each one's real-area window."""
        import torch
        import torch.nn.functional as F

        arrays = []
        for x in inputs:
            a = np.asarray(x, dtype=np.float32)
            if a.ndim == 4 and a.shape[0] == 1:
                a = a[0]
            if a.ndim != 3 or a.shape[0] != len(S2_BANDS) or 0 in a.shape:
                raise ModelError(
                    f"fomo expects (12, H, W) Sentinel-2 input ({','.join(S2_BANDS)}), got "
                    f"{tuple(a.shape)}."
                )
            arrays.append(np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0))
        wins: dict[tuple[int, ...], RoiWindow] = {}

        def transform(t: Any, shape: tuple[int, ...]) -> Any:
            t = torch.clamp(t, 0.0, 10000.0) / 10000.0
            t, wins[shape] = square_pad(t)
            if t.shape[-1] != IMAGE_SIZE:
                t = F.interpolate(
                    t, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False
                )
            return t

        x = stack_by_shape(arrays, transform, device=self.device)
        return x, [wins[a.shape] for a in arrays]

    def forward(self, x: Any) -> np.ndarray:
        """One forward: (B, 192, 768) final-norm tokens as float32 numpy."""
        with self.inference():
            tok = self.model.forward_tokens(x, S2_KEYS)
        return to_numpy(tok)

    def _embed(self, batch: Batch) -> list[Embedding]:
        output = batch.output
        x, pad_wins = self.preprocess(batch.inputs)
        tokens = self.forward(x)
        grids = grid_of(tokens, len(S2_KEYS))
        out: list[Embedding] = []
        for i in range(len(batch)):
            meta: dict[str, Any] = {
                "model": "fomo",
                "weights": dict(self.weights_record),
                "input_hw": hw_list(batch.inputs[i]),
                "image_size": IMAGE_SIZE,
                "patch_size": PATCH,
                "spectral_keys": list(S2_KEYS),
                "preprocess": "s2_div_10000_clip01_pad_square_bilinear",
                "output_mode": output.mode,
                **self.run_meta(),
            }
            grid, win = crop_padded(grids[i], pad_wins[i], batch.metas[i])
            if win is not None:
                meta["roi_cropped"] = True
                meta["roi_window_in_model_input"] = [round(v, 6) for v in win]
            if output.mode == "pooled":
                if win is None:
                    tok = tokens[i]
                    vec = tok.max(axis=0) if output.pooling == "max" else tok.mean(axis=0)
                    meta["pooling"] = f"token_{'max' if output.pooling == 'max' else 'mean'}"
                else:
                    vec = pool(grid, output.pooling)
                    meta["pooling"] = f"roi_grid_{output.pooling}"
                out.append(pooled_embedding(vec, meta))
            else:
                out.append(grid_embedding(grid, meta, "fomo_band_mean_patch_tokens"))
        return out


__all__ = [
    "IMAGE_SIZE",
    "S2_BANDS",
    "S2_KEYS",
    "WEIGHTS_FILENAME",
    "WEIGHTS_URL",
    "FoMo",
    "build_fomo",
    "grid_of",
    "parse_config",
    "prepare_state_dict",
]
