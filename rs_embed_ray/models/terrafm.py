"""TerraFM-B (ViT-B/16, Sentinel-1 + Sentinel-2 stems): pooled 768-D (CLS), grid 768x14x14.

Why this model: TerraFM is the catalog's SAR-capable model; one network takes 12-band S2 or
2-band S1 VV/VH, chosen by the channel count.

Architecture, written here from the published description (TerraFM paper and the official
``terrafm.py`` of github.com/mbzuai-oryx/TerraFM): module names follow the published state
dict, so ``TerraFM-B.pth`` loads by name and shape:

* ``patch_embed``: per-modality stems ``conv2d_s2_l2a`` / ``conv2d_s2_l1c`` (12 -> 2304 ch)
  and ``conv2d_s1`` (2 -> 2304 ch), 16x16 kernels, stride 16; the stem's modality vector
  (``s2_l2a_embed`` / ``s2_l1c_embed`` / ``s1_embed``, (1, 2304)) is added to every patch;
  then ``projection``: ``proj1`` (2304 -> 2304, no bias) -> ``norm_input`` (LayerNorm) ->
  ``proj2`` (2304 -> 2304) -> ``proj3`` (2304 -> 768);
* ``cls_token``, learned ``pos_embed`` (1, 197, 768) added to [CLS, patches];
* 12 DINO blocks (``norm1``, ``attn.qkv`` (bias), ``attn.proj``, ``norm2``, ``mlp.fc1``,
  ``mlp.fc2``; GELU; LayerNorm eps 1e-6, as ``terrafm_base`` builds them) -- the same math
  and key names as timm's ``Block`` (``models/vit_block``); ``norm`` (eps 1e-6). The projection's
  ``norm_input`` keeps torch's default eps 1e-5, as in the official ``TokenProjection``.
  Before code version 2 the blocks and ``norm`` used eps 1e-5 (about 8e-5 max abs).

``head.*`` keys (a classifier) are ignored by name and a ``module.``/``backbone.`` prefix is
stripped; every other key must match.

The S2 stem (``model_config["s2_stem"]``, default ``l1c``): ``COPERNICUS/S2_SR_HARMONIZED``
pixels are L2A, and the checkpoint holds an L2A stem, but the official code never runs it
from the model: ``PatchEmbed.forward(x, is_l2a=False)`` picks the stem, and
``TerraFM.forward`` / ``prepare_tokens`` / ``get_intermediate_layers`` / ``extract_feature``
call ``self.patch_embed(x)`` without ``is_l2a``, so every 12-channel input goes through the
L1C stem (``conv2d_s2_l1c`` + ``s2_l1c_embed``); the official README's usage example, whose
input it calls "e.g., Sentinel-2 L2A", does exactly that. The paper treats S2 L1C, S2 L2A and
S1 as "natural augmentations" of one scene in its self-supervised training, so both stems are
trained to land in one embedding space. We follow the official forward (and rs-embed 0.3.1,
which calls the model the same way), so the default is no deliberate difference from the
reference; ``s2_stem="l2a"`` runs the L2A stem instead (code version 1 defaulted to it); the
manifest's embedding meta then says so (``patch_embed: "l2a"`` and ``reference_difference``).
``tests/oracle/test_oracle_terrafm.py`` checks the network against values produced by the
official ``terrafm.py`` (no package ships TerraFM).

Preprocessing (spec §3a): S2 DN / 10000 clipped to [0, 1]; S1 linear VV/VH ->
``log1p(max(x, 0)) / p99`` (the 99th percentile over the whole 2-band patch, 1 when it is
not positive or the patch is not finite) clipped to [0, 1]; input that looks dB-scaled
(over half the finite non-zero values negative) is rejected. Then bilinear resize to
224 x 224 (``align_corners=False``; no pad, no crop). NaN -> 0 first.

Outputs from one forward: the final ``norm`` over [CLS, patches]; pooled = the CLS token
(rs-embed's ``model(x)``) for a full-frame input, or the mean (max) of the ROI-cropped patch
tokens when the input carries a fetch-square window; grid = the 14 x 14 normed patch
tokens (rs-embed's ``extract_feature`` last block), cropped to the ROI. S1 and S2 items in
one batch run as two forwards (one per stem).

S1 use: give the model an S1 sensor, e.g. ``SensorSpec(collection="COPERNICUS/S1_GRD_FLOAT",
bands=("VV", "VH"), scale_m=10, cloudy_pct=None, modality="s1")`` (:data:`S1_SENSOR`).
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any, ClassVar

import numpy as np

from rs_embed_ray.errors import ModelError
from rs_embed_ray.models.base import Embedding, ModelInfo
from rs_embed_ray.models.catalog import CATALOG, S1_FLOAT
from rs_embed_ray.models.grids import crop_to_roi, grid_embedding, hw_list, pool, pooled_embedding
from rs_embed_ray.models.preprocess import roi_window_from_meta, stack_by_shape
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
from rs_embed_ray.specs import SensorSpec

log = logging.getLogger(__name__)

HF_REPO = "MBZUAI/TerraFM"
HF_FILENAME = "TerraFM-B.pth"
IMAGE_SIZE = 224
PATCH = 16
EMBED_DIM = 768
DEPTH = 12
NUM_HEADS = 12
ATTN_DIM = 3 * EMBED_DIM
LN_EPS = 1e-6  # terrafm_base's norm_layer (blocks and final norm)
S2_STEMS = ("l1c", "l2a")
S2_CHANNELS = 12
S1_CHANNELS = 2
S1_SENSOR = SensorSpec(
    collection=S1_FLOAT, bands=("VV", "VH"), scale_m=10, cloudy_pct=None, modality="s1"
)
_IGNORED_PREFIXES = ("head.",)
L2A_NOTE = (
    "s2_stem='l2a': the L2A patch embedding; the official TerraFM forward and rs-embed 0.3.1 "
    "run the L1C stem for 12-band input"
)


def build_terrafm_base() -> Any:
    """The TerraFM-B encoder as an ``nn.Module`` (random init; no download)."""
    import torch
    from torch import nn

    class TokenProjection(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj1 = nn.Linear(ATTN_DIM, ATTN_DIM, bias=False)
            self.norm_input = nn.LayerNorm(ATTN_DIM)
            self.proj2 = nn.Linear(ATTN_DIM, ATTN_DIM)
            self.proj3 = nn.Linear(ATTN_DIM, EMBED_DIM)

        def forward(self, x: Any) -> Any:
            return self.proj3(self.proj2(self.norm_input(self.proj1(x))))

    class PatchEmbed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            conv = lambda c: nn.Conv2d(c, ATTN_DIM, kernel_size=PATCH, stride=PATCH)  # noqa: E731
            self.conv2d_s2_l2a = conv(S2_CHANNELS)
            self.conv2d_s2_l1c = conv(S2_CHANNELS)
            self.conv2d_s1 = conv(S1_CHANNELS)
            self.projection = TokenProjection()
            self.s2_l2a_embed = nn.Parameter(torch.zeros(1, ATTN_DIM))
            self.s2_l1c_embed = nn.Parameter(torch.zeros(1, ATTN_DIM))
            self.s1_embed = nn.Parameter(torch.zeros(1, ATTN_DIM))

        def forward(self, x: Any, stem: str) -> Any:
            conv = {"s1": self.conv2d_s1, "l2a": self.conv2d_s2_l2a, "l1c": self.conv2d_s2_l1c}
            emb = {"s1": self.s1_embed, "l2a": self.s2_l2a_embed, "l1c": self.s2_l1c_embed}
            tok = conv[stem](x).flatten(2).transpose(1, 2)
            return self.projection(tok + emb[stem])

    class TerraFMEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.patch_embed = PatchEmbed()
            n = (IMAGE_SIZE // PATCH) ** 2
            self.cls_token = nn.Parameter(torch.zeros(1, 1, EMBED_DIM))
            self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, EMBED_DIM))
            norm = partial(nn.LayerNorm, eps=LN_EPS)
            self.blocks = nn.ModuleList(
                [vit_block(EMBED_DIM, NUM_HEADS, 4.0, eps=LN_EPS) for _ in range(DEPTH)]
            )
            self.norm = norm(EMBED_DIM)
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
            nn.init.trunc_normal_(self.cls_token, std=0.02)

        def forward_tokens(self, x: Any, stem: str) -> Any:
            """(B, C, 224, 224) -> (B, 197, 768): final-norm [CLS, patches]."""
            tok = self.patch_embed(x, stem)
            cls = self.cls_token.expand(tok.shape[0], -1, -1).to(tok.dtype)
            seq = torch.cat([cls, tok], dim=1) + self.pos_embed
            for blk in self.blocks:
                seq = blk(seq)
            return self.norm(seq)

    return TerraFMEncoder()


def prepare_state_dict(model: Any, sd: dict[str, Any], *, path: str) -> dict[str, Any]:
    """Published TerraFM keys -> this encoder's keys (strict except ``head.*``)."""
    sd = strip_prefix(dict(sd), ("module.", "backbone.", "model."), nested=True)
    ignored = sorted(k for k in sd if k.startswith(_IGNORED_PREFIXES))
    for k in ignored:
        sd.pop(k)
    check_state_dict(model, sd, path=path, what="TerraFM")
    if ignored:
        log.info("terrafm: ignored %d head keys", len(ignored))
    return sd


