"""SatMAE++ (MAE ViT-L/16, fMoW RGB pretraining) on Sentinel-2 RGB: pooled 1024-D, grid 1024x14x14.

Why this shape: the published HF repo ``MVRL/satmaepp_ViT-L_pretrain_fmow_rgb`` is rshf's
``SatMAEPP`` (SatMAE++'s ``MaskedAutoencoderViT``, a ``PyTorchModelHubMixin``) saved whole,
with no wrapper prefix. Its encoder is SatMAE's: timm names at the top level (``cls_token``,
``pos_embed`` (1, 197, 1024, fixed 2-D sin-cos), ``patch_embed.proj``, ``blocks.{0..23}``,
``norm``). Everything else belongs to the reconstruction side and is dropped by name: the
MAE decoder (``decoder_embed``, ``mask_token``, ``decoder_pos_embed``, ``decoder_blocks``,
``decoder_norm``, ``decoder_pred``) and SatMAE++'s multi-scale upsampling head that turns
the decoder's pixels into a 2x image (``proj_up_conv``, ``proj_up_norm``, ``up_block.*``:
``up_conv`` (transposed conv), ``up_norm``, ``res_block.conv1/conv2``, ``res_norm``,
``proj_out``). The encoder is built with timm (shared with ``satmae``) and loaded strictly.
The weights file is ``model.safetensors`` (``pytorch_model.bin`` when that is absent).

LayerNorm eps is 1e-5: rshf builds the model with its default ``nn.LayerNorm`` (SatMAE++
training used 1e-6; ``model_config["layernorm_eps"]`` switches).

Preprocessing (spec §3a; rs-embed's ``satmaepp_fmow_rgb_direct``): DN / 10000 clipped to
[0, 1] -> uint8 (truncation) -> optional BGR channel swap -> ToTensor (/255) ->
Normalize(fMoW mean/std, or ``img_mean``/``img_std`` from ``model_config`` or the repo
``config.json``) -> bicubic resize of the *normalised float tensor* straight to 224 x 224
(torchvision's tensor ``Resize``: ``F.interpolate(bicubic, antialias=True)``, no rounding
to uint8, no clamp, no crop). That differs from ``satmae``, which resizes the uint8 image
with Pillow before normalising. Channel order: ``model_config["channel_order"]`` (``rgb`` |
``bgr``), else ``RS_EMBED_SATMAEPP_CHANNEL_ORDER``, else ``rgb``.

Forward, pooling and the ROI crop are ``satmae``'s: tokens after the final norm in spatial
order (rshf's ``forward_encoder(x, mask_ratio=0)`` minus its random token shuffle); pooled
= mean (or max) of the patch tokens, CLS dropped; grid = 14 x 14 patch tokens.

``modality="s2_10b"`` (the ``modality=`` argument of an export, or ``model_config
["modality"]``) runs SatMAE++'s grouped-channel ViT-L on S2 B2,B3,B4,B5,B6,B7,B8,B8A,B11,B12
at 96 px instead: see ``satmaepp_s2`` (checkpoint ``checkpoint_ViT-L_pretrain_fmow_sentinel
.pth``, pooled = mean of all group tokens, grid = groups averaged, 1024 x 12 x 12).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rs_embed_ray.errors import ModelError
from rs_embed_ray.models import satmaepp_s2 as s2
from rs_embed_ray.models.base import Embedding, ModelInfo
from rs_embed_ray.models.catalog import CATALOG
from rs_embed_ray.models.grids import crop_to_roi, grid_embedding, hw_list, pool, pooled_embedding
from rs_embed_ray.models.preprocess import (
    as_chw,
    dn_to_uint8_levels,
    norm_tensors,
    roi_window_from_meta,
    stack_by_shape,
)
from rs_embed_ray.models.runtime import Batch, strip_prefix, to_numpy
from rs_embed_ray.models.satmae import IMAGE_SIZE, SatMAE, drop_mae_decoder

log = logging.getLogger(__name__)

HF_REPO = "MVRL/satmaepp_ViT-L_pretrain_fmow_rgb"
CHANNEL_ORDER_ENV = "RS_EMBED_SATMAEPP_CHANNEL_ORDER"
CHANNEL_ORDERS = ("rgb", "bgr")
MODALITIES = ("rgb", "s2_10b")
# SatMAE++'s multi-scale upsampling head (reconstruction only): dropped with the decoder
MULTISCALE_HEAD_PREFIXES = ("proj_up_conv.", "proj_up_norm.", "up_block.")


def drop_satmaepp_decoder(sd: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Remove the MAE decoder and the upsampling head (by name); (encoder dict, dropped)."""
    enc, dropped = drop_mae_decoder(sd)
    head = {k for k in enc if k.startswith(MULTISCALE_HEAD_PREFIXES)}
    enc = {k: v for k, v in enc.items() if k not in head}
    return enc, sorted([*dropped, *head])


