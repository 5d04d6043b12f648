"""SatMAE (MAE ViT-L/16, fMoW RGB pretraining) on Sentinel-2 RGB: pooled 1024-D, grid 1024x14x14.

Why this shape: the published HF repo ``MVRL/satmae-vitlarge-fmow-pretrain-800`` is rshf's
``SatMAE`` (``MaskedAutoencoderViT``, a ``PyTorchModelHubMixin``) saved whole: encoder keys
at the top level under timm's names (``cls_token``, ``pos_embed`` (1, 197, 1024, the fixed
2-D sin-cos table), ``patch_embed.proj``, ``blocks.{0..23}``, ``norm``) plus the MAE
decoder (``decoder_embed``, ``mask_token``, ``decoder_pos_embed``, ``decoder_blocks``,
``decoder_norm``, ``decoder_pred``). The encoder is exactly a timm ``VisionTransformer``
(ViT-L/16, qkv bias, CLS token, learned-slot ``pos_embed`` loaded from the file), so it is
built with timm and loaded strictly; the decoder keys are ignored by name. The weights file
is ``model.safetensors`` (``pytorch_model.bin`` is tried when that is absent).

LayerNorm eps is 1e-5: rshf rebuilds the model with its default ``nn.LayerNorm`` (the
original SatMAE training used 1e-6; ``model_config["layernorm_eps"]`` switches).

Preprocessing (spec §3a): DN / 10000 clipped to [0, 1] -> uint8 (truncation) -> Pillow
bicubic resize straight to 224 x 224 (no crop; reproduced bit-exactly in torch) -> /255 ->
Normalize(fMoW mean/std, or ``img_mean``/``img_std`` from the repo ``config.json`` when it
sits next to the weights). Forward: patch embed + pos embed, CLS, 24 blocks, ``norm`` --
rshf's ``forward_encoder(x, mask_ratio=0)`` without its random token shuffle (which
scrambles rs-embed's grid order; the mean is unaffected). Pooled = mean (or max) of the
patch tokens, CLS dropped; grid = the 14 x 14 patch tokens, cropped to the ROI window.

The helpers below are shared with ``scalemae``.
"""

from __future__ import annotations

import json
import logging
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rs_embed_ray.errors import ModelError, WeightsError
from rs_embed_ray.models.base import Embedding, ModelInfo
from rs_embed_ray.models.catalog import CATALOG
from rs_embed_ray.models.grids import crop_to_roi, grid_embedding, hw_list, pool, pooled_embedding
from rs_embed_ray.models.preprocess import (
    as_chw,
    dn_to_uint8_levels,
    norm_tensors,
    pil_like_bicubic_resize,
    roi_window_from_meta,
    stack_by_shape,
)
from rs_embed_ray.models.runtime import (
    Batch,
    TorchEmbedder,
    build_seeded,
    check_state_dict,
    load_state_dict_file,
    strip_prefix,
    tokens_to_grid,
)
from rs_embed_ray.models.weights import ResolvedWeights, resolve_weights

log = logging.getLogger(__name__)

HF_REPO = "MVRL/satmae-vitlarge-fmow-pretrain-800"
HF_FILENAMES = ("model.safetensors", "pytorch_model.bin")
IMAGE_SIZE = 224
PATCH = 16
EMBED_DIM = 1024
DEPTH = 24
NUM_HEADS = 16
FMOW_MEAN = (0.4182007312774658, 0.4214799106121063, 0.3991275727748871)
FMOW_STD = (0.28774282336235046, 0.27541765570640564, 0.2764017581939697)
MAE_DECODER_PREFIXES = ("decoder_embed.", "decoder_blocks.", "decoder_norm.", "decoder_pred.")
MAE_DECODER_KEYS = ("mask_token", "decoder_pos_embed")


# ---------------------------------------------------------------------------------------
# shared helpers (satmae, scalemae)
# ---------------------------------------------------------------------------------------


def build_vit_large(*, eps: float, pos_embed: bool = True, meta: bool = False) -> Any:
    """timm ViT-L/16 at 224 (CLS token, qkv bias, no head); on the meta device if asked.

    ``meta=True`` skips timm's (slow, ~300 M values) random init: the weights are then
    attached with ``load_state_dict(assign=True)``.
    """
    import torch
    from timm.models.vision_transformer import VisionTransformer

    kwargs = dict(
        img_size=IMAGE_SIZE,
        patch_size=PATCH,
        in_chans=3,
        embed_dim=EMBED_DIM,
        depth=DEPTH,
        num_heads=NUM_HEADS,
        mlp_ratio=4.0,
        qkv_bias=True,
        class_token=True,
        num_classes=0,
        global_pool="token",
        pos_embed="learn" if pos_embed else "none",
        norm_layer=partial(torch.nn.LayerNorm, eps=float(eps)),
    )
    if meta:
        with torch.device("meta"):
            return VisionTransformer(**kwargs)
    return VisionTransformer(**kwargs)