def normalize_s1(x: np.ndarray) -> np.ndarray:
    """Linear VV/VH (2, H, W) -> ``clip(log1p(max(x, 0)) / p99, 0, 1)``; dB input rejected."""
    a = np.asarray(x, dtype=np.float32)
    fin = a[np.isfinite(a) & (a != 0.0)]
    if fin.size and float(np.mean(fin < 0)) > 0.5:
        raise ModelError(
            "terrafm S1 input looks dB-scaled (mostly negative values); it expects linear "
            "backscatter (COPERNICUS/S1_GRD_FLOAT). Convert dB with 10 ** (x / 10) first."
        )
    v = np.log1p(np.maximum(a, 0.0))
    denom = float(np.percentile(v, 99)) if np.isfinite(v).all() else 1.0
    denom = denom if denom > 0 else 1.0
    return np.clip(v / denom, 0.0, 1.0).astype(np.float32)


def _s2_stem(model_config: dict[str, Any] | None) -> str:
    """``model_config["s2_stem"]`` checked and lower-cased; ``l1c`` when unset."""
    stem = str((model_config or {}).get("s2_stem") or S2_STEMS[0]).strip().lower()
    if stem not in S2_STEMS:
        raise ModelError(
            f"terrafm model_config s2_stem must be 'l1c' (default, the official forward's "
            f"stem) or 'l2a', got {stem!r}."
        )
    return stem