def parse_modality(cfg: dict[str, Any] | None) -> str:
    """``model_config["modality"]`` (``rgb`` default | ``s2_10b``), validated."""
    raw = (cfg or {}).get("modality")
    m = str(raw or "rgb").strip().lower().replace("-", "_")
    if m not in MODALITIES:
        raise ModelError(
            f"satmaepp: model_config['modality']={raw!r} is not one of {list(MODALITIES)}."
        )
    return m


def check_config(cfg: dict[str, Any] | None) -> None:
    """The planner's check of ``model_config`` (the loader's own parsers)."""
    cfg = dict(cfg or {})
    if parse_modality(cfg) == "s2_10b":
        s2.parse_variant(cfg)
    else:
        resolve_channel_order(cfg)


def resolve_channel_order(cfg: dict[str, Any]) -> str:
    """``model_config["channel_order"]``, else the env var, else ``"rgb"``; validated."""
    raw = cfg.get("channel_order")
    where = "model_config['channel_order']"
    if raw is None or not str(raw).strip():
        raw, where = os.environ.get(CHANNEL_ORDER_ENV, ""), CHANNEL_ORDER_ENV
    order = str(raw).strip().lower() or "rgb"
    if order not in CHANNEL_ORDERS:
        raise ModelError(f"satmaepp: {where}={raw!r} is not one of {list(CHANNEL_ORDERS)}.")
    return order


def satmaepp_rgb_batch(
    images: list[np.ndarray],
    *,
    size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    channel_order: str,
    device: Any,
) -> Any:
    """Raw DN (3, H, W) -> uint8 levels -> [BGR] -> /255 -> normalise -> float bicubic
    (antialiased, torchvision's tensor ``Resize``) to (size, size); (B, 3, size, size)
    float32 on ``device``. Equal shapes are processed together."""
    import torch.nn.functional as F

    m, s = norm_tensors(mean, std, device)

    def transform(t: Any, shape: tuple[int, ...]) -> Any:
        t = dn_to_uint8_levels(t) / 255.0
        if channel_order == "bgr":
            t = t.flip(1)
        t = (t - m) / s
        if tuple(shape[-2:]) != (size, size):
            t = F.interpolate(
                t, size=(size, size), mode="bicubic", align_corners=False, antialias=True
            )
        return t

    return stack_by_shape(images, transform, device=device)