def resolve_hf_weights(
    model_id: str,
    weights: str | None,
    cfg: dict[str, Any],
    *,
    repo: str,
    filenames: tuple[str, ...],
) -> ResolvedWeights:
    """``resolve_weights`` for a PyTorchModelHubMixin repo: each known filename in turn.

    An explicit file or ``"random"`` resolves once; an explicit directory, the env dir, the
    HF cache and the download are tried for each filename in turn, and the error of the
    first one is raised when none is found.
    """
    names = (str(cfg["filename"]),) if cfg.get("filename") else filenames
    repo = str(cfg.get("hf_repo") or cfg.get("model_id") or repo)
    explicit = weights is not None and bool(str(weights).strip())
    explicit_dir = explicit and Path(str(weights)).expanduser().is_dir()
    first_err: WeightsError | None = None
    for name in names:
        try:
            return resolve_weights(
                model_id, weights, filename=name, hf_repo=repo, hf_revision=cfg.get("hf_revision")
            )
        except WeightsError as exc:
            if explicit and not explicit_dir:
                raise
            first_err = first_err or exc
    assert first_err is not None
    raise first_err


def sidecar_config(weights_path: Path | None) -> dict[str, Any]:
    """The repo's ``config.json`` next to the weights file, or {}."""
    if weights_path is None:
        return {}
    p = weights_path.parent / "config.json"
    if not p.is_file():
        return {}
    try:
        cfg = json.loads(p.read_text())
    except (OSError, ValueError):
        return {}
    return cfg if isinstance(cfg, dict) else {}


def check_and_load(model: Any, sd: dict[str, Any], *, path: str, what: str) -> None:
    """Strict key/shape check with a readable error, then attach the tensors (assign)."""
    import torch

    check_state_dict(model, sd, path=path, what=what)
    sd = {k: v.to(torch.float32).contiguous() for k, v in sd.items()}
    model.load_state_dict(sd, strict=True, assign=True)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise WeightsError(f"{what}: tensors left unloaded after assign: {left[:3]}")