class TerraFM(TorchEmbedder):
    """TerraFM-B on S2 (12 bands B1..B12 without B10) or S1 VV/VH (by channel count).

    ``model_config``: ``s2_stem`` (``l1c`` default, the stem the official forward runs |
    ``l2a``), ``hf_repo``, ``hf_revision``, ``filename``.
    """

    info: ClassVar[ModelInfo] = CATALOG["terrafm"]
    CONFIG_KEYS: ClassVar[frozenset[str] | None] = frozenset(
        {"s2_stem", "hf_repo", "hf_revision", "filename"}
    )
    batch_size_cpu = 8
    batch_size_cuda = 64

    config_parser = staticmethod(_s2_stem)

    def _load(self, weights: str | None) -> None:
        self.s2_stem = _s2_stem(self.model_config)
        self._init_runtime()
        resolved = self._resolve_weights(weights, filename=HF_FILENAME, hf_repo=HF_REPO)
        model = load_prepared(build_seeded(build_terrafm_base), resolved.path, prepare_state_dict)
        self.model = model.to(self.device).eval()

    def preprocess(self, inputs: list[np.ndarray]) -> tuple[list[Any], list[str]]:
        """Raw patches -> (C, 224, 224) tensors and each one's stem (``s1``/``l2a``/``l1c``).

        Sentinel-2 inputs are stacked once and zeroed, scaled and resized batched on the
        model's device (the host only copies them); Sentinel-1 keeps its per-image p99."""
        import torch
        import torch.nn.functional as F

        def resize(t: Any) -> Any:
            if t.shape[-2:] != (IMAGE_SIZE, IMAGE_SIZE):
                t = F.interpolate(
                    t, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False
                )
            return t

        out: list[Any] = [None] * len(inputs)
        stems: list[str] = [self.s2_stem] * len(inputs)
        s2: list[int] = []
        arrays: list[np.ndarray] = []
        for i, x in enumerate(inputs):
            a = np.asarray(x, dtype=np.float32)
            if a.ndim == 4 and a.shape[0] == 1:
                a = a[0]
            if a.ndim != 3 or a.shape[0] not in (S2_CHANNELS, S1_CHANNELS) or 0 in a.shape:
                raise ModelError(
                    "terrafm expects (12, H, W) Sentinel-2 (B1..B12 without B10) or (2, H, W) "
                    f"Sentinel-1 VV/VH input, got {tuple(a.shape)}."
                )
            if a.shape[0] == S1_CHANNELS:
                a = normalize_s1(np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0))
                out[i] = resize(torch.from_numpy(a).to(self.device)[None])[0]
                stems[i] = "s1"
            else:
                s2.append(i)
                arrays.append(a)
        if arrays:

            def transform(t: Any, shape: tuple[int, ...]) -> Any:
                # the reference's clip(nan_to_num(x) / 10000, 0, 1), in place on the device
                t = torch.nan_to_num_(t, nan=0.0, posinf=0.0, neginf=0.0)
                return resize(t.div_(10000.0).clamp_(0.0, 1.0))

            x2 = stack_by_shape(arrays, transform, device=self.device)
            for j, i in enumerate(s2):
                out[i] = x2[j]
        return out, stems

    def forward(self, x: Any, stem: str) -> np.ndarray:
        """One forward: (B, 197, 768) final-norm tokens [CLS, patches] as float32 numpy."""
        with self.inference():
            tok = self.model.forward_tokens(x, stem)
        return to_numpy(tok)

    def _embed(self, batch: Batch) -> list[Embedding]:
        import torch

        n, output = len(batch), batch.output
        xs, stems = self.preprocess(batch.inputs)
        tokens: list[np.ndarray | None] = [None] * n
        groups: dict[str, list[int]] = {}
        for i, s in enumerate(stems):
            groups.setdefault(s, []).append(i)
        for stem, idx in groups.items():
            out = self.forward(torch.stack([xs[i] for i in idx]), stem)
            for j, i in enumerate(idx):
                tokens[i] = out[j]
        side = IMAGE_SIZE // PATCH
        results: list[Embedding] = []
        for i in range(n):
            tok = tokens[i]
            assert tok is not None
            meta: dict[str, Any] = {
                "model": "terrafm",
                "weights": dict(self.weights_record),
                "modality": "s1" if stems[i] == "s1" else "s2",
                "patch_embed": stems[i],
                "input_hw": hw_list(batch.inputs[i]),
                "image_size": IMAGE_SIZE,
                "preprocess": "s1_log1p_p99_bilinear"
                if stems[i] == "s1"
                else "s2_div_10000_clip01_bilinear",
                "output_mode": output.mode,
                **self.run_meta(),
            }
            if stems[i] == "l2a":
                meta["reference_difference"] = L2A_NOTE
            win = roi_window_from_meta(batch.metas[i])
            grid = tok[1:].reshape(side, side, EMBED_DIM).transpose(2, 0, 1)
            grid = crop_to_roi(grid, win, meta)
            if output.mode == "pooled":
                if win is None:
                    vec = tok[0]
                    meta["pooling"] = "cls"
                    if output.pooling != "mean":
                        meta["pooling_note"] = (
                            f"terrafm returns its CLS vector; pooling={output.pooling!r} "
                            "applies only to ROI-cropped grids"
                        )
                else:
                    vec = pool(grid, output.pooling)
                    meta["pooling"] = f"roi_grid_{output.pooling}"
                results.append(pooled_embedding(vec, meta))
            else:
                results.append(grid_embedding(grid, meta, "vit_patch_tokens_final_norm"))
        return results


__all__ = [
    "HF_FILENAME",
    "HF_REPO",
    "S1_SENSOR",
    "TerraFM",
    "build_terrafm_base",
    "normalize_s1",
    "prepare_state_dict",
]