class SatMAEPP(SatMAE):
    """SatMAE++ ViT-L/16 (fMoW RGB) on S2 B4,B3,B2; loading and forward are SatMAE's.

    ``model_config``: ``modality`` (``rgb`` default | ``s2_10b``), ``channel_order``
    (``rgb`` | ``bgr``), ``hf_repo`` (alias ``model_id``), ``hf_revision``, ``filename``,
    ``layernorm_eps`` (rgb; default 1e-5, rshf's), ``img_mean`` / ``img_std`` (rgb
    override), ``variant`` (s2_10b: ``large`` only).
    """

    info: ClassVar[ModelInfo] = CATALOG["satmaepp"]
    CONFIG_KEYS: ClassVar[frozenset[str] | None] = frozenset(
        {*SatMAE.CONFIG_KEYS, "channel_order", "modality", "variant"}
    )
    config_parser = staticmethod(check_config)
    batch_size_cpu = 8
    batch_size_cuda = 32
    hf_repo = HF_REPO
    display_name = "SatMAE++"
    dropped_what = "decoder / upsampling-head keys"

    modality = "rgb"

    def _check_config(self, cfg: dict[str, Any]) -> None:
        self.channel_order = resolve_channel_order(cfg)

    def _load(self, weights: str | None) -> None:
        self.modality = parse_modality(self.model_config)
        if self.modality == "rgb":
            super()._load(weights)
            return
        self.variant = s2.parse_variant(self.model_config)
        self._init_runtime()
        resolved = self._resolve_weights(weights, filename=s2.HF_FILE_S2, hf_repo=s2.HF_REPO_S2)
        path = None if resolved.path is None else str(resolved.path)
        self.model = s2.load_group_encoder(path).to(self.device).eval()

    def resolve_input_image_size(self, model_config: dict[str, Any] | None = None) -> int:
        """Tiling hook: 96 px for s2_10b, 224 for rgb."""
        return s2.IMAGE_SIZE_S2 if self.modality == "s2_10b" else IMAGE_SIZE

    def _check_sidecar(self, side: dict[str, Any], path: Path | None) -> None:
        if side.get("in_chans") not in (None, 3):
            raise ModelError(
                f"satmaepp rgb needs a 3-channel checkpoint; {path} has "
                f"in_chans={side.get('in_chans')} in its config.json."
            )

    def _encoder_state_dict(self, raw: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        return drop_satmaepp_decoder(strip_prefix(raw))

    def preprocess(self, inputs: list[np.ndarray]) -> Any:
        if self.modality == "s2_10b":
            n = len(s2.S2_10_BANDS)
            chw = [as_chw(x, channels=n, model_id="satmaepp s2_10b") for x in inputs]
            return s2.s2_10b_batch(chw, device=self.device)
        chw = [as_chw(x, channels=3, model_id="satmaepp") for x in inputs]
        return satmaepp_rgb_batch(
            chw,
            size=IMAGE_SIZE,
            mean=self.mean,
            std=self.std,
            channel_order=self.channel_order,
            device=self.device,
        )

    def forward_tokens(self, x: Any) -> np.ndarray:
        """s2_10b: (B, 1 + 3*144, 1024) tokens after ``norm``, group-major, CLS first."""
        with self.inference():
            return to_numpy(self.model(x))

    def _embed(self, batch: Batch) -> list[Embedding]:
        if self.modality == "rgb":
            return super()._embed(batch)
        tokens = self.forward_tokens(self.preprocess(batch.inputs))
        grids = s2.group_grid(tokens)
        output = batch.output
        out: list[Embedding] = []
        for i in range(len(batch)):
            meta = {**self.base_meta(), "input_hw": hw_list(batch.inputs[i])}
            meta["output_mode"] = output.mode
            win = roi_window_from_meta(batch.metas[i])
            meta["grid_hw_full"] = hw_list(grids[i])
            g = crop_to_roi(grids[i], win, meta)
            meta["cls_removed"] = True
            if output.mode == "grid":
                out.append(grid_embedding(g, meta, "spatial_tokens_aggregated_over_channel_groups"))
            elif win is None:
                meta["pooling"] = f"group_tokens_{output.pooling}"
                out.append(pooled_embedding(pool(tokens[i, 1:], output.pooling, axis=(0,)), meta))
            else:
                meta["pooling"] = f"roi_grid_{output.pooling}"
                out.append(pooled_embedding(pool(g, output.pooling), meta))
        return out

    def base_meta(self) -> dict[str, Any]:
        if self.modality == "s2_10b":
            return {
                "model": "satmaepp",
                "modality": "s2_10b",
                "variant": self.variant,
                "weights": dict(self.weights_record),
                "image_size": s2.IMAGE_SIZE_S2,
                "patch_size": s2.PATCH_S2,
                "bands": list(s2.S2_10_BANDS),
                "channel_groups": [list(g) for g in s2.CHANNEL_GROUPS],
                "group_reduce": "mean",
                "preprocess": "sentinel_normalize_uint8_totensor_bicubic",
                "layernorm_eps": s2.LN_EPS,
                **self.run_meta(),
            }
        return {
            "model": "satmaepp",
            "modality": "rgb",
            "weights": dict(self.weights_record),
            "image_size": IMAGE_SIZE,
            "preprocess": "uint8_totensor_fmow_norm_then_bicubic",
            "channel_order": self.channel_order,
            "norm_mean": list(self.mean),
            "norm_std": list(self.std),
            "layernorm_eps": self.eps,
            **self.run_meta(),
        }


__all__ = [
    "CHANNEL_ORDER_ENV",
    "HF_REPO",
    "MULTISCALE_HEAD_PREFIXES",
    "SatMAEPP",
    "check_config",
    "drop_satmaepp_decoder",
    "parse_modality",
    "resolve_channel_order",
    "satmaepp_rgb_batch",
]
