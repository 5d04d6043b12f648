"""Scale-MAE (ViT-L/16, GSD-scaled positions) on Sentinel-2 RGB: pooled 1024-D, grid 1024x14x14.

Why this shape: the published HF repo ``MVRL/scalemae-vitlarge-800`` is rshf's
``ScaleMAE`` wrapper (``PyTorchModelHubMixin``) whose ``.model`` is a timm
``VisionTransformer`` subclass, so every key carries the ``model.`` prefix: ``cls_token``,
``patch_embed.proj``, ``blocks.{0..23}`` (qkv bias, LayerNorm eps 1e-6) and ``norm``. It has
no ``pos_embed`` and no head: positions are a 2-D sin-cos table computed per image from the
ground resolution. Built here with timm (``pos_embed="none"``) and loaded strictly after
the prefix is stripped.

Forward (rshf ``model.forward_features(x, input_res)``): patch embed; CLS prepended; plus
``[0 | sincos(c * res) , sincos(r * res)]`` (``D/2`` dims each, ``omega_k = 1e4^(-2k/(D/2))``,
float32) for the token at row r, column c; the CLS row is zero; 24 blocks; then ``fc_norm``.
In rshf's default (non-global-pool) configuration ``fc_norm`` is the identity and the saved
``norm`` is never applied, so the tokens are the raw last-block output; that is reproduced
(``final_norm="auto"``: apply the norm only when the checkpoint stores it as ``fc_norm``;
``True``/``False`` force it).

Preprocessing (spec §3a): DN / 10000 clip -> uint8 -> Pillow bicubic straight to 224 x 224
-> /255 -> ImageNet mean/std. Side input ``input_res = scale_m * short_side / 224`` (metres
per model pixel; ``short_side`` of the raw input, ``scale_m`` from the fetch meta's grid, else
``model_config["scale_m"]``, else the catalog sensor's 10 m). Pooled = mean (or max) of the
patch tokens (CLS dropped); grid = 14 x 14 patch tokens, cropped to the ROI window.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any, ClassVar

import numpy as np

from rs_embed_ray.errors import ModelError
from rs_embed_ray.models.base import Embedding, ModelInfo
from rs_embed_ray.models.catalog import CATALOG
from rs_embed_ray.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, as_chw
from rs_embed_ray.models.runtime import (
    Batch,
    TorchEmbedder,
    build_seeded,
    load_state_dict_file,
    strip_prefix,
    tokens_to_grid,
)
from rs_embed_ray.models.satmae import (
    EMBED_DIM,
    IMAGE_SIZE,
    PATCH,
    build_vit_large,
    check_and_load,
    drop_mae_decoder,
    resolve_hf_weights,
    rgb_uint8_batch,
    token_grid_embeddings,
)

log = logging.getLogger(__name__)

HF_REPO = "MVRL/scalemae-vitlarge-800"
HF_FILENAMES = ("model.safetensors", "pytorch_model.bin")
LAYERNORM_EPS = 1e-6
DEFAULT_SCALE_M = 10.0


@lru_cache(maxsize=8)
def _omega(half: int) -> np.ndarray:
    o = np.arange(half // 2, dtype=np.float32) / np.float32(half / 2.0)
    return (1.0 / np.float32(10000.0) ** o).astype(np.float32)


def gsd_pos_embed(res: Any, *, dim: int = EMBED_DIM, side: int = IMAGE_SIZE // PATCH) -> Any:
    """(B,) metres per pixel -> (B, 1 + side*side, dim) float32; row 0 (CLS) zero.

    Token (r, c) gets ``[sincos(c * res); sincos(r * res)]`` of ``dim/2`` each.
    """
    import torch

    res = res.reshape(-1, 1).float()
    half = dim // 2
    omega = torch.from_numpy(_omega(half)).to(res.device)
    coords = torch.arange(side, dtype=torch.float32, device=res.device)
    cc = coords.repeat(side)  # column index, fastest
    rr = coords.repeat_interleave(side)

    def code(pos: Any) -> Any:  # (B, N) -> (B, N, half)
        ang = pos.unsqueeze(-1) * omega
        return torch.cat([torch.sin(ang), torch.cos(ang)], dim=-1)

    table = torch.cat([code(cc.unsqueeze(0) * res), code(rr.unsqueeze(0) * res)], dim=-1)
    zero = torch.zeros(table.shape[0], 1, dim, dtype=table.dtype, device=table.device)
    return torch.cat([zero, table], dim=1)


def prepare_state_dict(sd: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Published keys -> backbone keys: strip ``model.``, drop MAE decoder keys, and map a
    global-pool ``fc_norm`` onto ``norm``. Returns (state dict, whether it was ``fc_norm``)."""
    sd, dropped = drop_mae_decoder(strip_prefix(dict(sd), ("model.", "module."), nested=True))
    if dropped:
        log.info("scalemae: ignored %d MAE decoder keys", len(dropped))
    has_fc_norm = "fc_norm.weight" in sd and "norm.weight" not in sd
    if has_fc_norm:
        for s in ("weight", "bias"):
            if f"fc_norm.{s}" in sd:
                sd[f"norm.{s}"] = sd.pop(f"fc_norm.{s}")
    return sd, has_fc_norm


