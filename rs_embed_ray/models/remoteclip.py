"""RemoteCLIP (ViT-B/32, open_clip) on Sentinel-2 RGB: pooled 512-D, grid 768x7x7.

Why this shape: RemoteCLIP is an open_clip ``ViT-B-32`` fine-tuned on remote-sensing
captions. The published HF repo ``MVRL/remote-clip-vit-base-patch32`` stores the open_clip
state dict under the wrapper attribute ``model.`` (PyTorchModelHubMixin); the original
``chendelong/RemoteCLIP`` ``RemoteCLIP-ViT-B-32.pt`` is the bare state dict. Both load
strictly into ``open_clip.create_model("ViT-B-32", pretrained=None)`` (no network).

One forward per batch (``visual.forward_intermediates``) gives both outputs:

* pooled: the projected image embedding, identical to ``encode_image`` (512-D); it is NOT
  L2-normalised (``meta["l2_normalized"] = False``);
* grid: the last transformer block's patch tokens before ``ln_post`` (768 x 7 x 7), rows
  north -> south.

The text tower is loaded (the published file holds it and strict loading checks it), then
dropped: only ``visual`` is kept and moved to the device.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np

from rs_embed_ray.models.base import Embedding, ModelInfo
from rs_embed_ray.models.catalog import CATALOG
from rs_embed_ray.models.grids import grid_embedding, hw_list, pooled_embedding
from rs_embed_ray.models.preprocess import (
    CLIP_MEAN,
    CLIP_STD,
    as_chw,
    clip_style_batch,
    crop_grid,
    roi_window_from_meta,
    roi_window_in_crop,
)
from rs_embed_ray.models.runtime import (
    Batch,
    TorchEmbedder,
    build_seeded,
    load_state_dict_file,
    load_strict,
    strip_prefix,
    to_numpy,
)

log = logging.getLogger(__name__)

HF_REPO = "MVRL/remote-clip-vit-base-patch32"
HF_FILENAME = "model.safetensors"
OPEN_CLIP_ARCH = "ViT-B-32"
IMAGE_SIZE = 224
PREPROCESS_ID = "clip_rgb_uint8"
GRID_TYPE = "vit_tokens_pre_ln_post"


@contextmanager
def _quiet_open_clip() -> Iterator[None]:
    """Hide open_clip's 'No pretrained weights loaded' root-logger warning: we load next."""

    class _F(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "No pretrained weights loaded" not in record.getMessage()

    f = _F()
    root = logging.getLogger()
    root.addFilter(f)
    try:
        yield
    finally:
        root.removeFilter(f)


def build_open_clip(arch: str = OPEN_CLIP_ARCH) -> Any:
    """The open_clip model with random init and no download."""
    import open_clip

    with _quiet_open_clip():
        return open_clip.create_model(arch, pretrained=None)


class RemoteCLIP(TorchEmbedder):
    """RemoteCLIP ViT-B/32 on S2 B4,B3,B2; see the module docstring for why it is built so.

    ``model_config`` keys: ``hf_repo`` (alias ``model_id``), ``hf_revision``, ``filename``.
    """

    info: ClassVar[ModelInfo] = CATALOG["remoteclip"]
    CONFIG_KEYS: ClassVar[frozenset[str] | None] = frozenset(
        {"hf_repo", "model_id", "hf_revision", "filename"}
    )
    batch_size_cpu = 8
    batch_size_cuda = 64

    def _load(self, weights: str | None) -> None:
        self._init_runtime()
        resolved = self._resolve_weights(
            weights, filename=HF_FILENAME, hf_repo=HF_REPO, repo_keys=("hf_repo", "model_id")
        )
        model = build_seeded(build_open_clip)
        if resolved.path is not None:
            sd = strip_prefix(load_state_dict_file(str(resolved.path)))
            load_strict(model, sd, path=str(resolved.path))
        visual = model.visual
        del model
        self.visual = visual.to(self.device).eval()
        self.patch_size = int(self.visual.patch_size[0])
        self.width = int(self.visual.conv1.out_channels)
        log.info(
            "remoteclip loaded on %s (amp=%s, weights=%s)",
            self.device,
            self._amp_dtype,
            self.weights_record.get("weights"),
        )

    # ---- inference -------------------------------------------------------------------

    def preprocess(self, inputs: list[np.ndarray]) -> tuple[Any, list[Any]]:
        """Raw DN (B4,B3,B2) patches -> normalised (B,3,224,224) on the model's device."""
        chw = [as_chw(x, channels=3, model_id="remoteclip") for x in inputs]
        return clip_style_batch(
            chw, size=IMAGE_SIZE, mean=CLIP_MEAN, std=CLIP_STD, device=self.device
        )

    def forward(self, x: Any) -> tuple[np.ndarray, np.ndarray]:
        """One forward: (pooled (B,512), grid (B,768,7,7)) as float32 numpy."""
        with self.inference():
            out = self.visual.forward_intermediates(
                x, indices=1, normalize_intermediates=False, output_fmt="NCHW"
            )
        return to_numpy(out["image_features"]), to_numpy(out["image_intermediates"][-1])

    def _embed(self, batch: Batch) -> list[Embedding]:
        """Embed raw S2 B4,B3,B2 patches with one forward; grids are cropped to the ROI."""
        output = batch.output
        x, geoms = self.preprocess(batch.inputs)
        pooled, grid = self.forward(x)
        out: list[Embedding] = []
        for i in range(len(batch)):
            meta: dict[str, Any] = {
                "model": "remoteclip",
                "weights": dict(self.weights_record),
                "input_hw": list(geoms[i].input_hw),
                "image_size": IMAGE_SIZE,
                "preprocess": PREPROCESS_ID,
                "output_mode": output.mode,
                **self.run_meta(),
            }
            win = roi_window_from_meta(batch.metas[i])
            if output.mode == "pooled":
                meta["pooling"] = "encode_image"
                meta["l2_normalized"] = False
                if output.pooling != "mean":
                    meta["pooling_note"] = (
                        "remoteclip returns its native projected vector; "
                        f"pooling={output.pooling!r} does not apply"
                    )
                if win is not None:
                    meta["roi_window_ignored"] = True
                    meta["roi_window_geo"] = list(win)
                    meta["roi_note"] = (
                        "pooled remoteclip is the global projected vector (512-D); the grid "
                        "tokens are 768-D, so a ROI-cropped pool would change the dimension"
                    )
                out.append(pooled_embedding(pooled[i], meta))
                continue
            g = grid[i]
            # pooling and grid_type lead the grid keys here (grid_embedding keeps them there)
            meta.update(pooling="none", grid_type=GRID_TYPE, grid_hw_full=hw_list(g))
            if win is not None:
                g = crop_grid(g, roi_window_in_crop(win, geoms[i]))
                meta["roi_cropped"] = True
                meta["roi_window_geo"] = list(win)
            out.append(grid_embedding(g, meta, GRID_TYPE))
        return out


__all__ = ["HF_FILENAME", "HF_REPO", "OPEN_CLIP_ARCH", "RemoteCLIP", "build_open_clip"]