def drop_mae_decoder(sd: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Remove the MAE decoder keys (by name); returns (encoder dict, dropped keys)."""
    dropped = sorted(k for k in sd if k.startswith(MAE_DECODER_PREFIXES) or k in MAE_DECODER_KEYS)
    return {k: v for k, v in sd.items() if k not in set(dropped)}, dropped


def rgb_uint8_batch(
    images: list[np.ndarray],
    *,
    size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    device: Any,
) -> Any:
    """Raw DN (3, H, W) -> uint8 levels -> Pillow-exact bicubic to (size, size) -> /255 ->
    normalise; (B, 3, size, size) float32 on ``device``. Equal shapes resize together."""
    m, s = norm_tensors(mean, std, device)

    def transform(t: Any, shape: tuple[int, ...]) -> Any:
        t = pil_like_bicubic_resize(dn_to_uint8_levels(t), (size, size))
        return (t / 255.0 - m) / s

    return stack_by_shape(images, transform, device=device)


def token_grid_embeddings(
    grids: np.ndarray,
    batch: Batch,
    *,
    base_meta: dict[str, Any],
    per_item: list[dict[str, Any]] | None = None,
) -> list[Embedding]:
    """(B, D, h, w) patch-token grids of a directly resized input -> Embeddings.

    The input was resized (not cropped) to the model size, so a fetch-square ROI window
    maps one-to-one onto the grid; grids are cropped to it (rounded outward) and pooled
    vectors are the mean (or max) of the cropped tokens.
    """
    output = batch.output
    out: list[Embedding] = []
    for i in range(grids.shape[0]):
        meta = dict(base_meta)
        meta["input_hw"] = hw_list(batch.inputs[i])
        if per_item is not None:
            meta.update(per_item[i])
        meta["output_mode"] = output.mode
        win = roi_window_from_meta(batch.metas[i])
        meta["grid_hw_full"] = hw_list(grids[i])
        g = crop_to_roi(grids[i], win, meta)
        if output.mode == "pooled":
            prefix = "roi_grid" if win is not None else "patch"
            meta["pooling"] = f"{prefix}_{output.pooling}"
            meta["cls_removed"] = True
            out.append(pooled_embedding(pool(g, output.pooling), meta))
        else:
            out.append(grid_embedding(g, meta, "vit_patch_tokens"))
    return out


# ---------------------------------------------------------------------------------------
# SatMAE
# ---------------------------------------------------------------------------------------


class SatMAE(TorchEmbedder):
    """SatMAE ViT-L/16 (fMoW RGB) on S2 B4,B3,B2.

    ``model_config``: ``hf_repo`` (alias ``model_id``), ``hf_revision``, ``filename``,
    ``layernorm_eps`` (default 1e-5, rshf's), ``img_mean`` / ``img_std`` (override).

    SatMAE++ shares the loading and the forward; it overrides the hooks marked below.
    """

    info: ClassVar[ModelInfo] = CATALOG["satmae"]
    CONFIG_KEYS: ClassVar[frozenset[str] | None] = frozenset(
        {"hf_repo", "model_id", "hf_revision", "filename", "layernorm_eps", "img_mean", "img_std"}
    )
    batch_size_cpu = 8
    batch_size_cuda = 32
    hf_repo = HF_REPO
    display_name = "SatMAE"  # in checkpoint errors
    dropped_what = "MAE decoder keys"  # in the log line of ignored keys

    def _check_config(self, cfg: dict[str, Any]) -> None:
        """Hook: refuse a bad ``model_config`` before anything is loaded."""

    def _check_sidecar(self, side: dict[str, Any], path: Path | None) -> None:
        """Hook: refuse a repo ``config.json`` that describes another model."""

    def _encoder_state_dict(self, raw: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """Hook: published keys -> encoder keys, and the keys dropped by name."""
        sd, dropped = drop_mae_decoder(raw)
        return strip_prefix(sd, ("model.", "module."), nested=True), dropped

    def _load(self, weights: str | None) -> None:
        cfg = self.model_config
        model_id = self.info.model_id
        self._check_config(cfg)
        self._init_runtime()
        self.eps = float(cfg.get("layernorm_eps", 1e-5))
        resolved = resolve_hf_weights(
            model_id, weights, cfg, repo=self.hf_repo, filenames=HF_FILENAMES
        )
        self.weights_record = resolved.record()
        side = sidecar_config(resolved.path)
        self._check_sidecar(side, resolved.path)
        self.mean = tuple(
            float(v) for v in (cfg.get("img_mean") or side.get("img_mean") or FMOW_MEAN)
        )
        self.std = tuple(float(v) for v in (cfg.get("img_std") or side.get("img_std") or FMOW_STD))
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ModelError(
                f"{model_id} img_mean/img_std need 3 values, got {self.mean}/{self.std}"
            )
        if resolved.path is None:
            model = build_seeded(build_vit_large, eps=self.eps)
        else:
            model = build_vit_large(eps=self.eps, meta=True)
            sd, dropped = self._encoder_state_dict(load_state_dict_file(str(resolved.path)))
            check_and_load(model, sd, path=str(resolved.path), what=self.display_name)
            if dropped:
                log.info("%s: ignored %d %s", model_id, len(dropped), self.dropped_what)
        self.model = model.to(self.device).eval()

    def preprocess(self, inputs: list[np.ndarray]) -> Any:
        chw = [as_chw(x, channels=3, model_id="satmae") for x in inputs]
        return rgb_uint8_batch(
            chw, size=IMAGE_SIZE, mean=self.mean, std=self.std, device=self.device
        )

    def forward(self, x: Any) -> np.ndarray:
        """One forward: (B, 1024, 14, 14) patch tokens after the final norm (CLS dropped)."""
        with self.inference():
            tok = self.model.forward_features(x)[:, 1:, :]
        return tokens_to_grid(tok, IMAGE_SIZE // PATCH)

    def base_meta(self) -> dict[str, Any]:
        """Hook: the meta keys every embedding of this model starts with."""
        return {
            "model": "satmae",
            "weights": dict(self.weights_record),
            "image_size": IMAGE_SIZE,
            "preprocess": "uint8_pil_bicubic_direct_fmow_norm",
            "norm_mean": list(self.mean),
            "norm_std": list(self.std),
            "layernorm_eps": self.eps,
            **self.run_meta(),
        }

    def _embed(self, batch: Batch) -> list[Embedding]:
        grids = self.forward(self.preprocess(batch.inputs))
        return token_grid_embeddings(grids, batch, base_meta=self.base_meta())


__all__ = [
    "FMOW_MEAN",
    "FMOW_STD",
    "HF_FILENAMES",
    "HF_REPO",
    "SatMAE",
    "build_vit_large",
    "check_and_load",
    "drop_mae_decoder",
    "resolve_hf_weights",
    "rgb_uint8_batch",
    "sidecar_config",
    "token_grid_embeddings",
]