class ScaleMAE(TorchEmbedder):
    """Scale-MAE ViT-L/16 on S2 B4,B3,B2 with a ground-resolution side input.

    ``model_config``: ``hf_repo`` (alias ``model_id``), ``hf_revision``, ``filename``,
    ``scale_m`` (fallback ground resolution), ``final_norm`` (``auto``|true|false).
    """

    info: ClassVar[ModelInfo] = CATALOG["scalemae"]
    CONFIG_KEYS: ClassVar[frozenset[str] | None] = frozenset(
        {"hf_repo", "model_id", "hf_revision", "filename", "scale_m", "final_norm"}
    )
    batch_size_cpu = 8
    batch_size_cuda = 32

    def _load(self, weights: str | None) -> None:
        cfg = self.model_config
        self._init_runtime()
        self.default_scale_m = float(
            cfg.get("scale_m") or getattr(self.info.sensor, "scale_m", DEFAULT_SCALE_M)
        )
        fn = cfg.get("final_norm", "auto")
        if fn not in ("auto", True, False, "true", "false"):
            raise ModelError(f"scalemae final_norm must be auto/true/false, got {fn!r}.")
        resolved = resolve_hf_weights(
            "scalemae", weights, cfg, repo=HF_REPO, filenames=HF_FILENAMES
        )
        self.weights_record = resolved.record()
        has_fc_norm = False
        if resolved.path is None:
            model = build_seeded(build_vit_large, eps=LAYERNORM_EPS, pos_embed=False)
        else:
            model = build_vit_large(eps=LAYERNORM_EPS, pos_embed=False, meta=True)
            sd, has_fc_norm = prepare_state_dict(load_state_dict_file(str(resolved.path)))
            check_and_load(model, sd, path=str(resolved.path), what="ScaleMAE")
        self.final_norm = has_fc_norm if fn == "auto" else fn in (True, "true")
        self.model = model.to(self.device).eval()

    def input_res(self, x: np.ndarray, meta: dict[str, Any] | None) -> float:
        grid = (meta or {}).get("grid") or {}
        scale = grid.get("scale_m") if isinstance(grid, dict) else None
        scale_m = float(scale) if scale else self.default_scale_m
        return scale_m * float(min(x.shape[-2], x.shape[-1])) / float(IMAGE_SIZE)

    def preprocess(self, inputs: list[np.ndarray]) -> Any:
        chw = [as_chw(x, channels=3, model_id="scalemae") for x in inputs]
        return rgb_uint8_batch(
            chw, size=IMAGE_SIZE, mean=IMAGENET_MEAN, std=IMAGENET_STD, device=self.device
        )

    def forward(self, x: Any, res: Any) -> np.ndarray:
        """One forward: (B, 1024, 14, 14) last-block patch tokens (CLS dropped)."""
        import torch

        m = self.model
        with self.inference():
            tok = m.patch_embed(x)
            cls = m.cls_token.expand(tok.shape[0], -1, -1).to(tok.dtype)
            seq = torch.cat([cls, tok], dim=1) + gsd_pos_embed(res.to(x.device))
            for blk in m.blocks:
                seq = blk(seq)
            if self.final_norm:
                seq = m.norm(seq)
            tok = seq[:, 1:, :]
        return tokens_to_grid(tok, IMAGE_SIZE // PATCH)

    def _embed(self, batch: Batch) -> list[Embedding]:
        import torch

        res = [
            self.input_res(np.asarray(x), m) for x, m in zip(batch.inputs, batch.metas, strict=True)
        ]
        grids = self.forward(self.preprocess(batch.inputs), torch.tensor(res, dtype=torch.float32))
        base = {
            "model": "scalemae",
            "weights": dict(self.weights_record),
            "image_size": IMAGE_SIZE,
            "preprocess": "uint8_pil_bicubic_direct_imagenet_norm",
            "final_norm_applied": bool(self.final_norm),
            **self.run_meta(),
        }
        per_item = [{"input_res_m": round(r, 6)} for r in res]
        return token_grid_embeddings(grids, batch, base_meta=base, per_item=per_item)


__all__ = ["HF_FILENAMES", "HF_REPO", "ScaleMAE", "gsd_pos_embed", "prepare_state_dict"]
